// Load script for the control plane: one `vessel daemon` starts and destroys many small
// domains (the hlt-sleeping test guest, 16 MiB each), several at a time, through the API, and
// prints domains per second, start and destroy latencies, and failures (which must be 0).
//
//   node dist/bench/domains_load.js [--domains 50] [--concurrency 4] [--json]
//
// Runs on any /dev/kvm (the guest needs no interrupts); `vessel lab -- node ...` runs it on
// real KVM.

import { join } from "node:path";
import { parseArgs } from "node:util";
import { cleanUp, startDaemon } from "../tests/daemon_harness.js";
import { writeDomainGuest } from "../tests/guests/domain_guest.js";

const { values } = parseArgs({
  options: {
    domains: { type: "string", default: "50" },
    concurrency: { type: "string", default: "4" },
    json: { type: "boolean", default: false },
  },
});
const total = Number(values.domains);
const concurrency = Number(values.concurrency);
if (!Number.isInteger(total) || total < 1) throw new Error("--domains: a positive integer");
if (!Number.isInteger(concurrency) || concurrency < 1)
  throw new Error("--concurrency: a positive integer");

const d = await startDaemon();
const kernel = writeDomainGuest(join(d.dir, "guest.elf"), { powerButton: false });
const startMs: number[] = [];
const destroyMs: number[] = [];
const failures: string[] = [];
let next = 0;
let done = 0;
const began = performance.now();

async function worker(): Promise<void> {
  for (let k = next++; k < total; k = next++) {
    const name = `load-${k}`;
    try {
      const t0 = performance.now();
      const info = await d.client.create({ name, memory: "16M", vcpus: 1, kernel });
      if (info.state !== "running") throw new Error(`state ${info.state} after create`);
      const t1 = performance.now();
      await d.client.destroy(name);
      const t2 = performance.now();
      startMs.push(t1 - t0);
      destroyMs.push(t2 - t1);
    } catch (e) {
      failures.push(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    }
    done++;
    if (!values.json) process.stderr.write(`\r${done}/${total} domains`);
  }
}

try {
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - began) / 1000;
  const left = (await d.client.list()).length;
  const pct = (xs: number[], p: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN);
  };
  const result = {
    domains: total,
    concurrency,
    seconds: Number(seconds.toFixed(2)),
    domainsPerSecond: Number((total / seconds).toFixed(2)),
    failures: failures.length,
    leftOver: left,
    startMs: { p50: pct(startMs, 50), p95: pct(startMs, 95), max: pct(startMs, 100) },
    destroyMs: { p50: pct(destroyMs, 50), p95: pct(destroyMs, 95), max: pct(destroyMs, 100) },
  };
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stderr.write("\n");
    process.stdout.write(
      [
        `domains started and destroyed  ${total} (${concurrency} at a time)`,
        `wall time                      ${result.seconds} s`,
        `domains per second             ${result.domainsPerSecond}`,
        `start latency p50/p95/max      ${result.startMs.p50}/${result.startMs.p95}/${result.startMs.max} ms`,
        `destroy latency p50/p95/max    ${result.destroyMs.p50}/${result.destroyMs.p95}/${result.destroyMs.max} ms`,
        `failures                       ${failures.length}`,
        `domains left in the daemon     ${left}`,
        ...failures.slice(0, 10).map((f) => `  ${f}`),
        "",
      ].join("\n"),
    );
  }
  process.exitCode = failures.length === 0 && left === 0 ? 0 : 1;
} finally {
  await cleanUp(d);
}
