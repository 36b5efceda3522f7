// virtio-net end to end on a real TAP: the driver double plays the guest, the VMM's
// FdWatcher delivers TAP readiness, and the host kernel is the peer. The guest ARPs for
// the TAP's address (10.200.0.1) and pings it; the kernel's replies must come back into the
// guest's receive buffers. Then: no receive buffers means the device stops watching the TAP
// (no spin) and frames wait in the kernel, delivered once buffers are posted.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { FdWatcher } from "../../../host/epoll.js";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import { VIRTIO_ID_NET } from "../../../virtio/device.js";
import { VirtioMmioTransport } from "../../../virtio/mmio.js";
import { type DriverQueue, VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import { VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_HDR_SIZE } from "./config.js";
import { RX_QUEUE, TX_QUEUE, VirtioNet } from "./device.js";
import {
  arpRequest,
  deleteTap,
  ethertype,
  icmpEcho,
  ip,
  ipv4Bytes,
  macBytes,
  requireTun,
  sleep,
  withHeader,
} from "./testing.js";

const TAP = "vtst0";
const HOST_IP = "10.200.0.1";
const GUEST_IP = "10.200.0.2";
const GUEST_MAC = "52:54:00:c8:00:02";

const memory = new GuestMemory(ramRegions(16 * MIB));
const watcher = new FdWatcher();
let readyCalls = 0;
let net: VirtioNet;

before(() => {
  requireTun();
  deleteTap(TAP);
  net = new VirtioNet({
    tap: TAP,
    mac: GUEST_MAC,
    watch: (fd, onReady) =>
      watcher.addFd(fd, () => {
        readyCalls++;
        onReady();
      }),
    unwatch: (fd) => watcher.removeFd(fd),
    log: () => {},
  });
  // No IPv6 chatter (router solicitations, MLD) on the test TAP: only what we ask for.
  ip("link", "set", TAP, "down");
  try {
    ip("link", "set", TAP, "addrgenmode", "none");
  } catch {
    // older iproute2: IPv6 noise is filtered by the tests anyway
  }
  ip("addr", "add", `${HOST_IP}/24`, "dev", TAP);
  ip("link", "set", TAP, "up");
  watcher.start();
});

after(async () => {
  await watcher.stop();
  net?.close();
  watcher.close();
  deleteTap(TAP);
  memory.close();
});

function setup(features?: bigint) {
  const irq = { set() {}, pulse() {} };
  const transport = new VirtioMmioTransport({ device: net, memory, irq });
  const driver = new VirtioMmioDriver({ memory, transport });
  driver.init(features === undefined ? {} : { features });
  return { driver, rx: driver.queue(RX_QUEUE), tx: driver.queue(TX_QUEUE) };
}

/** Post `n` receive chains of `size` bytes; returns head -> address. */
function postRx(rx: DriverQueue, n: number, size: number, heads = new Map<number, number>()) {
  for (let i = 0; i < n; i++) {
    const c = rx.add([{ length: size, writable: true }]);
    heads.set(c.head, c.buffers[0]?.address ?? 0);
  }
  return heads;
}

function send(tx: DriverQueue, frame: Uint8Array): void {
  const packet = withHeader(frame);
  // Header and frame in separate descriptors, as Linux does without ANY_LAYOUT tricks.
  tx.add([
    { length: VIRTIO_NET_HDR_SIZE, data: packet.subarray(0, VIRTIO_NET_HDR_SIZE) },
    { length: frame.length, data: frame },
  ]);
  tx.kick();
}

/** Wait for a received frame `match` accepts; returns its header and frame. */
async function receive(
  rx: DriverQueue,
  heads: Map<number, number>,
  match: (frame: Uint8Array) => boolean,
  ms = 3000,
): Promise<{ hdr: Uint8Array; frame: Uint8Array }> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    for (const u of rx.takeUsed()) {
      const address = heads.get(u.id);
      assert.ok(address !== undefined, `used id ${u.id} was posted`);
      assert.ok(u.len >= VIRTIO_NET_HDR_SIZE && u.len <= 2048);
      const bytes = memory.slice(address, u.len).slice();
      const hdr = bytes.subarray(0, VIRTIO_NET_HDR_SIZE);
      const frame = bytes.subarray(VIRTIO_NET_HDR_SIZE);
      if (process.env.NET_DEBUG) console.log("frame", u.len, Buffer.from(frame).toString("hex"));
      if (match(frame)) return { hdr, frame };
    }
    await sleep(5);
  }
  throw new Error("timed out waiting for a frame");
}

const isArpReply = (f: Uint8Array) => ethertype(f) === 0x0806 && f[21] === 2;
const isEchoReply = (f: Uint8Array) => ethertype(f) === 0x0800 && f[23] === 1 && f[34] === 0;

describe("virtio-net on a TAP", () => {
  it("identifies as device 1 with its MAC and the link up", () => {
    const { driver } = setup();
    assert.equal(driver.probe().deviceId, VIRTIO_ID_NET);
    assert.deepEqual(driver.readConfig(0, 6), macBytes(GUEST_MAC));
    assert.deepEqual(driver.readConfig(6, 2), new Uint8Array([1, 0]), "VIRTIO_NET_S_LINK_UP");
  });

  it("ARPs and pings the host through the TAP, replies arriving in guest buffers", async () => {
    const { rx, tx } = setup();
    const heads = postRx(rx, 16, 2048);
    rx.kick();
    const mac = macBytes(GUEST_MAC);
    send(tx, arpRequest(mac, GUEST_IP, HOST_IP));
    const arp = await receive(rx, heads, isArpReply);
    assert.deepEqual(arp.frame.subarray(0, 6), mac, "to us");
    assert.deepEqual(arp.frame.subarray(28, 32), ipv4Bytes(HOST_IP), "sender is the host");
    assert.deepEqual(arp.frame.subarray(38, 42), ipv4Bytes(GUEST_IP), "target is us");
    assert.equal(arp.hdr[10], 1, "num_buffers 1");
    const hostMac = arp.frame.slice(22, 28);

    const payload = new TextEncoder().encode("vessel virtio-net ping");
    send(tx, icmpEcho(mac, hostMac, GUEST_IP, HOST_IP, 0x4242, payload));
    const echo = await receive(rx, heads, isEchoReply);
    assert.deepEqual(echo.frame.subarray(26, 30), ipv4Bytes(HOST_IP));
    assert.deepEqual(echo.frame.subarray(30, 34), ipv4Bytes(GUEST_IP));
    assert.deepEqual(echo.frame.subarray(38, 40), new Uint8Array([0x42, 0x42]), "echo id");
    assert.deepEqual(echo.frame.subarray(42, 42 + payload.length), payload);

    const m = net.metrics();
    assert.equal(m.txFrames, 2);
    assert.equal(m.txBytes, 42 + 14 + 20 + 8 + payload.length);
    assert.ok(m.rxFrames >= 2);
    assert.equal(m.txRefused + m.rxRefused + m.tapErrors + m.rxDropped, 0);
  });

  it("works without mergeable buffers too (num_buffers still 1)", async () => {
    const { rx, tx } = setup(~(1n << VIRTIO_NET_F_MRG_RXBUF));
    const heads = postRx(rx, 8, 1600);
    rx.kick();
    send(tx, arpRequest(macBytes(GUEST_MAC), GUEST_IP, HOST_IP));
    const arp = await receive(rx, heads, isArpReply);
    assert.equal(arp.hdr[10], 1);
  });

  it("without receive buffers stops watching the TAP (no spin); frames wait for buffers", async () => {
    const { rx, tx } = setup();
    const before = net.metrics().rxNoBuffers;
    send(tx, arpRequest(macBytes(GUEST_MAC), GUEST_IP, HOST_IP));
    const deadline = Date.now() + 3000;
    while (net.watching && Date.now() < deadline) await sleep(5);
    assert.equal(net.watching, false, "stopped watching the TAP");
    assert.ok(net.metrics().rxNoBuffers > before);
    const calls = readyCalls;
    await sleep(200);
    assert.equal(readyCalls, calls, "no readiness callbacks while there are no buffers");

    const heads = postRx(rx, 8, 2048);
    rx.kick();
    assert.equal(net.watching, true, "watching again after the guest posted buffers");
    const arp = await receive(rx, heads, isArpReply);
    assert.deepEqual(arp.frame.subarray(38, 42), ipv4Bytes(GUEST_IP));
  });

  it("holds received frames back to the rx limit: the TAP waits unwatched meanwhile", async () => {
    const { rx, tx } = setup();
    const heads = postRx(rx, 16, 2048);
    rx.kick();
    net.setLimits({ rx: { ops: { rate: 10, burst: 1 } } });
    try {
      const t0 = Date.now();
      for (let i = 0; i < 3; i++) send(tx, arpRequest(macBytes(GUEST_MAC), GUEST_IP, HOST_IP));
      for (let i = 0; i < 3; i++) await receive(rx, heads, isArpReply);
      // One frame from the burst, then one per tenth of a second.
      assert.ok(Date.now() - t0 >= 180, `three replies in ${Date.now() - t0} ms`);
      assert.ok(net.limits().rx.throttledRequests >= 2);
    } finally {
      net.setLimits({});
    }
  });

  it("counts the kernel's drops when the guest leaves frames waiting past txqueuelen", async () => {
    const { rx, tx } = setup();
    ip("link", "set", TAP, "txqueuelen", "2");
    try {
      const dropped = net.hostQueueDropped();
      assert.ok(dropped !== undefined, "tx_dropped readable from sysfs");
      for (let i = 0; i < 8; i++) send(tx, arpRequest(macBytes(GUEST_MAC), GUEST_IP, HOST_IP));
      await sleep(300);
      assert.ok((net.hostQueueDropped() ?? 0) > dropped, "kernel dropped past its queue");
      assert.equal(net.watching, false);
      const heads = postRx(rx, 16, 2048);
      rx.kick();
      // What the kernel kept (which frames depends on its ARP state) arrives now.
      await receive(rx, heads, () => true);
    } finally {
      ip("link", "set", TAP, "txqueuelen", "1000");
    }
  });
});
