// The measuring half of bench/core.ts, run where /dev/kvm is real KVM (inside the lab):
// boot-to-init of the default guest under `vessel run` and under QEMU microvm, the cost
// of one PIO exit in Vessel and in a minimal C loop, and the resident memory of each VMM
// with an idle 256 MiB guest. Runs alternate between Vessel and its peer; prints one JSON
// line prefixed with BENCH-RESULT.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultImagePaths } from "../src/image/mod.js";
import { Vm } from "../src/vmm/vm.js";
import { assembleReal } from "../tests/guests/assemble.js";
import { log, median } from "./common.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const VESSEL = join(ROOT, "bin/vessel.js");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const PIO_EXITS = Number(process.env.BENCH_PIO_EXITS ?? 100000);
const CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet";
const img = defaultImagePaths();
const work = mkdtempSync(join(tmpdir(), "vessel-bench-"));

/** A guest that does `count` OUTs to `port` and then powers off through port 0x600. */
function pioGuest(count: number, port: number): Uint8Array {
  return assembleReal(`
    mov $${count}, %ecx
    test %ecx, %ecx
    jz 2f
    mov $${port}, %dx
  1: out %al, %dx
    dec %ecx
    jnz 1b
  2: mov $0x600, %dx
    mov $0x34, %al
    out %al, %dx
  3: jmp 3b
  `);
}

async function vesselPio(count: number, port: number): Promise<number> {
  const vm = Vm.build({
    memoryBytes: 16 * 2 ** 20,
    cpus: 1,
    boot: { kind: "flat-real", image: pioGuest(count, port), address: 0x1000 },
    consoleOut: () => {},
  });
  const t0 = process.hrtime.bigint();
  await vm.run();
  const ns = Number(process.hrtime.bigint() - t0);
  vm.close();
  return ns;
}

/** The C loop's time for `count` exits; `sameVm` gives its VM Vessel's irqchip and PIT. */
function cLoopPio(count: number, bin: string, sameVm = false): number {
  const guest = join(work, `guest-${count}.bin`);
  writeFileSync(guest, pioGuest(count, 0x80));
  const out = execFileSync(bin, sameVm ? [guest, "irqchip"] : [guest], { encoding: "utf8" });
  const m = /ns=(\d+)/.exec(out);
  if (!m) throw new Error(`pio_loop printed ${out}`);
  return Number(m[1]);
}

interface Spawned {
  child: ChildProcess;
  readyMs: Promise<number>;
}

function startGuest(kind: "vessel" | "qemu", opts: { memory: string; exec?: string }): Spawned {
  const cmdline = opts.exec
    ? `${CMDLINE} vessel.exec=${Buffer.from(opts.exec).toString("base64")}`
    : CMDLINE;
  const args =
    kind === "vessel"
      ? [
          VESSEL,
          "run",
          "--kernel",
          img.kernel,
          "--initrd",
          img.initrd,
          "--memory",
          opts.memory,
          "--cmdline",
          cmdline,
        ]
      : [
          "-M",
          "microvm",
          "-enable-kvm",
          "-cpu",
          "host",
          "-m",
          opts.memory,
          "-smp",
          "1",
          "-nodefaults",
          "-no-user-config",
          "-nographic",
          "-no-reboot",
          "-serial",
          "stdio",
          "-kernel",
          img.kernel,
          "-initrd",
          img.initrd,
          "-append",
          cmdline,
        ];
  const t0 = performance.now();
  const child = spawn(kind === "vessel" ? process.execPath : "qemu-system-x86_64", args, {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let seen = "";
  const readyMs = new Promise<number>((resolve, reject) => {
    child.stdout?.on("data", (b: Buffer) => {
      seen += b.toString("latin1");
      if (seen.includes("VESSEL-INIT-READY")) resolve(performance.now() - t0);
    });
    child.once("exit", (code) =>
      reject(new Error(`${kind} exited (${code}) before init: ${seen.slice(-500)}`)),
    );
  });
  readyMs.catch(() => {});
  return { child, readyMs };
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) r();
    else child.once("exit", () => r());
  });
}

async function bootToInit(kind: "vessel" | "qemu"): Promise<number> {
  const g = startGuest(kind, { memory: "256M", exec: "true" });
  const ms = await g.readyMs;
  await exited(g.child);
  return ms;
}

/**
 * VmRSS, and RssAnon: the process's private memory (guest RAM included), apart from the
 * file pages of its binary and libraries, which every VMM process on a host shares.
 */
function rssKiB(pid: number): { rss: number; anon: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) =>
    Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return { rss: field("VmRSS"), anon: field("RssAnon") };
}

async function idleRss(kind: "vessel" | "qemu"): Promise<{ rss: number; anon: number }> {
  const g = startGuest(kind, { memory: "256M" });
  await g.readyMs;
  await new Promise((r) => setTimeout(r, 5000));
  const pid = g.child.pid as number;
  const kib = rssKiB(pid);
  g.child.kill("SIGKILL");
  await exited(g.child);
  return kib;
}

const result: Record<string, unknown> = { rounds: ROUNDS, pioExits: PIO_EXITS };

// PIO exit cost: per exit = (time for N exits - time for 0 exits) / N, for each side.
const cBin = join(work, "pio_loop");
execFileSync("gcc", ["-O2", "-o", cBin, join(ROOT, "bench/pio_loop.c")]);
const pio = {
  vessel: [] as number[],
  vesselForwarded: [] as number[],
  c: [] as number[],
  cSameVm: [] as number[],
};
for (let i = 0; i < ROUNDS; i++) {
  const c = (cLoopPio(PIO_EXITS, cBin) - cLoopPio(0, cBin)) / PIO_EXITS;
  const cSame = (cLoopPio(PIO_EXITS, cBin, true) - cLoopPio(0, cBin, true)) / PIO_EXITS;
  const v = ((await vesselPio(PIO_EXITS, 0x80)) - (await vesselPio(0, 0x80))) / PIO_EXITS;
  // The UART scratch register: a device in the main thread answers (the mailbox path).
  const f =
    ((await vesselPio(PIO_EXITS / 10, 0x3ff)) - (await vesselPio(0, 0x3ff))) / (PIO_EXITS / 10);
  pio.c.push(c);
  pio.cSameVm.push(cSame);
  pio.vessel.push(v);
  pio.vesselForwarded.push(f);
  log(
    `pio round ${i}: C ${(c / 1000).toFixed(2)} us, C with irqchip ${(cSame / 1000).toFixed(2)} us, Vessel ${(v / 1000).toFixed(2)} us, forwarded ${(f / 1000).toFixed(2)} us`,
  );
}
result.pioNs = pio;

const boot = { vessel: [] as number[], qemu: [] as number[] };
for (let i = 0; i < ROUNDS; i++) {
  for (const kind of ["vessel", "qemu"] as const) {
    const ms = await bootToInit(kind);
    boot[kind].push(ms);
    log(`boot round ${i} ${kind}: ${ms.toFixed(0)} ms to init`);
  }
}
result.bootMs = boot;

const rss = { vessel: [] as number[], qemu: [] as number[] };
const anon = { vessel: [] as number[], qemu: [] as number[] };
for (let i = 0; i < Math.min(ROUNDS, 2); i++) {
  for (const kind of ["vessel", "qemu"] as const) {
    const kib = await idleRss(kind);
    rss[kind].push(kib.rss);
    anon[kind].push(kib.anon);
    log(`rss round ${i} ${kind}: ${kib.rss} KiB, anonymous ${kib.anon} KiB`);
  }
}
result.rssKiB = rss;
result.rssAnonKiB = anon;
result.medians = {
  bootVesselMs: median(boot.vessel),
  bootQemuMs: median(boot.qemu),
  pioVesselNs: median(pio.vessel),
  pioForwardedNs: median(pio.vesselForwarded),
  pioCNs: median(pio.c),
  pioCSameVmNs: median(pio.cSameVm),
  rssVesselKiB: median(rss.vessel),
  rssQemuKiB: median(rss.qemu),
  rssAnonVesselKiB: median(anon.vessel),
  rssAnonQemuKiB: median(anon.qemu),
};
process.stdout.write(`BENCH-RESULT ${JSON.stringify(result)}\n`);
