// Real guests on real KVM: one lab boot runs every case in cases.ts, then each case's
// check is its own test. Where the lab cannot run, the tests fail with the reason.

import assert from "node:assert/strict";
import { before, test } from "node:test";
import { buildDefaultImage } from "../../src/image/mod.js";
import { hostKvmCanBootLinux, type LabRun, labAvailable, runInLab } from "../../src/lab/mod.js";
import { labCases as coreCases } from "./cases.js";
import { balloonCases, consoleCases, netCases, virtioCases } from "./virtio_cases.js";

const labCases = [...coreCases, ...virtioCases, ...consoleCases, ...netCases, ...balloonCases];

let run: LabRun | undefined;
let failure: unknown;

before(async () => {
  try {
    const direct = hostKvmCanBootLinux();
    if (direct.ok) {
      // A host with real KVM runs the same scenarios without the lab; the lab harness is
      // still what runs them, so they see the same environment.
      process.stderr.write(
        "lab_test: this host has real KVM, but the suite still runs in the lab for one path\n",
      );
    }
    const avail = labAvailable();
    if (!avail.ok) throw new Error(`the lab cannot run here: ${avail.reason}`);
    await buildDefaultImage({});
    run = await runInLab(
      labCases.map((c) => c.scenario),
      {
        cpus: 4,
        log: process.env.VESSEL_LAB_VERBOSE ? (l) => process.stderr.write(`lab| ${l}\n`) : () => {},
      },
    );
    process.stderr.write(`lab_test: L1 booted in ${Math.round(run.bootMs)} ms\n`);
  } catch (e) {
    failure = e;
  }
});

for (const [i, c] of labCases.entries()) {
  test(`lab: ${c.scenario.name}`, () => {
    if (failure) throw failure;
    assert.ok(run, "the lab did not run");
    const r = run.results[i];
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
