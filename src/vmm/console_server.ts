// The VMM process's console socket: when a domain runs under the daemon nobody sits at its
// terminal, so its console (COM1 or hvc0) is served on a Unix socket instead. Output is kept
// in a ring buffer while nobody is attached (as xenconsoled does) and replayed on attach;
// any attached client may type. Detaching (closing the connection) leaves the guest running.

import { chmodSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";

/** Enough for a screenful of boot messages without holding a whole boot log. */
const RING_BYTES = 64 * 1024;
/** A client that stops reading is dropped rather than buffered without bound. */
const MAX_CLIENT_BACKLOG = 1024 * 1024;

export class ConsoleServer {
  private readonly server: Server;
  private readonly clients = new Set<Socket>();
  private readonly ring = Buffer.alloc(RING_BYTES);
  /** Bytes ever written; the ring holds the last min(written, RING_BYTES) of them. */
  private written = 0;

  private constructor(
    readonly path: string,
    private readonly input: (bytes: Uint8Array) => void,
  ) {
    this.server = createServer((s) => this.attach(s));
  }

  static async listen(path: string, input: (bytes: Uint8Array) => void): Promise<ConsoleServer> {
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`);
      unlinkSync(path);
    }
    const c = new ConsoleServer(path, input);
    await new Promise<void>((resolve, reject) => {
      c.server.once("error", reject);
      c.server.listen(path, () => resolve());
    });
    chmodSync(path, 0o600);
    c.server.unref();
    return c;
  }

  /** Guest output: into the ring, and to every attached client. */
  write(bytes: Uint8Array): void {
    const n = bytes.length;
    if (n >= RING_BYTES) {
      this.ring.set(bytes.subarray(n - RING_BYTES));
    } else {
      const at = this.written % RING_BYTES;
      const first = Math.min(n, RING_BYTES - at);
      this.ring.set(bytes.subarray(0, first), at);
      if (first < n) this.ring.set(bytes.subarray(first), 0);
    }
    this.written += n;
    for (const c of this.clients) {
      if (c.writableLength > MAX_CLIENT_BACKLOG) c.destroy();
      else c.write(Buffer.from(bytes));
    }
  }

  /** The buffered output in order (what a newly attached client sees first). */
  backlog(): Buffer {
    if (this.written <= RING_BYTES) return Buffer.from(this.ring.subarray(0, this.written));
    const at = this.written % RING_BYTES;
    return Buffer.concat([this.ring.subarray(at), this.ring.subarray(0, at)]);
  }

  private attach(socket: Socket): void {
    socket.unref();
    socket.on("error", () => {});
    socket.on("close", () => this.clients.delete(socket));
    socket.on("data", (chunk: Buffer) => this.input(chunk));
    socket.write(this.backlog());
    this.clients.add(socket);
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.end();
    await new Promise<void>((r) => this.server.close(() => r()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}
