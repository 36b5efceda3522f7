// Crash-safe file replacement: write a temporary file beside the target, fsync it, rename it
// over the target, fsync the directory. A process killed at any point leaves either the old
// file or the new one, never a torn one (a stray `.tmp-*` file at worst, which readers
// ignore). npm's write-file-atomic does the first three steps but not the directory fsync
// that makes the rename itself survive a power cut, so this is written out here.

import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

let counter = 0;

export const TEMP_PREFIX = ".tmp-";

export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(path);
  const tmp = join(dir, `${TEMP_PREFIX}${basename(path)}-${process.pid}-${counter++}`);
  const fd = openSync(tmp, "wx", mode);
  try {
    writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  fsyncDir(dir);
}

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
