// The control plane under load on this host's /dev/kvm: the load script
// (bench/domains_load.ts) starts and destroys 50 small jailed domains, 4 at a time, through
// one daemon; none may fail and none may be left behind. Its figures go to stderr.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

test("the load script starts and destroys 50 domains, 4 at a time, without a failure", async () => {
  const script = fileURLToPath(new URL("../bench/domains_load.js", import.meta.url));
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [script, "--domains", "50", "--concurrency", "4", "--json"],
    { timeout: 600_000 },
  );
  process.stderr.write(`domains load: ${stdout}`);
  const r = JSON.parse(stdout) as { domains: number; failures: number; leftOver: number };
  assert.equal(r.domains, 50);
  assert.equal(r.failures, 0);
  assert.equal(r.leftOver, 0);
});
