// The domain commands of `vessel`, modelled on xl and virsh: create, define, undefine, start,
// list, info, shutdown, reboot, destroy, pause, resume, console, events. Each one talks to
// the daemon through the TypeScript client (src/client), prints a table or a line for people
// and JSON with --json, and fails with one line and a non-zero exit.

import { readFileSync } from "node:fs";
import { createConnection } from "node:net";
import { dirname, isAbsolute, resolve } from "node:path";
import type { VcpuList } from "../api/schemas.js";
import { apiSocketPath, defaultPaths } from "../daemon/paths.js";
import type { DomainSpec } from "../domain/spec.js";
import { type DomainInfo, VesselApiError, VesselClient } from "../mod.js";
import { parseRate, UsageError } from "./args.js";

export interface ConnectFlags {
  connect?: string;
  tokenFile?: string;
}

/** The daemon to talk to: --connect (socket path or http URL), $VESSEL_CONNECT, the default. */
export function clientFor(flags: ConnectFlags): VesselClient {
  const target = flags.connect ?? process.env.VESSEL_CONNECT ?? apiSocketPath(defaultPaths());
  if (/^https?:\/\//.test(target)) {
    let token = process.env.VESSEL_TOKEN;
    if (flags.tokenFile) {
      try {
        token = readFileSync(flags.tokenFile, "utf8").split("\n")[0]?.trim();
      } catch (e) {
        throw new UsageError(
          `--token-file: cannot read ${flags.tokenFile} (${(e as NodeJS.ErrnoException).code})`,
        );
      }
    }
    return new VesselClient({ url: target, ...(token ? { token } : {}) });
  }
  return new VesselClient({ socketPath: target });
}

/** Turn API errors into the CLI's one-line errors. */
async function api<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof VesselApiError) throw new UsageError(e.message);
    throw e;
  }
}

/** A config file in any format Vessel imports; relative paths resolve against its folder. */
async function loadConfig(
  path: string,
  flags: { from?: string; name?: string },
): Promise<{ spec: DomainSpec; warnings: string[] }> {
  const { loadConfigFile } = await import("./config.js");
  const loaded = await loadConfigFile(path, flags);
  return { spec: absolutePaths(loaded.spec, dirname(resolve(path))), warnings: loaded.warnings };
}

export function absolutePaths(spec: DomainSpec, base: string): DomainSpec {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  return {
    ...spec,
    kernel: abs(spec.kernel),
    ...(spec.initrd ? { initrd: abs(spec.initrd) } : {}),
    ...(spec.disks ? { disks: spec.disks.map((d) => ({ ...d, path: abs(d.path) })) } : {}),
  };
}

function warn(warnings: readonly string[]): void {
  for (const w of warnings) process.stderr.write(`vessel: warning: ${w}\n`);
}

function out(json: boolean | undefined, value: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : text);
}

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join("\n")}\n`;
}

function mib(bytes: number): string {
  return `${Math.round(bytes / 2 ** 20)} MiB`;
}

export interface FileFlags extends ConnectFlags {
  from?: string;
  name?: string;
  json?: boolean;
  console?: boolean;
}

export async function createCommand(file: string, flags: FileFlags): Promise<number> {
  const { spec, warnings } = await loadConfig(file, flags);
  warn(warnings);
  const info = await api(clientFor(flags).create(spec));
  out(flags.json, info, `Domain ${info.name} created (pid ${info.pid})\n`);
  if (flags.console) return attachConsole(info);
  return 0;
}

export async function defineCommand(file: string, flags: FileFlags): Promise<number> {
  const { spec, warnings } = await loadConfig(file, flags);
  warn(warnings);
  const info = await api(clientFor(flags).define(spec));
  out(flags.json, info, `Domain ${info.name} defined from ${file}\n`);
  return 0;
}

export interface NameFlags extends ConnectFlags {
  json?: boolean;
  wait?: boolean;
  timeout?: string;
  console?: boolean;
}

type Action = "start" | "reboot" | "destroy" | "pause" | "resume" | "undefine";
const DONE: Record<Action, string> = {
  start: "started",
  reboot: "is being rebooted",
  destroy: "destroyed",
  pause: "suspended",
  resume: "resumed",
  undefine: "has been undefined",
};

export async function actionCommand(action: Action, name: string, flags: NameFlags) {
  const client = clientFor(flags);
  if (action === "undefine") {
    await api(client.undefine(name));
    out(flags.json, { name, undefined: true }, `Domain ${name} ${DONE[action]}\n`);
    return 0;
  }
  const info = await api(client[action](name));
  out(flags.json, info, `Domain ${name} ${DONE[action]}\n`);
  if (action === "start" && flags.console) return attachConsole(info);
  return 0;
}

export async function shutdownCommand(name: string, flags: NameFlags): Promise<number> {
  let timeoutSeconds: number | undefined;
  if (flags.timeout !== undefined) {
    timeoutSeconds = Number(flags.timeout);
    if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0 || timeoutSeconds > 3600)
      throw new UsageError(`--timeout: "${flags.timeout}" is not a number of seconds (0..3600]`);
  }
  const info = await api(
    clientFor(flags).shutdown(name, {
      wait: flags.wait === true,
      ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}),
    }),
  );
  out(
    flags.json,
    info,
    flags.wait ? `Domain ${name} is shut off\n` : `Domain ${name} is being shut down\n`,
  );
  return 0;
}

export async function listCommand(flags: ConnectFlags & { all?: boolean; json?: boolean }) {
  const all = await api(clientFor(flags).list());
  // As in virsh: without --all, only domains that have a VMM (running or paused).
  const shown = flags.all ? all : all.filter((d) => d.state === "running" || d.state === "paused");
  out(
    flags.json,
    shown,
    table(
      ["Name", "State", "Reason", "vCPUs", "Memory", "PID", "Persistent", "Autostart"],
      shown.map((d) => [
        d.name,
        d.state,
        d.reason,
        String(d.vcpus),
        mib(d.memoryBytes),
        d.pid === null ? "-" : String(d.pid),
        d.persistent ? "yes" : "no",
        d.autostart ? "yes" : "no",
      ]),
    ),
  );
  return 0;
}

export async function infoCommand(name: string, flags: NameFlags): Promise<number> {
  const client = clientFor(flags);
  const info = await api(client.get(name));
  const stats = info.pid !== null ? await client.stats(name).catch(() => null) : null;
  const rows: [string, string][] = [
    ["Name", info.name],
    ["UUID", info.uuid ?? "-"],
    ["State", `${info.state} (${info.reason})`],
    ["vCPUs", String(info.vcpus)],
    ["Memory", mib(info.memoryBytes)],
    ["Persistent", info.persistent ? "yes" : "no"],
    ["Autostart", info.autostart ? "yes" : "no"],
    ["VMM pid", info.pid === null ? "-" : String(info.pid)],
    ["Started", info.startedAt ?? "-"],
    ["Console", info.consoleSocket ?? "-"],
    ["Kernel", info.spec.kernel],
  ];
  const memory = info.pid !== null ? await client.memory(name).catch(() => null) : null;
  if (memory) {
    rows.push(["Mem target", mib(memory.targetBytes)]);
    if (memory.vmmResidentBytes !== null) rows.push(["VMM RSS", mib(memory.vmmResidentBytes)]);
    const guest = (memory.balloon as { guest?: Record<string, number> } | null)?.guest;
    if (guest) {
      for (const [k, v] of Object.entries(guest)) rows.push([`Guest ${k}`, String(v)]);
    }
  }
  const exits = (stats as { exits?: Record<string, number> } | null)?.exits;
  if (exits) {
    const total = Object.values(exits).reduce((a, b) => a + b, 0);
    rows.push(["VM exits", String(total)]);
  }
  out(
    flags.json,
    { ...info, stats, memory },
    `${rows.map(([k, v]) => `${`${k}:`.padEnd(12)}${v}`).join("\n")}\n`,
  );
  return 0;
}

export async function memSetCommand(name: string, size: string, flags: NameFlags) {
  const report = await api(
    clientFor(flags).setMemory(name, /^\d+$/.test(size) ? `${size}M` : size),
  );
  out(
    flags.json,
    report,
    `Domain ${name}: balloon target set, guest memory ${mib(report.targetBytes)}\n`,
  );
  return 0;
}

export async function vcpuPinCommand(name: string, vcpu: string, cpus: string, flags: NameFlags) {
  if (!/^\d+$/.test(vcpu)) throw new UsageError(`vcpu: "${vcpu}" is not a vCPU number`);
  const r = await api(clientFor(flags).pinVcpu(name, Number(vcpu), cpus));
  out(flags.json, r, vcpuTable(r.vcpus));
  return 0;
}

export async function limitCommand(
  name: string,
  device: string,
  flags: NameFlags & {
    bandwidth?: string;
    ops?: string;
    bandwidthBurst?: string;
    opsBurst?: string;
    none?: boolean;
    rx?: boolean;
    tx?: boolean;
  },
) {
  const disk = /^(?:vd([a-z])|(\d+))$/.exec(device);
  const net = /^net(\d+)$/.exec(device);
  if (!disk && !net)
    throw new UsageError(
      `device: "${device}" is not a disk (vda, vdb, ... or 0, 1, ...) or a network device (net0, net1, ...)`,
    );
  const rate = (flag: string, v: string): number => parseRate(`--${flag}`, v);
  const limits: Record<string, number> = flags.none
    ? {}
    : {
        ...(flags.bandwidth ? { bandwidth: rate("bandwidth", flags.bandwidth) } : {}),
        ...(flags.bandwidthBurst
          ? { bandwidthBurst: rate("bandwidth-burst", flags.bandwidthBurst) }
          : {}),
        ...(flags.ops ? { ops: rate("ops", flags.ops) } : {}),
        ...(flags.opsBurst ? { opsBurst: rate("ops-burst", flags.opsBurst) } : {}),
      };
  if (!flags.none && Object.keys(limits).length === 0)
    throw new UsageError("limit: give --bandwidth and/or --ops (or --none)");
  const client = clientFor(flags);
  if (net) {
    // Both directions unless one is named; --none removes both.
    const both = !flags.rx && !flags.tx;
    const body = flags.none
      ? {}
      : {
          ...(flags.rx || both ? { rx: limits } : {}),
          ...(flags.tx || both ? { tx: limits } : {}),
        };
    const r = await api(client.setNetLimits(name, Number(net[1]), body));
    out(flags.json, r, `Domain ${name}: ${device} limits ${JSON.stringify(r)}\n`);
    return 0;
  }
  if (flags.rx || flags.tx) throw new UsageError("--rx/--tx: only network devices have directions");
  const index = disk?.[1] ? disk[1].charCodeAt(0) - 97 : Number(disk?.[2]);
  const r = await api(client.setDiskLimits(name, index, limits));
  out(flags.json, r, `Domain ${name}: disk ${device} limits ${JSON.stringify(r)}\n`);
  return 0;
}

export async function vcpuListCommand(name: string, flags: NameFlags) {
  const r = await api(clientFor(flags).vcpus(name));
  out(flags.json, r, vcpuTable(r.vcpus));
  return 0;
}

function vcpuTable(rows: VcpuList["vcpus"]): string {
  return table(
    ["vCPU", "Thread", "CPU time", "Affinity"],
    rows.map((v) => [
      String(v.vcpu),
      String(v.tid),
      v.cpuTimeNs === null ? "-" : `${(v.cpuTimeNs / 1e9).toFixed(1)} s`,
      compactCpus(v.cpus),
    ]),
  );
}

/** [0,1,2,5] → "0-2,5", as taskset and xl vcpu-list print CPU sets. */
export function compactCpus(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === (cpus[j] ?? 0) + 1) j++;
    parts.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

export async function schedCommand(
  name: string,
  flags: NameFlags & { cap?: string; weight?: string },
) {
  const parse = (flag: string, v: string | undefined, max: number) => {
    if (v === undefined) return undefined;
    if (v === "none" || v === "default") return null;
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max)
      throw new UsageError(`--${flag}: "${v}" is not a number in 1..${max} (or none)`);
    return Number(v);
  };
  const cpuCap = parse("cap", flags.cap, 25400);
  const cpuWeight = parse("weight", flags.weight, 65535);
  if (cpuCap === undefined && cpuWeight === undefined)
    throw new UsageError("sched: give --cap and/or --weight");
  const info = await api(
    clientFor(flags).schedule(name, {
      ...(cpuCap !== undefined ? { cpuCap } : {}),
      ...(cpuWeight !== undefined ? { cpuWeight } : {}),
    }),
  );
  out(
    flags.json,
    info,
    `Domain ${name}: cap ${info.spec.cpuCap ?? "none"}, weight ${info.spec.cpuWeight ?? 256}\n`,
  );
  return 0;
}

/** `vessel top`: a live table of every running domain from the daemon's /metrics numbers. */
export async function topCommand(
  flags: ConnectFlags & { json?: boolean; interval?: string; iterations?: string },
) {
  const interval = Number(flags.interval ?? "2");
  if (!(interval >= 0.2 && interval <= 3600))
    throw new UsageError(`--interval: "${flags.interval}" is not a number of seconds (0.2..3600)`);
  const iterations =
    flags.iterations === undefined ? Number.POSITIVE_INFINITY : Number(flags.iterations);
  if (!(iterations >= 1))
    throw new UsageError(`--iterations: "${flags.iterations}" is not a positive number`);
  const client = clientFor(flags);
  let previous: Map<string, number> | undefined;
  let previousAt = 0;
  for (let n = 0; n < iterations; n++) {
    if (n > 0) await new Promise((r) => setTimeout(r, interval * 1000));
    const text = await api(client.metrics());
    const at = Date.now();
    const samples = parsePrometheus(text);
    const byDomain = new Map<string, Record<string, number>>();
    for (const s of samples) {
      const d = s.labels.domain;
      if (!d) continue;
      const row = byDomain.get(d) ?? {};
      row[s.name] = (row[s.name] ?? 0) + s.value;
      byDomain.set(d, row);
    }
    const cpuNow = new Map(
      [...byDomain].map(([d, r]) => [d, r.vessel_vcpu_cpu_seconds_total ?? 0]),
    );
    const rows = [...byDomain]
      .filter(([, r]) => r.vessel_domain_running === 1)
      .map(([d, r]) => {
        const cpu = cpuNow.get(d) ?? 0;
        const before = previous?.get(d);
        const pct =
          before === undefined ? null : ((cpu - before) / ((at - previousAt) / 1000)) * 100;
        return {
          domain: d,
          cpuPercent: pct === null ? null : Math.round(pct),
          cpuSeconds: Math.round(cpu * 10) / 10,
          exits: r.vessel_vm_exits_total ?? 0,
          ioBytes: r.vessel_device_bytes_total ?? 0,
          throttledSeconds: Math.round((r.vessel_cpu_throttled_seconds_total ?? 0) * 10) / 10,
          balloonMiB: Math.round((r.vessel_balloon_bytes ?? 0) / 2 ** 20),
          rssMiB: Math.round((r.vessel_vmm_resident_bytes ?? 0) / 2 ** 20),
        };
      });
    previous = cpuNow;
    previousAt = at;
    if (flags.json)
      process.stdout.write(
        `${JSON.stringify({ time: new Date(at).toISOString(), domains: rows })}\n`,
      );
    else {
      if (process.stdout.isTTY) process.stdout.write("\x1b[H\x1b[2J");
      process.stdout.write(
        table(
          ["Domain", "vCPU %", "CPU s", "Exits", "I/O bytes", "Throttled s", "Balloon", "VMM RSS"],
          rows.map((r) => [
            r.domain,
            r.cpuPercent === null ? "-" : String(r.cpuPercent),
            String(r.cpuSeconds),
            String(r.exits),
            String(r.ioBytes),
            String(r.throttledSeconds),
            `${r.balloonMiB} MiB`,
            `${r.rssMiB} MiB`,
          ]),
        ),
      );
    }
  }
  return 0;
}

/** The samples of a Prometheus text exposition (enough of the format for our own output). */
export function parsePrometheus(
  text: string,
): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || line.startsWith("#")) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] ?? ""] = (l[2] ?? "").replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    out.push({ name: m[1] ?? "", labels, value: Number(m[3]) });
  }
  return out;
}

export async function consoleCommand(name: string, flags: ConnectFlags): Promise<number> {
  const info = await api(clientFor(flags).get(name));
  return attachConsole(info);
}

const DETACH_BYTE = 0x1d; // Ctrl-]

/** Attach this terminal to the domain's console; Ctrl-] detaches and leaves it running. */
function attachConsole(info: DomainInfo): Promise<number> {
  if (!info.consoleSocket)
    throw new UsageError(`domain ${info.name} is not running (state ${info.state})`);
  const path = info.consoleSocket;
  return new Promise((resolveExit, reject) => {
    const sock = createConnection(path);
    const stdin = process.stdin;
    const tty = stdin.isTTY === true;
    let done = false;
    const finish = (code: number, message?: string) => {
      if (done) return;
      done = true;
      stdin.off("data", onInput);
      if (tty) stdin.setRawMode(false);
      stdin.pause();
      sock.destroy();
      if (message) process.stderr.write(message);
      resolveExit(code);
    };
    const onInput = (chunk: Buffer) => {
      const at = chunk.indexOf(DETACH_BYTE);
      if (at >= 0) {
        if (at > 0) sock.write(chunk.subarray(0, at));
        finish(0, `\nvessel: detached from ${info.name} (it keeps running)\n`);
        return;
      }
      sock.write(chunk);
    };
    sock.once("connect", () => {
      process.stderr.write(`Connected to domain ${info.name}\nEscape character is ^]\n`);
      if (tty) stdin.setRawMode(true);
      stdin.on("data", onInput);
      stdin.resume();
    });
    sock.on("data", (b: Buffer) => process.stdout.write(b));
    sock.on("close", () => finish(0, `\nvessel: the console of ${info.name} closed\n`));
    sock.once("error", (e: NodeJS.ErrnoException) => {
      if (!done) {
        done = true;
        reject(new UsageError(`cannot attach to the console of ${info.name} (${e.code})`));
      }
    });
  });
}

export async function eventsCommand(
  flags: ConnectFlags & { json?: boolean; count?: string; domain?: string },
): Promise<number> {
  const limit = flags.count === undefined ? Number.POSITIVE_INFINITY : Number(flags.count);
  if (!(limit > 0)) throw new UsageError(`--count: "${flags.count}" is not a positive number`);
  const abort = new AbortController();
  process.once("SIGINT", () => abort.abort());
  let seen = 0;
  try {
    for await (const e of clientFor(flags).events(abort.signal)) {
      if (flags.domain && e.domain !== flags.domain) continue;
      process.stdout.write(
        flags.json
          ? `${JSON.stringify(e)}\n`
          : `${e.time}  ${e.domain.padEnd(16)} ${e.type.padEnd(10)} ${e.reason}\n`,
      );
      if (++seen >= limit) break;
    }
  } catch (e) {
    if (e instanceof VesselApiError) throw new UsageError(e.message);
    throw e;
  } finally {
    abort.abort();
  }
  return 0;
}
