// Test helpers for virtio-blk, shared by the unit tests and the standalone fuzzer: laying
// out a request chain in guest memory from a plain description, a fake QueueHandle that
// records what the device returns, and an oracle that checks a parse result against the
// raw bytes independently of request.ts. Not exported from mod.ts.

import type { GuestMemory } from "../../../memory/mod.js";
import type { DescriptorBuffer, DescriptorChain, QueueHandle } from "../../../virtio/device.js";
import {
  type ParseResult,
  REQUEST_HEADER_SIZE,
  type RequestLimits,
  SEGMENT_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from "./request.js";

/** A bump allocator over guest RAM, leaving gaps so buffers are never contiguous. */
export class GuestAllocator {
  #next: number;
  constructor(
    readonly memory: GuestMemory,
    readonly start = 0x10_0000,
  ) {
    this.#next = start;
  }
  alloc(length: number, gap = 64): number {
    const a = this.#next;
    this.#next += Math.ceil((length + gap) / 64) * 64;
    if (!this.memory.contains(a, length)) throw new RangeError("test allocator out of guest RAM");
    return a;
  }
  reset(): void {
    this.#next = this.start;
  }
  /** A readable buffer holding `bytes`. */
  readable(bytes: Uint8Array): DescriptorBuffer {
    const address = this.alloc(bytes.length);
    this.memory.write(address, bytes);
    return { address, length: bytes.length, writable: false };
  }
  /** A writable buffer of `length` bytes, pre-filled with `fill`. */
  writable(length: number, fill = 0xee): DescriptorBuffer {
    const address = this.alloc(length);
    this.memory.write(address, new Uint8Array(length).fill(fill));
    return { address, length, writable: true };
  }
}

/** A chain from buffers in order (readable ones must come first, as the queue ensures). */
export function makeChain(head: number, buffers: DescriptorBuffer[]): DescriptorChain {
  const readable = buffers.filter((b) => !b.writable);
  const writable = buffers.filter((b) => b.writable);
  return {
    head,
    readable,
    writable,
    readableLength: readable.reduce((n, b) => n + b.length, 0),
    writableLength: writable.reduce((n, b) => n + b.length, 0),
  };
}

export function requestHeader(type: number, sector: bigint | number, reserved = 0): Uint8Array {
  const b = new Uint8Array(REQUEST_HEADER_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  v.setUint32(4, reserved, true);
  v.setBigUint64(8, BigInt(sector), true);
  return b;
}

export interface SegmentDesc {
  sector: bigint;
  numSectors: number;
  flags: number;
}

export function encodeSegments(segments: readonly SegmentDesc[]): Uint8Array {
  const b = new Uint8Array(segments.length * SEGMENT_SIZE);
  const v = new DataView(b.buffer);
  segments.forEach((s, i) => {
    v.setBigUint64(i * SEGMENT_SIZE, s.sector, true);
    v.setUint32(i * SEGMENT_SIZE + 8, s.numSectors, true);
    v.setUint32(i * SEGMENT_SIZE + 12, s.flags, true);
  });
  return b;
}

/** A request chain described as plain data, for property tests and the fuzzer. */
export interface ChainDesc {
  head: number;
  type: number;
  reserved: number;
  sector: bigint;
  /** Segments encoded after the header (DISCARD/WRITE_ZEROES-shaped bodies). */
  segments: SegmentDesc[];
  /** Extra readable bytes after the header and segments. */
  bodyLength: number;
  /** Cut the readable stream to this many bytes (models short headers); -1 = no cut. */
  readableCut: number;
  /** Cut points (taken modulo the stream length + 1) splitting the readable stream. */
  readSplits: number[];
  writableLength: number;
  writeSplits: number[];
}

function split(total: number, cuts: readonly number[]): number[] {
  const points = [...new Set(cuts.map((c) => c % (total + 1)))].sort((a, b) => a - b);
  const lengths: number[] = [];
  let prev = 0;
  for (const p of points) {
    lengths.push(p - prev);
    prev = p;
  }
  lengths.push(total - prev);
  return lengths;
}

/** Lay out `d` in guest memory (zero-length buffers included) and return the chain. */
export function buildChain(alloc: GuestAllocator, d: ChainDesc): DescriptorChain {
  const head = requestHeader(d.type, d.sector, d.reserved);
  const segs = encodeSegments(d.segments);
  let stream = new Uint8Array(head.length + segs.length + d.bodyLength);
  stream.set(head, 0);
  stream.set(segs, head.length);
  if (d.readableCut >= 0 && d.readableCut < stream.length)
    stream = stream.subarray(0, d.readableCut);
  const buffers: DescriptorBuffer[] = [];
  let off = 0;
  for (const n of split(stream.length, d.readSplits)) {
    buffers.push(alloc.readable(stream.subarray(off, off + n)));
    off += n;
  }
  if (stream.length === 0) buffers.length = 0;
  if (d.writableLength > 0) {
    for (const n of split(d.writableLength, d.writeSplits)) buffers.push(alloc.writable(n));
  }
  return makeChain(d.head, buffers);
}

function concat(memory: GuestMemory, buffers: readonly DescriptorBuffer[]): Uint8Array {
  const out = new Uint8Array(buffers.reduce((n, b) => n + b.length, 0));
  let off = 0;
  for (const b of buffers) {
    memory.read(b.address, out.subarray(off, off + b.length));
    off += b.length;
  }
  return out;
}

function lastWritableByte(chain: DescriptorChain): number | undefined {
  for (let i = chain.writable.length - 1; i >= 0; i--) {
    const b = chain.writable[i] as DescriptorBuffer;
    if (b.length > 0) return b.address + b.length - 1;
  }
  return undefined;
}

/**
 * Check a parse result against the raw chain, with its own decoding (bigint arithmetic).
 * Returns a description of the first violation, or undefined when the result is sound.
 */
export function checkParse(
  memory: GuestMemory,
  chain: DescriptorChain,
  limits: RequestLimits,
  result: ParseResult,
): string | undefined {
  const status = lastWritableByte(chain);
  const raw = concat(memory, chain.readable);
  const writableLength = chain.writable.reduce((n, b) => n + b.length, 0);
  if (!result.ok) {
    const r = result.refusal;
    if (r.head !== chain.head) return "refusal names the wrong head";
    if (r.statusAddress !== status) return `refusal status address ${r.statusAddress} != ${status}`;
    if (r.status !== VIRTIO_BLK_S_IOERR && r.status !== VIRTIO_BLK_S_UNSUPP) return "bad status";
    return undefined;
  }
  const q = result.request;
  if (q.head !== chain.head) return "request names the wrong head";
  if (status === undefined || q.statusAddress !== status) return "status is not the last byte";
  if (raw.length < REQUEST_HEADER_SIZE) return "accepted a short header";
  const v = new DataView(raw.buffer);
  const type = v.getUint32(0, true);
  const sector = v.getBigUint64(8, true);
  if (q.type !== type) return "type mismatch";
  const cap = BigInt(limits.capacity);
  const dataTotal = q.data.reduce((n, r) => n + r.length, 0);
  if (dataTotal !== q.dataLength) return "data ranges do not add up";
  for (const r of q.data) {
    const inside = [...chain.readable, ...chain.writable].some(
      (b) => r.address >= b.address && r.address + r.length <= b.address + b.length,
    );
    if (!inside) return "data range outside the chain's buffers";
  }
  switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
      const len = type === VIRTIO_BLK_T_IN ? writableLength - 1 : raw.length - REQUEST_HEADER_SIZE;
      if (q.dataLength !== len) return "wrong data length";
      if (len % 512 !== 0) return "accepted a partial sector";
      if (sector * 512n + BigInt(len) > cap * 512n) return "accepted an out-of-range request";
      if (BigInt(q.offset) !== sector * 512n) return "wrong offset";
      if (type === VIRTIO_BLK_T_IN && q.data.some((r) => r.address === status && r.length > 0)) {
        return "status byte inside the data";
      }
      return undefined;
    }
    case VIRTIO_BLK_T_FLUSH:
      return limits.flush ? undefined : "accepted an un-negotiated flush";
    case VIRTIO_BLK_T_GET_ID:
      if (writableLength - 1 < VIRTIO_BLK_ID_BYTES) return "accepted a short GET_ID buffer";
      return q.dataLength === VIRTIO_BLK_ID_BYTES ? undefined : "GET_ID length";
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES: {
      const discard = type === VIRTIO_BLK_T_DISCARD;
      if (!(discard ? limits.discard : limits.writeZeroes)) return "accepted un-negotiated type";
      const body = raw.length - REQUEST_HEADER_SIZE;
      if (body === 0 || body % SEGMENT_SIZE !== 0) return "accepted a ragged segment list";
      const count = body / SEGMENT_SIZE;
      if (count > (discard ? limits.maxDiscardSeg : limits.maxWriteZeroesSeg)) {
        return "accepted too many segments";
      }
      if (q.segments.length !== count) return "segment count mismatch";
      for (let i = 0; i < count; i++) {
        const o = REQUEST_HEADER_SIZE + i * SEGMENT_SIZE;
        const s = v.getBigUint64(o, true);
        const n = v.getUint32(o + 8, true);
        const f = v.getUint32(o + 12, true);
        if (n > (discard ? limits.maxDiscardSectors : limits.maxWriteZeroesSectors)) {
          return "accepted an oversized segment";
        }
        if (s + BigInt(n) > cap) return "accepted an out-of-range segment";
        if (discard ? f !== 0 : (f & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) {
          return "accepted bad segment flags";
        }
        const seg = q.segments[i];
        if (!seg || BigInt(seg.offset) !== s * 512n || seg.length !== n * 512) {
          return "segment decoded wrongly";
        }
      }
      return undefined;
    }
    default:
      return "accepted an unknown type";
  }
}

export interface UsedEntry {
  head: number;
  written: number;
}

/** A QueueHandle fed by the test: chains go in with add(), used entries are recorded. */
export class FakeQueue implements QueueHandle {
  readonly index = 0;
  broken = false;
  readonly used: UsedEntry[] = [];
  notifies = 0;
  #chains: DescriptorChain[] = [];

  add(...chains: DescriptorChain[]): void {
    this.#chains.push(...chains);
  }
  get pending(): number {
    return this.#chains.length;
  }
  pop(): DescriptorChain | undefined {
    return this.#chains.shift();
  }
  pushUsed(head: number, written: number): void {
    this.used.push({ head, written });
  }
  notifyIfNeeded(): void {
    this.notifies++;
  }
  /** Resolves once `n` used entries exist; rejects after `timeoutMs`. */
  async waitUsed(n: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.used.length < n) {
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${n} used entries (have ${this.used.length})`);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}
