// Tests for device flag parsing and opening.
import assert from "node:assert/strict";
import { existsSync, lstatSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { FdWatcher } from "../host/mod.js";
import { closeDevices, openDevices, parseDisk, parseNet, parseVsock } from "./devices.js";

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

test("--disk io= picks the transfer engine and names a bad value", () => {
  assert.deepEqual(parseDisk("/a.img,io=pool"), { path: "/a.img", readOnly: false, io: "pool" });
  assert.throws(
    () => parseDisk("/a.img,io=uring"),
    /--disk \/a.img,io=uring: io must be auto or pool, not "uring"/,
  );
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

test("--disk and --net take rate limits with bursts; a burst alone or a bad rate is refused", () => {
  assert.deepEqual(parseDisk("/a.img,bw=10M,bw_burst=1M,iops=100").limits, {
    bandwidth: { rate: 10 * 2 ** 20, burst: 2 ** 20 },
    ops: { rate: 100 },
  });
  assert.deepEqual(parseNet("tap=t0,rx_bw=1M,tx_pps=500,tx_pps_burst=50").limits, {
    rx: { bandwidth: { rate: 2 ** 20 } },
    tx: { ops: { rate: 500, burst: 50 } },
  });
  assert.equal(parseNet("tap=t0").limits, undefined);
  assert.throws(() => parseDisk("/a.img,iops_burst=5"), /a burst needs iops= as well/);
  assert.throws(() => parseNet("tap=t0,tx_bw_burst=5"), /a burst needs tx_bw= as well/);
  assert.throws(
    () => parseNet("tap=t0,rx_bw=fast"),
    /rx_bw=fast: bw: "fast" is not a positive rate/,
  );
  assert.throws(() => parseNet("tap=t0,rx_iops=5"), /unknown option "rx_iops=5"/);
  assert.throws(() => parseNet("tap=t0,vhost=on,tx_bw=1M"), /rate limits need vhost=off/);
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

test("--vsock takes cid=N,uds=PATH; each mistake is one line naming the flag", () => {
  assert.deepEqual(parseVsock("cid=3,uds=/tmp/v.sock"), { cid: 3, uds: "/tmp/v.sock" });
  assert.deepEqual(parseVsock("uds=/tmp/v.sock,cid=4294967294"), {
    cid: 4294967294,
    uds: "/tmp/v.sock",
  });
  for (const [text, message] of [
    ["cid=2,uds=/tmp/v", /--vsock cid=2,uds=\/tmp\/v: cid 2 is not in 3..4294967294/],
    ["cid=4294967295,uds=/tmp/v", /cid 4294967295 is not in/],
    ["cid=-3,uds=/tmp/v", /unknown option "cid=-3"/],
    ["cid=3", /cid=N and uds=PATH are both required/],
    ["uds=/tmp/v", /both required/],
    ["cid=3,uds=", /unknown option "uds="/],
    ["cid=3,uds=/tmp/v,port=5", /unknown option "port=5"/],
    [`cid=3,uds=/tmp/${"x".repeat(120)}`, /uds is longer than 107 bytes/],
  ] as const) {
    assert.throws(() => parseVsock(text), message);
  }
});

test("a vsock device listens at its path until closed", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-cli-vsock-"));
  const uds = join(dir, "v.sock");
  const w = new FdWatcher();
  try {
    const devices = await openDevices(
      { disks: [], nets: [], rng: false, balloon: false, vsock: `cid=5,uds=${uds}` },
      w,
    );
    assert.equal(devices.length, 1);
    assert.ok(lstatSync(uds).isSocket());
    await closeDevices(devices);
    assert.equal(existsSync(uds), false, "the socket file is removed");
    writeFileSync(uds, "not a socket");
    await assert.rejects(
      openDevices(
        { disks: [], nets: [], rng: false, balloon: false, vsock: `cid=5,uds=${uds}` },
        w,
      ),
      /--vsock cid=5,uds=.*: Cannot listen at .*: it exists and is not a socket/,
    );
  } finally {
    w.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
