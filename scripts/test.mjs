#!/usr/bin/env node
// Runs every test: compile, lint, then Node's test runner over every *_test.js in dist/
// (unit tests beside the code, direct-KVM test guests, and the lab suite on real KVM).
// On a machine whose /dev/kvm does not open, the tests that need it run inside the lab
// instead (tests/lab/host_kvm_cases.ts), so they are left out of the host's run here.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

function step(cmd, args) {
  process.stderr.write(`\n== ${cmd} ${args.join(" ")}\n`);
  const r = spawnSync(cmd, args, { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

function testFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === "node_modules" ? [] : testFiles(path);
    return e.name.endsWith("_test.js") ? [path] : [];
  });
}

step("npx", ["tsc", "-p", "."]);
step("node", ["scripts/bundle.mjs"]);
step("npx", ["biome", "check", "."]);
let targets = process.argv.slice(2);
if (targets.length === 0) {
  const { hostKvmUsable } = await import("../dist/src/host/capability.js");
  const { HOST_KVM_TEST_FILES } = await import("../dist/tests/lab/host_kvm_cases.js");
  const kvm = hostKvmUsable();
  targets = testFiles("dist").sort();
  if (!kvm.ok) {
    process.stderr.write(
      `\n== ${kvm.reason}: ${HOST_KVM_TEST_FILES.join(", ")} run inside the lab (lab_test)\n`,
    );
    targets = targets.filter((f) => !HOST_KVM_TEST_FILES.includes(f));
  }
}
step("node", ["--test", "--test-reporter=spec", ...targets]);
