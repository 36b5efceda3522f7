// The TypeScript client of the daemon's API, for the CLI and any other program
// (`import { VesselClient } from "vessel"`). Its types are the API's own schemas
// (src/api/schemas.ts); transport is node:http over the daemon's Unix socket or TCP with a
// bearer token.

import { request } from "node:http";
import type {
  DiskLimitsRequest,
  DomainEvent,
  DomainInfo,
  DomainList,
  DomainSpec,
  ErrorBody,
  MemoryReport,
  NetLimitsRequest,
  ScheduleRequest,
  ShutdownRequest,
  VcpuList,
  VersionInfo,
} from "../api/schemas.js";

export type { DomainEvent, DomainInfo, DomainSpec, MemoryReport, VersionInfo };

export type ClientOptions = { socketPath: string } | { url: string; token?: string };

/** An error answer from the daemon: `status` is the HTTP status, `code` the API's code. */
export class VesselApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "VesselApiError";
  }
}

interface Raw {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

export class VesselClient {
  constructor(readonly options: ClientOptions) {}

  private target(path: string) {
    if ("socketPath" in this.options) return { socketPath: this.options.socketPath, path };
    const u = new URL(path, this.options.url);
    return {
      host: u.hostname,
      port: Number(u.port || 80),
      path: `${u.pathname}${u.search}`,
      headers: this.options.token ? { authorization: `Bearer ${this.options.token}` } : {},
    };
  }

  /** One request, the raw answer (tests validate these against the OpenAPI document). */
  raw(method: string, path: string, body?: unknown): Promise<Raw> {
    const t = this.target(path);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          ...t,
          method,
          // A fresh connection per request: Node's default agent keeps sockets alive, and a
          // request written to one the daemon has just closed as idle fails with EPIPE.
          agent: false,
          headers: {
            ...("headers" in t ? t.headers : {}),
            ...(payload
              ? { "content-type": "application/json", "content-length": payload.length }
              : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(chunks).toString("utf8"),
              headers: res.headers,
            }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", (e: NodeJS.ErrnoException) =>
        reject(
          e.code === "ENOENT" || e.code === "ECONNREFUSED"
            ? new VesselApiError(
                0,
                "UNREACHABLE",
                `cannot reach the daemon (${e.code}): is \`vessel daemon\` running?`,
              )
            : e,
        ),
      );
      req.end(payload);
    });
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.raw(method, path, body);
    if (r.status >= 200 && r.status < 300) return (r.body ? JSON.parse(r.body) : undefined) as T;
    let code = "HTTP";
    let message = `HTTP ${r.status}`;
    try {
      const e = JSON.parse(r.body) as ErrorBody;
      code = e.error.code;
      message = e.error.message;
    } catch {
      // not our error shape; keep the status
    }
    throw new VesselApiError(r.status, code, message);
  }

  version(): Promise<VersionInfo> {
    return this.call("GET", "/v1/version");
  }

  async list(): Promise<DomainInfo[]> {
    return (await this.call<DomainList>("GET", "/v1/domains")).domains;
  }

  get(name: string): Promise<DomainInfo> {
    return this.call("GET", `/v1/domains/${encodeURIComponent(name)}`);
  }

  /** Define a persistent domain; `start` starts it too. */
  define(spec: DomainSpec, opts: { start?: boolean } = {}): Promise<DomainInfo> {
    return this.call("POST", `/v1/domains${opts.start ? "?start=true" : ""}`, spec);
  }

  /** Start a transient domain, forgotten when it stops (xl create). */
  create(spec: DomainSpec): Promise<DomainInfo> {
    return this.call("POST", "/v1/domains?transient=true", spec);
  }

  undefine(name: string): Promise<void> {
    return this.call("DELETE", `/v1/domains/${encodeURIComponent(name)}`);
  }

  private action(name: string, action: string, body?: unknown): Promise<DomainInfo> {
    return this.call("POST", `/v1/domains/${encodeURIComponent(name)}/${action}`, body);
  }

  start(name: string): Promise<DomainInfo> {
    return this.action(name, "start");
  }
  shutdown(name: string, opts: ShutdownRequest = {}): Promise<DomainInfo> {
    return this.action(name, "shutdown", opts);
  }
  reboot(name: string): Promise<DomainInfo> {
    return this.action(name, "reboot");
  }
  destroy(name: string): Promise<DomainInfo> {
    return this.action(name, "destroy");
  }
  pause(name: string): Promise<DomainInfo> {
    return this.action(name, "pause");
  }
  resume(name: string): Promise<DomainInfo> {
    return this.action(name, "resume");
  }
  vcpus(name: string): Promise<VcpuList> {
    return this.call("GET", `/v1/domains/${encodeURIComponent(name)}/vcpus`);
  }
  /** Pin one vCPU to host CPUs ("0-1,3"). */
  pinVcpu(name: string, vcpu: number, cpus: string): Promise<VcpuList> {
    return this.call("PUT", `/v1/domains/${encodeURIComponent(name)}/vcpus/${vcpu}/pin`, { cpus });
  }
  /** Change the CPU cap and weight (null removes a setting). */
  schedule(name: string, change: ScheduleRequest): Promise<DomainInfo> {
    return this.call("PUT", `/v1/domains/${encodeURIComponent(name)}/schedule`, change);
  }
  /** Replace disk `index`'s I/O limits ({} removes them). */
  setDiskLimits(
    name: string,
    index: number,
    limits: DiskLimitsRequest,
  ): Promise<Record<string, unknown>> {
    return this.call(
      "PUT",
      `/v1/domains/${encodeURIComponent(name)}/disks/${index}/limits`,
      limits,
    );
  }
  /** Replace network device `index`'s limits each way ({} removes them). */
  setNetLimits(
    name: string,
    index: number,
    limits: NetLimitsRequest,
  ): Promise<Record<string, unknown>> {
    return this.call("PUT", `/v1/domains/${encodeURIComponent(name)}/nets/${index}/limits`, limits);
  }
  /** The Prometheus text of /metrics. */
  async metrics(): Promise<string> {
    const r = await this.raw("GET", "/metrics");
    if (r.status !== 200) throw new VesselApiError(r.status, "HTTP", `metrics: HTTP ${r.status}`);
    return r.body;
  }
  /** mem-set: `size` in bytes or text like "512M". */
  setMemory(name: string, size: number | string): Promise<MemoryReport> {
    return this.call("PUT", `/v1/domains/${encodeURIComponent(name)}/memory`, { size });
  }
  memory(name: string): Promise<MemoryReport> {
    return this.call("GET", `/v1/domains/${encodeURIComponent(name)}/memory`);
  }
  stats(name: string): Promise<Record<string, unknown>> {
    return this.call("GET", `/v1/domains/${encodeURIComponent(name)}/stats`);
  }

  /**
   * Lifecycle events as they happen, until `signal` aborts. Server-sent events parsed here:
   * each `data:` line of ours is one JSON DomainEvent.
   */
  async *events(signal?: AbortSignal): AsyncGenerator<DomainEvent> {
    const t = this.target("/v1/events");
    const res = await new Promise<import("node:http").IncomingMessage>((resolve, reject) => {
      const req = request({ ...t, method: "GET", signal, agent: false }, resolve);
      req.on("error", reject);
      req.end();
    });
    if (res.statusCode !== 200) {
      res.resume();
      throw new VesselApiError(res.statusCode ?? 0, "HTTP", `events: HTTP ${res.statusCode}`);
    }
    res.setEncoding("utf8");
    let buffered = "";
    try {
      for await (const chunk of res) {
        buffered += chunk as string;
        let end = buffered.indexOf("\n\n");
        while (end >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
          if (data) yield JSON.parse(data) as DomainEvent;
          end = buffered.indexOf("\n\n");
        }
      }
    } catch (e) {
      if (!signal?.aborted) throw e;
    }
  }
}
