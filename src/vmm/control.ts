// The VMM process's control socket: a Unix socket speaking JSON lines, one request and one
// reply per line. `vessel run --control-socket PATH` opens it; the domain daemon (issue #4)
// will supervise VMM processes through the same socket. File permissions (0600, owned by
// the VMM's user) are the access control. Requests are untrusted input: size-bounded,
// parsed defensively, and answered with {"ok":false,"error":...} when wrong.

import { createConnection, createServer, type Server, type Socket } from "node:net";
import { closeUnix, listenUnix } from "../host/unix_socket.js";

export type ControlHandler = (args: Record<string, unknown>) => unknown | Promise<unknown>;

const MAX_LINE = 64 * 1024;

export class ControlServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly path: string,
    private readonly handlers: Readonly<Record<string, ControlHandler>>,
  ) {
    this.server = createServer((socket) => this.serve(socket));
  }

  /** Listen at `path` (a stale socket file from a dead VMM is replaced; anything else is not). */
  static async listen(
    path: string,
    handlers: Readonly<Record<string, ControlHandler>>,
  ): Promise<ControlServer> {
    const c = new ControlServer(path, handlers);
    await listenUnix(c.server, path);
    return c;
  }

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.unref();
    socket.setEncoding("utf8");
    let buffered = "";
    let queue = Promise.resolve();
    socket.on("data", (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_LINE && !buffered.includes("\n")) {
        socket.end(
          `${JSON.stringify({ ok: false, error: `request longer than ${MAX_LINE} bytes` })}\n`,
        );
        return;
      }
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        queue = queue.then(() => this.answer(socket, line));
        nl = buffered.indexOf("\n");
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => this.sockets.delete(socket));
  }

  private async answer(socket: Socket, line: string): Promise<void> {
    let reply: unknown;
    try {
      const req: unknown = JSON.parse(line);
      if (typeof req !== "object" || req === null || Array.isArray(req))
        throw new Error("request must be a JSON object");
      const { op, ...args } = req as Record<string, unknown>;
      if (typeof op !== "string") throw new Error('request needs "op", a string');
      const handler = Object.hasOwn(this.handlers, op) ? this.handlers[op] : undefined;
      if (!handler)
        throw new Error(`unknown op "${op}" (known: ${Object.keys(this.handlers).join(", ")})`);
      reply = { ok: true, result: (await handler(args)) ?? null };
    } catch (e) {
      reply = { ok: false, error: e instanceof Error ? e.message : String(e) };
    }
    if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}\n`);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await closeUnix(this.server, this.path);
  }
}

/**
 * The supervisor's end of a control socket: requests go out in order, replies come back in
 * order (the server answers one line per request, sequentially). `closed` settles when the
 * VMM process goes away, which is how a supervisor that is not its parent notices its end.
 */
export class ControlClient {
  private readonly pending: { resolve(v: unknown): void; reject(e: Error): void }[] = [];
  private buffered = "";
  readonly closed: Promise<void>;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.receive(chunk));
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        for (const p of this.pending.splice(0)) p.reject(new Error("the VMM process went away"));
        resolve();
      });
    });
    socket.on("error", () => {});
  }

  static connect(path: string, timeoutMs = 2000): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no answer on ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new ControlClient(socket));
      });
      socket.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  request(op: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<unknown> {
    if (this.socket.destroyed) return Promise.reject(new Error("the VMM process went away"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the VMM did not answer "${op}" within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.pending.push({
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.socket.write(`${JSON.stringify({ ...args, op })}\n`);
    });
  }

  private receive(chunk: string): void {
    this.buffered += chunk;
    let nl = this.buffered.indexOf("\n");
    while (nl >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      const p = this.pending.shift();
      try {
        const reply = JSON.parse(line) as { ok?: boolean; result?: unknown; error?: string };
        if (reply.ok) p?.resolve(reply.result);
        else p?.reject(new Error(reply.error ?? "request failed"));
      } catch {
        p?.reject(new Error("the VMM sent a malformed reply"));
      }
      nl = this.buffered.indexOf("\n");
    }
  }

  close(): void {
    this.socket.destroy();
  }
}
