// The test files that run small guests on the host's own /dev/kvm (test guests assembled by
// the tests, the daemon, the jail, the load script). Where this machine has a /dev/kvm that
// opens, scripts/test.mjs runs them here; where it has none (a kvm_pvm guest has the module
// but no device), they run inside the lab's L1, on real KVM, as cases of the same lab boot
// as everything else: they never pass by being skipped.

import assert from "node:assert/strict";
import { join } from "node:path";
import { shQuote } from "../../src/lab/mod.js";
import { type LabCase, ROOT } from "./cases.js";

/**
 * Relative to the repository's root (the compiled files, as node --test takes them), each
 * with its time limit in L1: every VMM start there pays Node's start-up under TCG (seconds,
 * not milliseconds); a wedged L1 is noticed that long (plus a margin) into a case.
 */
const FILES: Readonly<Record<string, number>> = {
  "dist/tests/direct_kvm_test.js": 300,
  "dist/tests/daemon_test.js": 900,
  "dist/tests/jail_test.js": 600,
  "dist/tests/domains_load_test.js": 1200,
};
export const HOST_KVM_TEST_FILES: readonly string[] = Object.keys(FILES);

/** One lab case per file: `node --test FILE` in L1, which must exit 0. */
export function hostKvmCases(reason: string): LabCase[] {
  return Object.entries(FILES).map(([file, timeoutSec]) => ({
    scenario: {
      name: `host-KVM tests in L1 (${reason}): ${file}`,
      script: `cd ${shQuote(ROOT)} && VESSEL_TEST_VERBOSE=1 VESSEL_TEST_TIME_SCALE=5 node --test --test-timeout=600000 --test-reporter=spec ${shQuote(join(ROOT, file))}`,
      timeoutSec,
    },
    check: (r) => {
      const counts = /^ℹ (tests|pass|fail) \d+$/gm;
      for (const l of r.output.match(counts) ?? []) process.stderr.write(`lab: ${file}: ${l}\n`);
      for (const l of r.output.split("\n").filter((x) => x.startsWith("domains load: ")))
        process.stderr.write(`lab: ${l}\n`);
      assert.equal(r.timedOut, false, `${file} did not finish in L1`);
      assert.match(r.output, /^ℹ fail 0$/m, `${file} has failures in L1`);
      assert.doesNotMatch(r.output, /^ℹ (tests|pass) 0$/m, `${file} ran no test in L1`);
      assert.equal(r.exitCode, 0);
    },
  }));
}
