// Real guests on real KVM: one lab boot runs every case in cases.ts, then each case's
// check is its own test. Where the lab cannot run, the tests fail with the reason.

import assert from "node:assert/strict";
import { before, test } from "node:test";
import { hostKvmUsable } from "../../src/host/mod.js";
import { buildDefaultImage } from "../../src/image/mod.js";
import {
  hostKvmCanBootLinux,
  LabError,
  type LabResult,
  labAvailable,
  runInLab,
} from "../../src/lab/mod.js";
import { labCases as coreCases } from "./cases.js";
import { domainCases } from "./domain_cases.js";
import { hostKvmCases } from "./host_kvm_cases.js";
import { balloonCases, consoleCases, netCases, virtioCases, vsockCases } from "./virtio_cases.js";

const allCases = [
  ...coreCases,
  ...virtioCases,
  ...consoleCases,
  ...netCases,
  ...balloonCases,
  ...vsockCases,
  ...domainCases,
];
// Without a /dev/kvm here, the tests that run small guests on it run in L1 (host_kvm_cases.ts;
// scripts/test.mjs leaves them out of the host's run then).
const hostKvm = hostKvmUsable();
if (!hostKvm.ok) {
  process.stderr.write(`lab_test: ${hostKvm.reason}: the host-KVM tests run in the lab\n`);
  allCases.push(...hostKvmCases(hostKvm.reason));
}
// VESSEL_LAB_ONLY=REGEX runs only the cases whose names match: a developer's shortcut while
// working on one device. CI never sets it, so the whole batch runs there.
const only = process.env.VESSEL_LAB_ONLY ? new RegExp(process.env.VESSEL_LAB_ONLY) : undefined;
const labCases = only ? allCases.filter((c) => only.test(c.scenario.name)) : allCases;

/** Results by case index; filled across lab boots. */
const results: (LabResult | undefined)[] = [];
let failure: unknown;
/**
 * A wedged L1 (see src/lab/lab.ts; its heartbeat stops) costs one more boot for the cases it
 * had not finished, the one it wedged in included. Only the emulator's wedge is retried: a
 * case that ran and failed its check stays failed. On these machines a full batch saw up to
 * two wedges (2026-12-07), hence room for four.
 */
const MAX_BOOTS = 5;

before(async () => {
  try {
    const direct = hostKvmCanBootLinux();
    if (direct.ok) {
      process.stderr.write(
        "lab_test: this host has real KVM, but the suite still runs in the lab for one path\n",
      );
    }
    const avail = labAvailable();
    if (!avail.ok) throw new Error(`the lab cannot run here: ${avail.reason}`);
    await buildDefaultImage({});
    let next = 0;
    for (let boot = 1; boot <= MAX_BOOTS && next < labCases.length; boot++) {
      const batch = labCases.slice(next);
      try {
        const run = await runInLab(
          batch.map((c) => c.scenario),
          {
            cpus: 4,
            log: process.env.VESSEL_LAB_VERBOSE
              ? (l) => process.stderr.write(`lab| ${l}\n`)
              : () => {},
          },
        );
        run.results.forEach((r, i) => {
          results[next + i] = r;
        });
        process.stderr.write(
          `lab_test: boot ${boot}: L1 ready in ${Math.round(run.bootMs)} ms, ${run.results.length} cases\n`,
        );
        next = labCases.length;
      } catch (e) {
        if (!(e instanceof LabError) || boot === MAX_BOOTS) throw e;
        e.results.forEach((r, i) => {
          results[next + i] = r;
        });
        // The case that was running when L1 wedged is retried in the next boot.
        next += e.results.length;
        // The message carries L1's last console lines (soft lockups name the stuck task),
        // which is all there is to go on for why it wedged.
        process.stderr.write(
          `lab_test: boot ${boot} ended early; continuing from case ${next}:\n${e.message.split("\n").slice(0, 17).join("\n")}\n`,
        );
      }
    }
  } catch (e) {
    failure = e;
  }
});

for (const [i, c] of labCases.entries()) {
  test(`lab: ${c.scenario.name}`, () => {
    const r = results[i];
    if (!r && failure) throw failure;
    assert.ok(r, "no result for this scenario");
    try {
      c.check(r);
    } catch (e) {
      process.stderr.write(
        `---- output of "${c.scenario.name}" (exit ${r.exitCode}, ${Math.round(r.durationMs)} ms) ----\n${r.output.slice(-6000)}\n`,
      );
      throw e;
    }
  });
}
