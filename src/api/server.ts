// The daemon's REST API (Hono) over a Unix socket and, optionally, TCP. On the Unix socket
// the file's permissions are the access control; on TCP every request must carry one of the
// configured bearer tokens or it gets 401 and does nothing. Request bodies are checked
// against the schemas and an error names the field; every answer follows docs/openapi.json.

import { timingSafeEqual } from "node:crypto";
import { chmodSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { getRequestListener } from "@hono/node-server";
import type { TSchema } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { type Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { Daemon } from "../daemon/daemon.js";
import { DomainError } from "../daemon/errors.js";
import { sizeBytes } from "../domain/spec.js";
import { renderMetrics } from "./metrics.js";
import { openApiDocument } from "./openapi.js";
import {
  DiskLimitsRequest,
  type DomainEvent,
  type ErrorBody,
  MemoryRequest,
  NetLimitsRequest,
  PinRequest,
  ScheduleRequest,
  ShutdownRequest,
  type VcpuList,
  type VersionInfo,
} from "./schemas.js";

const VERSION = "0.1.0";
/** A domain spec is small; anything bigger is refused before parsing. */
const MAX_BODY = 256 * 1024;

function errorBody(code: string, message: string): ErrorBody {
  return { error: { code, message } };
}

async function readJson(c: Context, required: boolean): Promise<unknown> {
  const text = await c.req.text();
  if (text.length > MAX_BODY)
    throw new DomainError("INVALID", `body larger than ${MAX_BODY} bytes`);
  if (text.trim() === "") {
    if (required) throw new DomainError("INVALID", "body: a JSON object is required");
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new DomainError("INVALID", "body: not valid JSON");
  }
}

/** `body` if it matches `schema`; otherwise an INVALID error naming the first bad field. */
function checked(schema: TSchema, body: unknown): unknown {
  const bad = Value.Errors(schema, body).First();
  if (bad) {
    const field = bad.path.replace(/^\//, "") || "body";
    throw new DomainError(
      "INVALID",
      `${field}: ${bad.message.charAt(0).toLowerCase()}${bad.message.slice(1)}`,
    );
  }
  return body;
}

function boolQuery(c: Context, key: string): boolean {
  const v = c.req.query(key);
  if (v === undefined || v === "" || v === "false" || v === "0") return false;
  if (v === "true" || v === "1") return true;
  throw new DomainError("INVALID", `${key}: expected true or false`);
}

export function createApp(daemon: Daemon, opts: { tokens?: readonly string[] } = {}): Hono {
  const app = new Hono();
  const tokens = (opts.tokens ?? []).map((t) => Buffer.from(t));

  app.onError((e, c) => {
    if (e instanceof DomainError)
      return c.json(errorBody(e.code, e.message), e.status as 400 | 401 | 404 | 409 | 500 | 504);
    daemon.options.log?.(`API: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return c.json(errorBody("INTERNAL", e instanceof Error ? e.message : String(e)), 500);
  });
  app.notFound((c) =>
    c.json(errorBody("NOT_FOUND", `no route ${c.req.method} ${c.req.path}`), 404),
  );

  if (opts.tokens) {
    app.use("*", async (c, next) => {
      const m = /^Bearer\s+(\S+)$/.exec(c.req.header("authorization") ?? "");
      const given = m?.[1] ? Buffer.from(m[1]) : undefined;
      const ok =
        given !== undefined &&
        tokens.some((t) => t.length === given.length && timingSafeEqual(t, given));
      if (!ok) {
        c.header("WWW-Authenticate", 'Bearer realm="vessel"');
        return c.json(errorBody("UNAUTHORIZED", "a valid bearer token is required"), 401);
      }
      return next();
    });
  }

  app.get("/v1/version", (c) =>
    c.json({
      name: "vessel",
      version: VERSION,
      api: "v1",
      pid: process.pid,
      stateDir: daemon.options.paths.stateDir,
      runtimeDir: daemon.options.paths.runtimeDir,
      cgroups: daemon.cgroups.ok ? daemon.cgroups.root : `none: ${daemon.cgroups.reason}`,
    } satisfies VersionInfo),
  );
  app.get("/v1/openapi.json", (c) => c.json(openApiDocument()));
  app.get("/v1/domains", (c) => c.json({ domains: daemon.list() }));
  app.post("/v1/domains", async (c) => {
    const body = await readJson(c, true);
    if (boolQuery(c, "transient")) return c.json(await daemon.create(body), 201);
    const info = daemon.define(body);
    if (boolQuery(c, "start")) {
      await daemon.get(info.name).start();
      return c.json(daemon.get(info.name).info(), 201);
    }
    return c.json(info, 201);
  });
  app.get("/v1/domains/:name", (c) => c.json(daemon.get(c.req.param("name")).info()));
  app.delete("/v1/domains/:name", (c) => {
    daemon.undefine(c.req.param("name"));
    return c.body(null, 204);
  });
  app.get("/v1/domains/:name/stats", async (c) => {
    const d = daemon.get(c.req.param("name"));
    const stats = await d.stats();
    if (stats === null) throw new DomainError("CONFLICT", `domain ${d.name} is not running`);
    return c.json(stats as Record<string, unknown>);
  });
  app.get("/metrics", async (c) => {
    c.header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    return c.body(await renderMetrics(daemon));
  });
  app.get("/v1/domains/:name/vcpus", async (c) => {
    const d = daemon.get(c.req.param("name"));
    return c.json({ vcpus: await d.vcpuInfo() } satisfies VcpuList);
  });
  app.put("/v1/domains/:name/vcpus/:vcpu/pin", async (c) => {
    const d = daemon.get(c.req.param("name"));
    const body = checked(PinRequest, await readJson(c, true)) as PinRequest;
    const vcpu = Number(c.req.param("vcpu"));
    await d.pinVcpu(vcpu, body.cpus);
    return c.json({ vcpus: await d.vcpuInfo() } satisfies VcpuList);
  });
  app.put("/v1/domains/:name/schedule", async (c) => {
    const d = daemon.get(c.req.param("name"));
    const body = checked(ScheduleRequest, await readJson(c, true)) as ScheduleRequest;
    await d.setSchedule(body);
    return c.json(d.info());
  });
  app.put("/v1/domains/:name/disks/:index/limits", async (c) => {
    const d = daemon.get(c.req.param("name"));
    const body = checked(DiskLimitsRequest, await readJson(c, true)) as DiskLimitsRequest;
    const empty = Object.keys(body).length === 0;
    const result = await d.setDiskLimits(Number(c.req.param("index")), empty ? null : body);
    return c.json(result as Record<string, unknown>);
  });
  app.put("/v1/domains/:name/nets/:index/limits", async (c) => {
    const d = daemon.get(c.req.param("name"));
    const body = checked(NetLimitsRequest, await readJson(c, true)) as NetLimitsRequest;
    const result = await d.setNetLimits(Number(c.req.param("index")), body);
    return c.json(result as Record<string, unknown>);
  });
  app.get("/v1/domains/:name/memory", async (c) => {
    const d = daemon.get(c.req.param("name"));
    const report = await d.memoryReport();
    if (report === null) throw new DomainError("CONFLICT", `domain ${d.name} is not running`);
    return c.json(report);
  });
  app.put("/v1/domains/:name/memory", async (c) => {
    const d = daemon.get(c.req.param("name"));
    const body = await readJson(c, true);
    checked(MemoryRequest, body);
    let bytes: number;
    try {
      bytes = sizeBytes("size", (body as MemoryRequest).size);
    } catch (e) {
      throw new DomainError("INVALID", e instanceof Error ? e.message : String(e));
    }
    await d.setMemory(bytes);
    return c.json((await d.memoryReport()) ?? {});
  });
  app.post("/v1/domains/:name/:action", async (c) => {
    const d = daemon.get(c.req.param("name"));
    switch (c.req.param("action")) {
      case "start":
        await d.start();
        break;
      case "shutdown": {
        const body = (await readJson(c, false)) ?? {};
        checked(ShutdownRequest, body);
        const req = body as ShutdownRequest;
        await d.shutdown({
          wait: req.wait === true,
          timeoutMs: (req.timeoutSeconds ?? 120) * 1000,
        });
        break;
      }
      case "reboot":
        await d.reboot();
        break;
      case "destroy":
        await d.destroy();
        break;
      case "pause":
        await d.pause();
        break;
      case "resume":
        await d.resume();
        break;
      default:
        throw new DomainError("NOT_FOUND", `no action "${c.req.param("action")}"`);
    }
    return c.json(d.info());
  });
  app.get("/v1/events", (c) =>
    streamSSE(c, async (stream) => {
      const last = Number(c.req.header("last-event-id") ?? "0");
      const queue: DomainEvent[] =
        Number.isSafeInteger(last) && last > 0 ? daemon.eventsSince(last) : [];
      let wake: (() => void) | undefined;
      const onEvent = (e: DomainEvent) => {
        queue.push(e);
        wake?.();
      };
      daemon.events.on("event", onEvent);
      stream.onAbort(() => {
        daemon.events.off("event", onEvent);
        wake?.();
      });
      // A comment line first, so a client knows the stream is open before any event.
      await stream.write(": vessel events\n\n");
      while (!stream.aborted) {
        const e = queue.shift();
        if (e) {
          await stream.writeSSE({ event: e.type, id: String(e.seq), data: JSON.stringify(e) });
          continue;
        }
        await new Promise<void>((r) => {
          wake = r;
          // A heartbeat keeps proxies and idle clients from closing a quiet stream.
          setTimeout(r, 15_000).unref();
        });
        wake = undefined;
        if (queue.length === 0 && !stream.aborted) await stream.write(": keep-alive\n\n");
      }
      daemon.events.off("event", onEvent);
    }),
  );
  return app;
}

/** Serve `app` on a Unix socket (mode 0600: only the daemon's user may talk to it). */
export async function listenUnix(app: Hono, path: string): Promise<Server> {
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`);
    unlinkSync(path);
  }
  const server = createServer(getRequestListener(app.fetch));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

export async function listenTcp(app: Hono, host: string, port: number): Promise<Server> {
  const server = createServer(getRequestListener(app.fetch));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
