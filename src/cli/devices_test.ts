// Tests for device flag parsing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { FdWatcher } from "../host/mod.js";
import { openDevices, parseDisk, parseNet } from "./devices.js";

test("--disk takes a path with ro and serial options", () => {
  assert.deepEqual(parseDisk("/a.img"), { path: "/a.img", readOnly: false });
  assert.deepEqual(parseDisk("/a.img,ro,serial=abc"), {
    path: "/a.img",
    readOnly: true,
    serial: "abc",
  });
  assert.throws(() => parseDisk("/a.img,fast"), /--disk \/a.img,fast: unknown option "fast"/);
  assert.throws(() => parseDisk(",ro"), /has no path/);
});

test("a disk that cannot be opened is named in one line", async () => {
  const w = new FdWatcher();
  await assert.rejects(
    openDevices({ disks: ["/nonexistent.img"], nets: [], rng: false, balloon: false }, w),
    /--disk \/nonexistent.img: .*ENOENT|no such file/i,
  );
  w.close();
});

test("--net takes tap=NAME with mac; vhost=on says it is not there yet", () => {
  assert.deepEqual(parseNet("tap=tap0"), { tap: "tap0" });
  assert.deepEqual(parseNet("tap=tap0,mac=52:54:00:00:00:01"), {
    tap: "tap0",
    mac: "52:54:00:00:00:01",
  });
  assert.throws(() => parseNet("mac=52:54:00:00:00:01"), /tap=NAME is required/);
  assert.throws(() => parseNet("tap=tap0,vhost=on"), /vhost=on is not implemented yet/);
  assert.throws(() => parseNet("tap=a/b"), /not a valid interface name/);
});
