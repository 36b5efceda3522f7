// The measuring half of bench/io.ts, run where /dev/kvm is real KVM (inside the lab). Each
// round boots, for Vessel and for QEMU in alternating order, the default guest twice: once
// with a virtio-blk disk and a virtio-net TAP on the user-space path (sequential write and
// read with dd, 1 MiB O_DIRECT blocks; 4 KiB random reads at queue depth 1 with randread;
// then TCP to the host), once with vhost-net (TCP only). The guest marks each phase on its
// console; at each mark this script samples the VMM's CPU time per thread (and the vhost
// worker's), so the result says where each figure's time went. Prints one JSON line
// prefixed with BENCH-RESULT.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultImagePaths, execCmdlineArg } from "../src/image/mod.js";
import { log, median } from "./common.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const VESSEL = join(ROOT, "bin/vessel.js");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DISK_MB = Number(process.env.BENCH_DISK_MB ?? 256);
const RAND_SECONDS = Number(process.env.BENCH_RAND_SECONDS ?? 10);
const TCP_MB = Number(process.env.BENCH_TCP_MB ?? 64);
const ATTEMPTS = Number(process.env.BENCH_ATTEMPTS ?? 5);
/** A boot that has not ended by then is hung (a whole boot takes 1-3 minutes in the lab). */
const BOOT_TIMEOUT_SEC = Number(process.env.BENCH_BOOT_TIMEOUT ?? 300);
const DIR = process.env.BENCH_DIR ?? "";
const TAP = "vbench0";
const HOST_IP = "10.202.0.1";
const GUEST_IP = "10.202.0.2";
const PORT = 5001;
// One MAC for both VMMs: the host's neighbour entry for the guest stays right across boots.
const MAC = "52:54:00:ca:02:02";
const CMDLINE = `console=ttyS0 reboot=k panic=-1 quiet vessel.ip=${GUEST_IP}/24`;
const MIB = 2 ** 20;
const TICK_MS = 1000 / 100; // USER_HZ

type Kind = "vessel" | "qemu";
type Mode = "user" | "vhost";

for (const [name, v] of Object.entries({
  ROUNDS,
  DISK_MB,
  RAND_SECONDS,
  TCP_MB,
  ATTEMPTS,
  BOOT_TIMEOUT: BOOT_TIMEOUT_SEC,
})) {
  if (!Number.isInteger(v) || v < 1)
    throw new RangeError(`BENCH_${name} must be a positive integer`);
}
/**
 * BENCH_PARTS: which figures to take (default all). "blk" alone keeps the guests off the
 * sustained TCP stream that the lab's nested SVM does not survive (README "The lab").
 */
const PARTS = new Set((process.env.BENCH_PARTS ?? "blk,tcp,vhost").split(","));
for (const p of PARTS)
  if (!["blk", "tcp", "vhost"].includes(p))
    throw new RangeError(`BENCH_PARTS: "${p}" is not one of blk, tcp, vhost`);
if (!DIR || !existsSync(join(DIR, "initrd.img"))) {
  throw new Error("BENCH_DIR must hold the benchmark's initrd.img and tcp_sink (run bench/io.js)");
}
if (!existsSync("/dev/vhost-net")) throw new Error("/dev/vhost-net is missing in the lab");

const kernel = defaultImagePaths().kernel;
const initrd = join(DIR, "initrd.img");
const work = mkdtempSync(join(tmpdir(), "vessel-bench-io-"));
const disk = join(work, "disk.img");
// Allocated, not sparse: reads of holes would skip the page cache work real data costs.
execFileSync("fallocate", ["-l", `${Math.max(1024, DISK_MB * 2)}M`, disk]);
try {
  execFileSync("ip", ["link", "del", TAP], { stdio: "ignore" });
} catch {
  // not there
}
execFileSync("ip", ["tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"]);
execFileSync("ip", ["addr", "add", `${HOST_IP}/24`, "dev", TAP]);
execFileSync("ip", ["link", "set", TAP, "up"]);

// busybox's dd prints no throughput line, so the guest times it with /proc/uptime (10 ms
// steps: under 1 % of any run here).
const DISK_SCRIPT = `
up() { cut -d' ' -f1 /proc/uptime; }
echo BENCH-MARK seqWrite
t0=$(up); dd if=/dev/zero of=/dev/vda bs=1M count=${DISK_MB} oflag=direct 2>/dev/null; t1=$(up)
echo "BENCH-SEQWRITE $((${DISK_MB} * 1048576)) bytes $t0 $t1"
echo BENCH-MARK seqRead
t0=$(up); dd if=/dev/vda of=/dev/null bs=1M count=${DISK_MB} iflag=direct 2>/dev/null; t1=$(up)
echo "BENCH-SEQREAD $((${DISK_MB} * 1048576)) bytes $t0 $t1"
echo BENCH-MARK randRead
randread /dev/vda ${RAND_SECONDS} 1 | sed 's/^/BENCH-/'
`;
const TCP_SCRIPT = `
echo BENCH-MARK tcp
dd if=/dev/zero bs=1M count=${TCP_MB} 2>/dev/null | nc ${HOST_IP} ${PORT}
echo "BENCH-TCP-RC $?"
echo BENCH-MARK end
`;

function vmmArgs(kind: Kind, mode: Mode, cmdline: string): [string, string[]] {
  const withDisk = mode === "user";
  if (kind === "vessel") {
    return [
      process.execPath,
      [
        VESSEL,
        "run",
        "--kernel",
        kernel,
        "--initrd",
        initrd,
        "--memory",
        "512M",
        "--cpus",
        "1",
        "--cmdline",
        cmdline,
        ...(withDisk ? ["--disk", disk] : []),
        "--net",
        `tap=${TAP},mac=${MAC}${mode === "vhost" ? ",vhost=on" : ""}`,
        "--json",
      ],
    ];
  }
  return [
    "qemu-system-x86_64",
    [
      ...["-M", "microvm", "-enable-kvm", "-cpu", "host", "-m", "512M", "-smp", "1"],
      ...["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio"],
      ...["-kernel", kernel, "-initrd", initrd, "-append", cmdline],
      // Modern (version 2) virtio-mmio, as Vessel's; QEMU defaults to legacy.
      ...["-global", "virtio-mmio.force-legacy=off"],
      ...(withDisk
        ? [
            "-drive",
            `id=d0,file=${disk},format=raw,if=none,cache=writeback,aio=threads`,
            "-device",
            "virtio-blk-device,drive=d0",
          ]
        : []),
      "-netdev",
      `tap,id=n0,ifname=${TAP},script=no,downscript=no,vhost=${mode === "vhost" ? "on" : "off"}`,
      "-device",
      `virtio-net-device,netdev=n0,mac=${MAC}`,
    ],
  ];
}

/** CPU ticks of each thread group of `pid` (main thread, others by name) and its vhost worker. */
function cpuSample(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  const add = (group: string, statPath: string) => {
    try {
      const stat = readFileSync(statPath, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out[group] = (out[group] ?? 0) + Number(f[11]) + Number(f[12]);
    } catch {
      // the thread ended between readdir and read
    }
  };
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    let comm = "?";
    try {
      comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
    } catch {
      continue;
    }
    add(
      Number(tid) === pid ? "main" : `thread:${comm.replace(/\d+/g, "N")}`,
      `/proc/${pid}/task/${tid}/stat`,
    );
  }
  // vhost-net's worker is a kernel thread named vhost-<owner pid> (Linux 6.1).
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/comm`, "utf8").trim() === `vhost-${pid}`) {
        add("vhost-worker", `/proc/${p}/stat`);
      }
    } catch {
      // gone
    }
  }
  return out;
}

interface Phase {
  ms: number;
  /** Fraction of one CPU each thread group used during the phase. */
  cpu: Record<string, number>;
}

interface BootResult {
  seqWrite?: number;
  seqRead?: number;
  randRead?: number;
  tcp?: number;
  phases: Record<string, Phase>;
  vesselStats?: unknown;
}

function exited(child: ChildProcess): Promise<number | null> {
  return new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) r(child.exitCode);
    else child.once("exit", (code) => r(code));
  });
}

function startSink(): Promise<{ child: ChildProcess; result: Promise<string> }> {
  const child = spawn(join(DIR, "tcp_sink"), [HOST_IP, String(PORT)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  return new Promise((resolve, reject) => {
    const result = new Promise<string>((res) => {
      child.once("exit", () => res(out));
    });
    child.stdout?.on("data", (b: Buffer) => {
      out += b.toString();
      if (out.includes("TCP-SINK listening")) resolve({ child, result });
    });
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`tcp_sink exited (${code}): ${out}`)));
  });
}

async function boot(kind: Kind, mode: Mode): Promise<BootResult> {
  const withTcp = mode === "vhost" || PARTS.has("tcp");
  const withDisk = mode === "user" && PARTS.has("blk");
  const sink = withTcp ? await startSink() : undefined;
  const script = (withDisk ? DISK_SCRIPT : "") + (withTcp ? TCP_SCRIPT : "echo BENCH-MARK end\n");
  const [cmd, args] = vmmArgs(kind, mode, `${CMDLINE} ${execCmdlineArg(script)}`);
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  const pid = child.pid as number;
  let output = "";
  let stderr = "";
  let partial = "";
  const marks: { name: string; t: number; cpu: Record<string, number> }[] = [];
  child.stdout?.on("data", (b: Buffer) => {
    const text = partial + b.toString("latin1");
    const lines = text.split("\n");
    partial = lines.pop() ?? "";
    for (const raw of lines) {
      const line = raw.replace(/\r$/, "");
      output += `${line}\n`;
      const m = /^BENCH-MARK (\S+)/.exec(line);
      if (m) marks.push({ name: m[1] as string, t: performance.now(), cpu: cpuSample(pid) });
    }
  });
  child.stderr?.on("data", (b: Buffer) => {
    stderr += b.toString();
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), BOOT_TIMEOUT_SEC * 1000);
  const code = await exited(child);
  clearTimeout(timer);
  const sinkTimer = setTimeout(() => sink?.child.kill("SIGKILL"), 30_000);
  const sinkOut = sink ? await sink.result : "";
  clearTimeout(sinkTimer);
  const fail = (why: string): never => {
    throw new Error(
      // Vessel's --json line starts with the outcome (a triple fault's registers among it):
      // named apart, since the tail of stderr is its long counters.
      `${kind} (${mode}): ${why}; exit ${code}; outcome ${/"outcome":\{[^}]*\}/.exec(stderr)?.[0] ?? "not reported"}\n--- console ---\n${output.slice(-3000)}\n--- stderr ---\n${stderr.slice(-2000)}\n--- sink ---\n${sinkOut}`,
    );
  };
  if (code !== 0) fail("the VMM did not exit cleanly");
  // QEMU exits 0 on a guest reset too (-no-reboot): only the marker says the script ran.
  if (!output.includes("VESSEL-EXEC-DONE rc=0")) fail("the guest's script did not finish");
  const phases: Record<string, Phase> = {};
  for (let i = 0; i + 1 < marks.length; i++) {
    const a = marks[i] as (typeof marks)[number];
    const b = marks[i + 1] as (typeof marks)[number];
    const ms = b.t - a.t;
    const cpu: Record<string, number> = {};
    for (const [g, ticks] of Object.entries(b.cpu)) {
      cpu[g] = ((ticks - (a.cpu[g] ?? 0)) * TICK_MS) / ms;
    }
    phases[a.name] = { ms, cpu };
  }
  const mibs = (re: RegExp, name: string): number => {
    const m = re.exec(output);
    if (!m) return fail(`no ${name} result`);
    const seconds = Number(m[3]) - Number(m[2]);
    if (!(seconds > 0)) return fail(`${name} took ${seconds} s`);
    return Number(m[1]) / MIB / seconds;
  };
  const result: BootResult = { phases };
  if (withTcp) {
    const tcp = /TCP-SINK bytes=(\d+) ns=(\d+)/.exec(sinkOut);
    if (!tcp || Number(tcp[1]) !== TCP_MB * MIB) fail(`the sink got ${tcp?.[1] ?? "nothing"}`);
    result.tcp = Number(tcp?.[1]) / MIB / (Number(tcp?.[2]) / 1e9);
  }
  if (withDisk) {
    result.seqWrite = mibs(/BENCH-SEQWRITE (\d+) bytes ([\d.]+) ([\d.]+)/, "seqWrite");
    result.seqRead = mibs(/BENCH-SEQREAD (\d+) bytes ([\d.]+) ([\d.]+)/, "seqRead");
    const rr = /BENCH-RANDREAD iops=(\d+)/.exec(output);
    if (!rr) fail("no randread result");
    result.randRead = Number(rr?.[1]);
  }
  if (kind === "vessel") {
    const last = stderr.trim().split("\n").pop() ?? "";
    try {
      const j = JSON.parse(last);
      result.vesselStats = { exits: j.stats?.exits, devices: j.devices };
    } catch {
      // --json printed nothing parseable: the figures stand without the counters
    }
  }
  return result;
}

/**
 * The lab's nested guests die mid-run, for either VMM: under a sustained TCP stream the L2
 * guest takes a page fault in module text it cannot deliver (a triple fault) or loops on
 * one (a hang), and once L1 itself oopsed. QEMU's guests did the same in the same lab, so
 * this is the emulated SVM's, not a VMM's (README "The lab"). Such a boot is reported and
 * run again, up to BENCH_ATTEMPTS times; the result lists every retry.
 */
async function bootWithRetry(kind: Kind, mode: Mode): Promise<BootResult> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await boot(kind, mode);
    } catch (e) {
      const why = String(e);
      retries.push(
        `${kind} ${mode}: ${/outcome \S+|did not exit cleanly|did not finish/.exec(why)?.[0] ?? why.slice(0, 120)}`,
      );
      if (attempt >= ATTEMPTS) throw e;
      log(`${kind} ${mode}: attempt ${attempt} failed, retrying: ${why.slice(0, 2000)}`);
    }
  }
}
const retries: string[] = [];

const metrics = ["seqRead", "seqWrite", "randRead", "tcpUser", "tcpVhost"] as const;
type Metric = (typeof metrics)[number];
const samples = Object.fromEntries(
  metrics.map((k) => [k, { vessel: [] as number[], qemu: [] as number[] }]),
) as Record<Metric, Record<Kind, number[]>>;
/** Per phase and VMM, each round's CPU use by thread group. */
const profile: Record<string, Record<Kind, Record<string, number>[]>> = {};
const counters: unknown[] = [];

try {
  for (let round = 0; round < ROUNDS; round++) {
    // BENCH_ONLY=qemu|vessel runs one side alone (to tell a lab fault from a VMM's).
    const only = process.env.BENCH_ONLY as Kind | undefined;
    const order: Kind[] = only ? [only] : round % 2 === 0 ? ["vessel", "qemu"] : ["qemu", "vessel"];
    for (const kind of order) {
      const modes: Mode[] = [
        ...(PARTS.has("blk") || PARTS.has("tcp") ? (["user"] as const) : []),
        ...(PARTS.has("vhost") ? (["vhost"] as const) : []),
      ];
      for (const mode of modes) {
        const r = await bootWithRetry(kind, mode);
        const add = (metric: Metric, v: number | undefined) => {
          if (v !== undefined) samples[metric][kind].push(v);
        };
        add("seqWrite", r.seqWrite);
        add("seqRead", r.seqRead);
        add("randRead", r.randRead);
        add(mode === "user" ? "tcpUser" : "tcpVhost", r.tcp);
        for (const [phase, p] of Object.entries(r.phases)) {
          const key = phase === "tcp" && mode === "vhost" ? "tcpVhost" : phase;
          profile[key] ??= { vessel: [], qemu: [] };
          profile[key][kind].push(p.cpu);
        }
        if (r.vesselStats) counters.push({ round, mode, ...(r.vesselStats as object) });
        log(
          `round ${round} ${kind} ${mode}: ${
            r.seqWrite !== undefined
              ? `write ${r.seqWrite?.toFixed(1)} MiB/s, read ${r.seqRead?.toFixed(1)} MiB/s, randread ${r.randRead} IOPS, `
              : ""
          }${r.tcp !== undefined ? `tcp ${r.tcp.toFixed(1)} MiB/s` : ""}`,
        );
      }
    }
  }
} finally {
  try {
    execFileSync("ip", ["link", "del", TAP], { stdio: "ignore" });
  } catch {
    // already gone
  }
  rmSync(work, { recursive: true, force: true });
}

const medians = Object.fromEntries(
  metrics.map((k) => [k, { vessel: median(samples[k].vessel), qemu: median(samples[k].qemu) }]),
);
/** Median CPU use per thread group, per phase and VMM. */
const cpu = Object.fromEntries(
  Object.entries(profile).map(([phase, byKind]) => [
    phase,
    Object.fromEntries(
      (["vessel", "qemu"] as const).map((kind) => {
        const groups = new Set(byKind[kind].flatMap((s) => Object.keys(s)));
        return [
          kind,
          Object.fromEntries(
            [...groups].map((g) => [g, median(byKind[kind].map((s) => s[g] ?? 0))]),
          ),
        ];
      }),
    ),
  ]),
);
process.stdout.write(
  `BENCH-RESULT ${JSON.stringify({
    rounds: ROUNDS,
    config: { diskMiB: DISK_MB, randSeconds: RAND_SECONDS, tcpMiB: TCP_MB, parts: [...PARTS] },
    samples,
    medians,
    cpu,
    vesselCounters: counters,
    retries,
  })}\n`,
);
