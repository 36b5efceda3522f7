// The address-decoding bus between a vCPU exit and a device model. One class serves both
// the port-I/O bus (16-bit ports) and the MMIO bus (guest-physical addresses kept as
// `number`, exact below 2^53). Ranges are fixed at insert time into sorted typed arrays so
// that the per-exit path is a binary search with no allocation; every access the guest
// makes that no device can take (unmapped, straddling a range end, malformed size) is
// answered the way a real bus would (reads float to all-ones, writes vanish) and counted,
// never thrown.

import type { BusDevice } from "../device.js";

/** Size of the x86 I/O port space: ports 0x0000..0xffff (Intel SDM Vol. 1 §19.2). */
export const PIO_SPACE_SIZE = 0x1_0000;
/** Addresses above this lose precision as a JS number; guest-physical space is 52 bits at most. */
export const MMIO_SPACE_SIZE = 2 ** 53;

/** Counters for one registered range, as returned by {@link Bus.stats}. */
export interface BusRangeStats {
  name: string;
  base: number;
  length: number;
  reads: number;
  writes: number;
}

/** A plain, JSON-able snapshot of a bus's counters. */
export interface BusStats {
  name: string;
  /** Reads that hit no device; the guest saw all-ones. */
  unmappedReads: number;
  /** Writes that hit no device; dropped. */
  unmappedWrites: number;
  /** Accesses that began inside a range but ran past its end; refused, not passed on. */
  straddled: number;
  /** Accesses whose size was not 1, 2, 4 or 8 bytes; refused. */
  malformed: number;
  ranges: BusRangeStats[];
}

export interface BusOptions {
  /** Name for logs and counters, e.g. "pio" or "mmio". */
  name: string;
  /** One past the highest valid address: {@link PIO_SPACE_SIZE} or {@link MMIO_SPACE_SIZE}. */
  size: number;
}

const INITIAL_SLOTS = 8;

/** Bytes in a well-formed access: 1, 2, 4 or 8 (KVM_EXIT_IO / KVM_EXIT_MMIO sizes). */
function isAccessSize(n: number): boolean {
  return n === 1 || n === 2 || n === 4 || n === 8;
}

/** A fixed map of address ranges to devices, with counters for everything the guest gets wrong. */
export class Bus {
  readonly name: string;
  readonly size: number;

  // Parallel arrays sorted by base; Float64Array holds every integer below 2^53 exactly.
  #bases = new Float64Array(INITIAL_SLOTS);
  #ends = new Float64Array(INITIAL_SLOTS);
  #devices: BusDevice[] = [];
  #reads = new Float64Array(INITIAL_SLOTS);
  #writes = new Float64Array(INITIAL_SLOTS);
  #count = 0;

  #unmappedReads = 0;
  #unmappedWrites = 0;
  #straddled = 0;
  #malformed = 0;

  constructor(options: BusOptions) {
    const { name, size } = options;
    if (typeof name !== "string" || name.length === 0) {
      throw new TypeError("Cannot create bus: name must be a non-empty string");
    }
    if (!Number.isSafeInteger(size - 1) || size < 1 || size > MMIO_SPACE_SIZE) {
      throw new RangeError(`Cannot create bus ${name}: size ${size} is not in 1..2^53`);
    }
    this.name = name;
    this.size = size;
  }

  /** A bus for the 64 KiB x86 port space. */
  static pio(): Bus {
    return new Bus({ name: "pio", size: PIO_SPACE_SIZE });
  }

  /** A bus for guest-physical MMIO. */
  static mmio(): Bus {
    return new Bus({ name: "mmio", size: MMIO_SPACE_SIZE });
  }

  /**
   * Map `device` at [base, base + length). Throws RangeError if the range is empty, falls
   * outside the bus, or overlaps a range already mapped. Not for the hot path: it rebuilds
   * the lookup arrays.
   */
  insert(base: number, length: number, device: BusDevice): void {
    if (!Number.isSafeInteger(base) || base < 0 || base >= this.size) {
      throw new RangeError(
        `Cannot map ${device.name} on ${this.name}: base ${base} is out of range`,
      );
    }
    if (!Number.isSafeInteger(length) || length < 1 || length > this.size - base) {
      throw new RangeError(
        `Cannot map ${device.name} on ${this.name}: length ${length} at base 0x${base.toString(16)} is empty or out of range`,
      );
    }
    const end = base + length;
    // First slot whose base is at or beyond ours: the new range goes there.
    let at = 0;
    while (at < this.#count && (this.#bases[at] ?? 0) < base) at++;
    const prevEnd = at > 0 ? (this.#ends[at - 1] ?? 0) : 0;
    const nextBase = at < this.#count ? (this.#bases[at] ?? 0) : this.size;
    if (prevEnd > base || nextBase < end) {
      const other = prevEnd > base ? this.#devices[at - 1] : this.#devices[at];
      throw new RangeError(
        `Cannot map ${device.name} on ${this.name} at 0x${base.toString(16)}+0x${length.toString(16)}: overlaps ${other?.name ?? "another range"}`,
      );
    }
    if (this.#count === this.#bases.length) this.#grow();
    this.#bases.copyWithin(at + 1, at, this.#count);
    this.#ends.copyWithin(at + 1, at, this.#count);
    this.#reads.copyWithin(at + 1, at, this.#count);
    this.#writes.copyWithin(at + 1, at, this.#count);
    this.#bases[at] = base;
    this.#ends[at] = end;
    this.#reads[at] = 0;
    this.#writes[at] = 0;
    this.#devices.splice(at, 0, device);
    this.#count++;
  }

  /**
   * Fill `data` from the device mapped at `addr`. Unmapped, straddling or malformed reads
   * leave all-ones in `data`, the value of a floating ISA/PCI bus.
   */
  read(addr: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: access size; only 1, 2, 4 and 8 reach a device.
    if (!isAccessSize(data.length)) {
      this.#malformed++;
      data.fill(0xff);
      return;
    }
    const slot = this.#find(addr);
    if (slot < 0) {
      this.#unmappedReads++;
      data.fill(0xff);
      return;
    }
    // GUEST-CONTROLLED: the access must end inside the range it starts in.
    if (addr + data.length > (this.#ends[slot] ?? 0)) {
      this.#straddled++;
      data.fill(0xff);
      return;
    }
    this.#reads[slot] = (this.#reads[slot] ?? 0) + 1;
    (this.#devices[slot] as BusDevice).read(addr - (this.#bases[slot] ?? 0), data);
  }

  /** Pass `data` to the device mapped at `addr`; unmapped, straddling or malformed writes are dropped. */
  write(addr: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: access size; only 1, 2, 4 and 8 reach a device.
    if (!isAccessSize(data.length)) {
      this.#malformed++;
      return;
    }
    const slot = this.#find(addr);
    if (slot < 0) {
      this.#unmappedWrites++;
      return;
    }
    // GUEST-CONTROLLED: the access must end inside the range it starts in.
    if (addr + data.length > (this.#ends[slot] ?? 0)) {
      this.#straddled++;
      return;
    }
    this.#writes[slot] = (this.#writes[slot] ?? 0) + 1;
    (this.#devices[slot] as BusDevice).write(addr - (this.#bases[slot] ?? 0), data);
  }

  /** The counters as a fresh plain object (allocates; not for the hot path). */
  stats(): BusStats {
    const ranges: BusRangeStats[] = [];
    for (let i = 0; i < this.#count; i++) {
      ranges.push({
        name: this.#devices[i]?.name ?? "",
        base: this.#bases[i] ?? 0,
        length: (this.#ends[i] ?? 0) - (this.#bases[i] ?? 0),
        reads: this.#reads[i] ?? 0,
        writes: this.#writes[i] ?? 0,
      });
    }
    return {
      name: this.name,
      unmappedReads: this.#unmappedReads,
      unmappedWrites: this.#unmappedWrites,
      straddled: this.#straddled,
      malformed: this.#malformed,
      ranges,
    };
  }

  /** Slot of the range containing `addr`, or -1. Binary search; allocates nothing. */
  #find(addr: number): number {
    // GUEST-CONTROLLED (via the VMM's decode): reject NaN, fractions and out-of-space addresses.
    if (!(addr >= 0 && addr < this.size) || Math.floor(addr) !== addr) return -1;
    const bases = this.#bases;
    let lo = 0;
    let hi = this.#count - 1;
    let found = -1;
    // Last slot whose base <= addr.
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if ((bases[mid] ?? 0) <= addr) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (found < 0 || addr >= (this.#ends[found] ?? 0)) return -1;
    return found;
  }

  #grow(): void {
    const n = this.#bases.length * 2;
    const grow = (a: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> => {
      const b = new Float64Array(n);
      b.set(a);
      return b;
    };
    this.#bases = grow(this.#bases);
    this.#ends = grow(this.#ends);
    this.#reads = grow(this.#reads);
    this.#writes = grow(this.#writes);
  }
}
