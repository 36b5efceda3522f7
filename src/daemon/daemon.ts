// The control plane (Dom0's role): the set of domains, their definitions on disk, lifecycle
// events, and recovery after the daemon's own restart. The HTTP API (src/api/server.ts) is a
// thin layer over this class; so are tests, which drive it without HTTP.

import { EventEmitter } from "node:events";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { DomainEvent, DomainInfo } from "../api/schemas.js";
import { type DomainSpec, parseDomainSpec, SpecError } from "../domain/spec.js";
import { type CgroupSupport, detectCgroups } from "./cgroup.js";
import { Domain, type DomainContext } from "./domain.js";
import { DomainError } from "./errors.js";
import type { DaemonPaths } from "./paths.js";
import { DefinitionStore } from "./store.js";

export interface DaemonOptions {
  paths: DaemonPaths;
  vesselCommand: readonly string[];
  slowKvm?: boolean;
  log?: (line: string) => void;
  /** Jail every VMM (`vessel run --jail`). */
  jail?: boolean;
  /** Tests pass a fixed answer; otherwise /sys/fs/cgroup is examined. */
  cgroups?: CgroupSupport;
}

/** How many past events a reconnecting client can catch up on (SSE Last-Event-ID). */
const EVENT_HISTORY = 1000;

export class Daemon {
  private readonly domains = new Map<string, Domain>();
  private readonly store: DefinitionStore;
  readonly events = new EventEmitter();
  private readonly history: DomainEvent[] = [];
  private seq = 0;
  private readonly ctx: DomainContext;
  readonly problems: string[] = [];

  private constructor(readonly options: DaemonOptions) {
    const { stateDir, runtimeDir } = options.paths;
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    mkdirSync(join(runtimeDir, "domains"), { recursive: true, mode: 0o700 });
    this.store = new DefinitionStore(stateDir);
    this.events.setMaxListeners(0);
    const log = options.log ?? ((l: string) => process.stderr.write(`vessel daemon: ${l}\n`));
    const cgroups = options.cgroups ?? detectCgroups();
    if (!cgroups.ok) log(`no resource limits: ${cgroups.reason}`);
    this.ctx = {
      jail: options.jail === true,
      jailUidsInUse: () =>
        new Set([...this.domains.values()].map((d) => d.jailUid).filter((u) => u !== undefined)),
      cgroups,
      saveDefinition: (spec) => {
        this.store.save(spec);
        const d = this.domains.get(spec.name);
        if (d) d.definition = spec;
      },
      paths: options.paths,
      vesselCommand: options.vesselCommand,
      slowKvm: options.slowKvm === true,
      emit: (e) => this.emit(e),
      forget: (d) => {
        if (this.domains.get(d.name) === d && !d.definition) this.domains.delete(d.name);
      },
      log,
    };
  }

  /** Load definitions, find domains still running from before, then autostart. */
  static async open(options: DaemonOptions): Promise<Daemon> {
    const d = new Daemon(options);
    const { domains, problems } = d.store.loadAll();
    for (const p of problems) d.ctx.log(`definition not loaded: ${p}`);
    d.problems.push(...problems);
    for (const { spec } of domains) d.domains.set(spec.name, new Domain(spec, undefined, d.ctx));
    for (const domain of d.domains.values()) await domain.adopt();
    // Transient domains exist only as runtime directories (their spec is in the run record).
    const runDomains = join(options.paths.runtimeDir, "domains");
    for (const name of existsSync(runDomains) ? readdirSync(runDomains) : []) {
      if (d.domains.has(name)) continue;
      const adoptee = new Domain(undefined, placeholderSpec(name), d.ctx);
      d.domains.set(name, adoptee);
      if (!(await adoptee.adopt()) || adoptee.state === "shutoff") d.domains.delete(name);
    }
    for (const domain of d.domains.values()) {
      if (domain.definition?.autostart && !domain.active && domain.state !== "crashed") {
        domain.start().catch((e) => d.ctx.log(`autostart of ${domain.name} failed: ${e}`));
      }
    }
    return d;
  }

  private emit(e: Omit<DomainEvent, "seq" | "time">): void {
    const event: DomainEvent = { ...e, time: new Date().toISOString(), seq: ++this.seq };
    this.history.push(event);
    if (this.history.length > EVENT_HISTORY) this.history.shift();
    this.events.emit("event", event);
  }

  /** Events after `seq` still in the history (for a client that reconnects). */
  eventsSince(seq: number): DomainEvent[] {
    return this.history.filter((e) => e.seq > seq);
  }

  get cgroups(): CgroupSupport {
    return this.ctx.cgroups;
  }

  list(): DomainInfo[] {
    return [...this.domains.values()]
      .map((d) => d.info())
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): Domain {
    const d = this.domains.get(name);
    if (!d) throw new DomainError("NOT_FOUND", `no domain named "${name}"`);
    return d;
  }

  private validate(value: unknown): DomainSpec {
    try {
      return parseDomainSpec(value);
    } catch (e) {
      if (e instanceof SpecError) throw new DomainError("INVALID", e.message);
      throw e;
    }
  }

  /** Define (or redefine) a persistent domain. A running domain keeps its running spec. */
  define(value: unknown): DomainInfo {
    const spec = this.validate(value);
    const existing = this.domains.get(spec.name);
    if (existing?.busy)
      throw new DomainError("CONFLICT", `domain ${spec.name}: an operation is in progress`);
    this.store.save(spec);
    const fresh = !existing?.definition;
    if (existing) existing.definition = spec;
    else this.domains.set(spec.name, new Domain(spec, undefined, this.ctx));
    this.emit({
      type: "defined",
      reason: fresh ? "added" : "updated",
      domain: spec.name,
      state: existing?.state ?? "shutoff",
    });
    return this.get(spec.name).info();
  }

  /** Forget the definition; a running domain carries on as a transient one (as in libvirt). */
  undefine(name: string): void {
    const d = this.get(name);
    if (!d.definition) throw new DomainError("CONFLICT", `domain ${name} is transient`);
    if (d.busy) throw new DomainError("CONFLICT", `domain ${name}: an operation is in progress`);
    this.store.remove(name);
    d.definition = undefined;
    if (!d.active && d.state !== "crashed") this.domains.delete(name);
    this.emit({ type: "undefined", reason: "removed", domain: name, state: d.state });
  }

  /** Start a transient domain from a spec (xl create / virsh create). */
  async create(value: unknown): Promise<DomainInfo> {
    const spec = this.validate(value);
    if (this.domains.has(spec.name))
      throw new DomainError("CONFLICT", `a domain named "${spec.name}" already exists`);
    const d = new Domain(undefined, spec, this.ctx);
    this.domains.set(spec.name, d);
    try {
      await d.start();
    } catch (e) {
      this.domains.delete(spec.name);
      throw e;
    }
    return d.info();
  }

  /** Stop supervising; running domains keep running and are found again on the next start. */
  close(): void {
    for (const d of this.domains.values()) d.detach();
    this.events.removeAllListeners();
  }
}

function placeholderSpec(name: string): DomainSpec {
  return { name, memory: 16 * 2 ** 20, vcpus: 1, kernel: "?" };
}
