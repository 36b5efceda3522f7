// iovecs over guest RAM for readv/writev-style calls (a TAP, a disk image): (host address,
// length) pairs in one BigUint64Array, so data moves between the kernel and guest memory
// with no copy, and with no JavaScript object per buffer. A guest-physical range is turned
// into host addresses through the RAM regions (split where one region ends, which only
// happens for ranges the queue already checked lie in RAM).

import type { GuestMemory } from "./guest_memory.js";

/** Most iovec entries one readv/writev takes (IOV_MAX on Linux). */
export const IOV_MAX = 1024;

const TWO_32 = 0x1_0000_0000;

export class IovecList {
  /** (iov_base, iov_len) pairs, as struct iovec on x86-64. */
  readonly iov: BigUint64Array;
  readonly capacity: number;
  count = 0;
  bytes = 0;
  // The same words as 32-bit halves: entries are written with plain numbers, since BigInt
  // arithmetic would allocate per buffer. User-space addresses are below 2^47, so a double
  // holds them exactly.
  readonly #words: Uint32Array;

  constructor(capacity = IOV_MAX) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > IOV_MAX) {
      throw new RangeError(`Cannot make an iovec list of ${capacity} entries (1..${IOV_MAX})`);
    }
    this.capacity = capacity;
    this.iov = new BigUint64Array(2 * capacity);
    this.#words = new Uint32Array(this.iov.buffer);
  }

  clear(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Append a host range; false when the list is full. */
  addHost(address: bigint | number, length: number): boolean {
    if (length === 0) return true;
    if (this.count >= this.capacity) return false;
    const a = Number(address);
    const w = this.#words;
    const i = 4 * this.count;
    w[i] = a % TWO_32;
    w[i + 1] = Math.floor(a / TWO_32);
    w[i + 2] = length % TWO_32;
    w[i + 3] = Math.floor(length / TWO_32);
    this.count++;
    this.bytes += length;
    return true;
  }

  /**
   * Append guest range [address, address + length); false when part of it is not in RAM or
   * the list is full (the list may then hold part of the range).
   */
  addGuest(memory: GuestMemory, address: number, length: number): boolean {
    const regions = regionsOf(memory);
    let a = address;
    let left = length;
    while (left > 0) {
      let placed = false;
      for (let k = 0; k < regions.length; k += 3) {
        const start = regions[k] as number;
        const end = regions[k + 1] as number;
        if (a >= start && a < end) {
          const n = Math.min(left, end - a);
          if (!this.addHost((regions[k + 2] as number) + (a - start), n)) return false;
          a += n;
          left -= n;
          placed = true;
          break;
        }
      }
      if (!placed) return false;
    }
    return true;
  }

  /**
   * Drop the first `n` bytes (after a short transfer): whole entries go, a partly done one
   * starts later. The list then describes what is left.
   */
  consume(n: number): void {
    if (n >= this.bytes) {
      this.clear();
      return;
    }
    const w = this.#words;
    const lengthOf = (e: number) => (w[4 * e + 2] as number) + (w[4 * e + 3] as number) * TWO_32;
    let skip = 0;
    let left = n;
    while (skip < this.count && left >= lengthOf(skip)) {
      left -= lengthOf(skip);
      skip++;
    }
    if (skip > 0) {
      this.iov.copyWithin(0, 2 * skip, 2 * this.count);
      this.count -= skip;
    }
    if (left > 0 && this.count > 0) {
      const base = (w[0] as number) + (w[1] as number) * TWO_32 + left;
      const rest = lengthOf(0) - left;
      w[0] = base % TWO_32;
      w[1] = Math.floor(base / TWO_32);
      w[2] = rest % TWO_32;
      w[3] = Math.floor(rest / TWO_32);
    }
    this.bytes -= n;
  }
}

/**
 * Each memory's RAM regions as [start, end, host address] triples, made once per memory:
 * lists are made per request, and rebuilding this for each one showed in profiles.
 */
const regionTables = new WeakMap<GuestMemory, Float64Array>();

function regionsOf(memory: GuestMemory): Float64Array {
  let t = regionTables.get(memory);
  if (!t) {
    t = Float64Array.from(
      memory.regions.flatMap((r) => [r.start, r.start + r.size, Number(r.hostAddress)]),
    );
    regionTables.set(memory, t);
  }
  return t;
}
