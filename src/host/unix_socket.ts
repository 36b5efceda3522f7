// Listening Unix sockets the way the VMM's sockets (control, vsock) all want them: a stale
// socket file left by a dead VMM is replaced but no other file is, the socket is mode 0600
// (file permissions are the access control), and it does not keep the process alive.
// Paths are checked for length because Node truncates a long sun_path silently, which
// would bind or connect somewhere else.

import { chmodSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import type { Server } from "node:net";

/** Longest path a Unix socket address holds: sun_path is 108 bytes with the NUL. */
export const MAX_UNIX_PATH = 107;

export function unixPathFits(path: string): boolean {
  return Buffer.byteLength(path) <= MAX_UNIX_PATH;
}

/** Listen on `path` with `server`; errors say what is wrong with the path. */
export async function listenUnix(server: Server, path: string): Promise<void> {
  if (typeof path !== "string" || path.length === 0 || path.includes("\0")) {
    throw new TypeError("Cannot listen: the socket path must be a non-empty string");
  }
  if (!unixPathFits(path)) {
    throw new RangeError(`Cannot listen at ${path}: longer than ${MAX_UNIX_PATH} bytes`);
  }
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) {
      throw new Error(`Cannot listen at ${path}: it exists and is not a socket`);
    }
    unlinkSync(path);
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
  chmodSync(path, 0o600);
  server.unref();
}

/** Stop `server` (after its connections are gone) and remove its socket file. */
export async function closeUnix(server: Server, path: string): Promise<void> {
  await new Promise<void>((r) => server.close(() => r()));
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
