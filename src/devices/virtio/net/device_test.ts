// virtio-net behind the transport with hostile drivers: transmit chains with writable
// buffers, short or oversized chains and headers asking for offloads never negotiated are
// refused and counted; receive chains that are not device-writable likewise; transmit work
// is bounded per turn. Also option validation, snapshots, and TAP open errors naming the
// call. Uses a real TAP (vtst1, no address) for its fd; the TAP path end to end is in
// e2e_test.ts.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import { VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  MAX_PACKET,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_SIZE,
} from "./config.js";
import { RX_QUEUE, TX_QUEUE, VirtioNet, type VirtioNetOptions } from "./device.js";
import { Tap, TapError } from "./tap.js";
import { arpRequest, deleteTap, ip, macBytes, requireTun, withHeader } from "./testing.js";

const TAP = "vtst1";
const memory = new GuestMemory(ramRegions(16 * MIB));
const devices: VirtioNet[] = [];

/** A single-queue TAP takes one fd at a time: close the devices of earlier tests. */
function closeAll(): void {
  for (const d of devices.splice(0)) d.close();
}

before(() => {
  requireTun();
  deleteTap(TAP);
  // A persistent TAP the devices attach to, up so writes succeed, with no IPv6 chatter.
  ip("tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr");
  try {
    ip("link", "set", TAP, "addrgenmode", "none");
  } catch {
    // older iproute2
  }
  ip("link", "set", TAP, "up");
});

after(() => {
  closeAll();
  deleteTap(TAP);
  deleteTap("vtst3");
  memory.close();
});

function setup(options: Partial<VirtioNetOptions> = {}, features?: bigint) {
  closeAll();
  const watched: number[] = [];
  const logs: string[] = [];
  const net = new VirtioNet({
    tap: TAP,
    mac: "52:54:00:c8:01:02",
    watch: (fd) => void watched.push(fd),
    unwatch: (fd) => void watched.splice(watched.indexOf(fd), 1),
    log: (m) => void logs.push(m),
    ...options,
  });
  devices.push(net);
  const irq = { set() {}, pulse() {} };
  const transport = new VirtioMmioTransport({ device: net, memory, irq });
  const driver = new VirtioMmioDriver({ memory, transport });
  driver.init(features === undefined ? {} : { features });
  return { net, driver, watched, logs, rx: driver.queue(RX_QUEUE), tx: driver.queue(TX_QUEUE) };
}

const frame = arpRequest(macBytes("52:54:00:c8:01:02"), "10.200.0.2", "10.200.0.1");

function header(fields: { flags?: number; gsoType?: number; gsoSize?: number; hdrLen?: number }) {
  const h = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  const v = new DataView(h.buffer);
  v.setUint8(0, fields.flags ?? 0);
  v.setUint8(1, fields.gsoType ?? 0);
  v.setUint16(2, fields.hdrLen ?? 0, true);
  v.setUint16(4, fields.gsoSize ?? 0, true);
  v.setUint16(6, 14, true);
  v.setUint16(8, 16, true);
  return h;
}

describe("virtio-net device", () => {
  it("transmits a well-formed frame to the TAP and returns the chain with 0 bytes", () => {
    const { net, tx } = setup();
    const c = tx.add([{ length: 12 + frame.length, data: withHeader(frame) }], { indirect: true });
    tx.kick();
    assert.deepEqual(tx.takeUsed(), [{ id: c.head, len: 0 }]);
    const m = net.metrics();
    assert.equal(m.txFrames, 1);
    assert.equal(m.txBytes, frame.length);
    assert.equal(m.txRefused + m.tapErrors + m.txDropped, 0);
  });

  it("refuses hostile transmit chains, counts them and keeps serving", () => {
    const { net, tx, logs } = setup({}, ~(1n << VIRTIO_NET_F_HOST_TSO4));
    const bad = [
      // a device-writable buffer in a transmit chain
      [
        { length: 12 + frame.length, data: withHeader(frame) },
        { length: 64, writable: true },
      ],
      // shorter than a header
      [{ length: 10, data: new Uint8Array(10) }],
      // a header but no Ethernet header
      [{ length: 12 + 13, data: new Uint8Array(25) }],
      // over MAX_PACKET, split across buffers
      [
        { length: 12, data: header({}) },
        { length: 40000 },
        { length: MAX_PACKET - 40000 - 12 + 1 },
      ],
      // DATA_VALID is receive-only
      [
        { length: 12, data: header({ flags: 2 }) },
        { length: frame.length, data: frame },
      ],
      // TSO4 not negotiated
      [
        {
          length: 12,
          data: header({ flags: 1, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1448 }),
        },
        { length: frame.length, data: frame },
      ],
      // UDP GSO (UFO) never offered
      [{ length: 12, data: header({ flags: 1, gsoType: 3, gsoSize: 1000 }) }, { length: 100 }],
    ];
    const heads = bad.map((b) => tx.add(b).head);
    const good = tx.add([{ length: 12 + frame.length, data: withHeader(frame) }]).head;
    tx.kick();
    assert.deepEqual(
      tx.takeUsed(),
      [...heads, good].map((id) => ({ id, len: 0 })),
    );
    const m = net.metrics();
    assert.equal(m.txRefused, bad.length);
    assert.equal(m.txFrames, 1);
    assert.equal(logs.length, bad.length, "each refusal logged");
    assert.match(logs[0] ?? "", /device-writable/);
  });

  it("accepts a TSO4 header when HOST_TSO4 and CSUM were negotiated", () => {
    const { net, tx } = setup();
    // Valid as far as the device checks; the kernel may still reject the nonsense payload.
    tx.add([
      {
        length: 12,
        data: header({ flags: 1, gsoType: VIRTIO_NET_HDR_GSO_TCPV4, gsoSize: 1448, hdrLen: 34 }),
      },
      { length: frame.length, data: frame },
    ]);
    tx.kick();
    assert.equal(net.metrics().txRefused, 0);
  });

  it("refuses receive chains that are device-readable or shorter than the header", () => {
    const { net, rx, logs } = setup();
    const a = rx.add([{ length: 16 }, { length: 2048, writable: true }]).head;
    const b = rx.add([{ length: 8, writable: true }]).head;
    rx.kick();
    assert.deepEqual(rx.takeUsed(), [
      { id: a, len: 0 },
      { id: b, len: 0 },
    ]);
    assert.equal(net.metrics().rxRefused, 2);
    assert.equal(net.metrics().rxNoBuffers, 1);
    assert.equal(net.watching, false, "nothing usable posted: not watching the TAP");
    assert.ok(logs.some((l) => /receive chain .* refused/.test(l)));
  });

  it("watches the TAP from activation and stops on reset", () => {
    const { net, driver, watched } = setup();
    assert.deepEqual(watched, [net.tapFd]);
    driver.reset();
    assert.deepEqual(watched, []);
    assert.equal(net.watching, false);
  });

  it("bounds transmit work per turn and defers the rest", () => {
    const later: (() => void)[] = [];
    const { net, tx } = setup({ queueSize: 4, defer: (fn) => later.push(fn) });
    for (let i = 0; i < 4; i++) tx.add([{ length: 12 + frame.length, data: withHeader(frame) }]);
    tx.kick();
    assert.equal(tx.takeUsed().length, 4);
    assert.equal(later.length, 1, "a full turn looks again later");
    later.shift()?.();
    assert.equal(later.length, 0, "nothing left: no further turn");
    assert.equal(net.metrics().txDeferred, 1);
  });

  it("holds transmit chains back to the tx limit and lets them go as tokens come", async () => {
    const { net, tx } = setup({ limits: { tx: { ops: { rate: 20, burst: 1 } } } });
    for (let i = 0; i < 3; i++) tx.add([{ length: 12 + frame.length, data: withHeader(frame) }]);
    tx.kick();
    assert.equal(tx.takeUsed().length, 1, "the burst lets one through");
    await new Promise((r) => setTimeout(r, 70));
    assert.equal(tx.takeUsed().length, 1, "one more after a twentieth of a second");
    net.setLimits({});
    assert.equal(tx.takeUsed().length, 1, "removing the limit sends what was held");
    const l = net.limits();
    assert.equal(l.tx.throttledRequests, 2);
    assert.ok(l.tx.throttledMs > 0);
    assert.deepEqual(l.tx.ops, undefined);
    assert.equal(net.metrics().txFrames, 3);
  });

  it("limits transmit bandwidth by each frame's bytes, header aside", () => {
    const { net, tx } = setup({
      limits: { tx: { bandwidth: { rate: 1000, burst: frame.length * 2 } } },
    });
    for (let i = 0; i < 3; i++) tx.add([{ length: 12 + frame.length, data: withHeader(frame) }]);
    tx.kick();
    assert.equal(tx.takeUsed().length, 2, "two frames fit the burst, the third waits");
    assert.equal(net.limits().tx.throttledRequests, 1);
  });

  it("refuses bad limits, and limits with vhost, naming why", () => {
    assert.throws(() => setup({ limits: { rx: { ops: { rate: 0 } } } }), /limits: rate 0/);
    const { net } = setup();
    assert.throws(() => net.setLimits({ tx: { bandwidth: { rate: -1 } } }), /rate -1/);
    const vhost = { close() {} } as unknown as NonNullable<VirtioNetOptions["vhost"]>;
    assert.throws(
      () => setup({ vhost, watchEventFd: () => {}, limits: { tx: { ops: { rate: 5 } } } }),
      /rate limits need the user-space path/,
    );
  });

  it("counts notifies for queues that do not exist, and config writes", () => {
    const { net, driver } = setup();
    net.queueNotify(7);
    driver.writeConfig(0, new Uint8Array([1, 2, 3, 4, 5, 6]));
    assert.deepEqual(driver.readConfig(0, 6), macBytes("52:54:00:c8:01:02"), "mac unchanged");
    assert.equal(net.metrics().invalidNotifies, 1);
    assert.equal(net.metrics().configWrites, 1);
  });

  it("validates options, naming the bad one", () => {
    const base = { tap: TAP, watch() {}, unwatch() {} };
    for (const mac of [
      "01:00:5e:00:00:01",
      "00:00:00:00:00:00",
      "52:54:00:00:00",
      "zz:54:00:00:00:01",
    ]) {
      assert.throws(
        () => new VirtioNet({ ...base, mac }),
        (e: Error) => {
          return e instanceof TypeError && e.message.includes("options.mac");
        },
      );
    }
    assert.throws(() => new VirtioNet({ ...base, tap: "a-name-far-too-long" }), /options\.tap/);
    assert.throws(() => new VirtioNet({ ...base, tap: "a/b" }), /options\.tap/);
    assert.throws(() => new VirtioNet({ ...base, queueSize: 100 }), RangeError);
    closeAll();
    const net = new VirtioNet(base);
    devices.push(net);
    assert.match(net.mac, /^52:54:00(:[0-9a-f]{2}){3}$/, "generated, locally administered");
  });

  it("snapshots its state and restores onto the same TAP", () => {
    const { net } = setup({ name: "net7" });
    const state = net.state();
    assert.deepEqual(state, {
      version: 1,
      name: "net7",
      tap: TAP,
      mac: "52:54:00:c8:01:02",
      queueSize: 256,
    });
    closeAll();
    const copy = VirtioNet.fromState(JSON.parse(JSON.stringify(state)), {
      watch() {},
      unwatch() {},
    });
    devices.push(copy);
    assert.deepEqual(copy.state(), state);
    assert.throws(
      () =>
        VirtioNet.fromState({ ...state, mac: "ff:ff:ff:ff:ff:ff" }, { watch() {}, unwatch() {} }),
      /Cannot restore virtio-net: state mac/,
    );
  });

  it("names the call and the TAP when opening fails", () => {
    deleteTap("vtst3");
    // A multi-queue TAP cannot be attached to without IFF_MULTI_QUEUE: TUNSETIFF says EINVAL.
    ip("tuntap", "add", "dev", "vtst3", "mode", "tap", "multi_queue");
    assert.throws(
      () => Tap.open("vtst3"),
      (e: unknown) =>
        e instanceof TapError &&
        e.message === "Cannot open TAP vtst3: TUNSETIFF failed: EINVAL" &&
        e.code === "EINVAL",
    );
  });
});
