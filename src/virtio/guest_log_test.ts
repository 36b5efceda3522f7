// Tests for the devices' rate-limited log.
import assert from "node:assert/strict";
import { test } from "node:test";
import { GuestLog } from "./guest_log.js";

test("the first 32 messages are logged, then one in 1024; a throwing sink is contained", () => {
  const seen: string[] = [];
  const log = new GuestLog("dev0", (m) => seen.push(m));
  for (let i = 0; i < 2048; i++) log.warn(`m${i}`);
  assert.equal(seen.length, 32 + 2);
  assert.equal(seen[0], "dev0: m0");
  assert.equal(seen[32], "dev0: m1023 (1024 messages so far)");
  const bad = new GuestLog("dev1", () => {
    throw new Error("sink broke");
  });
  assert.doesNotThrow(() => bad.warn("x"));
});

test("guard() logs what queue processing throws instead of passing it on", () => {
  const seen: string[] = [];
  const log = new GuestLog("dev2", (m) => seen.push(m));
  assert.doesNotThrow(() =>
    log.guard(() => {
      throw new Error("boom");
    }),
  );
  assert.deepEqual(seen, ["dev2: queue processing failed: Error: boom"]);
});
