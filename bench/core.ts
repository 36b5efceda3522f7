// Benchmark of the core VMM against QEMU, in one lab run (real KVM inside QEMU TCG; see
// README "The lab"). Prints boot-to-init, PIO exit cost and idle resident memory, each as
// a ratio to its peer: QEMU microvm for boot and memory, a minimal C KVM loop for exits.
// Absolute numbers are slow (everything is emulated); the ratios are the result.
// Usage: node dist/bench/core.js [--json]   (BENCH_ROUNDS=3 by default)

import { fileURLToPath } from "node:url";
import { buildDefaultImage } from "../src/image/mod.js";
import { shQuote } from "../src/lab/mod.js";
import { runBenchInLab } from "./lab_run.js";

const json = process.argv.includes("--json");
const inner = fileURLToPath(new URL("./core_inner.js", import.meta.url));
await buildDefaultImage({});
const run = await runBenchInLab(
  {
    name: "core benchmark",
    script: `BENCH_CONSOLE=/dev/console BENCH_ROUNDS=${Number(process.env.BENCH_ROUNDS ?? 3)} BENCH_PIO_EXITS=${Number(process.env.BENCH_PIO_EXITS ?? 100000)} node ${shQuote(inner)}`,
    timeoutSec: 3600,
  },
  { cpus: 2, log: (l) => process.stderr.write(`lab| ${l}\n`) },
);
const r = run.results[0];
const line = r?.output.split("\n").find((l) => l.startsWith("BENCH-RESULT "));
if (r?.exitCode !== 0 || !line) {
  process.stderr.write(`benchmark failed:\n${r?.output ?? "no result"}\n`);
  process.exit(1);
}
const data = JSON.parse(line.slice("BENCH-RESULT ".length));
const m = data.medians;
const rows = [
  ["boot to init (ms)", m.bootVesselMs, m.bootQemuMs, "QEMU microvm", 0.6],
  ["PIO exit, local (us)", m.pioVesselNs / 1000, m.pioCNs / 1000, "C loop", 1.2],
  ["PIO exit, local (us)", m.pioVesselNs / 1000, m.pioCSameVmNs / 1000, "C loop, same VM", null],
  ["PIO exit, to a device (us)", m.pioForwardedNs / 1000, m.pioCNs / 1000, "C loop", null],
  ["RSS, idle 256M guest (MiB)", m.rssVesselKiB / 1024, m.rssQemuKiB / 1024, "QEMU microvm", 1.0],
  // Private memory alone: the rest of RSS is the binaries' file pages, shared by all VMMs.
  [
    "  of it anonymous (MiB)",
    m.rssAnonVesselKiB / 1024,
    m.rssAnonQemuKiB / 1024,
    "QEMU microvm",
    null,
  ],
] as const;
if (json) {
  process.stdout.write(`${JSON.stringify({ ...data, labBootMs: run.bootMs })}\n`);
} else {
  process.stdout.write(`medians of ${data.rounds} alternating rounds, in one lab run\n`);
  process.stdout.write(
    `${"metric".padEnd(30)}${"Vessel".padStart(10)}${"peer".padStart(10)}  ratio   target  peer\n`,
  );
  for (const [name, v, p, peer, target] of rows) {
    const ratio = v / p;
    const verdict =
      target === null ? "" : ratio <= target ? `<= ${target} ok` : `<= ${target} MISSED`;
    process.stdout.write(
      `${name.padEnd(30)}${v.toFixed(1).padStart(10)}${p.toFixed(1).padStart(10)}  ${ratio.toFixed(2).padStart(5)}   ${verdict.padEnd(14)}${peer}\n`,
    );
  }
}
