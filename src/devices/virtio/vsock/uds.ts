// virtio-vsock's host side over Unix sockets, in Firecracker's convention so that tools
// written for Firecracker work unchanged:
//  - the VMM listens at PATH. A host program connects, sends `CONNECT <port>\n` (the word
//    in any case, as Firecracker reads it) and, once the guest accepts, reads
//    `OK <host_port>\n`; then the socket carries the stream both ways. A refusal closes it.
//  - a guest connection to host port P is a connection to the Unix socket at `PATH_P`;
//    nothing listening there means RST.
// Sockets are Node's non-blocking net sockets on the main thread's event loop, half-open
// allowed (each direction is shut down on its own, as vsock's SHUTDOWN flags do). A host
// program that connects and never sends its line is dropped after a timeout, and at most
// `maxPending` may be waiting at once.

import { createConnection, createServer, type Server, type Socket } from "node:net";
import { closeUnix, listenUnix, unixPathFits } from "../../../host/unix_socket.js";
import type {
  HostAcceptor,
  HostStream,
  HostStreamEvents,
  OutboundStreamEvents,
  VsockBackend,
} from "./backend.js";

/** Longest CONNECT line taken (Firecracker reads at most 32 bytes). */
export const MAX_CONNECT_LINE = 32;
export const CONNECT_LINE_TIMEOUT_MS = 10_000;
export const MAX_PENDING_CONNECTS = 64;

/** Parse Firecracker's `CONNECT <port>\n` line (without the newline); undefined if malformed. */
export function parseConnectLine(line: string): number | undefined {
  const words = line.trim().split(/\s+/);
  if (words.length !== 2 || words[0]?.toLowerCase() !== "connect") return undefined;
  const port = words[1] as string;
  if (!/^\d{1,10}$/.test(port)) return undefined;
  const n = Number(port);
  return n <= 0xffff_ffff ? n : undefined;
}

/** A connected socket as the device's HostStream, routing its events to the device. */
class SocketStream implements HostStream {
  #events: HostStreamEvents | undefined;

  constructor(private readonly socket: Socket) {
    socket.on("data", (b: Buffer) => this.#events?.data(b));
    socket.on("end", () => this.#events?.end());
    socket.on("close", () => {
      const events = this.#events;
      this.#events = undefined;
      events?.close();
    });
  }

  attach(events: HostStreamEvents): void {
    this.#events = events;
  }

  /** Still routing events (the device has not destroyed it, and it has not closed). */
  get attached(): boolean {
    return this.#events !== undefined;
  }

  write(bytes: Uint8Array, done: () => void): void {
    this.socket.write(bytes, () => done());
  }
  end(done: () => void): void {
    this.socket.end(() => done());
  }
  destroy(): void {
    // The device hears nothing more from a stream it destroyed.
    this.#events = undefined;
    this.socket.destroy();
  }
  pause(): void {
    this.socket.pause();
  }
  resume(): void {
    this.socket.resume();
  }
}

/** What connect() returns when it cannot even try; its only event is close. */
const DEAD_STREAM: HostStream = {
  write: (_bytes, done) => setImmediate(done),
  end: (done) => setImmediate(done),
  destroy: () => {},
  pause: () => {},
  resume: () => {},
};

export interface UnixSocketBackendOptions {
  maxPending?: number;
  lineTimeoutMs?: number;
}

export class UnixSocketBackend implements VsockBackend {
  readonly path: string;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #pending = new Set<Socket>();
  readonly #maxPending: number;
  readonly #lineTimeoutMs: number;
  #accept: HostAcceptor | undefined;
  #closed = false;

  private constructor(path: string, options: UnixSocketBackendOptions) {
    this.path = path;
    this.#maxPending = options.maxPending ?? MAX_PENDING_CONNECTS;
    this.#lineTimeoutMs = options.lineTimeoutMs ?? CONNECT_LINE_TIMEOUT_MS;
    this.#server = createServer({ allowHalfOpen: true }, (socket) => this.#onConnection(socket));
  }

  /** Listen at `path` (a stale socket file is replaced, any other file is an error). */
  static async listen(
    path: string,
    options: UnixSocketBackendOptions = {},
  ): Promise<UnixSocketBackend> {
    const b = new UnixSocketBackend(path, options);
    await listenUnix(b.#server, path);
    return b;
  }

  /** Host sockets open (accepted or connected), for diagnostics and tests. */
  get openSockets(): number {
    return this.#sockets.size;
  }

  setAcceptor(accept: HostAcceptor): void {
    this.#accept = accept;
  }

  connect(port: number, events: OutboundStreamEvents): HostStream {
    const path = `${this.path}_${port}`;
    if (this.#closed || !unixPathFits(path)) {
      // Node would truncate the path and reach some other socket: fail as a refusal does.
      setImmediate(() => events.close());
      return DEAD_STREAM;
    }
    const socket = createConnection({ path, allowHalfOpen: true });
    this.#track(socket);
    const stream = new SocketStream(socket);
    stream.attach(events);
    socket.once("connect", () => {
      if (stream.attached) events.connected();
    });
    return stream;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#sockets) s.destroy();
    await closeUnix(this.#server, this.path);
  }

  #track(socket: Socket): void {
    socket.unref();
    socket.on("error", () => {}); // 'close' follows and says it
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  #onConnection(socket: Socket): void {
    this.#track(socket);
    if (this.#closed || this.#pending.size >= this.#maxPending || !this.#accept) {
      socket.destroy();
      return;
    }
    this.#pending.add(socket);
    let line = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), this.#lineTimeoutMs);
    timer.unref();
    const stopWaiting = () => {
      clearTimeout(timer);
      this.#pending.delete(socket);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", stopWaiting);
    };
    // EOF before a whole line: there will be no request.
    const onEnd = () => socket.destroy();
    const onData = (chunk: Buffer) => {
      line = Buffer.concat([line, chunk]);
      const nl = line.indexOf(0x0a);
      if (nl < 0) {
        if (line.length >= MAX_CONNECT_LINE) socket.destroy();
        return;
      }
      stopWaiting();
      const port =
        nl < MAX_CONNECT_LINE ? parseConnectLine(line.toString("latin1", 0, nl)) : undefined;
      if (port === undefined) socket.destroy();
      else this.#handOver(socket, port, line.subarray(nl + 1));
    };
    socket.on("data", onData);
    socket.on("end", onEnd);
    socket.on("close", stopWaiting);
  }

  /** Give a socket that asked for `guestPort` to the device, with bytes sent after the line. */
  #handOver(socket: Socket, guestPort: number, rest: Uint8Array): void {
    const stream = new SocketStream(socket);
    const events = this.#accept?.({
      guestPort,
      stream,
      accepted: (hostPort) => {
        socket.write(`OK ${hostPort}\n`);
      },
    });
    if (!events) {
      socket.destroy();
      return;
    }
    stream.attach(events);
    if (rest.length > 0) events.data(rest);
  }
}
