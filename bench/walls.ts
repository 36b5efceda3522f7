// What the walls cost: in one run (meant for the lab, where KVM is real), the same Linux
// guest is started through `vessel daemon` with the walls (jail: namespaces, own uid,
// seccomp; and a cgroup with limits) and without them (--no-jail --no-limits), alternating,
// and the script prints the medians of domain start time (create until the VMM answers) and
// boot-to-init (create until the guest's init prints its marker), with ratios.
//
//   vessel lab -- node dist/bench/walls.js [--rounds 5] [--json]

import { join } from "node:path";
import { parseArgs } from "node:util";
import { defaultImagePaths, INIT_READY_MARKER } from "../src/image/mod.js";
import { ConsoleSession, cleanUp, startDaemon } from "../tests/daemon_harness.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "5" },
    json: { type: "boolean", default: false },
  },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds: a positive integer");

const img = defaultImagePaths();
type Mode = "walls" | "bare";
const samples: Record<Mode, { startMs: number[]; bootMs: number[] }> = {
  walls: { startMs: [], bootMs: [] },
  bare: { startMs: [], bootMs: [] },
};

async function once(mode: Mode, round: number): Promise<void> {
  const d = await startDaemon({
    slowKvm: false,
    args: mode === "bare" ? ["--no-jail", "--no-limits"] : [],
  });
  try {
    const name = `walls-${mode}-${round}`;
    const t0 = performance.now();
    const info = await d.client.create({
      name,
      memory: "256M",
      vcpus: 1,
      kernel: img.kernel,
      initrd: img.initrd,
      cmdline: "console=ttyS0 reboot=k panic=-1 quiet",
    });
    const started = performance.now();
    if ((info.jailed === true) !== (mode === "walls"))
      throw new Error(`${mode}: jailed is ${info.jailed}`);
    const c = await ConsoleSession.connect(info.consoleSocket ?? join(d.runtimeDir, "x"));
    await c.waitFor(INIT_READY_MARKER, 300_000);
    const booted = performance.now();
    c.close();
    await d.client.destroy(name);
    samples[mode].startMs.push(started - t0);
    samples[mode].bootMs.push(booted - t0);
    if (!values.json)
      process.stderr.write(
        `round ${round} ${mode}: start ${Math.round(started - t0)} ms, boot-to-init ${Math.round(booted - t0)} ms\n`,
      );
  } finally {
    await cleanUp(d);
  }
}

for (let r = 1; r <= rounds; r++) {
  // Alternate which goes first, so neither always runs on a warmer cache.
  for (const mode of (r % 2 ? ["walls", "bare"] : ["bare", "walls"]) as Mode[]) await once(mode, r);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};
const result = {
  rounds,
  startMs: { walls: median(samples.walls.startMs), bare: median(samples.bare.startMs) },
  bootToInitMs: { walls: median(samples.walls.bootMs), bare: median(samples.bare.bootMs) },
};
const ratio = (x: { walls: number; bare: number }) => (x.walls / x.bare).toFixed(2);
if (values.json) {
  process.stdout.write(
    `${JSON.stringify({ ...result, startRatio: Number(ratio(result.startMs)), bootRatio: Number(ratio(result.bootToInitMs)) })}\n`,
  );
} else {
  process.stdout.write(
    [
      `medians of ${rounds} alternating rounds        with walls   without   ratio`,
      `domain start (create → VMM answers)   ${Math.round(result.startMs.walls).toString().padStart(7)} ms ${Math.round(result.startMs.bare).toString().padStart(7)} ms   ${ratio(result.startMs)}`,
      `boot-to-init (create → init marker)   ${Math.round(result.bootToInitMs.walls).toString().padStart(7)} ms ${Math.round(result.bootToInitMs.bare).toString().padStart(7)} ms   ${ratio(result.bootToInitMs)}`,
      "",
    ].join("\n"),
  );
}
