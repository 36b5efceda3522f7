// Benchmark of Vessel's paravirtual I/O against QEMU, in one run: on this host when its
// /dev/kvm is hardware virtualization, else in the lab (real KVM inside QEMU TCG; see README
// "The lab"): virtio-blk sequential read and write throughput and 4 KiB
// random-read IOPS, and guest-to-host TCP throughput over a TAP, without vhost on both
// sides and with vhost on both. QEMU runs microvm with virtio-mmio devices, the same guest
// kernel and initramfs, the same disk image and the same host caching (buffered on both
// sides, as the lab's /tmp is tmpfs, which has no O_DIRECT). Prints the medians of alternating rounds and each
// ratio Vessel/QEMU (higher is better for all of them).
// Usage: node dist/bench/io.js [--json] [--lab]   (BENCH_ROUNDS=3, BENCH_DISK_MB=256,
// BENCH_RAND_SECONDS=10, BENCH_TCP_MB=64: TCP runs at a few MiB/s in the lab; BENCH_ONLY=qemu|vessel
// runs one side alone; BENCH_ATTEMPTS=5 boots per figure before giving up, BENCH_BOOT_TIMEOUT=300
// seconds before a boot counts as hung; BENCH_PARTS=blk,tcp,vhost picks the figures)

import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { hostKvmCanBootLinux } from "../src/host/mod.js";
import { buildDefaultImage, vesselCacheRoot, writeNewc } from "../src/image/mod.js";
import { shQuote } from "../src/lab/mod.js";
import { runBenchInLab } from "./lab_run.js";

const json = process.argv.includes("--json");
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const inner = fileURLToPath(new URL("./io_inner.js", import.meta.url));

// The guest tools are built here, on the host (gcc under TCG is slow), into the cache,
// which L1 sees read-only at the same path.
const image = await buildDefaultImage({});
const dir = join(vesselCacheRoot(), "bench-io");
mkdirSync(dir, { recursive: true });
const randread = join(dir, "randread");
execFileSync("gcc", ["-O2", "-static", "-o", randread, join(ROOT, "bench/randread.c")]);
execFileSync("gcc", ["-O2", "-o", join(dir, "tcp_sink"), join(ROOT, "bench/tcp_sink.c")]);
// The default initramfs with randread appended as a second archive (the kernel unpacks
// concatenated archives, each starting 4-byte aligned): both VMMs boot this one file.
const base = readFileSync(image.initrd);
const extra = writeNewc([
  { type: "dir", path: "usr" },
  { type: "dir", path: "usr/bin" },
  { type: "file", path: "usr/bin/randread", data: readFileSync(randread), mode: 0o755 },
]);
const padded = Math.ceil(base.length / 512) * 512;
const initrd = new Uint8Array(padded + extra.length);
initrd.set(base);
initrd.set(extra, padded);
writeFileSync(join(dir, "initrd.img"), initrd);

const env = [
  "BENCH_ROUNDS",
  "BENCH_DISK_MB",
  "BENCH_RAND_SECONDS",
  "BENCH_TCP_MB",
  "BENCH_ONLY",
  "BENCH_ATTEMPTS",
  "BENCH_BOOT_TIMEOUT",
  "BENCH_PARTS",
]
  .filter((k) => process.env[k] !== undefined)
  .map((k) => `${k}=${shQuote(process.env[k] as string)}`)
  .join(" ");
// On a host whose own /dev/kvm is hardware virtualization the measuring half runs right
// here (root, /dev/vhost-net and `ip` needed); elsewhere, or with --lab, in the lab.
const direct = hostKvmCanBootLinux();
const inLab = process.argv.includes("--lab") || !direct.ok;
process.stderr.write(
  inLab
    ? `bench: running in the lab (${direct.ok ? "--lab" : direct.reason})\n`
    : `bench: running on this host's KVM (${direct.reason})\n`,
);
const run = inLab
  ? await runBenchInLab(
      {
        name: "io benchmark",
        script: `${env} BENCH_CONSOLE=/dev/console BENCH_DIR=${shQuote(dir)} node ${shQuote(inner)}`,
        timeoutSec: 7200,
      },
      { cpus: 2, log: (l) => process.stderr.write(`lab| ${l}\n`) },
    )
  : runHere();

function runHere(): { bootMs: number; results: { output: string; exitCode: number | null }[] } {
  const p = spawnSync(process.execPath, [inner], {
    env: { ...process.env, BENCH_DIR: dir },
    stdio: ["ignore", "pipe", "inherit"],
    encoding: "utf8",
    maxBuffer: 64 * 2 ** 20,
  });
  return { bootMs: 0, results: [{ output: p.stdout ?? "", exitCode: p.status }] };
}
const r = run.results[0];
const line = r?.output.split("\n").find((l) => l.startsWith("BENCH-RESULT "));
if (r?.exitCode !== 0 || !line) {
  process.stderr.write(`benchmark failed:\n${r?.output.slice(-8000) ?? "no result"}\n`);
  process.exit(1);
}
// The per-boot progress lines, for a reader who wants each round's figures.
for (const l of r.output.split("\n")) if (l.startsWith("bench: ")) process.stderr.write(`${l}\n`);
const data = JSON.parse(line.slice("BENCH-RESULT ".length));
const m = data.medians as Record<string, { vessel: number; qemu: number }>;
// [metric, key, unit, target ratio, what the peer is]
const rows: [string, string, string, number, string][] = [
  ["blk sequential read", "seqRead", "MiB/s", 1.0, "QEMU"],
  ["blk sequential write", "seqWrite", "MiB/s", 1.0, "QEMU"],
  ["blk 4K random read, QD1", "randRead", "IOPS", 1.0, "QEMU"],
  ["TCP guest->host, TAP", "tcpUser", "MiB/s", 1.0, "QEMU, user-space TAP"],
  ["TCP guest->host, vhost", "tcpVhost", "MiB/s", 0.8, "QEMU with vhost"],
];
if (json) {
  process.stdout.write(`${JSON.stringify({ ...data, inLab, labBootMs: run.bootMs })}\n`);
} else {
  process.stdout.write(
    `medians of ${data.rounds} alternating rounds, in one ${inLab ? "lab run" : "run on this host"}\n`,
  );
  process.stdout.write(
    `${"metric".padEnd(26)}${"unit".padEnd(7)}${"Vessel".padStart(9)}${"QEMU".padStart(9)}  ratio  target\n`,
  );
  for (const [name, key, unit, target] of rows) {
    const v = m[key]?.vessel ?? Number.NaN;
    const q = m[key]?.qemu ?? Number.NaN;
    if (Number.isNaN(v) && Number.isNaN(q)) {
      process.stdout.write(`${name.padEnd(26)}${unit.padEnd(7)}  not measured (BENCH_PARTS)\n`);
      continue;
    }
    const ratio = v / q;
    const verdict = ratio >= target ? `>= ${target} ok` : `>= ${target} MISSED`;
    process.stdout.write(
      `${name.padEnd(26)}${unit.padEnd(7)}${v.toFixed(1).padStart(9)}${q.toFixed(1).padStart(9)}  ${ratio.toFixed(2).padStart(5)}  ${verdict}\n`,
    );
  }
  const retried = data.retries as string[];
  process.stdout.write(
    retried.length
      ? `boots that failed and were run again (the lab's nested SVM; README "The lab"):\n${retried.map((r) => `  ${r}\n`).join("")}`
      : "no boot failed\n",
  );
  // Where the time went: CPU use of each VMM's threads during each phase, as a fraction of
  // one CPU (medians over rounds): the main thread does device work in both VMMs.
  const cpu = data.cpu as Record<string, Record<string, Record<string, number>>>;
  const phaseOf: Record<string, string> = {
    seqRead: "seqRead",
    seqWrite: "seqWrite",
    randRead: "randRead",
    tcpUser: "tcp",
    tcpVhost: "tcpVhost",
  };
  process.stdout.write(
    "\nCPU during each test, in CPUs (main thread / other threads / vhost worker)\n",
  );
  for (const [name, key] of rows.map(([n, k]) => [n, k] as const)) {
    const phase = cpu[phaseOf[key] ?? key];
    if (!phase) continue;
    const fmt = (g: Record<string, number> | undefined) => {
      if (!g) return "-";
      let other = 0;
      for (const [k, v] of Object.entries(g)) if (k.startsWith("thread:")) other += v;
      return `${(g.main ?? 0).toFixed(2)} / ${other.toFixed(2)} / ${(g["vhost-worker"] ?? 0).toFixed(2)}`;
    };
    process.stdout.write(
      `${name.padEnd(26)} Vessel ${fmt(phase.vessel).padEnd(20)} QEMU ${fmt(phase.qemu)}\n`,
    );
  }
}
