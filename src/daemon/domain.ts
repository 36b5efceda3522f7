// One domain under the daemon: its definition, its state with a reason (libvirt's model),
// and its VMM process, which is a separate `vessel run` process in its own session so that
// the daemon can die and come back without taking guests with it. The daemon never maps
// guest memory; it talks to the VMM over the per-domain control socket, and learns that the
// VMM ended when that socket closes, reading how it ended from the outcome file.
//
// Operations on one domain are serialised by refusal: while one is in progress a second gets
// a CONFLICT error naming the first (virsh's "cannot acquire state change lock"), so two
// never interleave. Waiting for a guest to shut down is not an operation (destroy must stay
// possible meanwhile).

import { spawn } from "node:child_process";
import {
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import type { DomainEvent, DomainInfo, DomainState } from "../api/schemas.js";
import {
  bucketsFor,
  type DomainSpec,
  expandCpuList,
  type IoLimits,
  type NetLimits,
  sizeBytes,
  withDefaults,
} from "../domain/spec.js";
import { libc } from "../host/mod.js";
import { writeFileAtomic } from "../vmm/atomic_file.js";
import { ControlClient } from "../vmm/control.js";
import {
  type CgroupIoLimits,
  type CgroupLimits,
  type CgroupSupport,
  DomainCgroup,
  memoryMaxFor,
  wholeDiskOf,
} from "./cgroup.js";
import { DomainError } from "./errors.js";
import { type DaemonPaths, domainLogPath, domainRunFiles } from "./paths.js";

export interface DomainContext {
  paths: DaemonPaths;
  /** argv prefix that runs `vessel` (node and the bin script). */
  vesselCommand: readonly string[];
  /** Pass --slow-kvm to VMMs (test hosts whose /dev/kvm interprets guest code). */
  slowKvm: boolean;
  /** Run each VMM in `vessel run --jail` walls (root only; see src/jail/). */
  jail: boolean;
  /** uids of the jails of running domains, so a new one gets its own. */
  jailUidsInUse(): Set<number>;
  /** Where domains' cgroups go, or why there are none. */
  cgroups: CgroupSupport;
  emit(event: Omit<DomainEvent, "seq" | "time">): void;
  /** Persist a changed definition. */
  saveDefinition(spec: DomainSpec): void;
  /** A transient domain has stopped for good: forget it. */
  forget(domain: Domain): void;
  log(line: string): void;
}

/** What `vmm.json` records about a started VMM, enough to find it again after a restart. */
interface RunRecord {
  pid: number;
  /** Field 22 of /proc/PID/stat: tells our VMM from a later process that reused the pid. */
  pidStartTime: string;
  startedAt: string;
  spec: DomainSpec;
  transient: boolean;
  /** The jail's uid (and gid), when the VMM runs jailed. */
  jailUid?: number;
}

interface Live {
  record: RunRecord;
  control: ControlClient;
  /** The VMM's own host pid: record.pid is the jail's launcher when it is jailed. */
  vmmPid: number;
  /** Settles when our child has exited and its status is known (absent when adopted). */
  exited?: Promise<unknown>;
}

const START_TIMEOUT_MS = 60_000;
/** Jailed VMMs get uids (and gids) from here up, one per running domain. */
export const JAIL_UID_BASE = 900_000;
const JAIL_UIDS = 65_536;
const DESTROY_GRACE_MS = 5_000;
/** More restarts than this within RESTART_WINDOW_MS means a loop: stop and say crashed. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;

export class Domain {
  state: DomainState = "shutoff";
  reason = "unknown";
  private live: Live | undefined;
  private operation: string | undefined;
  /** Set by reboot(): the next power-off starts the guest again (libvirt's ACPI reboot). */
  private rebootPending = false;
  private destroying = false;
  private restarts: number[] = [];
  private stopWaiters: (() => void)[] = [];
  /** What mem-set last asked for (undefined: the spec's memory). */
  private memoryTarget: number | undefined;
  /** How our own child ended (unknown for a VMM adopted after a daemon restart). */
  private lastExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    /** The persistent definition; undefined for a transient domain. */
    public definition: DomainSpec | undefined,
    /** The spec the running VMM was started from (differs from definition after a redefine). */
    private runningSpec: DomainSpec | undefined,
    private readonly ctx: DomainContext,
  ) {}

  get name(): string {
    return (this.definition ?? this.runningSpec)?.name ?? "?";
  }

  get spec(): DomainSpec {
    const s = this.runningSpec ?? this.definition;
    if (!s) throw new Error("domain without a spec");
    return s;
  }

  /** The jail uid of the running VMM, if it is jailed. */
  get jailUid(): number | undefined {
    return this.live?.record.jailUid;
  }

  get active(): boolean {
    return this.live !== undefined;
  }

  get busy(): boolean {
    return this.operation !== undefined;
  }

  info(): DomainInfo {
    const spec = this.live ? this.live.record.spec : this.spec;
    const files = domainRunFiles(this.ctx.paths, this.name);
    return {
      name: this.name,
      uuid: spec.uuid ?? null,
      state: this.state,
      reason: this.reason,
      persistent: this.definition !== undefined,
      autostart: this.definition?.autostart === true,
      vcpus: spec.vcpus,
      memoryBytes: sizeBytes("memory", spec.memory),
      pid: this.live?.vmmPid ?? null,
      startedAt: this.live?.record.startedAt ?? null,
      consoleSocket: this.live ? files.console : null,
      cgroup: this.live ? (this.cgroup()?.path ?? null) : null,
      jailed: this.live ? this.live.record.jailUid !== undefined : null,
      operation: this.operation ?? null,
      spec: this.definition ?? spec,
    };
  }

  /** Run `fn` as this domain's one operation in progress, or refuse. */
  private async exclusive<T>(op: string, fn: () => Promise<T>): Promise<T> {
    if (this.operation) {
      throw new DomainError(
        "CONFLICT",
        `domain ${this.name}: ${this.operation} is in progress; try again when it is done`,
      );
    }
    this.operation = op;
    try {
      return await fn();
    } finally {
      this.operation = undefined;
    }
  }

  private setState(state: DomainState, reason: string): void {
    this.state = state;
    this.reason = reason;
  }

  private emit(type: DomainEvent["type"], reason: string): void {
    this.ctx.emit({ type, reason, domain: this.name, state: this.state });
  }

  // ---- start -------------------------------------------------------------------------

  start(reason = "booted"): Promise<void> {
    return this.exclusive("start", () => this.launch(reason));
  }

  private async launch(reason: string): Promise<void> {
    if (this.live) throw new DomainError("CONFLICT", `domain ${this.name} is already running`);
    const spec = this.definition ?? this.runningSpec;
    if (!spec) throw new DomainError("INVALID", "nothing to start");
    const files = domainRunFiles(this.ctx.paths, this.name);
    rmSync(files.dir, { recursive: true, force: true });
    mkdirSync(files.dir, { recursive: true, mode: 0o700 });
    mkdirSync(files.outDir, { mode: 0o700 });
    let jailUid: number | undefined;
    if (this.ctx.jail) {
      const used = this.ctx.jailUidsInUse();
      jailUid = JAIL_UID_BASE;
      while (used.has(jailUid) && jailUid < JAIL_UID_BASE + JAIL_UIDS) jailUid++;
      // The jailed VMM writes its outcome here and nowhere else on the host.
      chownSync(files.outDir, jailUid, jailUid);
    }
    const cgroup = this.prepareCgroup(spec);
    const log = openDomainLog(this.ctx.paths, this.name);
    const logFd = log.fd;
    const argv = [
      this.ctx.vesselCommand[0] ?? process.execPath,
      ...this.ctx.vesselCommand.slice(1),
      "run",
      ...runFlags(spec, files, this.ctx.slowKvm),
      ...(jailUid !== undefined
        ? ["--jail", "--jail-uid", String(jailUid), "--jail-gid", String(jailUid)]
        : []),
    ];
    // With a cgroup the VMM starts inside it: a shell joins it, then execs the VMM, so not
    // one page or thread of the VMM is ever accounted outside its limits.
    const [command, ...args] = cgroup
      ? ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup.path, ...argv]
      : argv;
    const child = spawn(command ?? process.execPath, args, {
      // Its own session: a signal to the daemon's process group does not reach guests.
      detached: true,
      stdio: ["ignore", logFd, logFd],
    });
    closeSync(logFd);
    const exited = new Promise<number | null>((resolve) => {
      child.once("exit", (code, signal) => {
        this.lastExit = { code, signal };
        resolve(code);
      });
      child.once("error", () => resolve(-1));
    });
    this.lastExit = undefined;
    child.unref();
    const pid = child.pid;
    if (pid === undefined) {
      await exited;
      throw new DomainError("START_FAILED", `domain ${this.name}: cannot run the VMM`);
    }
    const record: RunRecord = {
      pid,
      pidStartTime: pidStartTime(pid) ?? "",
      startedAt: new Date().toISOString(),
      spec,
      transient: this.definition === undefined,
      ...(jailUid !== undefined ? { jailUid } : {}),
    };
    writeFileAtomic(files.record, `${JSON.stringify(record)}\n`);
    // Ready when the control socket answers; a VMM that exits first failed to start, and the
    // last line of its log says why (it is one line by design: see src/cli/main.ts).
    const deadline = Date.now() + START_TIMEOUT_MS;
    let control: ControlClient | undefined;
    let exitCode: number | null | undefined;
    void exited.then((c) => {
      exitCode = c;
    });
    while (!control) {
      if (exitCode !== undefined) break;
      if (Date.now() > deadline) {
        process.kill(pid, "SIGKILL");
        break;
      }
      if (existsSync(files.control)) {
        try {
          control = await ControlClient.connect(files.control, 1000);
          break;
        } catch {
          // not listening yet
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    let vmmPid = pid;
    if (control) {
      try {
        vmmPid = ((await control.request("status")) as { pid?: number }).pid ?? pid;
        await this.applyPinning(spec, control, vmmPid);
      } catch (e) {
        control.close();
        process.kill(pid, "SIGKILL");
        await exited;
        rmSync(files.dir, { recursive: true, force: true });
        cgroup?.remove();
        this.setState("shutoff", "failed");
        throw new DomainError(
          "START_FAILED",
          `domain ${this.name}: cannot pin its threads: ${e instanceof Error ? e.message : e}`,
        );
      }
    }
    if (!control) {
      await exited;
      const why = lastLine(log.path) ?? "it exited before it was ready";
      rmSync(files.dir, { recursive: true, force: true });
      cgroup?.remove();
      this.setState("shutoff", "failed");
      throw new DomainError("START_FAILED", `domain ${this.name} failed to start: ${why}`);
    }
    this.runningSpec = spec;
    this.attach({ record, control, vmmPid, exited });
    this.memoryTarget = undefined;
    // Booted with maxMemory: the balloon holds back what is above memory from the start.
    const held = bootMemory(spec) - sizeBytes("memory", spec.memory);
    if (spec.balloon && held > 0) {
      await control.request("balloon", { targetBytes: held }).catch((e) => {
        this.ctx.log(`domain ${this.name}: initial balloon target not set: ${e}`);
      });
    }
    this.setState("running", reason);
    this.emit("started", reason);
  }

  /** The domain's cgroup with its limits written, or undefined where there are no cgroups. */
  private prepareCgroup(spec: DomainSpec): DomainCgroup | undefined {
    const support = this.ctx.cgroups;
    if (!support.ok) return undefined;
    const cg = new DomainCgroup(support, spec.name);
    try {
      cg.create(limitsFor(spec));
      for (const note of cg.applyIo(ioLimitsFor(spec)))
        this.ctx.log(`domain ${spec.name}: ${note}`);
    } catch (e) {
      cg.remove();
      throw new DomainError(
        "START_FAILED",
        `domain ${spec.name}: cannot set up its cgroup: ${e instanceof Error ? e.message : e}`,
      );
    }
    return cg;
  }

  /** The cgroup of this domain (whether or not it runs), where the host has cgroups. */
  cgroup(): DomainCgroup | undefined {
    return this.ctx.cgroups.ok ? new DomainCgroup(this.ctx.cgroups, this.name) : undefined;
  }

  /** vCPU threads to their CPUs (vcpuPin, else cpus); the VMM's other threads to vmmCpus. */
  private async applyPinning(spec: DomainSpec, control: ControlClient, pid: number) {
    for (let vcpu = 0; vcpu < spec.vcpus; vcpu++) {
      const list = spec.vcpuPin?.[String(vcpu)] ?? spec.cpus;
      if (list) await control.request("vcpu-pin", { vcpu, cpus: expandCpuList(list) });
    }
    if (spec.vmmCpus) {
      // Only once every vCPU thread exists: one started later would inherit the main
      // thread's mask, and the vCPUs would land on the VMM's CPUs.
      const threads = await waitForVcpuThreads(control, spec.vcpus);
      const host = hostTids(pid);
      const vcpuTids = new Set(threads.map((t) => host.get(t) ?? t));
      // The main thread first: threads it starts later (libuv's pool) inherit its mask.
      const tids = [
        pid,
        ...readdirSync(`/proc/${pid}/task`)
          .map(Number)
          .filter((t) => t !== pid),
      ];
      for (const tid of tids)
        if (!vcpuTids.has(tid)) libc.setAffinity(tid, expandCpuList(spec.vmmCpus));
    }
  }

  /** Pin one vCPU at runtime (vessel vcpu-pin); returns the CPUs it may now run on. */
  async pinVcpu(vcpu: number, list: string): Promise<number[]> {
    return this.exclusive("vcpu-pin", async () => {
      const live = this.requireLive("pin its vCPUs");
      if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= live.record.spec.vcpus)
        throw new DomainError("INVALID", `vcpu: ${vcpu} is not a vCPU of ${this.name}`);
      const r = (await live.control.request("vcpu-pin", { vcpu, cpus: expandCpuList(list) })) as {
        cpus: number[];
      };
      return r.cpus;
    });
  }

  /** Each vCPU's thread, the CPUs it may run on and the CPU time it has used. */
  async vcpuInfo(): Promise<VcpuRow[]> {
    const live = this.requireLive("list its vCPUs");
    const rows = (await live.control.request("affinity")) as Omit<VcpuRow, "cpuTimeNs">[];
    // A jailed VMM knows its threads by their ids in its own PID namespace.
    const host = hostTids(live.vmmPid);
    return rows.map((r) => {
      const tid = host.get(r.tid) ?? r.tid;
      return { ...r, tid, cpuTimeNs: threadCpuNs(live.vmmPid, tid) };
    });
  }

  /** Change the CPU cap and weight at runtime (xl sched-credit); kept for the next start too. */
  async setSchedule(change: { cpuCap?: number | null; cpuWeight?: number | null }): Promise<void> {
    await this.exclusive("schedule", async () => {
      const base = this.definition ?? this.runningSpec;
      if (!base) throw new DomainError("INVALID", "nothing to change");
      const next = { ...base };
      for (const key of ["cpuCap", "cpuWeight"] as const) {
        const v = change[key];
        if (v === null) delete next[key];
        else if (v !== undefined) next[key] = v;
      }
      if (this.live) {
        const cg = this.cgroup();
        const support = this.ctx.cgroups;
        if (!cg || !support.ok) {
          throw new DomainError(
            "CONFLICT",
            `cannot change CPU shares: ${support.ok ? "no cgroup" : support.reason}`,
          );
        }
        const running = { ...withoutShares(this.live.record.spec), ...pick(next) };
        cg.apply(limitsFor(running));
        this.live.record.spec = running;
        this.runningSpec = running;
      }
      if (this.definition) this.ctx.saveDefinition(next);
    });
  }

  private attach(live: Live): void {
    this.live = live;
    void live.control.closed.then(() => this.vmmGone(live));
  }

  // ---- finding it again after a daemon restart ---------------------------------------

  /** Look for a VMM this domain had before the daemon restarted; true if one was found. */
  async adopt(): Promise<boolean> {
    const files = domainRunFiles(this.ctx.paths, this.name);
    const record = readRecord(files.record);
    if (!record) return false;
    this.runningSpec = record.spec;
    const alive = pidStartTime(record.pid) === record.pidStartTime && record.pidStartTime !== "";
    if (alive) {
      try {
        const control = await ControlClient.connect(files.control, 3000);
        const status = (await control.request("status")) as { state?: string; pid?: number };
        this.live = undefined;
        this.attach({ record, control, vmmPid: status.pid ?? record.pid });
        if (status.state === "paused") this.setState("paused", "user");
        else this.setState("running", "booted");
        return true;
      } catch (e) {
        this.ctx.log(
          `domain ${this.name}: VMM ${record.pid} is alive but does not answer (${String(e)}); killing it`,
        );
        process.kill(record.pid, "SIGKILL");
      }
    }
    // It ended while the daemon was away: handle the end now, as if we had seen it.
    await this.ended(record, files);
    return true;
  }

  // ---- the VMM ended -----------------------------------------------------------------

  private async vmmGone(live: Live): Promise<void> {
    if (this.live !== live) return;
    this.live = undefined;
    // The socket closes just before the process exits; give it a moment to be gone so a
    // restart does not race the old process for the socket paths. Our own child is waited
    // for through its exit event: that is what carries the signal that says why it died
    // (its /proc entry goes a moment before the event arrives).
    if (live.exited) {
      await Promise.race([live.exited, new Promise((r) => setTimeout(r, 2000))]);
    } else {
      for (let i = 0; i < 100 && pidStartTime(live.record.pid) === live.record.pidStartTime; i++)
        await new Promise((r) => setTimeout(r, 20));
    }
    await this.ended(live.record, domainRunFiles(this.ctx.paths, this.name));
  }

  private async ended(record: RunRecord, files: ReturnType<typeof domainRunFiles>) {
    const outcome = readOutcome(files.outcome);
    const spec = withDefaults(record.spec);
    const destroyed = this.destroying;
    this.destroying = false;
    const rebooting = this.rebootPending;
    this.rebootPending = false;
    rmSync(files.dir, { recursive: true, force: true });
    this.cgroup()?.remove();
    this.runningSpec = record.spec;

    let action: "destroy" | "restart" | "preserve";
    let crashReason: string | undefined;
    if (destroyed || outcome?.kind === "stopped") {
      this.setState("shutoff", "destroyed");
      this.emit("stopped", "destroyed");
      action = "destroy";
    } else if (outcome?.kind === "poweroff") {
      this.setState("shutoff", "shutdown");
      this.emit("shutdown", "finished");
      this.emit("stopped", "shutdown");
      action = rebooting ? "restart" : spec.onPoweroff;
    } else if (outcome?.kind === "reboot") {
      this.setState("shutoff", "shutdown");
      this.emit("shutdown", "finished");
      this.emit("stopped", "shutdown");
      action = spec.onReboot;
    } else {
      // No outcome file: the VMM was killed (by its seccomp filter when it died of SIGSYS:
      // the jail's launcher exits 128+31 or with the signal). Otherwise the guest or the VMM
      // failed.
      const exit = this.lastExit;
      const sigsys = exit?.signal === "SIGSYS" || exit?.code === 128 + 31;
      crashReason = outcome ? outcome.kind : sigsys ? "seccomp" : "killed";
      this.setState("crashed", crashReason);
      this.emit("crashed", crashReason);
      action = spec.onCrash;
    }
    this.wakeStopWaiters();
    const exit = this.lastExit;
    const how = exit ? ` (exit ${exit.signal ?? exit.code})` : "";
    const last =
      crashReason !== undefined ? lastLine(domainLogPath(this.ctx.paths, this.name)) : "";
    this.ctx.log(
      `domain ${this.name}: VMM ${record.pid} ended${how}: ${this.state} (${this.reason}), on it: ${action}` +
        (last ? `; its log ends: ${last}` : ""),
    );

    if (action === "restart" && !this.restartLoop()) {
      try {
        await this.exclusive("restart", () => this.launch(rebooting ? "booted" : "restarted"));
        return;
      } catch (e) {
        this.ctx.log(`domain ${this.name}: restart failed: ${String(e)}`);
        this.setState("crashed", "restart-failed");
        this.emit("crashed", "restart-failed");
        return;
      }
    }
    if (action === "restart") {
      this.ctx.log(`domain ${this.name}: restarted ${MAX_RESTARTS} times in a minute; giving up`);
      this.setState("crashed", "restart-loop");
      this.emit("crashed", "restart-loop");
      return;
    }
    if (crashReason !== undefined && action === "destroy") {
      this.setState("shutoff", "crashed");
      this.emit("stopped", "crashed");
    }
    // preserve after a crash keeps "crashed" visible until destroy; after a power-off there is
    // no process left to preserve, so it is shut off.
    if (this.state === "shutoff" && !this.definition) this.ctx.forget(this);
  }

  private restartLoop(): boolean {
    const now = Date.now();
    this.restarts = this.restarts.filter((t) => now - t < RESTART_WINDOW_MS);
    this.restarts.push(now);
    return this.restarts.length > MAX_RESTARTS;
  }

  private wakeStopWaiters(): void {
    for (const w of this.stopWaiters.splice(0)) w();
  }

  /** Resolves when the current run ends (true) or after `timeoutMs` (false). */
  private waitForStop(timeoutMs: number): Promise<boolean> {
    if (!this.live) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.stopWaiters = this.stopWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.stopWaiters.push(done);
    });
  }

  // ---- lifecycle operations ----------------------------------------------------------

  private requireLive(what: string): Live {
    if (!this.live)
      throw new DomainError("CONFLICT", `domain ${this.name} is not running (cannot ${what})`);
    return this.live;
  }

  /** Press the power button; with `wait`, until the guest is off or the timeout passes. */
  async shutdown(opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<void> {
    await this.exclusive("shutdown", async () => {
      const live = this.requireLive("shut down");
      if (this.state === "paused")
        throw new DomainError("CONFLICT", `domain ${this.name} is paused; resume it first`);
      await live.control.request("power-button");
    });
    if (!opts.wait) return;
    const timeoutMs = opts.timeoutMs ?? 120_000;
    if (!(await this.waitForStop(timeoutMs))) {
      throw new DomainError(
        "TIMEOUT",
        `domain ${this.name} did not shut down within ${timeoutMs / 1000} s; it is still running (destroy forces it off)`,
      );
    }
  }

  /** ACPI reboot as libvirt does it: power button, then start again when the guest is off. */
  async reboot(): Promise<void> {
    await this.exclusive("reboot", async () => {
      const live = this.requireLive("reboot");
      if (this.state === "paused")
        throw new DomainError("CONFLICT", `domain ${this.name} is paused; resume it first`);
      this.rebootPending = true;
      await live.control.request("power-button");
    });
  }

  /** Force it off: ask the VMM to stop, then SIGKILL if it does not within a few seconds. */
  async destroy(): Promise<void> {
    await this.exclusive("destroy", async () => {
      if (!this.live) {
        if (this.state === "crashed") {
          this.setState("shutoff", "destroyed");
          this.emit("stopped", "destroyed");
          if (!this.definition) this.ctx.forget(this);
          return;
        }
        throw new DomainError("CONFLICT", `domain ${this.name} is not running`);
      }
      const live = this.live;
      this.destroying = true;
      const stopped = this.waitForStop(DESTROY_GRACE_MS);
      live.control.request("stop", {}, 1000).catch(() => {});
      if (!(await stopped)) {
        try {
          process.kill(live.record.pid, "SIGKILL");
        } catch {
          // already gone
        }
        await this.waitForStop(DESTROY_GRACE_MS);
      }
    });
  }

  async pause(): Promise<void> {
    await this.exclusive("pause", async () => {
      const live = this.requireLive("pause");
      if (this.state === "paused") throw new DomainError("CONFLICT", `${this.name} is paused`);
      await live.control.request("pause");
      this.setState("paused", "user");
      this.emit("suspended", "paused");
    });
  }

  async resume(): Promise<void> {
    await this.exclusive("resume", async () => {
      const live = this.requireLive("resume");
      if (this.state !== "paused")
        throw new DomainError("CONFLICT", `domain ${this.name} is not paused`);
      await live.control.request("resume");
      this.setState("running", "unpaused");
      this.emit("resumed", "unpaused");
    });
  }

  /**
   * Drive the balloon so the guest has `bytes` of RAM: the VMM booted it with maxMemory
   * (or memory), and the balloon holds back the difference, as xl mem-set does.
   */
  async setMemory(bytes: number): Promise<void> {
    await this.exclusive("mem-set", async () => {
      const live = this.requireLive("set its memory");
      const spec = live.record.spec;
      if (!spec.balloon)
        throw new DomainError("CONFLICT", `domain ${this.name} has no balloon (balloon: true)`);
      const boot = bootMemory(spec);
      if (!Number.isSafeInteger(bytes) || bytes < MIN_GUEST_MEMORY || bytes > boot) {
        throw new DomainError(
          "INVALID",
          `size: must be between ${MIN_GUEST_MEMORY / 2 ** 20} MiB and ${boot / 2 ** 20} MiB (maxMemory)`,
        );
      }
      await live.control.request("balloon", { targetBytes: boot - bytes });
      this.memoryTarget = bytes;
    });
  }

  /** The balloon's view (guest statistics) and the host's (the VMM's resident memory). */
  async memoryReport(): Promise<Record<string, unknown> | null> {
    if (!this.live) return null;
    const spec = this.live.record.spec;
    const rssBytes = residentBytes(this.live.vmmPid);
    let balloon: unknown = null;
    if (spec.balloon) {
      balloon = await this.live.control.request("balloon-stats").catch(() => null);
    }
    return {
      bootBytes: bootMemory(spec),
      targetBytes: this.memoryTarget ?? sizeBytes("memory", spec.memory),
      vmmResidentBytes: rssBytes,
      balloon,
    };
  }

  /** Replace disk `index`'s rate limits at runtime (vessel limit); kept for later starts. */
  async setDiskLimits(index: number, limits: DiskLimits | null): Promise<unknown> {
    return this.exclusive("limit", async () => {
      const live = this.requireLive("limit its I/O");
      const disks = live.record.spec.disks ?? [];
      const disk = disks[index];
      if (!Number.isInteger(index) || !disk)
        throw new DomainError("INVALID", `device: ${this.name} has no disk ${index}`);
      const config = bucketsFor(limits ?? undefined);
      const result = await live.control.request("limit", {
        device: `virtio-blk${index}`,
        limits: config,
      });
      const withLimits = (spec: DomainSpec): DomainSpec => ({
        ...spec,
        disks: (spec.disks ?? []).map((d, i) => {
          if (i !== index) return d;
          const { limits: _old, ...rest } = d;
          return limits ? { ...rest, limits } : rest;
        }),
      });
      this.keepChange(live, withLimits);
      return result;
    });
  }

  /** Replace network device `index`'s limits each way at runtime; kept for later starts. */
  async setNetLimits(index: number, limits: NetLimits | null): Promise<unknown> {
    return this.exclusive("limit", async () => {
      const live = this.requireLive("limit its I/O");
      const net = (live.record.spec.nets ?? [])[index];
      if (!Number.isInteger(index) || !net)
        throw new DomainError("INVALID", `device: ${this.name} has no network device ${index}`);
      const wanted = limits?.rx || limits?.tx ? limits : null;
      if (wanted && net.vhost)
        throw new DomainError(
          "INVALID",
          `device: net${index} uses vhost-net, which moves frames past the VMM's meters`,
        );
      const result = await live.control.request("limit", {
        device: `virtio-net${index}`,
        limits: { rx: bucketsFor(wanted?.rx), tx: bucketsFor(wanted?.tx) },
      });
      const withLimits = (spec: DomainSpec): DomainSpec => ({
        ...spec,
        nets: (spec.nets ?? []).map((n, i) => {
          if (i !== index) return n;
          const { limits: _old, ...rest } = n;
          return wanted ? { ...rest, limits: wanted } : rest;
        }),
      });
      this.keepChange(live, withLimits);
      return result;
    });
  }

  /** A change made at runtime, kept for the running VMM's record and for later starts. */
  private keepChange(live: Live, change: (spec: DomainSpec) => DomainSpec): void {
    live.record.spec = change(live.record.spec);
    this.runningSpec = live.record.spec;
    if (this.definition) this.ctx.saveDefinition(change(this.definition));
  }

  /** Each device's limits and the time its requests were held back (null when not running). */
  async diskLimits(): Promise<{ device: string; throttledMs: number }[] | null> {
    if (!this.live) return null;
    return (await this.live.control.request("limits")) as { device: string; throttledMs: number }[];
  }

  /** Ask the VMM for its counters (null when it is not running). */
  async stats(): Promise<unknown> {
    if (!this.live) return null;
    return this.live.control.request("stats");
  }

  /** Drop the connection without touching the VMM (daemon shutdown: guests keep running). */
  detach(): void {
    const live = this.live;
    this.live = undefined;
    live?.control.close();
  }
}

/** `vessel run` flags for a spec; the spec was validated when it was defined. */
export function runFlags(
  spec: DomainSpec,
  files: ReturnType<typeof domainRunFiles>,
  slowKvm: boolean,
): string[] {
  const s = withDefaults(spec);
  const flags = [
    "--name",
    s.name,
    "--kernel",
    s.kernel,
    "--memory",
    `${bootMemory(s) / 1024}K`,
    "--cpus",
    String(s.vcpus),
    "--console",
    s.console,
    "--control-socket",
    files.control,
    "--console-socket",
    files.console,
    "--outcome-file",
    files.outcome,
  ];
  if (s.initrd) flags.push("--initrd", s.initrd);
  if (s.cmdline !== undefined) flags.push("--cmdline", s.cmdline);
  for (const d of s.disks) {
    flags.push(
      "--disk",
      [
        d.path,
        ...(d.readOnly ? ["ro"] : []),
        ...(d.serial ? [`serial=${d.serial}`] : []),
        ...limitOptions("", "iops", d.limits),
      ].join(","),
    );
  }
  for (const n of s.nets) {
    flags.push(
      "--net",
      [
        `tap=${n.tap}`,
        ...(n.mac ? [`mac=${n.mac}`] : []),
        ...(n.vhost ? ["vhost=on"] : []),
        ...limitOptions("rx_", "pps", n.limits?.rx),
        ...limitOptions("tx_", "pps", n.limits?.tx),
      ].join(","),
    );
  }
  if (s.vsock) flags.push("--vsock", `cid=${s.vsock.cid},uds=${s.vsock.uds}`);
  if (s.rng) flags.push("--rng");
  if (s.balloon) flags.push("--balloon");
  if (slowKvm) flags.push("--slow-kvm");
  return flags;
}

/** A spec's limits as `vessel run` device options (bw=, iops= or pps=, and the bursts). */
function limitOptions(prefix: string, ops: string, l: IoLimits | undefined): string[] {
  return [
    ...(l?.bandwidth ? [`${prefix}bw=${l.bandwidth}`] : []),
    ...(l?.bandwidthBurst ? [`${prefix}bw_burst=${l.bandwidthBurst}`] : []),
    ...(l?.ops ? [`${prefix}${ops}=${l.ops}`] : []),
    ...(l?.opsBurst ? [`${prefix}${ops}_burst=${l.opsBurst}`] : []),
  ];
}

async function waitForVcpuThreads(control: ControlClient, count: number): Promise<number[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const status = (await control.request("status")) as { vcpuThreads?: number[] };
    const tids = (status.vcpuThreads ?? []).filter((t) => t > 0);
    if (tids.length >= count) return tids;
    if (Date.now() > deadline)
      throw new Error(`only ${tids.length} of ${count} vCPU threads started`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export type DiskLimits = NonNullable<NonNullable<DomainSpec["disks"]>[number]["limits"]>;

export interface VcpuRow {
  vcpu: number;
  tid: number;
  cpus: number[];
  cpuTimeNs: number | null;
}

function pick(spec: DomainSpec): Pick<DomainSpec, "cpuCap" | "cpuWeight"> {
  return {
    ...(spec.cpuCap !== undefined ? { cpuCap: spec.cpuCap } : {}),
    ...(spec.cpuWeight !== undefined ? { cpuWeight: spec.cpuWeight } : {}),
  };
}

function withoutShares(spec: DomainSpec): DomainSpec {
  const { cpuCap: _cap, cpuWeight: _weight, ...rest } = spec;
  return rest;
}

/** The cgroup limits a spec asks for (xl's weight scale, 256 = default, is cgroup's 100). */
export function limitsFor(spec: DomainSpec): CgroupLimits {
  const s = withDefaults(spec);
  const devices = s.disks.length + s.nets.length + (s.rng ? 1 : 0) + (s.balloon ? 1 : 0) + 1;
  return {
    ...(spec.cpuCap !== undefined ? { cpuCapPercent: spec.cpuCap } : {}),
    ...(spec.cpuWeight !== undefined
      ? { cpuWeight: Math.min(10000, Math.max(1, Math.round((spec.cpuWeight * 100) / 256))) }
      : {}),
    memoryMaxBytes:
      spec.memoryLimit !== undefined
        ? sizeBytes("memoryLimit", spec.memoryLimit)
        : memoryMaxFor(bootMemory(spec), spec.vcpus, devices),
    ...(spec.memorySoftLimit !== undefined
      ? { memoryHighBytes: sizeBytes("memorySoftLimit", spec.memorySoftLimit) }
      : {}),
  };
}

/** The io controller's lines a spec asks for, each device resolved to its host disk now. */
export function ioLimitsFor(spec: DomainSpec, sys?: string): CgroupIoLimits {
  return {
    ...(spec.ioWeight !== undefined ? { weight: spec.ioWeight } : {}),
    devices: (spec.ioDevices ?? []).map(({ device, ...settings }, i) => {
      try {
        return { disk: wholeDiskOf(device, sys), ...settings };
      } catch (e) {
        const why = (e as NodeJS.ErrnoException).code ?? (e instanceof Error ? e.message : e);
        throw new Error(
          `ioDevices/${i}/device: ${why === "ENOENT" ? `${device}: no such file` : why}`,
        );
      }
    }),
  };
}

/** Thread ids in the VMM's PID namespace → host thread ids (identity when not jailed). */
function hostTids(pid: number): Map<number, number> {
  const map = new Map<number, number>();
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const m = /^NSpid:\s+(\d+)(?:\s+(\d+))*\s*$/m.exec(
        readFileSync(`/proc/${pid}/task/${t}/status`, "utf8"),
      );
      const ids =
        m?.[0]
          .replace(/^NSpid:\s+/, "")
          .trim()
          .split(/\s+/)
          .map(Number) ?? [];
      const inner = ids[ids.length - 1];
      if (inner !== undefined) map.set(inner, Number(t));
    }
  } catch {
    // the VMM is gone; callers fall back to the ids they have
  }
  return map;
}

/** utime + stime of one thread, in nanoseconds (USER_HZ is 100 on Linux x86-64). */
function threadCpuNs(pid: number, tid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10_000_000;
  } catch {
    return null;
  }
}

/** Below this a Linux guest stops being useful; mem-set refuses to go lower. */
export const MIN_GUEST_MEMORY = 64 * 2 ** 20;

/** RAM the VMM gives the guest: maxMemory when a balloon can hold part of it back. */
export function bootMemory(spec: DomainSpec): number {
  const memory = sizeBytes("memory", spec.memory);
  if (!spec.balloon || spec.maxMemory === undefined) return memory;
  return Math.max(memory, sizeBytes("maxMemory", spec.maxMemory));
}

function residentBytes(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

function pidStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses; fields follow the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = fields[0];
    if (state === "Z" || state === "X") return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

function readRecord(path: string): RunRecord | undefined {
  try {
    const r = JSON.parse(readFileSync(path, "utf8")) as RunRecord;
    if (typeof r.pid !== "number" || typeof r.spec !== "object") return undefined;
    return r;
  } catch {
    return undefined;
  }
}

function readOutcome(path: string): { kind: string } | undefined {
  try {
    const o = JSON.parse(readFileSync(path, "utf8")) as { outcome?: { kind?: unknown } };
    return typeof o.outcome?.kind === "string" ? { kind: o.outcome.kind } : undefined;
  } catch {
    return undefined;
  }
}

/** A log over this size is moved to NAME.log.1 when the domain next starts (one old run kept). */
const LOG_ROTATE_BYTES = 1 << 20;
const RUN_HEADER = "---- ";

/** The domain's log, opened for appending, with a line marking this run's start. */
function openDomainLog(paths: DaemonPaths, name: string): { fd: number; path: string } {
  const path = domainLogPath(paths, name);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    if (statSync(path).size > LOG_ROTATE_BYTES) renameSync(path, `${path}.1`);
  } catch {
    // no log yet
  }
  const fd = openSync(path, "a", 0o600);
  writeSync(fd, `${RUN_HEADER}${new Date().toISOString()} starting ${name} ----\n`);
  return { fd, path };
}

/** The last line the VMM wrote in its current run (its one-line error when it failed). */
function lastLine(path: string): string | undefined {
  try {
    const lines = readFileSync(path, "utf8").trim().split("\n");
    const last = lines[lines.length - 1];
    if (last === undefined || last === "" || last.startsWith(RUN_HEADER)) return undefined;
    return last.replace(/^vessel: /, "");
  } catch {
    return undefined;
  }
}
