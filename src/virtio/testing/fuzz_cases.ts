// Fuzz cases shared by the property tests (fast-check feeds the random stream, so failures
// shrink) and the standalone million-case runner (src/virtio/fuzz.ts, a fast xorshift
// stream). Each case builds hostile guest state from the stream, drives the code under
// test, and throws an AssertionError if a property fails: nothing else may throw, every
// chain handed out lies in RAM and obeys §2.7's rules, pop() terminates, no access is
// attempted outside RAM, and the transport's status and interrupt bits stay coherent.

import assert from "node:assert/strict";
import type { IrqLine } from "../../devices/device.js";
import { MIB, ramRegions } from "../../memory/mod.js";
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from "../device.js";
import { VirtioMmioTransport } from "../mmio.js";
import { Queue } from "../queue.js";
import { DriverError, VirtioMmioDriver } from "./driver.js";
import { RecordingDevice } from "./recording_device.js";
import { WatchedMemory } from "./watched_memory.js";

/** A stream of 32-bit unsigned integers. */
export interface Rand {
  next(): number;
}

/** xorshift32: fast and good enough to explore; seeded so a failure can be replayed. */
export class XorShift implements Rand {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e37_79b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
}

/** Replays an array (from fast-check), then zeros. */
export class StreamRand implements Rand {
  private i = 0;
  constructor(private readonly values: readonly number[]) {}
  next(): number {
    return (this.values[this.i++] ?? 0) >>> 0;
  }
}

export const FUZZ_RAM = 16 * MIB;
// Fixed guest layout for the cases; everything below LOW_END is reachable as a DataView.
export const DESC = 0x1000; // up to 256 descriptors: 4 KiB
export const AVAIL = 0x3000;
export const USED = 0x4000;
export const INDIRECT = 0x6000; // 64 descriptors of indirect tables
const INDIRECT_ENTRIES = 64;
export const BUFS = 0x1_0000;
/** Guest RAM from here to LOW_END is free for a driver double's heap in the cases. */
export const HEAP = 0x4_0000;
export const LOW_END = 0x10_0000;

export interface FuzzEnv {
  memory: WatchedMemory;
  low: DataView;
}

let env: FuzzEnv | undefined;
export function fuzzEnv(): FuzzEnv {
  if (!env) {
    const memory = new WatchedMemory(ramRegions(FUZZ_RAM));
    const bytes = memory.slice(0, LOW_END);
    env = { memory, low: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
  }
  return env;
}
export function closeFuzzEnv(): void {
  env?.memory.close();
  env = undefined;
}

function pick(r: Rand, n: number): number {
  return r.next() % n;
}

function randomAddress(r: Rand): [number, number] {
  switch (pick(r, 16)) {
    case 0:
      return [(FUZZ_RAM - pick(r, 64)) >>> 0, 0];
    case 1:
      return [(INDIRECT + 16 * pick(r, INDIRECT_ENTRIES + 2)) >>> 0, 0];
    case 2:
      return [r.next(), r.next()];
    case 3:
      return [r.next(), 0];
    default:
      return [BUFS + pick(r, 0x1_0000), 0];
  }
}

function randomLength(r: Rand): number {
  switch (pick(r, 8)) {
    case 0:
      return r.next();
    case 1:
      return 16 * pick(r, INDIRECT_ENTRIES + 2);
    case 2:
      return pick(r, FUZZ_RAM + 2);
    default:
      return pick(r, 0x1000);
  }
}

/** Write one descriptor: structured-random (mostly plausible) or raw bytes. */
function writeDescriptor(low: DataView, at: number, r: Rand, entries: number, raw: boolean): void {
  if (raw) {
    for (let i = 0; i < 16; i += 4) low.setUint32(at + i, r.next(), true);
    return;
  }
  const [lo, hi] = randomAddress(r);
  low.setUint32(at, lo, true);
  low.setUint32(at + 4, hi, true);
  low.setUint32(at + 8, randomLength(r), true);
  const f = r.next();
  low.setUint16(at + 12, (f & 0xf00) === 0 ? f & 0xffff : f & 7, true);
  const n = r.next();
  low.setUint16(at + 14, (n & 0xf000) === 0 ? n & 0xffff : n % (entries + 2), true);
}

export interface RingLayout {
  desc: number;
  avail: number;
  size: number;
  /** Avail idx the device has caught up to; the new idx is published relative to it. */
  base?: number;
}

/** Fill a ring (below LOW_END) with hostile content; returns the avail idx written. */
export function hostileRing(r: Rand, low: DataView, ring: RingLayout): number {
  const { desc, avail, size } = ring;
  const raw = pick(r, 4) === 0;
  for (let i = 0; i < size; i++) writeDescriptor(low, desc + 16 * i, r, size, raw);
  for (let i = 0; i < INDIRECT_ENTRIES; i++) {
    writeDescriptor(low, INDIRECT + 16 * i, r, INDIRECT_ENTRIES, raw);
  }
  low.setUint16(avail, r.next() & 0xffff, true);
  const k = r.next();
  const idx = ((k & 0x1f000) === 0 ? k : (ring.base ?? 0) + (k % (size + 3))) & 0xffff;
  low.setUint16(avail + 2, idx, true);
  for (let i = 0; i < size + 1; i++) {
    // Mostly valid heads (an invalid one stops the ring, ending the case early).
    const h = r.next();
    low.setUint16(avail + 4 + 2 * i, (h & 0x1f00) === 0 ? h & 0xffff : h % size, true);
  }
  return idx;
}

export interface QueueCaseResult {
  popped: number;
  malformed: number;
  broken: boolean;
}

/** One queue case: a live queue over a hostile ring, popped until empty. */
export function queueCase(r: Rand): QueueCaseResult {
  const { memory, low } = fuzzEnv();
  const size = 1 << pick(r, 9);
  const features = BigInt(pick(r, 4));
  const queue = new Queue({ index: 0, maxSize: 256, memory });
  queue.size = size;
  queue.descTable = DESC;
  queue.availRing = AVAIL;
  queue.usedRing = USED;
  assert.equal(queue.enable(), undefined);
  queue.setFeatures(
    ((features & 1n) << VIRTIO_F_INDIRECT_DESC) | ((features >> 1n) << VIRTIO_F_EVENT_IDX),
  );
  const availIdx = hostileRing(r, low, { desc: DESC, avail: AVAIL, size });
  const outside = memory.outside;
  let calls = 0;
  for (;;) {
    assert.ok(++calls <= size + 2, "pop() keeps returning chains past the ring's content");
    const chain = queue.pop();
    if (!chain) break;
    assert.ok(chain.head < size);
    const n = chain.readable.length + chain.writable.length;
    assert.ok(n >= 1 && n <= size, `chain of ${n} descriptors in a queue of ${size}`);
    let rl = 0;
    let wl = 0;
    for (const b of chain.readable) {
      assert.ok(memory.contains(b.address, b.length) && !b.writable);
      rl += b.length;
    }
    for (const b of chain.writable) {
      assert.ok(memory.contains(b.address, b.length) && b.writable);
      wl += b.length;
    }
    assert.equal(rl, chain.readableLength);
    assert.equal(wl, chain.writableLength);
    assert.ok(rl + wl < 2 ** 32);
    queue.pushUsed(chain.head, Math.min(wl, r.next()));
    queue.notifyIfNeeded();
  }
  const s = queue.stats();
  assert.ok(s.popped + s.malformed <= availIdx, "consumed more entries than were published");
  assert.equal(memory.outside, outside, "an access was attempted outside guest RAM");
  return { popped: s.popped, malformed: s.malformed, broken: queue.broken };
}

// Register offsets weighted toward the ones that do something.
const REGS = [
  0x000, 0x004, 0x008, 0x00c, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050, 0x060,
  0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0ac, 0x0b0, 0x0fc, 0x100, 0x104,
];
const STATUS_VALUES = [0, 1, 3, 0xb, 0xf, 0x80, 0x83, 0x4b, 0x40];

export interface TransportCaseResult {
  activated: boolean;
  malformed: number;
}

/** One transport case: a fresh transport and a random register sequence from a "driver". */
export function transportCase(r: Rand): TransportCaseResult {
  const { memory, low } = fuzzEnv();
  const device = new RecordingDevice();
  device.echo = true;
  const irq: IrqLine = { set() {}, pulse() {} };
  const transport = new VirtioMmioTransport({ device, memory, irq, trigger: "edge" });
  const data = new Uint8Array(8);
  // Half the cases start like Linux does (with random feature wishes and queue sizes, so
  // some steps are refused), to reach the live device; the rest start from nothing.
  let driver: VirtioMmioDriver | undefined;
  if (pick(r, 2) === 0) {
    driver = new VirtioMmioDriver({ memory, transport, heapStart: HEAP, heapEnd: LOW_END });
    const wanted = (BigInt(r.next()) << 32n) | BigInt(r.next());
    try {
      driver.init({
        features: pick(r, 8) === 0 ? wanted : wanted | (1n << VIRTIO_F_VERSION_1),
        queueSizes: [1 << pick(r, 5), 1 << pick(r, 6)],
      });
    } catch (e) {
      if (!(e instanceof DriverError)) throw e;
    }
    checkTransport(transport, device);
  }
  const ops = 8 + pick(r, 64);
  for (let i = 0; i < ops; i++) {
    const kind = pick(r, 16);
    if (kind === 0) {
      let ring: RingLayout = { desc: DESC, avail: AVAIL, size: 1 << pick(r, 5) };
      try {
        const q = driver?.queue(pick(r, 2));
        if (q) ring = { desc: q.desc, avail: q.avail, size: q.size };
      } catch {
        // that queue was not set up: use the fixed layout
      }
      hostileRing(r, low, ring);
      continue;
    }
    if (kind === 1) {
      transport.notifyFromEventfd(pick(r, 4));
      continue;
    }
    const wild = kind === 2;
    const offset = wild ? r.next() % 0x1100 : (REGS[pick(r, REGS.length)] as number);
    const size = wild || offset >= 0x100 ? ([1, 2, 4, 8, 3][pick(r, 5)] as number) : 4;
    const access = data.subarray(0, size);
    const write = (r.next() & 1) === 1;
    if (write) {
      let value = r.next();
      if (offset === 0x070 && (value & 3) !== 0) value = STATUS_VALUES[pick(r, 9)] as number;
      else if (offset === 0x038 && (value & 1) === 0) value = 1 << pick(r, 6);
      else if (offset === 0x080) value = [DESC, DESC + 8, FUZZ_RAM][pick(r, 3)] as number;
      else if (offset === 0x090) value = AVAIL;
      else if (offset === 0x0a0) value = USED;
      else if ((offset === 0x044 || offset === 0x030 || offset === 0x050) && (value & 3) !== 0)
        value &= 1;
      else if (offset === 0x020 && (value & 1) === 0) value = 1;
      new DataView(data.buffer).setUint32(0, value, true);
      transport.write(offset, access);
    } else {
      access.fill(0xee);
      transport.read(offset, access);
      assert.equal(access.length, size);
    }
    checkTransport(transport, device);
  }
  transport.reset();
  assert.equal(transport.deviceStatus(), 0);
  return { activated: device.activations > 0, malformed: transport.stats().malformedAccesses };
}

function checkTransport(transport: VirtioMmioTransport, device: RecordingDevice): void {
  const status = transport.deviceStatus();
  assert.equal(status & ~0xcf, 0, `status 0x${status.toString(16)} has unknown bits`);
  if (status & 4) assert.equal(status & 0xb, 0xb, "DRIVER_OK without the steps before it");
  if (status & 8) assert.equal(status & 3, 3, "FEATURES_OK without ACKNOWLEDGE|DRIVER");
  const word = new Uint8Array(4);
  transport.read(0x060, word);
  assert.equal((word[0] as number) & ~3, 0, "InterruptStatus has unknown bits");
  const f = device.ctx?.features;
  if (f !== undefined) {
    assert.equal(f & ~device.features & ~(1n << VIRTIO_F_VERSION_1), 0n, "unoffered feature");
    assert.notEqual(f & (1n << VIRTIO_F_VERSION_1), 0n);
  }
}
