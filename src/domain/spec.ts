// The native domain spec: what a Vessel domain is, as a person writes it (YAML or JSON) and
// as the daemon stores it. The schema (TypeBox, so it is JSON Schema too and the OpenAPI
// document reuses it) is the one definition; `parseDomainSpec` checks a value against it and
// against the rules a schema cannot say, and reports the first problem naming its field.
// The importers (xl.cfg, libvirt XML, Firecracker JSON) all produce this shape.

import { type Static, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { parse as parseYaml } from "yaml";

/** What happens when the guest powers off, asks for a reboot, or crashes (xl.cfg's on_*). */
export const LifecycleAction = Type.Union(
  [Type.Literal("destroy"), Type.Literal("restart"), Type.Literal("preserve")],
  { description: "destroy: stop it; restart: start it again; preserve: keep it for inspection" },
);
export type LifecycleAction = Static<typeof LifecycleAction>;

/** A size: bytes as an integer, or text with a unit ("512M", "2G", "1048576K"). */
export const Size = Type.Union([
  Type.Integer({ minimum: 1, description: "bytes" }),
  Type.String({ pattern: "^\\s*\\d+\\s*[KkMmGgTt]?(?:i?[Bb])?\\s*$", description: "e.g. 512M" }),
]);

export const DOMAIN_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

/** Token-bucket I/O limits: bytes per second and operations per second, each with a burst. */
export const IoLimits = Type.Object(
  {
    bandwidth: Type.Optional(Type.Integer({ minimum: 1, description: "bytes per second" })),
    bandwidthBurst: Type.Optional(
      Type.Integer({ minimum: 1, description: "bucket size in bytes (default one second's)" }),
    ),
    ops: Type.Optional(
      Type.Integer({ minimum: 1, description: "requests (disk) or frames (network) per second" }),
    ),
    opsBurst: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { additionalProperties: false },
);
export type IoLimits = Static<typeof IoLimits>;

export const DiskSpec = Type.Object(
  {
    path: Type.String({ minLength: 1, description: "raw image file on the host" }),
    readOnly: Type.Optional(Type.Boolean()),
    serial: Type.Optional(Type.String({ maxLength: 20, description: "virtio-blk serial ID" })),
    limits: Type.Optional(IoLimits),
  },
  { additionalProperties: false },
);

/** A network device's limits each way: rx is what the guest receives, tx what it sends. */
export const NetLimits = Type.Object(
  { rx: Type.Optional(IoLimits), tx: Type.Optional(IoLimits) },
  { additionalProperties: false },
);
export type NetLimits = Static<typeof NetLimits>;

export const NetSpec = Type.Object(
  {
    tap: Type.String({ pattern: "^[A-Za-z0-9_.-]{1,15}$", description: "TAP interface name" }),
    mac: Type.Optional(Type.String({ pattern: "^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$" })),
    /** The kernel's vhost-net worker carries the frames (needs /dev/vhost-net; no limits). */
    vhost: Type.Optional(Type.Boolean()),
    limits: Type.Optional(NetLimits),
  },
  { additionalProperties: false },
);

/** The I/O limits as the devices' token buckets take them (src/devices/virtio/rate_limiter). */
export function bucketsFor(limits: IoLimits | undefined): {
  bandwidth?: { rate: number; burst?: number };
  ops?: { rate: number; burst?: number };
} {
  if (!limits) return {};
  return {
    ...(limits.bandwidth
      ? {
          bandwidth: {
            rate: limits.bandwidth,
            ...(limits.bandwidthBurst ? { burst: limits.bandwidthBurst } : {}),
          },
        }
      : {}),
    ...(limits.ops
      ? { ops: { rate: limits.ops, ...(limits.opsBurst ? { burst: limits.opsBurst } : {}) } }
      : {}),
  };
}

/** Host CPUs in Linux cpulist form ("0-3,8", as cpuset.cpus and `taskset -c` take them). */
export const CpuList = Type.String({
  pattern: "^\\d+(?:-\\d+)?(?:,\\d+(?:-\\d+)?)*$",
  description: "host CPU numbers and ranges, e.g. 0-3,8",
});

/** The CPU numbers a (schema-checked) cpulist names, ascending. */
export function expandCpuList(list: string): number[] {
  const cpus = new Set<number>();
  for (const range of list.split(",")) {
    const [lo = 0, hi = lo] = range.split("-").map(Number);
    for (let c = lo; c <= hi && c <= MAX_HOST_CPU; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** Highest host CPU number a cpulist may name (the kernel's NR_CPUS ceiling on x86-64). */
export const MAX_HOST_CPU = 8191;

/** io.max and io.weight lines for one host block device (libvirt's blkiotune/device). */
export const IoDeviceSpec = Type.Object(
  {
    device: Type.String({
      minLength: 1,
      description:
        "a host block device (/dev/sda), MAJ:MIN, or a file (its file system's disk is meant)",
    }),
    weight: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })),
    readBps: Type.Optional(Type.Integer({ minimum: 1, description: "bytes per second" })),
    writeBps: Type.Optional(Type.Integer({ minimum: 1, description: "bytes per second" })),
    readIops: Type.Optional(Type.Integer({ minimum: 1 })),
    writeIops: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { additionalProperties: false },
);
export type IoDeviceSpec = Static<typeof IoDeviceSpec>;

export const VsockSpec = Type.Object(
  {
    cid: Type.Integer({ minimum: 3, maximum: 2 ** 32 - 2, description: "guest context ID" }),
    uds: Type.String({ minLength: 1, description: "host Unix socket backing the device" }),
  },
  { additionalProperties: false },
);

export const DomainSpec = Type.Object(
  {
    name: Type.String({ pattern: DOMAIN_NAME_PATTERN }),
    uuid: Type.Optional(
      Type.String({
        pattern: "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
      }),
    ),
    memory: Size,
    /** Ceiling for the balloon (xl's maxmem, libvirt's memory when currentMemory is lower). */
    maxMemory: Type.Optional(Size),
    vcpus: Type.Integer({ minimum: 1, maximum: 254 }),
    kernel: Type.String({ minLength: 1, description: "bzImage or ELF vmlinux (PVH)" }),
    initrd: Type.Optional(Type.String({ minLength: 1 })),
    cmdline: Type.Optional(Type.String({ maxLength: 4096 })),
    disks: Type.Optional(Type.Array(DiskSpec, { maxItems: 8 })),
    nets: Type.Optional(Type.Array(NetSpec, { maxItems: 4 })),
    console: Type.Optional(Type.Union([Type.Literal("serial"), Type.Literal("virtio")])),
    rng: Type.Optional(Type.Boolean()),
    balloon: Type.Optional(Type.Boolean()),
    onPoweroff: Type.Optional(LifecycleAction),
    onReboot: Type.Optional(LifecycleAction),
    onCrash: Type.Optional(LifecycleAction),
    autostart: Type.Optional(Type.Boolean()),
    // Resource control: applied by the daemon (cgroup v2 and thread affinity, see
    // src/daemon/domain.ts); `vessel run` alone does not. maxVcpus (hotplug) and vsock are
    // carried over by the importers but not applied yet; the importers warn about those.
    /** vCPUs the guest may bring online later (xl maxvcpus, libvirt vcpu above current). */
    maxVcpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 254 })),
    /** Host CPUs every vCPU is pinned to (xl cpus="...", libvirt vcpu cpuset=). */
    cpus: Type.Optional(CpuList),
    /** Per-vCPU pinning, keyed by vCPU number; overrides `cpus` for that vCPU. */
    vcpuPin: Type.Optional(
      Type.Record(Type.String({ pattern: "^(?:0|[1-9]\\d{0,2})$" }), CpuList, {
        additionalProperties: false,
      }),
    ),
    /** Relative CPU share on a contended host, xl's scale: 256 is the default. */
    cpuWeight: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    /** Ceiling in percent of one host CPU (xl cap: 100 is one CPU, 400 four). */
    cpuCap: Type.Optional(Type.Integer({ minimum: 1, maximum: 254 * 100 })),
    /** memory.max instead of the computed guest RAM plus VMM overhead (libvirt hard_limit). */
    memoryLimit: Type.Optional(Size),
    /** memory.high: above it the kernel reclaims from the domain (libvirt soft_limit). */
    memorySoftLimit: Type.Optional(Size),
    /** io.weight, cgroup's scale: 1..10000, 100 the default (libvirt blkiotune weight). */
    ioWeight: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })),
    /** Per host block device io.max and io.weight (libvirt blkiotune/device). */
    ioDevices: Type.Optional(Type.Array(IoDeviceSpec, { maxItems: 16 })),
    /** Host CPUs for the VMM's own threads (main and I/O), apart from the vCPUs'. */
    vmmCpus: Type.Optional(CpuList),
    /** A virtio-vsock device (Firecracker's vsock). */
    vsock: Type.Optional(VsockSpec),
  },
  { additionalProperties: false, $id: "DomainSpec" },
);
export type DomainSpec = Static<typeof DomainSpec>;

/** A spec problem: `field` is a JSON-pointer-like path ("disks/0/path"). */
export class SpecError extends Error {
  readonly code = "INVALID_SPEC";
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(field ? `${field}: ${problem}` : problem);
    this.name = "SpecError";
  }
}

const UNIT: Record<string, number> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Bytes of a Size (already schema-checked); plain numbers in text are bytes. */
export function sizeBytes(field: string, size: number | string): number {
  if (typeof size === "number") return size;
  const m = /^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(size);
  if (!m) throw new SpecError(field, `"${size}" is not a size (use e.g. 512M)`);
  const bytes = Number(m[1]) * (UNIT[(m[2] ?? "").toLowerCase()] ?? 1);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new SpecError(field, "out of range");
  return bytes;
}

/** Check `value` (parsed JSON/YAML) and return it as a DomainSpec, or throw SpecError. */
export function parseDomainSpec(value: unknown): DomainSpec {
  const first = Value.Errors(DomainSpec, value).First();
  if (first) {
    const field = first.path.replace(/^\//, "");
    throw new SpecError(field || "spec", describeProblem(value, field, first.message));
  }
  const spec = value as DomainSpec;
  const memory = sizeBytes("memory", spec.memory);
  if (memory % 4096 !== 0) throw new SpecError("memory", "must be a multiple of 4 KiB");
  if (memory < 16 * 2 ** 20) throw new SpecError("memory", "too little memory (at least 16M)");
  if (spec.maxMemory !== undefined && sizeBytes("maxMemory", spec.maxMemory) < memory)
    throw new SpecError("maxMemory", "is below memory");
  checkMemoryLimits(spec, Math.max(memory, sizeBytes("maxMemory", spec.maxMemory ?? memory)));
  (spec.ioDevices ?? []).forEach((d, i) => {
    const { device: _device, ...settings } = d;
    if (Object.keys(settings).length === 0)
      throw new SpecError(
        `ioDevices/${i}`,
        "sets nothing (weight, readBps, writeBps, readIops or writeIops)",
      );
    const earlier = (spec.ioDevices ?? []).findIndex((e) => e.device === d.device);
    if (earlier < i) throw new SpecError(`ioDevices/${i}/device`, `same as ioDevices/${earlier}`);
  });
  if (spec.maxVcpus !== undefined && spec.maxVcpus < spec.vcpus)
    throw new SpecError("maxVcpus", "is below vcpus");
  if (spec.cpus !== undefined) checkCpuList("cpus", spec.cpus);
  if (spec.vmmCpus !== undefined) checkCpuList("vmmCpus", spec.vmmCpus);
  (spec.disks ?? []).forEach((d, i) => {
    checkBursts(`disks/${i}/limits`, d.limits);
  });
  (spec.nets ?? []).forEach((n, i) => {
    checkBursts(`nets/${i}/limits/rx`, n.limits?.rx);
    checkBursts(`nets/${i}/limits/tx`, n.limits?.tx);
    if (n.vhost && (n.limits?.rx || n.limits?.tx))
      throw new SpecError(
        `nets/${i}/limits`,
        "not with vhost: the kernel moves the frames, past the VMM's meters",
      );
  });
  for (const [vcpu, list] of Object.entries(spec.vcpuPin ?? {})) {
    if (Number(vcpu) >= (spec.maxVcpus ?? spec.vcpus))
      throw new SpecError(`vcpuPin/${vcpu}`, "no such vCPU");
    checkCpuList(`vcpuPin/${vcpu}`, list);
  }
  return spec;
}

function checkMemoryLimits(spec: DomainSpec, ram: number): void {
  const hard =
    spec.memoryLimit === undefined ? undefined : sizeBytes("memoryLimit", spec.memoryLimit);
  // Below the guest's RAM the kernel would kill the VMM once the guest used its memory.
  if (hard !== undefined && hard < ram)
    throw new SpecError("memoryLimit", `is below the guest's RAM (${ram} bytes)`);
  if (spec.memorySoftLimit === undefined) return;
  const soft = sizeBytes("memorySoftLimit", spec.memorySoftLimit);
  if (hard !== undefined && soft > hard)
    throw new SpecError("memorySoftLimit", "is above memoryLimit");
}

function checkBursts(field: string, limits: IoLimits | undefined): void {
  if (limits?.bandwidthBurst !== undefined && limits.bandwidth === undefined)
    throw new SpecError(`${field}/bandwidthBurst`, "needs bandwidth as well");
  if (limits?.opsBurst !== undefined && limits.ops === undefined)
    throw new SpecError(`${field}/opsBurst`, "needs ops as well");
}

function checkCpuList(field: string, list: string): void {
  for (const range of list.split(",")) {
    const [lo, hi = lo] = range.split("-").map(Number);
    if (lo === undefined || hi === undefined || lo > hi)
      throw new SpecError(field, `"${range}" is not a CPU range (low-high)`);
    if (hi > MAX_HOST_CPU) throw new SpecError(field, `CPU ${hi} is above ${MAX_HOST_CPU}`);
  }
}

function describeProblem(value: unknown, field: string, message: string): string {
  if (field === "") return "expected an object with name, memory, vcpus and kernel";
  const parts = field.split("/");
  let parent: unknown = value;
  for (const p of parts.slice(0, -1)) parent = (parent as Record<string, unknown>)?.[p];
  const key = parts[parts.length - 1] ?? "";
  if (typeof parent === "object" && parent !== null && !(key in parent)) return "required";
  if (field.startsWith("vcpuPin/") && message.startsWith("Unexpected property"))
    return "keys are vCPU numbers (0, 1, ...)";
  if (message.startsWith("Unexpected property")) return "unknown key (not part of the domain spec)";
  // TypeBox reports a union mismatch without saying what would do; say it.
  if (/^(memory|maxMemory|memoryLimit|memorySoftLimit)$/.test(field))
    return "expected bytes or a size like 512M";
  if (/^on(Poweroff|Reboot|Crash)$/.test(field))
    return "expected one of destroy, restart, preserve";
  if (field === "console") return "expected serial or virtio";
  if (field === "cpus" || field === "vmmCpus" || field.startsWith("vcpuPin/"))
    return "expected a host CPU list like 0-3,8";
  return message.charAt(0).toLowerCase() + message.slice(1);
}

/** Parse a native spec file's text: JSON or YAML (YAML is a superset; errors name the line). */
export function parseDomainSpecText(text: string, source = "spec"): DomainSpec {
  let value: unknown;
  try {
    value = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    throw new SpecError("", `${source}: not valid YAML or JSON: ${msg}`);
  }
  return parseDomainSpec(value);
}

/** Fields whose absence means something (no limit, no pinning, no device): no default. */
type OptionalWithoutDefault =
  | "uuid"
  | "maxMemory"
  | "initrd"
  | "cmdline"
  | "maxVcpus"
  | "cpus"
  | "vcpuPin"
  | "cpuWeight"
  | "cpuCap"
  | "vmmCpus"
  | "memoryLimit"
  | "memorySoftLimit"
  | "ioWeight"
  | "ioDevices"
  | "vsock";

/** The spec with defaults filled in, as the VMM process is started from it. */
export function withDefaults(
  spec: DomainSpec,
): Required<Omit<DomainSpec, OptionalWithoutDefault>> & DomainSpec {
  return {
    disks: [],
    nets: [],
    console: "serial",
    rng: false,
    balloon: false,
    onPoweroff: "destroy",
    onReboot: "restart",
    onCrash: "destroy",
    autostart: false,
    ...spec,
  };
}
