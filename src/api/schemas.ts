// The API's data shapes, defined once as TypeBox schemas: the daemon answers with them, the
// OpenAPI document (openapi.ts) is generated from them, and the TypeScript client's types are
// their Static<> types, so the three cannot drift apart.

import { type Static, Type } from "@sinclair/typebox";
import { CpuList, DomainSpec, IoLimits, NetLimits, Size } from "../domain/spec.js";

export { DomainSpec };

export const DomainState = Type.Union(
  [
    Type.Literal("running"),
    Type.Literal("paused"),
    Type.Literal("shutoff"),
    Type.Literal("crashed"),
  ],
  { $id: "DomainState" },
);
export type DomainState = Static<typeof DomainState>;

export const DomainInfo = Type.Object(
  {
    name: Type.String(),
    uuid: Type.Union([Type.String(), Type.Null()]),
    state: DomainState,
    /** Why it is in that state, in libvirt's words (booted, user, shutdown, destroyed, crashed...). */
    reason: Type.String(),
    persistent: Type.Boolean(),
    autostart: Type.Boolean(),
    vcpus: Type.Integer(),
    memoryBytes: Type.Integer(),
    /** The VMM process while it runs (its host pid; a jailed VMM's launcher is its parent). */
    pid: Type.Union([Type.Integer(), Type.Null()]),
    startedAt: Type.Union([Type.String(), Type.Null()]),
    /** Unix socket of the console while it runs (local clients attach to it directly). */
    consoleSocket: Type.Union([Type.String(), Type.Null()]),
    /** Whether the running VMM is jailed (namespaces, own uid, seccomp); null when off. */
    jailed: Type.Union([Type.Boolean(), Type.Null()]),
    /** The domain's cgroup v2 directory while it runs (null where the host has none). */
    cgroup: Type.Union([Type.String(), Type.Null()]),
    /** Operation in progress, if any (a second one is refused with 409). */
    operation: Type.Union([Type.String(), Type.Null()]),
    spec: DomainSpec,
  },
  { additionalProperties: false, $id: "DomainInfo" },
);
export type DomainInfo = Static<typeof DomainInfo>;

export const DomainList = Type.Object(
  { domains: Type.Array(DomainInfo) },
  { additionalProperties: false, $id: "DomainList" },
);
export type DomainList = Static<typeof DomainList>;

export const EventType = Type.Union([
  Type.Literal("defined"),
  Type.Literal("undefined"),
  Type.Literal("started"),
  Type.Literal("suspended"),
  Type.Literal("resumed"),
  Type.Literal("shutdown"),
  Type.Literal("stopped"),
  Type.Literal("crashed"),
]);

export const DomainEvent = Type.Object(
  {
    type: EventType,
    /** libvirt's detail for the event (booted, paused, unpaused, finished, destroyed, ...). */
    reason: Type.String(),
    domain: Type.String(),
    state: DomainState,
    time: Type.String(),
    seq: Type.Integer(),
  },
  { additionalProperties: false, $id: "DomainEvent" },
);
export type DomainEvent = Static<typeof DomainEvent>;

export const ErrorBody = Type.Object(
  {
    error: Type.Object({ code: Type.String(), message: Type.String() }),
  },
  { additionalProperties: false, $id: "ErrorBody" },
);
export type ErrorBody = Static<typeof ErrorBody>;

export const ShutdownRequest = Type.Object(
  {
    wait: Type.Optional(Type.Boolean()),
    timeoutSeconds: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 3600 })),
  },
  { additionalProperties: false, $id: "ShutdownRequest" },
);
export type ShutdownRequest = Static<typeof ShutdownRequest>;

export const MemoryRequest = Type.Object(
  { size: Size },
  { additionalProperties: false, $id: "MemoryRequest" },
);
export type MemoryRequest = Static<typeof MemoryRequest>;

export const MemoryReport = Type.Object(
  {
    /** RAM the VMM gave the guest at boot (maxMemory with a balloon). */
    bootBytes: Type.Integer(),
    /** What the guest should have: memory, or the last mem-set. */
    targetBytes: Type.Integer(),
    /** The host's view: the VMM process's resident memory. */
    vmmResidentBytes: Type.Union([Type.Integer(), Type.Null()]),
    /** The guest's view, from virtio-balloon (null without a balloon). */
    balloon: Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()]),
  },
  { additionalProperties: false, $id: "MemoryReport" },
);
export type MemoryReport = Static<typeof MemoryReport>;

export const VcpuList = Type.Object(
  {
    vcpus: Type.Array(
      Type.Object(
        {
          vcpu: Type.Integer(),
          /** Host thread id of the vCPU's thread. */
          tid: Type.Integer(),
          /** Host CPUs it may run on (sched_getaffinity). */
          cpus: Type.Array(Type.Integer()),
          cpuTimeNs: Type.Union([Type.Integer(), Type.Null()]),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false, $id: "VcpuList" },
);
export type VcpuList = Static<typeof VcpuList>;

export const PinRequest = Type.Object(
  { cpus: CpuList },
  { additionalProperties: false, $id: "PinRequest" },
);
export type PinRequest = Static<typeof PinRequest>;

export const ScheduleRequest = Type.Object(
  {
    /** Percent of one host CPU (xl cap); null removes the cap. */
    cpuCap: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 25400 }), Type.Null()])),
    /** xl's weight scale (256 is the default); null restores the default. */
    cpuWeight: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: 65535 }), Type.Null()]),
    ),
  },
  { additionalProperties: false, $id: "ScheduleRequest" },
);
export type ScheduleRequest = Static<typeof ScheduleRequest>;

/** A disk's I/O limits (the domain spec's disks[].limits); {} removes them. */
export const DiskLimitsRequest = Type.Composite([IoLimits], {
  additionalProperties: false,
  $id: "DiskLimitsRequest",
});
export type DiskLimitsRequest = Static<typeof DiskLimitsRequest>;

/** A network device's limits each way (nets[].limits); {} removes them. */
export const NetLimitsRequest = Type.Composite([NetLimits], {
  additionalProperties: false,
  $id: "NetLimitsRequest",
});
export type NetLimitsRequest = Static<typeof NetLimitsRequest>;

export const VersionInfo = Type.Object(
  {
    name: Type.Literal("vessel"),
    version: Type.String(),
    api: Type.Literal("v1"),
    pid: Type.Integer(),
    stateDir: Type.String(),
    runtimeDir: Type.String(),
    /** Where domains' cgroups are made, or why limits cannot be applied on this host. */
    cgroups: Type.String(),
  },
  { additionalProperties: false, $id: "VersionInfo" },
);
export type VersionInfo = Static<typeof VersionInfo>;

/** Every named schema, for the OpenAPI document's components. */
export const SCHEMAS = [
  DomainSpec,
  DomainState,
  DomainInfo,
  DomainList,
  DomainEvent,
  ErrorBody,
  ShutdownRequest,
  MemoryRequest,
  MemoryReport,
  VcpuList,
  PinRequest,
  ScheduleRequest,
  DiskLimitsRequest,
  NetLimitsRequest,
  VersionInfo,
] as const;
