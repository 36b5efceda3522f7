// Tests for device flag parsing.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
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

test("--net takes tap=NAME with mac and vhost=on|off", () => {
  assert.deepEqual(parseNet("tap=tap0"), { tap: "tap0", vhost: false });
  assert.deepEqual(parseNet("tap=tap0,mac=52:54:00:00:00:01,vhost=on"), {
    tap: "tap0",
    mac: "52:54:00:00:00:01",
    vhost: true,
  });
  assert.deepEqual(parseNet("tap=tap0,vhost=off"), { tap: "tap0", vhost: false });
  assert.throws(() => parseNet("mac=52:54:00:00:00:01"), /tap=NAME is required/);
  assert.throws(() => parseNet("tap=tap0,vhost=yes"), /unknown option "vhost=yes"/);
  assert.throws(() => parseNet("tap=a/b"), /not a valid interface name/);
});

test("vhost=on without vhost-net is one line naming the flag, before any TAP is made", async () => {
  const w = new FdWatcher();
  const flags = {
    disks: [],
    nets: ["tap=vtst9,vhost=on"],
    rng: false,
    balloon: false,
    vhostNetPath: "/nonexistent/vhost-net",
  };
  await assert.rejects(openDevices(flags, w), (e: Error) => {
    assert.equal(
      e.message,
      "--net tap=vtst9,vhost=on: vhost=on needs /nonexistent/vhost-net, which this host lacks (modprobe vhost_net)",
    );
    return true;
  });
  assert.equal(existsSync("/sys/class/net/vtst9"), false);
  w.close();
});
