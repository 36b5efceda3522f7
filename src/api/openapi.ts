// The OpenAPI 3.1 document of the daemon's API, generated from the same TypeBox schemas the
// daemon and client use. docs/openapi.json is this document committed to the repository (a
// test fails when they differ: `node dist/src/api/openapi.js > docs/openapi.json` refreshes
// it); the daemon serves it at GET /v1/openapi.json.

import { fileURLToPath } from "node:url";
import { SCHEMAS } from "./schemas.js";

type Json = Record<string, unknown>;

/** A schema without TypeBox's symbols or $id (OpenAPI components are named by key instead). */
function plain(schema: unknown): Json {
  return JSON.parse(JSON.stringify(schema, (k, v) => (k === "$id" ? undefined : v))) as Json;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string, description: string) => ({
  description,
  content: { "application/json": { schema: ref(name) } },
});
const errors = {
  "400": json("ErrorBody", "the request is invalid (the message names the field)"),
  "401": json("ErrorBody", "TCP only: no valid bearer token"),
  "404": json("ErrorBody", "no such domain"),
  "409": json("ErrorBody", "the domain's state or an operation in progress forbids it"),
  "500": json("ErrorBody", "the operation failed (e.g. the VMM did not start)"),
};
const nameParam = {
  name: "name",
  in: "path",
  required: true,
  schema: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" },
};

function action(summary: string, extra: Json = {}, more: Json = {}): Json {
  return {
    post: {
      summary,
      parameters: [nameParam],
      ...extra,
      responses: {
        "200": json("DomainInfo", "the domain after the operation"),
        ...errors,
        ...more,
      },
    },
  };
}

export function openApiDocument(): Json {
  const schemas: Json = {};
  for (const s of SCHEMAS) schemas[String((s as { $id?: string }).$id)] = plain(s);
  return {
    openapi: "3.1.0",
    info: {
      title: "Vessel control plane",
      version: "1.0.0",
      description:
        "Domains (guest VMs) managed by `vessel daemon`. Served on a Unix socket (file permissions are the access control) and optionally on TCP, where every request needs `Authorization: Bearer <token>`.",
    },
    servers: [{ url: "/" }],
    components: {
      schemas,
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    },
    paths: {
      "/v1/version": {
        get: {
          summary: "daemon identity and where it keeps its files",
          responses: { "200": json("VersionInfo", "the daemon"), "401": errors["401"] },
        },
      },
      "/v1/openapi.json": {
        get: {
          summary: "this document",
          responses: { "200": { description: "OpenAPI 3.1 document" } },
        },
      },
      "/v1/domains": {
        get: {
          summary: "every domain, defined or running (virsh list --all)",
          responses: { "200": json("DomainList", "domains by name"), "401": errors["401"] },
        },
        post: {
          summary:
            "define a persistent domain (transient=true: create and start one that is forgotten when it stops; start=true: define and start)",
          parameters: [
            { name: "start", in: "query", schema: { type: "boolean" } },
            { name: "transient", in: "query", schema: { type: "boolean" } },
          ],
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("DomainSpec") } },
          },
          responses: { "201": json("DomainInfo", "the domain"), ...errors },
        },
      },
      "/v1/domains/{name}": {
        get: {
          summary: "one domain",
          parameters: [nameParam],
          responses: { "200": json("DomainInfo", "the domain"), ...errors },
        },
        delete: {
          summary: "undefine (a running domain carries on as a transient one)",
          parameters: [nameParam],
          responses: { "204": { description: "undefined" }, ...errors },
        },
      },
      "/v1/domains/{name}/start": action("start a defined domain"),
      "/v1/domains/{name}/shutdown": action(
        "press the ACPI power button; with wait, until the guest is off (504 on timeout, the domain still running)",
        {
          requestBody: {
            required: false,
            content: { "application/json": { schema: ref("ShutdownRequest") } },
          },
        },
        { "504": json("ErrorBody", "wait: the guest did not shut down in time (it still runs)") },
      ),
      "/v1/domains/{name}/reboot": action("ACPI reboot: power button, then start again"),
      "/v1/domains/{name}/destroy": action("force off (stop the VMM, SIGKILL if it must)"),
      "/v1/domains/{name}/pause": action("stop the vCPUs"),
      "/v1/domains/{name}/resume": action("let the vCPUs run again"),
      "/v1/domains/{name}/memory": {
        get: {
          summary:
            "memory: the balloon's target and statistics (the guest's view) and the VMM's resident memory (the host's)",
          parameters: [nameParam],
          responses: { "200": json("MemoryReport", "memory"), ...errors },
        },
        put: {
          summary:
            "mem-set: drive the balloon so the guest has this much RAM (64 MiB .. maxMemory)",
          parameters: [nameParam],
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("MemoryRequest") } },
          },
          responses: { "200": json("MemoryReport", "memory after the request"), ...errors },
        },
      },
      "/v1/domains/{name}/vcpus": {
        get: {
          summary: "each vCPU's host thread, the CPUs it may run on and its CPU time",
          parameters: [nameParam],
          responses: { "200": json("VcpuList", "vCPUs"), ...errors },
        },
      },
      "/v1/domains/{name}/vcpus/{vcpu}/pin": {
        put: {
          summary: "pin one vCPU's thread to host CPUs (vcpu-pin), at runtime",
          parameters: [
            nameParam,
            { name: "vcpu", in: "path", required: true, schema: { type: "integer", minimum: 0 } },
          ],
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("PinRequest") } },
          },
          responses: { "200": json("VcpuList", "vCPUs after pinning"), ...errors },
        },
      },
      "/v1/domains/{name}/schedule": {
        put: {
          summary:
            "change the CPU cap and weight (xl sched-credit), at runtime and for later starts",
          parameters: [nameParam],
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("ScheduleRequest") } },
          },
          responses: { "200": json("DomainInfo", "the domain"), ...errors },
        },
      },
      "/v1/domains/{name}/disks/{index}/limits": {
        put: {
          summary:
            "replace one disk's I/O limits (token buckets for bytes/s and requests/s), at runtime and for later starts; {} removes them",
          parameters: [
            nameParam,
            { name: "index", in: "path", required: true, schema: { type: "integer", minimum: 0 } },
          ],
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("DiskLimitsRequest") } },
          },
          responses: {
            "200": {
              description: "the disk's limits now, and the time requests were held back",
              content: { "application/json": { schema: { type: "object" } } },
            },
            ...errors,
          },
        },
      },
      "/v1/domains/{name}/nets/{index}/limits": {
        put: {
          summary:
            "replace one network device's limits each way (rx: what the guest receives, tx: what it sends), at runtime and for later starts; {} removes them; not with vhost",
          parameters: [
            nameParam,
            { name: "index", in: "path", required: true, schema: { type: "integer", minimum: 0 } },
          ],
          requestBody: {
            required: true,
            content: { "application/json": { schema: ref("NetLimitsRequest") } },
          },
          responses: {
            "200": {
              description: "the device's limits each way now, and the time each was held back",
              content: { "application/json": { schema: { type: "object" } } },
            },
            ...errors,
          },
        },
      },
      "/metrics": {
        get: {
          summary:
            "Prometheus text: CPU time per vCPU, exits by reason, bytes and operations per device, throttled time, balloon size, VMM resident memory",
          responses: {
            "200": { description: "text/plain; version=0.0.4" },
            "401": errors["401"],
          },
        },
      },
      "/v1/domains/{name}/stats": {
        get: {
          summary: "the VMM's counters (exits by reason, buses, devices)",
          parameters: [nameParam],
          responses: {
            "200": {
              description: "counters",
              content: { "application/json": { schema: { type: "object" } } },
            },
            ...errors,
          },
        },
      },
      "/v1/events": {
        get: {
          summary:
            "lifecycle events as server-sent events (event: the type, data: a DomainEvent); Last-Event-ID resumes",
          responses: {
            "200": {
              description: "text/event-stream of DomainEvent",
              content: { "text/event-stream": { schema: ref("DomainEvent") } },
            },
            "401": errors["401"],
          },
        },
      },
    },
    security: [{}, { bearer: [] }],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${JSON.stringify(openApiDocument(), null, 2)}\n`);
}
