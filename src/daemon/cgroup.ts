// One cgroup v2 per domain, under <root>/vessel/<name>: the shares the spec gives (cpu.max
// for a cap, cpu.weight for a share, memory.max for the guest's RAM plus the VMM's own
// overhead, io.max where asked) written before the VMM is moved in. On a host without a
// writable cgroup v2 hierarchy the daemon says so once and carries on without limits.

import {
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";

export interface CgroupLimits {
  /** Percent of one host CPU (xl cap: 100 = one CPU, 50 = half); undefined: no cap. */
  cpuCapPercent?: number;
  /** cgroup cpu.weight, 1..10000 (100 is the kernel's default). */
  cpuWeight?: number;
  memoryMaxBytes?: number;
  /** memory.high; undefined: "max" (no reclaim pressure before memory.max). */
  memoryHighBytes?: number;
}

/** What the io controller takes for a domain: its default weight and per-disk lines. */
export interface CgroupIoLimits {
  weight?: number;
  devices: IoDeviceLimits[];
}

export interface IoDeviceLimits {
  /** The whole disk's "MAJ:MIN" (io.max refuses partitions). */
  disk: string;
  weight?: number;
  readBps?: number;
  writeBps?: number;
  readIops?: number;
  writeIops?: number;
}

/** cpu.max's period: 100 ms, the kernel's default, so a cap is even at a human scale. */
const CPU_PERIOD_US = 100_000;
const WANTED = ["cpu", "memory", "io", "cpuset", "pids"];

export type CgroupSupport =
  | { ok: true; root: string; controllers: string[] }
  | { ok: false; reason: string };

/** Find (and prepare) the hierarchy domains' cgroups go under. */
export function detectCgroups(mount = "/sys/fs/cgroup"): CgroupSupport {
  const controllersFile = join(mount, "cgroup.controllers");
  if (!existsSync(controllersFile))
    return { ok: false, reason: `${mount} is not a cgroup v2 hierarchy (cgroup v1 or none)` };
  const root = join(mount, "vessel");
  try {
    const available = readFileSync(controllersFile, "utf8").trim().split(/\s+/);
    const enable = WANTED.filter((c) => available.includes(c));
    mkdirSync(root, { recursive: true });
    // Controllers must be enabled in each parent for a child to have them.
    writeFileSync(join(mount, "cgroup.subtree_control"), enable.map((c) => `+${c}`).join(" "));
    writeFileSync(join(root, "cgroup.subtree_control"), enable.map((c) => `+${c}`).join(" "));
    const controllers = readFileSync(join(root, "cgroup.subtree_control"), "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    return { ok: true, root, controllers };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    return { ok: false, reason: `cannot manage cgroups under ${mount} (${code}): no delegation` };
  }
}

export class DomainCgroup {
  readonly path: string;

  constructor(
    support: { root: string; controllers: readonly string[] },
    name: string,
    private readonly controllers = support.controllers,
  ) {
    this.path = join(support.root, name);
  }

  /**
   * Create the cgroup and write the limits. A leftover empty one is removed first, so no
   * io.max line or memory.high of an earlier start outlives a changed spec.
   */
  create(limits: CgroupLimits): void {
    this.remove();
    mkdirSync(this.path, { recursive: true });
    this.apply(limits);
  }

  /**
   * Write the io controller's files; returns what the host could not take, for the log
   * (the rule: where the host lacks a controller, say so and carry on).
   */
  applyIo(io: CgroupIoLimits): string[] {
    const asked = io.weight !== undefined || io.devices.length > 0;
    if (!asked) return [];
    if (!this.controllers.includes("io"))
      return ["the io controller is not available here: ioWeight and ioDevices are not applied"];
    const notes: string[] = [];
    const weights = [
      ...(io.weight !== undefined ? [`default ${io.weight}`] : []),
      ...io.devices.flatMap((d) => (d.weight !== undefined ? [`${d.disk} ${d.weight}`] : [])),
    ];
    // io.weight needs the kernel's iocost, io.bfq.weight the BFQ scheduler; libvirt writes
    // whichever the host has, and so does Vessel.
    let weighed = weights.length === 0;
    for (const file of ["io.weight", "io.bfq.weight"]) {
      if (weights.length === 0 || !existsSync(join(this.path, file))) continue;
      for (const line of weights) this.write(file, line);
      weighed = true;
    }
    if (!weighed)
      notes.push("the kernel has neither io.weight nor io.bfq.weight: weights not applied");
    for (const d of io.devices) {
      const max = (v: number | undefined) => (v === undefined ? "max" : String(v));
      if ([d.readBps, d.writeBps, d.readIops, d.writeIops].every((v) => v === undefined)) continue;
      this.write(
        "io.max",
        `${d.disk} rbps=${max(d.readBps)} wbps=${max(d.writeBps)} riops=${max(d.readIops)} wiops=${max(d.writeIops)}`,
      );
    }
    return notes;
  }

  apply(limits: CgroupLimits): void {
    if (this.controllers.includes("cpu")) {
      const cap = limits.cpuCapPercent;
      this.write(
        "cpu.max",
        cap === undefined
          ? `max ${CPU_PERIOD_US}`
          : `${Math.max(1000, Math.round((cap / 100) * CPU_PERIOD_US))} ${CPU_PERIOD_US}`,
      );
      this.write("cpu.weight", String(limits.cpuWeight ?? 100));
    }
    if (this.controllers.includes("memory") && limits.memoryMaxBytes !== undefined) {
      this.write("memory.max", String(limits.memoryMaxBytes));
      this.write("memory.high", String(limits.memoryHighBytes ?? "max"));
      // Guest RAM must not be swapped behind the guest's back by a limit it cannot see.
      this.write("memory.swap.max", "0", true);
    }
  }

  /** Move a process (all its threads) in. */
  addProcess(pid: number): void {
    this.write("cgroup.procs", String(pid));
  }

  read(file: string): string {
    return readFileSync(join(this.path, file), "utf8").trim();
  }

  /** CPU time used by everything in the cgroup, in microseconds (cpu.stat usage_usec). */
  cpuUsageUs(): number | undefined {
    try {
      const m = /^usage_usec (\d+)/m.exec(this.read("cpu.stat"));
      return m ? Number(m[1]) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Remove the cgroup once its processes are gone (the kernel refuses while any remain). */
  remove(): void {
    try {
      if (statSync(this.path).isDirectory()) rmdirSync(this.path);
    } catch {
      // already gone, or a process is still exiting: a later start reuses it
    }
  }

  private write(file: string, value: string, optional = false): void {
    try {
      writeFileSync(join(this.path, file), value);
    } catch (e) {
      if (optional && (e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new Error(
        `cannot write ${value} to ${join(this.path, file)}: ${(e as NodeJS.ErrnoException).code ?? e}`,
      );
    }
  }
}

/**
 * The whole disk ("MAJ:MIN") that `path` means for io.max: a block device node itself, a
 * "MAJ:MIN" as given, or, for any other file, the disk its file system lives on. A partition
 * becomes its disk (the kernel takes io.max for whole disks only); a file system without a
 * disk (tmpfs, 9p, overlay) is an error that says so.
 */
export function wholeDiskOf(path: string, sys = "/sys"): string {
  let majMin: string;
  if (/^\d+:\d+$/.test(path)) majMin = path;
  else {
    const st = statSync(path, { bigint: true });
    const dev = st.isBlockDevice() ? st.rdev : st.dev;
    majMin = `${devMajor(dev)}:${devMinor(dev)}`;
  }
  const node = join(sys, "dev/block", majMin);
  if (!existsSync(node))
    throw new Error(
      `${path} is not on a block device (device ${majMin} has no disk: tmpfs, 9p or overlay)`,
    );
  if (!existsSync(join(node, "partition"))) return majMin;
  return readFileSync(join(dirname(realpathSync(node)), "dev"), "utf8").trim();
}

// Linux's dev_t encoding (new_encode_dev): 12 bits of major and 20 of minor, split.
const devMajor = (dev: bigint) => Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
const devMinor = (dev: bigint) => Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));

/**
 * memory.max for a domain: its guest RAM plus what the VMM itself needs, from measurements
 * of `vessel run` (docs in README): Node and the VMM's code about 64 MiB resident, each vCPU
 * worker thread (a V8 isolate) about 12 MiB, each device's buffers up to 4 MiB, and 25 %
 * headroom on that overhead for garbage-collection peaks.
 */
export function memoryMaxFor(guestBytes: number, vcpus: number, devices: number): number {
  const MiB = 2 ** 20;
  const overhead = 64 * MiB + 12 * MiB * vcpus + 4 * MiB * devices;
  return guestBytes + Math.ceil((overhead * 1.25) / MiB) * MiB;
}
