// Tests for the control socket: requests, errors, bad input.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ControlServer } from "./control.js";

function ask(path: string, lines: string[]): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      buf += d;
      const replies = buf.split("\n").filter((l) => l !== "");
      if (replies.length === lines.length) {
        s.end();
        resolve(replies.map((l) => JSON.parse(l)));
      }
    });
    s.on("error", reject);
    s.write(lines.map((l) => `${l}\n`).join(""));
  });
}

test("control socket answers ops and refuses bad requests with a reason", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-ctl-"));
  const path = join(dir, "vm.sock");
  let pressed = 0;
  const server = await ControlServer.listen(path, {
    "power-button": () => {
      pressed++;
    },
    echo: (args) => args,
  });
  try {
    const replies = await ask(path, [
      '{"op":"power-button"}',
      '{"op":"echo","x":1}',
      "not json",
      '{"op":"nope"}',
      "[1]",
      '{"op":"__proto__"}',
    ]);
    assert.deepEqual(replies[0], { ok: true, result: null });
    assert.deepEqual(replies[1], { ok: true, result: { x: 1 } });
    assert.equal((replies[2] as { ok: boolean }).ok, false);
    assert.match((replies[3] as { error: string }).error, /unknown op "nope"/);
    assert.match((replies[4] as { error: string }).error, /JSON object/);
    assert.match((replies[5] as { error: string }).error, /unknown op/);
    assert.equal(pressed, 1);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
