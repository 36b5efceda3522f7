// virtio-vsock through the driver double and the virtio-mmio transport, with the in-memory
// backend so every step is deterministic: both handshakes and data both ways, RST when
// nothing listens, credit in both directions (the device never overruns the guest's
// buf_alloc; the guest cannot overrun ours; a slow host stops the guest), shutdown and
// teardown, the bounds, and hostile headers counted and refused.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import { VIRTIO_F_VERSION_1, VIRTIO_ID_VSOCK } from "../../../virtio/device.js";
import { VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  VIRTIO_VSOCK_F_STREAM,
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE,
  VIRTIO_VSOCK_SHUTDOWN_F_SEND,
  VirtioVsock,
  type VirtioVsockOptions,
  VSOCK_HDR_SIZE,
  VSOCK_HOST_CID,
  validateVsockState,
} from "./mod.js";
import { encodeHeader, GuestVsock, MemoryBackend, type Packet } from "./testing.js";

const memory = new GuestMemory(ramRegions(64 * MIB));
after(() => memory.close());

const CID = 42;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function setup(options: Partial<VirtioVsockOptions> = {}) {
  const later: (() => void)[] = [];
  const defer = (fn: () => void) => later.push(fn);
  const backend = new MemoryBackend(defer);
  const logs: string[] = [];
  const dev = new VirtioVsock({ cid: CID, backend, defer, log: (m) => logs.push(m), ...options });
  const irq = { set() {}, pulse() {} };
  const transport = new VirtioMmioTransport({ device: dev, memory, irq });
  const driver = new VirtioMmioDriver({ memory, transport, heapEnd: 60 * MIB });
  driver.init();
  const guest = new GuestVsock(driver, CID);
  /** Run deferred work until there is none (bounded: work must end). */
  const run = () => {
    for (let i = 0; later.length > 0; i++) {
      assert.ok(i < 10_000, "deferred work never ends");
      later.shift()?.();
    }
  };
  return { dev, backend, driver, transport, guest, logs, run };
}

const ops = (packets: Packet[]) => packets.map((p) => p.hdr.op);

/** A guest-initiated connection from guest port 1234 to host port `port`, established. */
function guestConnection(env: ReturnType<typeof setup>, port = 52, bufAlloc = 256 * 1024) {
  env.backend.listening.add(port);
  env.guest.postRx(8);
  env.guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 1234, dstPort: port, bufAlloc });
  env.run();
  const [p] = env.guest.received();
  assert.equal(p?.hdr.op, VIRTIO_VSOCK_OP_RESPONSE);
  const stream = env.backend.outbound.get(port)?.at(-1);
  assert.ok(stream);
  return stream;
}

describe("virtio-vsock", () => {
  it("identifies as device 19 with three queues and guest_cid in config", () => {
    const { driver, dev, logs } = setup();
    assert.equal(driver.probe().deviceId, VIRTIO_ID_VSOCK);
    assert.ok(driver.features & (1n << VIRTIO_F_VERSION_1));
    assert.ok(driver.features & (1n << VIRTIO_VSOCK_F_STREAM));
    assert.deepEqual(dev.queueSizes, [256, 256, 256]);
    const cfg = new DataView(driver.readConfig(0, 8).buffer);
    assert.equal(cfg.getBigUint64(0, true), BigInt(CID));
    assert.equal(new DataView(driver.readConfig(4, 4).buffer).getUint32(0, true), 0);
    driver.writeConfig(0, new Uint8Array([7, 0, 0, 0]));
    assert.equal(new DataView(driver.readConfig(0, 4).buffer).getUint32(0, true), CID);
    assert.equal(dev.metrics().configWrites, 1);
    assert.equal(logs.length, 1);
  });

  it("host CONNECT: REQUEST to the guest, OK after RESPONSE, then bytes both ways", () => {
    const env = setup();
    const { backend, guest, run, dev } = env;
    guest.postRx(8);
    const host = backend.hostConnect(5000);
    run();
    const [req] = guest.received();
    assert.ok(req);
    assert.equal(req.hdr.op, VIRTIO_VSOCK_OP_REQUEST);
    assert.equal(req.hdr.srcCid, VSOCK_HOST_CID);
    assert.equal(req.hdr.dstCid, CID);
    assert.equal(req.hdr.dstPort, 5000);
    assert.ok(req.hdr.srcPort >= 2 ** 30 && req.hdr.srcPort < 2 ** 31, "ephemeral host port");
    assert.equal(req.usedLen, VSOCK_HDR_SIZE);
    assert.equal(host.acceptedPort, undefined, "no OK before the guest answers");
    const hostPort = req.hdr.srcPort;
    guest.send({ op: VIRTIO_VSOCK_OP_RESPONSE, srcPort: 5000, dstPort: hostPort });
    run();
    assert.equal(host.acceptedPort, hostPort);
    // Host → guest.
    host.events?.data(enc("hello guest"));
    run();
    const [rw] = guest.received();
    assert.ok(rw);
    assert.equal(rw.hdr.op, VIRTIO_VSOCK_OP_RW);
    assert.equal(dec(rw.payload), "hello guest");
    assert.equal(rw.usedLen, VSOCK_HDR_SIZE + 11);
    assert.equal(rw.hdr.len, 11);
    // Guest → host.
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 5000, dstPort: hostPort }, enc("hi host"));
    run();
    assert.equal(host.text(), "hi host");
    const m = dev.metrics();
    assert.equal(m.hostConnections, 1);
    assert.equal(m.rxBytes, 11);
    assert.equal(m.txBytes, 7);
    assert.equal(dev.connections, 1);
  });

  it("guest connect to host port P reaches the service at P; bytes both ways", () => {
    const env = setup();
    const stream = guestConnection(env, 52);
    const { guest, run, dev } = env;
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: 52 }, enc("ping"));
    run();
    assert.equal(stream.text(), "ping");
    stream.events?.data(enc("pong"));
    run();
    const [p] = guest.received();
    assert.equal(p?.hdr.op, VIRTIO_VSOCK_OP_RW);
    assert.equal(p?.hdr.srcPort, 52);
    assert.equal(p?.hdr.dstPort, 1234);
    assert.equal(dec(p?.payload ?? new Uint8Array()), "pong");
    // fwd_cnt tells the guest how much of its data the host has taken.
    assert.equal(p?.hdr.fwdCnt, 4);
    assert.equal(dev.metrics().guestConnections, 1);
  });

  it("answers RST when nothing listens, and to packets of no connection", () => {
    const { guest, run, dev } = setup();
    guest.postRx(8);
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 1, dstPort: 99 });
    run();
    const [rst] = guest.received();
    assert.equal(rst?.hdr.op, VIRTIO_VSOCK_OP_RST);
    assert.equal(rst?.hdr.srcPort, 99);
    assert.equal(rst?.hdr.dstPort, 1);
    assert.equal(dev.connections, 0);
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 7, dstPort: 8 }, enc("x"));
    guest.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 7, dstPort: 8 });
    run();
    assert.deepEqual(ops(guest.received()), [VIRTIO_VSOCK_OP_RST], "no RST for an RST");
    const m = dev.metrics();
    assert.equal(m.connectionsRefused, 1);
    assert.equal(m.resetsSent, 2);
  });

  it("a guest refusing a host CONNECT (RST) closes the host socket", () => {
    const { backend, guest, run, dev } = setup();
    guest.postRx(4);
    const host = backend.hostConnect(6000);
    run();
    const [req] = guest.received();
    assert.ok(req);
    guest.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 6000, dstPort: req.hdr.srcPort });
    run();
    assert.ok(host.destroyed);
    assert.equal(host.acceptedPort, undefined);
    assert.equal(dev.connections, 0);
    assert.equal(dev.metrics().connectionsRefused, 1);
  });

  it("a CONNECT the guest never answers times out with an RST", async () => {
    const { backend, guest, run, dev } = setup({ requestTimeoutMs: 20 });
    guest.postRx(4);
    const host = backend.hostConnect(6001);
    run();
    assert.deepEqual(ops(guest.received()), [VIRTIO_VSOCK_OP_REQUEST]);
    await new Promise((r) => setTimeout(r, 60));
    run();
    assert.deepEqual(ops(guest.received()), [VIRTIO_VSOCK_OP_RST]);
    assert.ok(host.destroyed);
    assert.equal(dev.connections, 0);
  });

  it("refuses host CONNECTs before the driver is live", () => {
    const later: (() => void)[] = [];
    const backend = new MemoryBackend((fn) => later.push(fn));
    new VirtioVsock({ cid: CID, backend, log: () => {} });
    assert.ok(backend.hostConnect(1).destroyed);
  });

  it("never sends the guest more than its buf_alloc allows; asks for credit when blocked", () => {
    const env = setup();
    const stream = guestConnection(env, 52, 1000);
    const { guest, run } = env;
    stream.events?.data(new Uint8Array(5000).fill(0x61));
    guest.postRx(8);
    run();
    let got = guest.received();
    const data = got.filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW);
    assert.equal(
      data.reduce((n, p) => n + p.payload.length, 0),
      1000,
      "exactly the guest's buffer space",
    );
    assert.deepEqual(ops(got).slice(-1), [VIRTIO_VSOCK_OP_CREDIT_REQUEST]);
    // The guest consumed 600 bytes: credit for 600 more.
    guest.send({
      op: VIRTIO_VSOCK_OP_CREDIT_UPDATE,
      srcPort: 1234,
      dstPort: 52,
      bufAlloc: 1000,
      fwdCnt: 600,
    });
    run();
    got = guest.received();
    assert.equal(
      got.filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW).reduce((n, p) => n + p.payload.length, 0),
      600,
    );
    // A bigger buffer: the rest fits; payloads split at the 4 KiB rx buffers.
    guest.send({
      op: VIRTIO_VSOCK_OP_CREDIT_UPDATE,
      srcPort: 1234,
      dstPort: 52,
      bufAlloc: 1 << 20,
      fwdCnt: 1600,
    });
    guest.postRx(8);
    run();
    got = guest.received().filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW);
    assert.equal(
      got.reduce((n, p) => n + p.payload.length, 0),
      3400,
    );
    assert.ok(got.every((p) => p.payload.length <= 4096));
  });

  it("stops reading a host socket whose bytes the guest does not take, and resumes", () => {
    const env = setup({ maxHostBuffered: 4096 });
    const stream = guestConnection(env, 52, 0);
    const { guest, run, dev } = env;
    stream.events?.data(new Uint8Array(3000));
    assert.equal(stream.paused, false);
    stream.events?.data(new Uint8Array(3000));
    assert.equal(stream.paused, true);
    assert.equal(dev.metrics().hostPauses, 1);
    guest.send({ op: VIRTIO_VSOCK_OP_CREDIT_UPDATE, srcPort: 1234, dstPort: 52, bufAlloc: 8192 });
    guest.postRx(8);
    run();
    assert.equal(stream.paused, false);
    const bytes = guest
      .received()
      .filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW)
      .reduce((n, p) => n + p.payload.length, 0);
    assert.equal(bytes, 6000);
  });

  it("counts only bytes the host took in fwd_cnt, and updates credit as it takes them", () => {
    const env = setup({ bufAlloc: 8192 });
    const stream = guestConnection(env, 52);
    const { guest, run, dev } = env;
    stream.hold = true;
    const chunk = new Uint8Array(4096).fill(1);
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: 52 }, chunk);
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: 52 }, chunk);
    run();
    assert.deepEqual(guest.received(), [], "nothing forwarded yet: no credit update");
    // Beyond our buf_alloc while the host has taken nothing: the connection is reset.
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: 52 }, new Uint8Array(1));
    run();
    assert.deepEqual(ops(guest.received()), [VIRTIO_VSOCK_OP_RST]);
    assert.equal(dev.metrics().creditViolations, 1);
    assert.ok(stream.destroyed);

    const env2 = setup({ bufAlloc: 8192 });
    const s2 = guestConnection(env2, 52);
    s2.hold = true;
    env2.guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: 52 }, chunk);
    env2.guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: 52 }, chunk);
    env2.run();
    assert.deepEqual(env2.guest.received(), []);
    s2.release();
    env2.run();
    const [update] = env2.guest.received();
    assert.equal(update?.hdr.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
    assert.equal(update?.hdr.fwdCnt, 8192);
    assert.equal(update?.hdr.bufAlloc, 8192);
  });

  it("answers CREDIT_REQUEST with CREDIT_UPDATE", () => {
    const env = setup();
    guestConnection(env, 52);
    env.guest.send({ op: VIRTIO_VSOCK_OP_CREDIT_REQUEST, srcPort: 1234, dstPort: 52 });
    env.run();
    assert.deepEqual(ops(env.guest.received()), [VIRTIO_VSOCK_OP_CREDIT_UPDATE]);
  });

  it("half-closes each way, and resets once both ways are done", () => {
    const env = setup();
    const stream = guestConnection(env, 52);
    const { guest, run, dev } = env;
    // The host program is done sending: its last bytes, then SHUTDOWN(SEND).
    stream.events?.data(enc("last"));
    stream.events?.end();
    run();
    const got = guest.received();
    assert.deepEqual(ops(got), [VIRTIO_VSOCK_OP_RW, VIRTIO_VSOCK_OP_SHUTDOWN]);
    assert.equal(got[1]?.hdr.flags, VIRTIO_VSOCK_SHUTDOWN_F_SEND);
    // The guest still sends, then shuts down its sending side: the host socket half-closes.
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: 52 }, enc("reply"));
    guest.send({
      op: VIRTIO_VSOCK_OP_SHUTDOWN,
      srcPort: 1234,
      dstPort: 52,
      flags: VIRTIO_VSOCK_SHUTDOWN_F_SEND,
    });
    run();
    assert.equal(stream.text(), "reply");
    assert.ok(stream.ended);
    // Closing the guest socket: both flags; the host side is flushed, so RST ends it.
    guest.send({
      op: VIRTIO_VSOCK_OP_SHUTDOWN,
      srcPort: 1234,
      dstPort: 52,
      flags: VIRTIO_VSOCK_SHUTDOWN_F_SEND | VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE,
    });
    run();
    assert.deepEqual(ops(guest.received()), [VIRTIO_VSOCK_OP_RST]);
    assert.ok(stream.destroyed);
    assert.equal(dev.connections, 0);
  });

  it("delivers a closed host socket's last bytes before the RST", () => {
    const env = setup();
    const stream = guestConnection(env, 52, 3);
    stream.events?.data(enc("abcdef"));
    stream.events?.end();
    stream.events?.close();
    env.guest.postRx(8);
    env.run();
    let got = env.guest.received();
    assert.equal(dec(got[0]?.payload ?? new Uint8Array()), "abc");
    env.guest.send({
      op: VIRTIO_VSOCK_OP_CREDIT_UPDATE,
      srcPort: 1234,
      dstPort: 52,
      bufAlloc: 3,
      fwdCnt: 3,
    });
    env.run();
    got = env.guest.received();
    assert.equal(dec(got[0]?.payload ?? new Uint8Array()), "def");
    assert.equal(got.at(-1)?.hdr.op, VIRTIO_VSOCK_OP_RST);
    assert.equal(env.dev.connections, 0);
  });

  it("drops misaddressed packets and refuses malformed ones with RST, counting each", () => {
    const { guest, run, dev, logs } = setup();
    guest.postRx(16);
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcCid: CID + 1, srcPort: 1, dstPort: 2 });
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcCid: CID + 2 ** 32, srcPort: 1, dstPort: 2 });
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, dstCid: 7, srcPort: 1, dstPort: 2 });
    run();
    assert.deepEqual(guest.received(), [], "misaddressed: no answer");
    assert.equal(dev.metrics().misaddressedPackets, 3);
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, type: 2, srcPort: 1, dstPort: 2 });
    guest.send({ op: 0, srcPort: 1, dstPort: 2 });
    guest.send({ op: 99, srcPort: 1, dstPort: 2 });
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1, dstPort: 2, len: 100 }, enc("short"));
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1, dstPort: 2, len: 70_000 }, enc("x"));
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 1, dstPort: 2, len: 1 }, enc("x"));
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1, dstPort: 2, flags: 1 }, enc("x"));
    guest.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, srcPort: 1, dstPort: 2, flags: 4 });
    run();
    const got = guest.received();
    assert.equal(got.length, 8);
    assert.ok(got.every((p) => p.hdr.op === VIRTIO_VSOCK_OP_RST && p.hdr.dstPort === 1));
    const m = dev.metrics();
    assert.equal(m.malformedPackets, 8);
    assert.equal(m.txPackets, 0);
    assert.equal(dev.connections, 0);
    assert.ok(logs.length >= 11);
  });

  it("refuses short and wrong-direction chains on both queues", () => {
    const { guest, run, dev } = setup();
    guest.tx.add([{ length: 20, data: new Uint8Array(20) }]);
    guest.tx.add([
      { length: 44, data: encodeHeader(CID, { op: VIRTIO_VSOCK_OP_REQUEST, dstPort: 1 }) },
      { length: 8, writable: true },
    ]);
    guest.tx.kick();
    const r = guest.rx.add([{ length: 44, data: new Uint8Array(44) }]);
    const tiny = guest.rx.add([{ length: 10, writable: true }]);
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 3, dstPort: 4 });
    run();
    const used = guest.rx.takeUsed();
    assert.deepEqual(used.slice(0, 2), [
      { id: r.head, len: 0 },
      { id: tiny.head, len: 0 },
    ]);
    assert.equal(dev.metrics().refusedChains, 4);
  });

  it("a protocol violation on a connection resets it", () => {
    const env = setup();
    const stream = guestConnection(env, 52);
    env.guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 1234, dstPort: 52 });
    env.run();
    assert.deepEqual(ops(env.guest.received()), [VIRTIO_VSOCK_OP_RST]);
    assert.ok(stream.destroyed);
    assert.equal(env.dev.metrics().malformedPackets, 1);
  });

  it("refuses connections beyond the limit", () => {
    const { backend, guest, run, dev } = setup({ maxConnections: 2 });
    backend.listening.add(52);
    guest.postRx(8);
    for (const p of [1, 2, 3]) guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: p, dstPort: 52 });
    run();
    const got = guest.received();
    assert.deepEqual(got.map((p) => [p.hdr.dstPort, p.hdr.op]).sort(), [
      [1, VIRTIO_VSOCK_OP_RESPONSE],
      [2, VIRTIO_VSOCK_OP_RESPONSE],
      [3, VIRTIO_VSOCK_OP_RST],
    ]);
    assert.ok(backend.hostConnect(9).destroyed, "host CONNECTs count too");
    assert.equal(dev.connections, 2);
  });

  it("waits for rx buffers, and bounds the RSTs it owes", () => {
    const { guest, run, dev } = setup();
    for (let i = 0; i < 300; i++) {
      guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: i, dstPort: 1 }, enc("x"));
      run();
    }
    assert.ok(dev.metrics().rxNoBuffers > 0);
    // 256 RSTs owed: the tx queue stops there, its last chains waiting in the ring.
    assert.equal(dev.metrics().txPackets, 256);
    for (let round = 0; round < 20; round++) {
      guest.postRx(32);
      run();
      guest.received();
    }
    assert.equal(dev.metrics().txPackets, 300);
    assert.equal(dev.metrics().resetsSent, 300);
  });

  it("device reset closes every connection; transportReset tells the guest", () => {
    const env = setup();
    const stream = guestConnection(env, 52);
    const evq = env.driver.queue(2);
    const ev = evq.add([{ length: 4, writable: true }]);
    evq.kick();
    assert.equal(env.dev.transportReset(), true);
    assert.deepEqual(evq.takeUsed(), [{ id: ev.head, len: 4 }]);
    assert.ok(stream.destroyed);
    assert.equal(env.dev.connections, 0);
    const s2 = guestConnection(env, 53);
    env.driver.reset();
    assert.ok(s2.destroyed);
    assert.equal(env.dev.connections, 0);
  });

  it("records and validates its state", () => {
    const { dev } = setup();
    const s = dev.state();
    assert.deepEqual(s, {
      version: 1,
      name: "virtio-vsock0",
      cid: CID,
      uds: "/memory/vsock",
      queueSize: 256,
    });
    assert.deepEqual(validateVsockState(JSON.parse(JSON.stringify(s))), s);
    assert.throws(() => validateVsockState({ ...s, cid: 2 }), /cid 2/);
    assert.throws(() => validateVsockState({ ...s, version: 2 }), TypeError);
  });

  it("rejects bad options", () => {
    const backend = new MemoryBackend();
    for (const cid of [0, 1, 2, 0xffff_ffff, 2 ** 32, 3.5, -1]) {
      assert.throws(() => new VirtioVsock({ cid, backend }), RangeError);
    }
    assert.throws(() => new VirtioVsock({ cid: 3, backend, queueSize: 3 }), RangeError);
    assert.throws(() => new VirtioVsock({ cid: 3, backend, maxConnections: 0 }), RangeError);
    assert.throws(() => new VirtioVsock({ cid: 3 } as unknown as VirtioVsockOptions), TypeError);
  });
});
