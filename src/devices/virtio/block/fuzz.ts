// Standalone fuzzer for the virtio-blk request parser: random chains (random header bytes,
// types biased toward the real ones, sectors near the disk's end and near 2^64, random
// segment lists, random splits of the readable and writable streams, zero-length buffers,
// short headers, and chains that lie about guest memory) through parseRequest(), each
// result checked by the independent oracle in testing.ts. Exits non-zero on a throw or a
// violation. Run: node dist/src/devices/virtio/block/fuzz.js [cases] [seed]

import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import type { DescriptorChain } from "../../../virtio/device.js";
import {
  parseRequest,
  type RequestLimits,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "./request.js";
import {
  buildChain,
  type ChainDesc,
  checkParse,
  GuestAllocator,
  type SegmentDesc,
} from "./testing.js";

/** xorshift128+: fast, seedable, good enough for fuzzing. */
class Rng {
  #a: bigint;
  #b: bigint;
  constructor(seed: number) {
    this.#a = BigInt(seed) | 1n;
    this.#b = 0x9e3779b97f4a7c15n;
    for (let i = 0; i < 8; i++) this.u64();
  }
  u64(): bigint {
    const M = (1n << 64n) - 1n;
    let s1 = this.#a;
    const s0 = this.#b;
    this.#a = s0;
    s1 ^= (s1 << 23n) & M;
    this.#b = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return (this.#b + s0) & M;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Number(this.u64() % BigInt(n));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

const CAPACITY = 2048;
const LIMITS: RequestLimits = {
  capacity: CAPACITY,
  maxDiscardSectors: 1024,
  maxDiscardSeg: 4,
  maxWriteZeroesSectors: 1024,
  maxWriteZeroesSeg: 4,
  flush: true,
  discard: true,
  writeZeroes: true,
};
const TYPES = [
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES,
];
const TYPE_NAMES = new Map<number, string>([
  [VIRTIO_BLK_T_IN, "in"],
  [VIRTIO_BLK_T_OUT, "out"],
  [VIRTIO_BLK_T_FLUSH, "flush"],
  [VIRTIO_BLK_T_GET_ID, "get_id"],
  [VIRTIO_BLK_T_DISCARD, "discard"],
  [VIRTIO_BLK_T_WRITE_ZEROES, "write_zeroes"],
]);

function sector(r: Rng): bigint {
  switch (r.int(4)) {
    case 0:
      return BigInt(r.int(CAPACITY + 64));
    case 1:
      return BigInt(CAPACITY - r.int(16));
    case 2:
      return r.u64();
    default:
      return (1n << 64n) - 1n - BigInt(r.int(4096));
  }
}

/** A buffer length; `slack` is what a well-formed request adds to whole sectors. */
function length(r: Rng, slack: number): number {
  switch (r.int(4)) {
    case 0:
      return r.int(48);
    case 1:
      return 512 * r.int(9) + r.pick([slack, slack, slack, slack + 1, slack - 1, 16]);
    case 2:
      return r.pick([0, 1, 19, 20, 21, 512, 513, 4096]);
    default:
      return r.int(16_384);
  }
}

function desc(r: Rng): ChainDesc {
  const segments: SegmentDesc[] = [];
  const nSeg = r.int(3) === 0 ? 0 : r.int(7);
  for (let i = 0; i < nSeg; i++) {
    segments.push({
      sector: r.int(3) ? BigInt(r.int(CAPACITY)) : sector(r),
      numSectors: r.int(3) ? r.int(64) : r.int(2) ? r.int(1100) : Number(r.u64() & 0xffff_ffffn),
      flags: r.int(4) ? 0 : r.int(2) ? 1 : Number(r.u64() & 0xffff_ffffn),
    });
  }
  const splits = (): number[] => Array.from({ length: r.int(6) }, () => r.int(1 << 20));
  return {
    head: r.int(256),
    type: r.int(8) ? r.pick(TYPES) : Number(r.u64() & 0xffff_ffffn),
    reserved: Number(r.u64() & 0xffff_ffffn),
    sector: sector(r),
    segments,
    bodyLength: r.int(3) ? 0 : Math.max(0, length(r, 0)),
    readableCut: r.int(10) ? -1 : r.int(40),
    readSplits: splits(),
    writableLength: Math.max(0, length(r, 1)),
    writeSplits: splits(),
  };
}

/** Occasionally make the chain lie: a buffer outside RAM or a nonsense length. */
function corrupt(r: Rng, chain: DescriptorChain): boolean {
  if (r.int(50) !== 0) return false;
  const all = [...chain.readable, ...chain.writable];
  const b = all.length ? all[r.int(all.length)] : undefined;
  if (!b) return false;
  const mode = r.int(3);
  if (mode === 0) b.address = 64 * MIB + r.int(1 << 20);
  else if (mode === 1) b.length = r.pick([Number.NaN, -1, 2 ** 60, 1.5]);
  else b.address = -1;
  return true;
}

function main(): number {
  const cases = Number(process.argv[2] ?? 1_000_000);
  const seed = Number(process.argv[3] ?? Date.now() % 0x7fff_ffff);
  if (!Number.isSafeInteger(cases) || cases < 1 || !Number.isSafeInteger(seed)) {
    process.stderr.write("usage: fuzz.js [cases] [seed]\n");
    return 2;
  }
  const memory = new GuestMemory(ramRegions(16 * MIB));
  const alloc = new GuestAllocator(memory);
  const r = new Rng(seed);
  const accepted = new Map<string, number>();
  const refusals = new Map<string, number>();
  let lies = 0;
  let violations = 0;
  let throws = 0;
  const started = process.hrtime.bigint();
  for (let i = 0; i < cases; i++) {
    alloc.reset();
    const chain = buildChain(alloc, desc(r));
    const lied = corrupt(r, chain);
    if (lied) lies++;
    const limits = r.int(8)
      ? LIMITS
      : { ...LIMITS, flush: false, discard: false, writeZeroes: false };
    let result: ReturnType<typeof parseRequest>;
    try {
      result = parseRequest(memory, chain, limits);
    } catch (e) {
      throws++;
      process.stderr.write(`case ${i}: parseRequest threw: ${String(e)}\n`);
      continue;
    }
    if (result.ok) {
      const k = TYPE_NAMES.get(result.request.type) ?? `type ${result.request.type}`;
      accepted.set(k, (accepted.get(k) ?? 0) + 1);
    } else {
      // Group reasons by their words, not their numbers.
      const k = result.refusal.reason.replace(/0x[0-9a-f]+|\d+/g, "N").slice(0, 60);
      refusals.set(k, (refusals.get(k) ?? 0) + 1);
    }
    if (lied) continue; // the oracle reads the chain: only "no throw" holds for lies
    const v = checkParse(memory, chain, limits, result);
    if (v !== undefined) {
      violations++;
      if (violations <= 10) process.stderr.write(`case ${i}: ${v}\n`);
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  memory.close();
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  process.stdout.write(
    `virtio-blk request fuzz: ${cases} cases, seed ${seed}, ${seconds.toFixed(1)} s\n`,
  );
  process.stdout.write(`accepted ${[...accepted.values()].reduce((a, b) => a + b, 0)}:\n`);
  for (const [k, n] of sorted(accepted)) process.stdout.write(`  ${k.padEnd(60)} ${n}\n`);
  process.stdout.write(`refused ${[...refusals.values()].reduce((a, b) => a + b, 0)}:\n`);
  for (const [k, n] of sorted(refusals)) process.stdout.write(`  ${k.padEnd(60)} ${n}\n`);
  process.stdout.write(
    `chains lying about memory ${lies}, throws ${throws}, oracle violations ${violations}\n`,
  );
  return throws + violations === 0 ? 0 : 1;
}

process.exitCode = main();
