// The lab: real KVM for tests on hosts whose /dev/kvm cannot boot Linux. QEMU emulates an
// AMD machine with SVM (L1) under TCG; L1 loads kvm_amd, sees the host's root file system
// read-only over 9p, and runs a batch of shell scenarios chrooted into it, so the host's
// Node, npm tree and QEMU run unchanged on a real /dev/kvm. One L1 boot serves a whole batch
// (boots are the expensive part); each scenario runs in its own cgroup with its own timeout,
// its output and exit code are files in a writable share that is mounted at the same path in
// L1 as on the host, and the console carries begin/end markers for progress and timing.

import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { hostKvmCanBootLinux } from "../host/mod.js";
import {
  ensureL1Image,
  HOST_TAG,
  L1_KERNEL_META,
  LAB_CONTROL_DIR,
  LAB_TAG,
  MARK,
} from "./l1image.js";

export interface LabScenario {
  name: string;
  /** A POSIX sh script, run by /bin/sh inside L1 chrooted into the host's root. */
  script: string;
  /** Kill the scenario (its whole cgroup) after this long; default 600 s. */
  timeoutSec?: number;
  /** Extra environment for this scenario. */
  env?: Record<string, string>;
}

export interface LabResult {
  name: string;
  /** null when the scenario was killed by its timeout. */
  exitCode: number | null;
  /** stdout and stderr, interleaved as written. */
  output: string;
  timedOut: boolean;
  durationMs: number;
}

export interface LabOptions {
  /** L1 vCPUs; at least as many as the largest guest a scenario boots. Default 4. */
  cpus?: number;
  /** L1 memory in MiB (TCG allocates lazily). Default 6144. */
  memoryMiB?: number;
  /** Overall limit for boot plus all scenarios; default 180 s plus every scenario's timeout. */
  timeoutSec?: number;
  /** Receives each L1 console line, and each scenario's output when it ends. */
  log?: (line: string) => void;
  /**
   * Run the (single) scenario on L1's serial console wired to this terminal, as its
   * controlling tty, instead of capturing its output. Ctrl-A x quits QEMU.
   */
  interactive?: boolean;
  /**
   * The writable share; mounted at this same path inside the chroot. Default: a fresh temp
   * dir, removed afterwards. A caller that passes one owns it (and can read files back).
   */
  shareDir?: string;
  /** Working directory of the scenarios; default process.cwd(). */
  cwd?: string;
  /** Vessel cache root; default `${XDG_CACHE_HOME:-$HOME/.cache}/vessel`. */
  cacheDir?: string;
}

export interface LabRun {
  results: LabResult[];
  /** From starting QEMU to L1's init being ready to run scenarios. */
  bootMs: number;
  consoleLog: string;
  /** Problems L1 reported that did not stop the run (a module that failed to load...). */
  warnings: string[];
}

/** The lab could not run, or the batch did not finish. */
export class LabError extends Error {
  override readonly name = "LabError";
  constructor(
    message: string,
    readonly consoleLog: string,
    readonly results: LabResult[],
  ) {
    super(message);
  }
}

const QEMU = "qemu-system-x86_64";
const DEFAULT_SCENARIO_TIMEOUT_SEC = 600;
const BOOT_ALLOWANCE_SEC = 180;
/** How long past its own timeout a scenario may run before L1 is taken to be wedged. */
const WEDGE_MARGIN_SEC = 45;
/**
 * L1 touches its heartbeat file every few seconds; this long without it, L1 is wedged.
 * VESSEL_LAB_HEARTBEAT_SEC sets it (0: only the scenario timeouts tell).
 */
const HEARTBEAT_STALE_SEC = Number(process.env.VESSEL_LAB_HEARTBEAT_SEC ?? 90) || 0;
const HEARTBEAT_FILE = "heartbeat";
const SCENARIO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function findOnPath(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, cmd);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** Whether this machine can run the lab, and if not, why. */
export function labAvailable(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== "linux" || process.arch !== "x64") {
    return {
      ok: false,
      reason: `the lab needs Linux on x86-64, not ${process.platform}/${process.arch}`,
    };
  }
  if (findOnPath(QEMU) === null) {
    return { ok: false, reason: `${QEMU} is not installed (Debian package qemu-system-x86)` };
  }
  if (findOnPath("apt-get") === null || findOnPath("dpkg-deb") === null) {
    return { ok: false, reason: `apt-get and dpkg-deb are needed to fetch ${L1_KERNEL_META}` };
  }
  return { ok: true };
}

export interface GuestCommandOptions {
  kernel: string;
  initrd: string;
  cpus?: number;
  memoryMiB?: number;
  /** Extra kernel command line, e.g. execCmdlineArg(script) from the image module. */
  cmdline?: string;
}

/**
 * A shell command (for a scenario) that boots a guest under QEMU's microvm with the real
 * KVM of L1, serial console on stdout: the reference to compare Vessel against.
 */
export function qemuGuestCommand(o: GuestCommandOptions): string {
  const cmdline = `console=ttyS0 quiet${o.cmdline === undefined ? "" : ` ${o.cmdline}`}`;
  return [
    "qemu-system-x86_64 -M microvm -enable-kvm -cpu host",
    `-smp ${o.cpus ?? 1} -m ${o.memoryMiB ?? 512}M`,
    "-nodefaults -no-reboot -display none -serial stdio",
    `-kernel ${shQuote(o.kernel)} -initrd ${shQuote(o.initrd)} -append ${shQuote(cmdline)}`,
  ].join(" ");
}

/** Quote for POSIX sh with single quotes. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function validateCount(value: number, name: string, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

function scenarioScript(s: LabScenario, share: string, cwd: string, term: string | null): string {
  const env: Record<string, string> = {
    PATH: SCENARIO_PATH,
    HOME: process.env.HOME ?? "/root",
    LANG: "C.UTF-8",
    VESSEL_LAB: "1",
    VESSEL_LAB_SHARE: share,
  };
  if (process.env.XDG_CACHE_HOME) env.XDG_CACHE_HOME = process.env.XDG_CACHE_HOME;
  if (term !== null) env.TERM = term;
  Object.assign(env, s.env ?? {});
  const exports = Object.entries(env).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new TypeError(`Bad environment name ${k}`);
    return `export ${k}=${shQuote(v)}`;
  });
  return [
    `# Lab scenario: ${s.name.replace(/\n/g, " ")}`,
    ...exports,
    `cd ${shQuote(cwd)} || exit 125`,
    s.script,
    "",
  ].join("\n");
}

function runnerScript(
  count: number,
  timeouts: number[],
  share: string,
  interactive: { rows: number; cols: number } | null,
): string {
  const ctl = `/lab/${LAB_CONTROL_DIR}`;
  const inChroot = `${share}/${LAB_CONTROL_DIR}`;
  const lines = [
    "# Runs each scenario chrooted into /host in its own cgroup, killed at its timeout.",
    "CG=/host/sys/fs/cgroup",
    `CTL=${shQuote(ctl)}`,
    `IN_CHROOT=${shQuote(inChroot)}`,
    // Loopback, which L1's init leaves down: tests that listen on 127.0.0.1 need it.
    "chroot /host ip link set lo up 2>/dev/null || ip link set lo up 2>/dev/null",
  ];
  if (interactive !== null) {
    lines.push(
      `stty -F /dev/ttyS0 rows ${interactive.rows} cols ${interactive.cols} 2>/dev/null`,
      `echo "${MARK.begin} 0"`,
      `setsid cttyhack chroot /host /bin/sh "$IN_CHROOT/s0.sh"`,
      "rc=$?",
      `echo $rc > "$CTL/s0.rc"`,
      `echo "${MARK.end} 0 rc=$rc"`,
    );
    return `${lines.join("\n")}\n`;
  }
  lines.push(
    // A wedged L1 stops this loop too: the host notices within HEARTBEAT_STALE_SEC instead
    // of waiting out the scenario's own timeout (scenarios that run tests take many minutes).
    `( while :; do cut -d" " -f1 /proc/uptime > "$CTL/${HEARTBEAT_FILE}"; sleep 5; done ) &`,
    "run_scenario() {",
    "  i=$1",
    '  cg="$CG/vessel-lab-$i"',
    '  mkdir -p "$cg"',
    `  echo "${MARK.begin} $i"`,
    `  sh -c 'echo $$ > "$1/cgroup.procs" && exec chroot /host /bin/sh "$2"' sh "$cg" "$IN_CHROOT/s$i.sh" > "$CTL/s$i.out" 2>&1 < /dev/null &`,
    "  pid=$!",
    `  ( sleep "$2"; echo timeout > "$CTL/s$i.timedout"; echo 1 > "$cg/cgroup.kill" ) &`,
    "  watchdog=$!",
    '  wait "$pid"',
    "  rc=$?",
    '  kill "$watchdog" 2>/dev/null',
    '  echo 1 > "$cg/cgroup.kill" 2>/dev/null',
    '  echo "$rc" > "$CTL/s$i.rc"',
    `  echo "${MARK.end} $i rc=$rc"`,
    "}",
  );
  for (let i = 0; i < count; i++) lines.push(`run_scenario ${i} ${timeouts[i]}`);
  return `${lines.join("\n")}\n`;
}

/**
 * Boot L1 once and run `scenarios` in order inside it. Throws LabError when the lab cannot
 * run at all or the batch does not complete (overall timeout, L1 crash); a scenario that
 * fails or times out is a result, not an error.
 */
export async function runInLab(scenarios: LabScenario[], opts: LabOptions = {}): Promise<LabRun> {
  const cpus = opts.cpus ?? 4;
  const memoryMiB = opts.memoryMiB ?? 6144;
  validateCount(cpus, "cpus", 1, 64);
  validateCount(memoryMiB, "memoryMiB", 256, 1 << 20);
  if (scenarios.length === 0) throw new TypeError("runInLab needs at least one scenario");
  if (opts.interactive && scenarios.length !== 1) {
    throw new TypeError("An interactive lab run takes exactly one scenario");
  }
  const timeouts = scenarios.map((s) => s.timeoutSec ?? DEFAULT_SCENARIO_TIMEOUT_SEC);
  for (const [i, t] of timeouts.entries()) validateCount(t, `scenarios[${i}].timeoutSec`, 1, 86400);
  const overallSec = opts.timeoutSec ?? BOOT_ALLOWANCE_SEC + timeouts.reduce((a, b) => a + b, 0);

  const available = labAvailable();
  if (!available.ok) throw new LabError(`Cannot run the lab: ${available.reason}`, "", []);
  const logFn = opts.log;
  const image = await ensureL1Image({
    ...(opts.cacheDir === undefined ? {} : { cacheDir: opts.cacheDir }),
    ...(logFn === undefined ? {} : { log: logFn }),
  });

  const ownShare = opts.shareDir === undefined;
  const share = resolve(opts.shareDir ?? (await mkdtemp(join(tmpdir(), "vessel-lab-"))));
  if (/[\s\0]/.test(share)) throw new TypeError(`The lab share path has whitespace: ${share}`);
  const ctl = join(share, LAB_CONTROL_DIR);
  try {
    await rm(ctl, { recursive: true, force: true });
    await mkdir(ctl, { recursive: true });
    const cwd = resolve(opts.cwd ?? process.cwd());
    const term = opts.interactive ? (process.env.TERM ?? "vt100") : null;
    await writeFile(join(ctl, "share-path"), share);
    // The scenarios' working directory, bound into L1 when it lives under /tmp or /run.
    await writeFile(join(ctl, "cwd-path"), resolve(opts.cwd ?? process.cwd()));
    for (const [i, s] of scenarios.entries()) {
      await writeFile(join(ctl, `s${i}.sh`), scenarioScript(s, share, cwd, term));
    }
    const tty = opts.interactive
      ? { rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 }
      : null;
    await writeFile(join(ctl, "run.sh"), runnerScript(scenarios.length, timeouts, share, tty));

    const args = [
      "-accel",
      "tcg,thread=multi",
      "-cpu",
      "EPYC,+svm",
      "-smp",
      String(cpus),
      "-m",
      String(memoryMiB),
      "-nodefaults",
      "-no-reboot",
      "-display",
      "none",
      ...(opts.interactive
        ? ["-chardev", "stdio,id=con0,mux=on,signal=off", "-serial", "chardev:con0"]
        : ["-serial", "stdio"]),
      ...(opts.interactive ? ["-mon", "chardev=con0,mode=readline"] : []),
      "-kernel",
      image.kernel,
      "-initrd",
      image.initrd,
      "-append",
      `console=ttyS0 panic=-1 mitigations=off ${opts.interactive ? "quiet loglevel=1" : "quiet"}`,
      "-virtfs",
      `local,path=/,mount_tag=${HOST_TAG},security_model=none,readonly=on,multidevs=remap`,
      "-virtfs",
      `local,path=${share},mount_tag=${LAB_TAG},security_model=none,multidevs=remap`,
      "-device",
      "virtio-rng-pci",
    ];
    return await driveQemu(args, scenarios, ctl, overallSec, opts);
  } finally {
    if (ownShare) await rm(share, { recursive: true, force: true });
  }
}

async function driveQemu(
  args: string[],
  scenarios: LabScenario[],
  ctl: string,
  overallSec: number,
  opts: LabOptions,
): Promise<LabRun> {
  const started = performance.now();
  const interactive = opts.interactive === true;
  const child: ChildProcess = spawn(QEMU, args, {
    stdio: [interactive ? "inherit" : "ignore", "pipe", "pipe"],
  });
  let consoleLog = "";
  let stderr = "";
  let partial = "";
  let bootMs = -1;
  let current = -1;
  let currentStart = 0;
  let idleSince = 0;
  const durations: number[] = [];
  const ended = new Set<number>();
  const warnings: string[] = [];
  let fatal: string | null = null;

  const onLine = (line: string): void => {
    if (!interactive || bootMs < 0) opts.log?.(line);
    if (line.startsWith(MARK.ready)) {
      bootMs = performance.now() - started;
      idleSince = performance.now();
    } else if (line.startsWith(`${MARK.begin} `)) {
      current = Number(line.slice(MARK.begin.length + 1));
      currentStart = performance.now();
    } else if (line.startsWith(`${MARK.end} `)) {
      const i = Number(line.slice(MARK.end.length + 1).split(" ")[0]);
      durations[i] = performance.now() - currentStart;
      ended.add(i);
      current = -1;
      idleSince = performance.now();
    } else if (line.startsWith(`${MARK.warn}: `)) {
      warnings.push(line.slice(MARK.warn.length + 2));
    } else if (line.startsWith(`${MARK.fatal}: `)) {
      fatal = line.slice(MARK.fatal.length + 2);
    }
  };
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (chunk: string) => {
    // Interactive: once L1 is ready the terminal gets the raw bytes (a shell needs them).
    if (interactive && bootMs >= 0) process.stdout.write(chunk);
    consoleLog += chunk;
    partial += chunk;
    let nl = partial.indexOf("\n");
    while (nl >= 0) {
      const line = partial.slice(0, nl).replace(/\r$/, "");
      partial = partial.slice(nl + 1);
      const wasBooting = bootMs < 0;
      onLine(line);
      if (interactive && wasBooting && bootMs >= 0 && partial !== "") {
        process.stdout.write(partial);
      }
      nl = partial.indexOf("\n");
    }
  });
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
  });

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, overallSec * 1000);
  // L1 enforces each scenario's timeout itself. When a scenario outlives its timeout by a
  // margin, L1 is no longer running its own timers: QEMU's TCG has been seen to wedge a
  // nested-SVM machine that way. Kill it now rather than waiting for the overall limit.
  let wedged = -1;
  const heartbeatStale = (): boolean => {
    try {
      return Date.now() - statSync(join(ctl, HEARTBEAT_FILE)).mtimeMs > HEARTBEAT_STALE_SEC * 1000;
    } catch {
      return true; // never written: L1 started no runner, or lost it
    }
  };
  const watchdog = setInterval(() => {
    const now = performance.now();
    const running = current >= 0;
    // Between scenarios the one about to start is blamed: L1 has been seen to wedge in the
    // runner's own mkdir, which no scenario timeout covers, but the heartbeat stops there too.
    const at = running ? current : ended.size;
    const overLimit =
      bootMs < 0
        ? now - started > BOOT_ALLOWANCE_SEC * 1000
        : running &&
          now - currentStart >
            ((scenarios[current]?.timeoutSec ?? DEFAULT_SCENARIO_TIMEOUT_SEC) + WEDGE_MARGIN_SEC) *
              1000;
    const silent =
      !interactive &&
      bootMs >= 0 &&
      at < scenarios.length &&
      HEARTBEAT_STALE_SEC > 0 &&
      now - (running ? currentStart : idleSince) > HEARTBEAT_STALE_SEC * 1000 &&
      heartbeatStale();
    if (overLimit || silent) {
      wedged = at;
      child.kill("SIGKILL");
    }
  }, 2000);
  const exit = await new Promise<{ code: number | null; signal: string | null; error?: Error }>(
    (done) => {
      child.once("error", (error) => done({ code: null, signal: null, error }));
      child.once("exit", (code, signal) => done({ code, signal }));
    },
  );
  clearTimeout(timer);
  clearInterval(watchdog);
  if (partial !== "") onLine(partial);

  const results: LabResult[] = [];
  for (const [i, s] of scenarios.entries()) {
    if (!ended.has(i)) break;
    const out = join(ctl, `s${i}.out`);
    const output = existsSync(out) ? await readFile(out, "utf8") : "";
    const wasKilled = existsSync(join(ctl, `s${i}.timedout`));
    const rcText = existsSync(join(ctl, `s${i}.rc`))
      ? (await readFile(join(ctl, `s${i}.rc`), "utf8")).trim()
      : "";
    const result: LabResult = {
      name: s.name,
      exitCode: wasKilled || rcText === "" ? null : Number(rcText),
      output,
      timedOut: wasKilled,
      durationMs: Math.round(durations[i] ?? 0),
    };
    results.push(result);
    if (!interactive) {
      opts.log?.(
        `lab: scenario "${s.name}" ${wasKilled ? "timed out" : `exited ${result.exitCode}`} after ${result.durationMs} ms`,
      );
    }
  }

  const tail = (): string => {
    const lines = consoleLog.trimEnd().split("\n").slice(-15).join("\n");
    return `\n--- last L1 console lines ---\n${lines}${stderr.trim() === "" ? "" : `\n--- qemu stderr ---\n${stderr.trim()}`}`;
  };
  if (exit.error !== undefined) {
    throw new LabError(`Cannot start ${QEMU}: ${exit.error.message}`, consoleLog, results);
  }
  if (wedged >= 0) {
    const wedgedWhere =
      bootMs < 0 ? "while booting, before" : current < 0 ? "before" : "while running";
    throw new LabError(
      `L1 stopped responding ${wedgedWhere} scenario "${scenarios[wedged]?.name}" (its heartbeat or its own timeout stopped); QEMU was killed${tail()}`,
      consoleLog,
      results,
    );
  }
  if (timedOut) {
    const where =
      current >= 0
        ? `while running scenario "${scenarios[current]?.name}"`
        : bootMs < 0
          ? "before L1 finished booting"
          : "between scenarios";
    throw new LabError(
      `The lab run exceeded its overall timeout of ${overallSec} s ${where}; QEMU was killed${tail()}`,
      consoleLog,
      results,
    );
  }
  if (fatal !== null) {
    throw new LabError(`L1 could not set up the lab: ${fatal}${tail()}`, consoleLog, results);
  }
  if (results.length < scenarios.length) {
    const missing = scenarios[results.length]?.name;
    throw new LabError(
      `L1 stopped (QEMU exit ${exit.code ?? exit.signal}) before scenario "${missing}" finished${tail()}`,
      consoleLog,
      results,
    );
  }
  return { results, bootMs: Math.round(bootMs), consoleLog, warnings };
}

export { hostKvmCanBootLinux };
