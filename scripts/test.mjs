#!/usr/bin/env node
// Runs every test: compile, lint, then Node's test runner over every *_test.js in dist/
// (unit tests beside the code, direct-KVM test guests, and the lab suite on real KVM).
import { spawnSync } from "node:child_process";

function step(cmd, args) {
  process.stderr.write(`\n== ${cmd} ${args.join(" ")}\n`);
  const r = spawnSync(cmd, args, { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

step("npx", ["tsc", "-p", "."]);
step("npx", ["biome", "check", "."]);
const only = process.argv.slice(2);
step("node", ["--test", "--test-reporter=spec", ...(only.length ? only : ["dist/"])]);
