// Lab cases for the control plane (issue #4): real Linux guests under `vessel daemon` on real
// KVM (domain_scenario.ts does the work and reports each step), and resource control
// (resources_scenario.ts). The load script runs on this host's /dev/kvm (domains_load_test).

import assert from "node:assert/strict";
import { shQuote } from "../../src/lab/mod.js";
import { type LabCase, ROOT } from "./cases.js";

const node = (script: string, args = "") => `node ${shQuote(`${ROOT}dist/${script}`)} ${args}`;

const EXPECTED = [
  "define nat",
  "define xl",
  "define lv",
  "define fc",
  "start nat",
  "start xl",
  "start lv",
  "start fc",
  "console nat",
  "console xl",
  "console lv",
  "console fc",
  "mem-set nat: the guest's MemTotal minus balloon, its MemFree and the VMM's resident memory go down",
  "daemon SIGKILL and restart finds every domain",
  "kill -9 of a VMM: crashed, on_crash=preserve applied",
  "reboot nat through ACPI: it comes back with a new VMM",
  "shutdown --wait nat through the power button",
  "shutdown --wait lv through the power button",
  "shutdown --wait fc through the power button",
];

export const domainCases: LabCase[] = [
  {
    scenario: {
      name: "domains: native, xl.cfg, libvirt XML and Firecracker configs boot under the daemon; consoles, daemon restart, crash, reboot, shutdown",
      script: node("tests/lab/domain_scenario.js"),
      timeoutSec: 1200,
    },
    check: (r) => {
      const failed = r.output.split("\n").filter((l) => /^CHECK .* FAILED/.test(l));
      assert.deepEqual(failed, [], "steps failed");
      for (const step of EXPECTED)
        assert.match(
          r.output,
          new RegExp(`^CHECK ${step.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} ok`, "m"),
        );
      assert.match(r.output, /DOMAIN-SCENARIO-DONE failures=0/);
      assert.equal(r.exitCode, 0);
    },
  },
  {
    scenario: {
      name: "resources: cgroup limits (cap 50 % → half a CPU, runtime change, io.max, memory.high), disk and network rate limits, vCPU pinning, metrics",
      script: node("tests/lab/resources_scenario.js"),
      timeoutSec: 600,
    },
    check: (r) => {
      const failed = r.output.split("\n").filter((l) => /^CHECK .* FAILED/.test(l));
      assert.deepEqual(failed, [], "steps failed");
      for (const l of r.output.split("\n").filter((x) => x.startsWith("RESOURCES ")))
        process.stderr.write(`lab: ${l}\n`);
      assert.equal((r.output.match(/^CHECK .* ok$/gm) ?? []).length, 8);
      assert.match(r.output, /RESOURCES-SCENARIO-DONE failures=0/);
      assert.equal(r.exitCode, 0);
    },
  },
];
