// The control plane under load on /dev/kvm: the load script (bench/domains_load.ts) starts
// and destroys small jailed domains, 4 at a time, through one daemon; none may fail and none
// may be left behind. Its figures go to stderr. 50 domains on a host; 20 in the lab's L1
// (VESSEL_TEST_TIME_SCALE set), where every VMM's start pays Node's start-up under TCG.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { TIME_SCALE } from "./daemon_harness.js";

const DOMAINS = TIME_SCALE > 1 ? 20 : 50;

test(`the load script starts and destroys ${DOMAINS} domains, 4 at a time, without a failure`, {
  timeout: 600_000 * TIME_SCALE,
}, async () => {
  const script = fileURLToPath(new URL("../bench/domains_load.js", import.meta.url));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [script, "--domains", String(DOMAINS), "--concurrency", "4", "--json"],
    { timeout: 600_000 * TIME_SCALE },
  );
  process.stderr.write(`domains load: ${stdout}`);
  const r = JSON.parse(stdout) as { domains: number; failures: number; leftOver: number };
  assert.equal(r.domains, DOMAINS);
  assert.equal(r.failures, 0);
  assert.equal(r.leftOver, 0);
});
