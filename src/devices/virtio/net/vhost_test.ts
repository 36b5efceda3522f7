// virtio-net's vhost path without /dev/vhost-net: a fake handle records every call, so the
// tests check the feature offer and ack, the start order and the addresses vhost is given,
// that the transport's ioeventfds are handed over and taken back, that the worker's call
// eventfd becomes InterruptStatus bit 0 plus one interrupt (what Linux's vm_interrupt
// needs), that its error eventfd asks for a reset, and the stop order on reset and close.
// The real worker runs in the lab (tests/lab/virtio_cases.ts). Uses a real TAP (vtst4).

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../../../virtio/device.js";
import {
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_MMIO_INT_VRING,
  VirtioMmioTransport,
} from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import { VIRTIO_NET_F_CSUM, VIRTIO_NET_F_MRG_RXBUF } from "./config.js";
import { RX_QUEUE, TX_QUEUE, VirtioNet } from "./device.js";
import { deleteTap, ip, requireTun } from "./testing.js";
import {
  hostAddressOf,
  type VhostNetHandle,
  VIRTIO_F_ACCESS_PLATFORM,
  vhostAck,
  vhostOffer,
} from "./vhost.js";

const TAP = "vtst4";
const bit = (n: bigint) => 1n << n;
/** What Linux 6.1's vhost-net answers to VHOST_GET_FEATURES (VHOST_NET_FEATURES). */
const KERNEL_VHOST_FEATURES =
  bit(24n) | // NOTIFY_ON_EMPTY
  bit(VIRTIO_F_INDIRECT_DESC) |
  bit(VIRTIO_F_EVENT_IDX) |
  bit(26n) | // VHOST_F_LOG_ALL
  bit(27n) | // VHOST_NET_F_VIRTIO_NET_HDR (and ANY_LAYOUT)
  bit(VIRTIO_F_VERSION_1) |
  bit(VIRTIO_NET_F_MRG_RXBUF) |
  bit(VIRTIO_F_ACCESS_PLATFORM);

class FakeVhost implements VhostNetHandle {
  calls: string[] = [];
  closed = false;
  addrs: { index: number; desc: bigint; used: bigint; avail: bigint }[] = [];
  failOn: string | undefined;
  constructor(readonly offered = KERNEL_VHOST_FEATURES) {}
  #call(s: string): void {
    this.calls.push(s);
    if (this.failOn !== undefined && s.startsWith(this.failOn))
      throw new Error(`${s} failed: EINVAL`);
  }
  setOwner() {
    this.#call("owner");
  }
  getFeatures() {
    this.#call("get-features");
    return this.offered;
  }
  setFeatures(f: bigint) {
    this.#call(`features 0x${f.toString(16)}`);
  }
  setMemTable(r: readonly { guestPhysAddr: bigint }[]) {
    this.#call(`mem ${r.map((x) => x.guestPhysAddr.toString(16)).join(",")}`);
  }
  setVringNum(i: number, n: number) {
    this.#call(`num ${i} ${n}`);
  }
  setVringBase(i: number, b: number) {
    this.#call(`base ${i} ${b}`);
  }
  getVringBase(i: number) {
    this.#call(`get-base ${i}`);
    return 0;
  }
  setVringAddr(a: { index: number; desc: bigint; used: bigint; avail: bigint }) {
    this.addrs.push(a);
    this.#call(`addr ${a.index}`);
  }
  setVringKick(i: number, fd: number) {
    this.#call(`kick ${i} ${fd}`);
  }
  setVringCall(i: number, fd: number) {
    this.#call(`call ${i} ${fd}`);
  }
  setVringErr(i: number, fd: number) {
    this.#call(`err ${i} ${fd}`);
  }
  setBackend(i: number, fd: number) {
    this.#call(`backend ${i} ${fd < 0 ? -1 : "tap"}`);
  }
  close() {
    this.closed = true;
  }
}

const memory = new GuestMemory(ramRegions(16 * MIB));
const nets: VirtioNet[] = [];

before(() => {
  requireTun();
  deleteTap(TAP);
  ip("tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr");
});

after(() => {
  for (const n of nets) n.close();
  deleteTap(TAP);
  memory.close();
});

/** A VirtioNet on a fake vhost behind a transport with two (fake) ioeventfds. */
function setup(fake = new FakeVhost()) {
  for (const n of nets.splice(0)) n.close();
  let nextFd = 1000;
  const signalled: number[] = [];
  const closedFds: number[] = [];
  /** Eventfds watched by the device (call, error) and by the transport (kicks). */
  const deviceWatch = new Map<number, () => void>();
  const transportWatch = new Map<number, () => void>();
  const logs: string[] = [];
  const net = new VirtioNet({
    tap: TAP,
    watch: () => assert.fail("the vhost path must not watch the TAP"),
    unwatch: (fd) => void deviceWatch.delete(fd),
    watchEventFd: (fd, onReady) => void deviceWatch.set(fd, onReady),
    vhost: fake,
    eventFds: {
      create: () => nextFd++,
      signal: (fd) => void signalled.push(fd),
      close: (fd) => void closedFds.push(fd),
    },
    log: (m) => void logs.push(m),
  });
  nets.push(net);
  let pulses = 0;
  const transport = new VirtioMmioTransport({
    device: net,
    memory,
    irq: { set() {}, pulse: () => void pulses++ },
    eventFds: {
      add: (fd, onReady) => void transportWatch.set(fd, onReady),
      remove: (fd) => void transportWatch.delete(fd),
    },
  });
  transport.useIoEventFd(RX_QUEUE, 500);
  transport.useIoEventFd(TX_QUEUE, 501);
  const driver = new VirtioMmioDriver({ memory, transport });
  return {
    net,
    fake,
    transport,
    driver,
    signalled,
    closedFds,
    deviceWatch,
    transportWatch,
    logs,
    pulses: () => pulses,
  };
}

describe("vhost-net feature negotiation", () => {
  it("offers the device's features minus the ring features vhost lacks, never ACCESS_PLATFORM", () => {
    const device = VirtioNet.FEATURES | bit(VIRTIO_F_ACCESS_PLATFORM);
    assert.equal(vhostOffer(device, KERNEL_VHOST_FEATURES), VirtioNet.FEATURES);
    const old = KERNEL_VHOST_FEATURES & ~bit(VIRTIO_F_EVENT_IDX) & ~bit(VIRTIO_NET_F_MRG_RXBUF);
    const offer = vhostOffer(VirtioNet.FEATURES, old);
    assert.equal(offer & bit(VIRTIO_F_EVENT_IDX), 0n);
    assert.equal(offer & bit(VIRTIO_NET_F_MRG_RXBUF), 0n);
    // Offloads are vnet header contents, not vhost's: they stay.
    assert.notEqual(offer & bit(VIRTIO_NET_F_CSUM), 0n);
    assert.throws(
      () => vhostOffer(VirtioNet.FEATURES, KERNEL_VHOST_FEATURES & ~bit(VIRTIO_F_VERSION_1)),
      /without VIRTIO_F_VERSION_1/,
    );
  });

  it("acks to vhost only ring features, never logging or vhost-made headers", () => {
    const driver = VirtioNet.FEATURES | bit(26n) | bit(27n);
    assert.equal(
      vhostAck(driver, KERNEL_VHOST_FEATURES),
      bit(VIRTIO_F_INDIRECT_DESC) |
        bit(VIRTIO_F_EVENT_IDX) |
        bit(VIRTIO_F_VERSION_1) |
        bit(VIRTIO_NET_F_MRG_RXBUF),
    );
  });

  it("a vhost without VERSION_1 refuses the device and closes the handle", () => {
    const fake = new FakeVhost(KERNEL_VHOST_FEATURES & ~bit(VIRTIO_F_VERSION_1));
    assert.throws(() => setup(fake), /VIRTIO_F_VERSION_1/);
    assert.equal(fake.closed, true);
  });

  it("host addresses of guest ranges lie in one region", () => {
    const r = memory.regions[0];
    assert.ok(r);
    assert.equal(hostAddressOf(memory, 0x1000, 16), r.hostAddress + 0x1000n);
    assert.equal(hostAddressOf(memory, 16 * MIB - 8, 16), undefined);
  });
});

describe("the vhost path behind the transport", () => {
  it("starts vhost in QEMU's order with host addresses and the transport's ioeventfds", () => {
    const t = setup();
    assert.deepEqual(t.fake.calls, ["owner", "get-features"]);
    const accepted = t.driver.init();
    assert.equal(accepted & bit(VIRTIO_F_ACCESS_PLATFORM), 0n);
    const [callFd, errFd] = [1000, 1001];
    const ack = vhostAck(accepted, KERNEL_VHOST_FEATURES);
    assert.deepEqual(t.fake.calls.slice(2), [
      `features 0x${ack.toString(16)}`,
      "mem 0",
      "num 0 256",
      "base 0 0",
      "addr 0",
      "kick 0 500",
      `call 0 ${callFd}`,
      `err 0 ${errFd}`,
      "num 1 256",
      "base 1 0",
      "addr 1",
      "kick 1 501",
      `call 1 ${callFd}`,
      `err 1 ${errFd}`,
      "backend 0 tap",
      "backend 1 tap",
    ]);
    const rx = t.driver.queue(RX_QUEUE);
    const host = (gpa: number) => (memory.regions[0]?.hostAddress as bigint) + BigInt(gpa);
    assert.deepEqual(t.fake.addrs[0], {
      index: 0,
      flags: 0,
      desc: host(rx.desc),
      used: host(rx.used),
      avail: host(rx.avail),
      log: 0n,
    });
    // The transport stopped watching the kicks: the guest's notify goes to the worker only.
    assert.equal(t.transportWatch.size, 0);
    assert.deepEqual([...t.deviceWatch.keys()], [callFd, errFd]);
    // Each ring is looked at once at start, for buffers posted before the worker listened.
    assert.deepEqual(t.signalled, [500, 501]);
    assert.equal(t.net.backend, "vhost");
  });

  it("a call from the worker sets InterruptStatus bit 0 and fires the line once", () => {
    const t = setup();
    t.driver.init();
    t.driver.ackInterrupts();
    const before = t.pulses();
    t.deviceWatch.get(1000)?.();
    assert.equal(t.pulses(), before + 1);
    assert.equal(t.driver.interruptStatus() & VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_VRING);
    const m = t.net.metrics();
    assert.equal(m.vhostInterrupts, 1);
    assert.equal(m.rxFrames + m.txFrames, 0);
    assert.equal(
      t.transport.stats().queues.reduce((n, q) => n + q.popped + q.used, 0),
      0,
      "the VMM must not touch the rings vhost serves",
    );
  });

  it("a notify that reaches the VMM is passed on to the worker's kick eventfd", () => {
    const t = setup();
    t.driver.init();
    t.signalled.length = 0;
    t.driver.queue(TX_QUEUE).kick();
    assert.deepEqual(t.signalled, [501]);
    assert.equal(t.net.metrics().vhostKicksRelayed, 1);
  });

  it("a ring error from the worker asks the driver for a reset", () => {
    const t = setup();
    t.driver.init();
    t.deviceWatch.get(1001)?.();
    assert.notEqual(t.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert.equal(t.net.metrics().vhostErrors, 1);
  });

  it("reset detaches the TAP, stops the rings, unbinds the eventfds and returns the kicks", () => {
    const t = setup();
    t.driver.init();
    const onCall = t.deviceWatch.get(1000);
    t.fake.calls.length = 0;
    t.driver.reset();
    assert.deepEqual(t.fake.calls, [
      "backend 0 -1",
      "backend 1 -1",
      "get-base 0",
      "kick 0 -1",
      "call 0 -1",
      "err 0 -1",
      "get-base 1",
      "kick 1 -1",
      "call 1 -1",
      "err 1 -1",
    ]);
    assert.equal(t.deviceWatch.size, 0);
    assert.deepEqual([...t.transportWatch.keys()].sort(), [500, 501]);
    // A late call after the reset is not an interrupt for the next session.
    const before = t.pulses();
    assert.ok(onCall);
    onCall();
    assert.equal(t.pulses(), before);
    // The next activation starts vhost again from index 0.
    t.fake.calls.length = 0;
    t.driver.init();
    assert.ok(t.fake.calls.includes("base 0 0"));
    assert.ok(t.fake.calls.includes("backend 1 tap"));
  });

  it("a failed start is undone and the driver is asked to reset", () => {
    const fake = new FakeVhost();
    fake.failOn = "addr 1";
    const t = setup(fake);
    t.driver.init();
    assert.notEqual(t.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert.ok(!fake.calls.some((c) => c === "backend 0 tap"));
    assert.ok(fake.calls.includes("backend 0 -1"));
    assert.equal(t.deviceWatch.size, 0);
    assert.ok(t.logs.some((l) => /cannot start vhost-net: addr 1 failed/.test(l)));
  });

  it("a reset whose detach fails closes vhost for good; the next activation is refused", () => {
    const t = setup();
    t.driver.init();
    t.fake.failOn = "backend 1 -1";
    t.driver.reset();
    assert.equal(t.fake.closed, true, "closing is what surely stops the worker");
    assert.equal(t.deviceWatch.size, 0);
    assert.ok(t.logs.some((l) => /would not detach the TAP; closing it/.test(l)));
    t.fake.failOn = undefined;
    t.driver.init();
    assert.notEqual(t.driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert.ok(t.logs.some((l) => /cannot start vhost-net: vhost-net is closed/.test(l)));
  });

  it("close stops vhost and closes the handle and the eventfds", () => {
    const t = setup();
    t.driver.init();
    t.net.close();
    assert.equal(t.fake.closed, true);
    assert.ok(t.fake.calls.includes("backend 0 -1"));
    assert.deepEqual(t.closedFds.sort(), [1000, 1001]);
  });
});
