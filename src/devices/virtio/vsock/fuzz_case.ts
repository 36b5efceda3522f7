// The virtio-vsock fuzz case, shared by the property test and src/virtio/fuzz.ts: a fresh
// device behind the transport with the in-memory backend; a random sequence of guest packets
// (headers mostly plausible, every field sometimes hostile, payloads split across buffers in
// several ways), rx buffers of every shape, host programs connecting, sending, closing and
// stalling, and now and then a wholly hostile ring. Properties: nothing throws out of the
// device, no access is attempted outside RAM, deferred work ends, every packet the device
// writes is well-formed and fits the buffer it was given, a connection's bytes never exceed
// the credit the guest granted, a stalled host never owes more than our buf_alloc, and the
// connection limit holds.

import assert from "node:assert/strict";
import { VIRTIO_CONFIG_S_NEEDS_RESET, VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  fuzzEnv,
  HEAP,
  hostileRing,
  LOW_END,
  type Rand,
} from "../../../virtio/testing/fuzz_cases.js";
import { VirtioVsock } from "./device.js";
import {
  checkTxHeader,
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_F_SEND,
  VIRTIO_VSOCK_TYPE_STREAM,
  VSOCK_HDR_SIZE,
  VSOCK_HOST_CID,
  VSOCK_MAX_PAYLOAD,
  VsockHeader,
} from "./packet.js";
import { type FakeStream, MemoryBackend } from "./testing.js";

const CID = 7;
const QUEUE_SIZE = 64;
const BUF_ALLOC = 16 * 1024;
const MAX_CONNECTIONS = 6;
const LISTENING = [50, 51];
const GUEST_PORTS = [1000, 1001, 1002];
const BUF_ALLOCS = [0, 100, 4096, 65536];
// Guest buffers, below the driver double's heap (HEAP) and the shared fuzz layout's rings.
const RX_SLOTS = 16;
const RX_BASE = 0x1_0000;
const RX_SLOT = 0x1000;
const TX_HDR = 0x2_0000;
const TX_PAYLOAD = 0x2_0100;

function pick(r: Rand, n: number): number {
  return r.next() % n;
}

/** What the guest believes about one connection, for the credit property. */
interface GuestConn {
  bufAlloc: number;
  fwd: number;
  delivered: number;
  /** The guest made claims the model cannot follow (random credit fields). */
  tainted: boolean;
}

export interface VsockCaseResult {
  /** Guest packets sent, and rx packets the device wrote. */
  sent: number;
  received: number;
  /** Guest packets refused (malformed, misaddressed) and chains refused. */
  refused: number;
  /** Connections established, either side. */
  connections: number;
  /** Payload bytes moved, both ways. */
  bytes: number;
}

/** One case: a fresh device and a random conversation with it. */
export function vsockCase(r: Rand): VsockCaseResult {
  const { memory, low } = fuzzEnv();
  const deferred: (() => void)[] = [];
  const defer = (fn: () => void) => deferred.push(fn);
  const backend = new MemoryBackend(defer);
  for (const p of LISTENING) backend.listening.add(p);
  const dev = new VirtioVsock({
    cid: CID,
    backend,
    defer,
    queueSize: QUEUE_SIZE,
    maxConnections: MAX_CONNECTIONS,
    bufAlloc: BUF_ALLOC,
    maxHostBuffered: 8192,
    requestTimeoutMs: 60_000,
    log: () => {},
  });
  const transport = new VirtioMmioTransport({ device: dev, memory, irq: { set() {}, pulse() {} } });
  const driver = new VirtioMmioDriver({ memory, transport, heapStart: HEAP, heapEnd: LOW_END });
  driver.init();
  const rx = driver.queue(0);
  const tx = driver.queue(1);
  const outside = memory.outside;

  const model = new Map<string, GuestConn>();
  /** rx chains posted: head → its buffers (address, length), for reading packets back. */
  const posted = new Map<number, { slot: number; bufs: [number, number][] }>();
  const freeSlots = Array.from({ length: RX_SLOTS }, (_, i) => i);
  const hostStreams: FakeStream[] = [];
  const hdr = new VsockHeader();
  const hdrBytes = new Uint8Array(VSOCK_HDR_SIZE);
  const hdrView = new DataView(hdrBytes.buffer);
  let sent = 0;
  let received = 0;
  let bytes = 0;
  let guestRwBytes = 0;
  let hostile = false;

  const runDeferred = () => {
    for (let turns = 0; deferred.length > 0; turns++) {
      assert.ok(turns < 10_000, "deferred work never ends");
      deferred.shift()?.();
    }
  };

  /** Read back what the device put in rx buffers and check every packet. */
  const collect = () => {
    for (const u of rx.takeUsed()) {
      // After a hostile ring, used ids no longer name the chains posted here.
      const chain = hostile ? undefined : posted.get(u.id);
      if (!chain) continue;
      posted.delete(u.id);
      freeSlots.push(chain.slot);
      const capacity = chain.bufs.reduce((n, [, len]) => n + len, 0);
      assert.ok(u.len <= capacity, `used length ${u.len} beyond the chain's ${capacity} bytes`);
      if (u.len === 0) continue; // refused chain
      assert.ok(u.len >= VSOCK_HDR_SIZE, `used length ${u.len} shorter than a header`);
      gather(chain.bufs, 0, hdrBytes);
      hdr.decode(hdrView);
      assert.equal(hdr.srcCid, VSOCK_HOST_CID);
      assert.equal(hdr.dstCid, CID);
      assert.equal(hdr.type, VIRTIO_VSOCK_TYPE_STREAM);
      assert.ok(hdr.op >= VIRTIO_VSOCK_OP_REQUEST && hdr.op <= VIRTIO_VSOCK_OP_CREDIT_REQUEST);
      assert.equal(hdr.len, u.len - VSOCK_HDR_SIZE, "len is what the used length says");
      assert.ok(hdr.len <= VSOCK_MAX_PAYLOAD);
      if (hdr.op !== VIRTIO_VSOCK_OP_RW) assert.equal(hdr.len, 0);
      assert.equal(
        hdr.flags,
        hdr.op === VIRTIO_VSOCK_OP_SHUTDOWN ? VIRTIO_VSOCK_SHUTDOWN_F_SEND : 0,
      );
      received++;
      const key = `${hdr.srcPort}:${hdr.dstPort}`;
      if (hdr.op === VIRTIO_VSOCK_OP_REQUEST) {
        // A host program's connection: the guest will answer with this buf_alloc.
        model.set(key, {
          bufAlloc: BUF_ALLOCS[pick(r, 4)] as number,
          fwd: 0,
          delivered: 0,
          tainted: false,
        });
      } else if (hdr.op === VIRTIO_VSOCK_OP_RW) {
        bytes += hdr.len;
        const m = model.get(key);
        if (!m || m.tainted) continue;
        m.delivered = (m.delivered + hdr.len) >>> 0;
        const inFlight = (m.delivered - m.fwd) >>> 0;
        assert.ok(inFlight <= m.bufAlloc, `${inFlight} bytes in flight, credit ${m.bufAlloc}`);
      }
    }
  };

  const gather = (bufs: [number, number][], skip: number, out: Uint8Array) => {
    let at = 0;
    let s = skip;
    for (const [addr, len] of bufs) {
      if (at === out.length) break;
      const k = Math.min(len - Math.min(s, len), out.length - at);
      if (s < len) {
        memory.read(addr + s, out.subarray(at, at + k));
        at += k;
      }
      s = Math.max(0, s - len);
    }
  };

  const postRx = () => {
    const n = 1 + pick(r, 4);
    for (let i = 0; i < n; i++) {
      const slot = freeSlots.pop();
      if (slot === undefined) break;
      const base = RX_BASE + slot * RX_SLOT;
      const room = pick(r, 4) === 0 ? pick(r, 64) : 64 + pick(r, RX_SLOT - 192);
      let bufs: [number, number][];
      let writable = true;
      switch (pick(r, 8)) {
        case 0:
          bufs = [[base, VSOCK_HDR_SIZE + room]];
          break;
        case 1:
          bufs = [
            [base, 20],
            [base + 32, VSOCK_HDR_SIZE - 20 + room],
          ];
          break;
        case 2:
          bufs = [[base, pick(r, VSOCK_HDR_SIZE)]];
          break;
        case 3:
          writable = pick(r, 2) === 0;
          bufs = [[base, VSOCK_HDR_SIZE + room]];
          if (!writable) break;
          bufs.push([base + 0x800, 16]);
          break;
        default:
          bufs = [
            [base, VSOCK_HDR_SIZE],
            [base + 64, room],
          ];
      }
      const { head } = rx.add(
        bufs.map(([address, length]) => ({ address, length, writable })),
        { indirect: pick(r, 4) === 0 },
      );
      posted.set(head, { slot, bufs: writable ? bufs : [] });
    }
    rx.kick();
  };

  const send = () => {
    // Ports: mostly a connection the model knows or a listening port, sometimes anything.
    const known = [...model.keys()];
    let hostPort: number;
    let guestPort: number;
    const choice = pick(r, 8);
    if (choice < 4 && known.length > 0) {
      const [h, g] = (known[pick(r, known.length)] as string).split(":");
      hostPort = Number(h);
      guestPort = Number(g);
    } else if (choice < 7) {
      hostPort = pick(r, 3) === 0 ? 52 : (LISTENING[pick(r, 2)] as number);
      guestPort = GUEST_PORTS[pick(r, 3)] as number;
    } else {
      hostPort = r.next();
      guestPort = r.next();
    }
    const ops = [
      VIRTIO_VSOCK_OP_REQUEST,
      VIRTIO_VSOCK_OP_RESPONSE,
      VIRTIO_VSOCK_OP_RW,
      VIRTIO_VSOCK_OP_RW,
      VIRTIO_VSOCK_OP_RW,
      VIRTIO_VSOCK_OP_SHUTDOWN,
      6,
      7,
      3,
    ];
    const op = pick(r, 16) === 0 ? r.next() & 0xffff : (ops[pick(r, ops.length)] as number);
    const key = `${hostPort}:${guestPort}`;
    const old = model.get(key);
    const fresh = {
      bufAlloc: BUF_ALLOCS[pick(r, 4)] as number,
      fwd: 0,
      delivered: 0,
      tainted: false,
    };
    const m = op === VIRTIO_VSOCK_OP_REQUEST || !old ? fresh : old;
    // An honest reader's fwd_cnt: somewhere between what it last said and what it received.
    const lag = (m.delivered - m.fwd) >>> 0;
    const fwd = (m.fwd + (lag === 0 ? 0 : pick(r, lag + 1))) >>> 0;
    const wild = pick(r, 16) === 0;
    const payloadLen =
      op === VIRTIO_VSOCK_OP_RW
        ? pick(r, 4) === 0
          ? 0
          : 1 + pick(r, 10_000)
        : pick(r, 8) === 0
          ? pick(r, 64)
          : 0;
    let flags = pick(r, 16) === 0 ? r.next() : 0;
    if (op === VIRTIO_VSOCK_OP_SHUTDOWN) flags = pick(r, 8) === 0 ? r.next() : pick(r, 4);
    const h = Object.assign(new VsockHeader(), {
      srcCid: pick(r, 16) === 0 ? r.next() * (pick(r, 2) === 0 ? 1 : 2 ** 20) : CID,
      dstCid: pick(r, 16) === 0 ? r.next() : VSOCK_HOST_CID,
      srcPort: guestPort,
      dstPort: hostPort,
      len: pick(r, 12) === 0 ? r.next() : payloadLen,
      type: pick(r, 16) === 0 ? r.next() & 0xffff : VIRTIO_VSOCK_TYPE_STREAM,
      op,
      flags,
      bufAlloc: wild ? r.next() : m.bufAlloc,
      fwdCnt: wild ? r.next() : fwd,
    });
    const layout = pick(r, 8);
    // The device acts on the packet (its credit fields included) only if it is well-formed
    // and its chain is; a REQUEST starts the model afresh only then, since a refused one
    // leaves an existing connection as it was.
    const clean = layout !== 1 && layout !== 2 && checkTxHeader(h, payloadLen, CID) === undefined;
    if (m === fresh && (clean || !old)) model.set(key, fresh);
    if (m !== fresh || clean || !old) {
      m.fwd = fwd;
      if (wild) m.tainted = true;
    }
    const header = new Uint8Array(VSOCK_HDR_SIZE);
    h.encode(new DataView(header.buffer));
    memory.write(TX_HDR, header);
    memory.slice(TX_PAYLOAD, payloadLen).fill(r.next() & 0xff);
    let bufs: { address: number; length: number; writable?: boolean }[];
    switch (layout) {
      case 0: // header and payload in one buffer
        memory.write(TX_HDR + VSOCK_HDR_SIZE, memory.slice(TX_PAYLOAD, payloadLen).slice());
        bufs = [{ address: TX_HDR, length: VSOCK_HDR_SIZE + payloadLen }];
        break;
      case 1: // short chain
        bufs = [{ address: TX_HDR, length: pick(r, VSOCK_HDR_SIZE) }];
        break;
      case 2: // a device-writable part
        bufs = [
          { address: TX_HDR, length: VSOCK_HDR_SIZE },
          { address: TX_PAYLOAD, length: payloadLen + 1, writable: true },
        ];
        break;
      case 3: // header split across two buffers
        memory.write(TX_HDR + 0x80, header.subarray(10));
        bufs = [
          { address: TX_HDR, length: 10 },
          { address: TX_HDR + 0x80, length: VSOCK_HDR_SIZE - 10 },
          { address: TX_PAYLOAD, length: payloadLen },
        ];
        break;
      default:
        bufs = [{ address: TX_HDR, length: VSOCK_HDR_SIZE }];
        if (payloadLen > 0) bufs.push({ address: TX_PAYLOAD, length: payloadLen });
    }
    if (op === VIRTIO_VSOCK_OP_RW) guestRwBytes += payloadLen;
    const before = tx.usedIdx();
    tx.add(bufs, { indirect: pick(r, 4) === 0 });
    tx.kick();
    tx.takeUsed();
    sent++;
    // The tx queue waits when too many RSTs are owed; then the model cannot follow timing.
    if (((tx.usedIdx() - before) & 0xffff) !== 1) for (const c of model.values()) c.tainted = true;
  };

  const randomStream = (): FakeStream | undefined => {
    const all = [...hostStreams, ...[...backend.outbound.values()].flat()];
    const live = all.filter((s) => !s.destroyed && s.events);
    return live[pick(r, Math.max(1, live.length))];
  };

  // Half the cases start with a guest connection set up properly, so that the random steps
  // that follow mostly meet an established connection rather than nothing.
  if (pick(r, 2) === 0) {
    const { head } = rx.add([
      { address: RX_BASE, length: VSOCK_HDR_SIZE, writable: true },
      { address: RX_BASE + 64, length: 4000, writable: true },
    ]);
    posted.set(head, {
      slot: freeSlots.shift() as number,
      bufs: [
        [RX_BASE, VSOCK_HDR_SIZE],
        [RX_BASE + 64, 4000],
      ],
    });
    const key = `${LISTENING[0]}:${GUEST_PORTS[0]}`;
    const bufAlloc = BUF_ALLOCS[1 + pick(r, 3)] as number;
    model.set(key, { bufAlloc, fwd: 0, delivered: 0, tainted: false });
    const h = Object.assign(new VsockHeader(), {
      srcCid: CID,
      dstCid: VSOCK_HOST_CID,
      srcPort: GUEST_PORTS[0],
      dstPort: LISTENING[0],
      type: VIRTIO_VSOCK_TYPE_STREAM,
      op: VIRTIO_VSOCK_OP_REQUEST,
      bufAlloc,
    });
    const bytes = new Uint8Array(VSOCK_HDR_SIZE);
    h.encode(new DataView(bytes.buffer));
    memory.write(TX_HDR, bytes);
    tx.add([{ address: TX_HDR, length: VSOCK_HDR_SIZE }]);
    tx.kick();
    tx.takeUsed();
    runDeferred();
    collect();
    // A host service that does not read: the guest's sender must stop at our buf_alloc.
    const service = backend.outbound.get(LISTENING[0] as number)?.[0];
    if (service && pick(r, 2) === 0) service.hold = true;
  }
  const steps = 1 + pick(r, 24);
  for (let i = 0; i < steps && !hostile; i++) {
    const kind = pick(r, 16);
    if (kind <= 4) send();
    else if (kind <= 7) postRx();
    else if (kind === 8)
      hostStreams.push(backend.hostConnect(pick(r, 4) === 0 ? r.next() : 60 + pick(r, 3)));
    else if (kind <= 10) {
      const n = 1 + pick(r, 12_000);
      randomStream()?.events?.data(new Uint8Array(n).fill(n & 0xff));
    } else if (kind === 11) {
      const s = randomStream();
      if (pick(r, 2) === 0) s?.events?.end();
      else s?.events?.close();
    } else if (kind === 12) {
      const s = randomStream();
      if (s?.hold) s.release();
      else if (s) s.hold = true;
    } else if (kind === 13) runDeferred();
    else {
      // A wholly hostile ring ends the conversation: the model's bookkeeping is gone.
      const q = kind === 14 ? tx : rx;
      hostileRing(r, low, { desc: q.desc, avail: q.avail, size: q.size, base: q.usedIdx() });
      q.kick();
      hostile = true;
    }
    // Socket events and connects complete on later turns; let them, most of the time.
    if (pick(r, 4) !== 0) runDeferred();
    collect();
    for (const s of [...hostStreams, ...[...backend.outbound.values()].flat()]) {
      assert.ok(s.heldBytes <= BUF_ALLOC, `a stalled host owes ${s.heldBytes} bytes`);
    }
    assert.ok(dev.connections <= MAX_CONNECTIONS, `${dev.connections} connections`);
  }
  runDeferred();
  collect();
  let written = 0;
  for (const s of [...hostStreams, ...[...backend.outbound.values()].flat()]) {
    written += s.bytes().length;
  }
  // A hostile ring's chains may hold stale packets left in RAM by earlier cases, RW bytes
  // included, so the count only binds conversations that stayed structured.
  assert.ok(hostile || written <= guestRwBytes, "the host got bytes the guest never sent");
  const m = dev.metrics();
  const needsReset = (transport.deviceStatus() & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
  assert.ok(hostile || !needsReset, "a well-formed ring was declared broken");
  driver.reset();
  assert.equal(dev.connections, 0, "a reset left connections behind");
  assert.equal(memory.outside, outside, "an access was attempted outside guest RAM");
  return {
    sent,
    received,
    refused: m.malformedPackets + m.misaddressedPackets + m.refusedChains,
    connections: m.hostConnections + m.guestConnections,
    bytes: bytes + written,
  };
}
