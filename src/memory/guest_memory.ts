// Guest RAM: anonymous host mappings that KVM maps into the guest, and bounds-checked access
// by guest-physical address for the VMM. Every address handed in may come from the guest,
// so every access is checked against the regions; an address outside RAM is a
// GuestMemoryError, never a host fault. Views are made once at construction; access is by
// binary search over at most a handful of chunks.

import { libc } from "../host/mod.js";
import { GIB, type RamRegion } from "./layout.js";

// Uint8Array views are capped at 1 GiB each so no single typed array nears V8's limits.
const CHUNK = GIB;
// RAM is mapped 2 MiB-aligned and advised MADV_HUGEPAGE, as QEMU does with anonymous RAM:
// transparent huge pages let KVM map guest memory with 2 MiB nested page-table entries,
// which shortens every guest TLB miss (and, in the lab, TCG's emulated two-dimensional
// walks). Hosts whose THP setting is "madvise" (Debian's default) give huge pages only to
// ranges that ask. Without alignment, a region's first and last 2 MiB could never be huge.
const HUGE_PAGE = 2 * 1024 * 1024;
const MADV_HUGEPAGE = 14;

export class GuestMemoryError extends RangeError {
  readonly code = "GUEST_MEMORY_OUT_OF_RANGE";
  constructor(
    readonly address: number,
    readonly length: number,
  ) {
    super(`Guest address range 0x${address.toString(16)}+${length} is outside guest RAM`);
    this.name = "GuestMemoryError";
  }
}

interface Chunk {
  start: number;
  end: number;
  bytes: Uint8Array;
  view: DataView;
}

export interface MappedRegion extends RamRegion {
  /** Host virtual address of the region's first byte, for KVM_SET_USER_MEMORY_REGION. */
  readonly hostAddress: bigint;
  /** The host mapping; the region starts `offset` bytes into it (for 2 MiB alignment). */
  readonly mapping: libc.Mapping;
  readonly offset: number;
}

export class GuestMemory {
  readonly regions: readonly MappedRegion[];
  readonly totalBytes: number;
  private readonly chunks: Chunk[] = [];
  private readonly starts: Float64Array;

  constructor(layout: readonly RamRegion[]) {
    const regions: MappedRegion[] = [];
    for (const r of layout) {
      // The slack below and above the aligned start is address space only: never touched,
      // so never resident.
      const mapping = libc.mmap(
        r.size + HUGE_PAGE,
        libc.PROT_READ | libc.PROT_WRITE,
        libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE,
      );
      const offset = Number(
        (BigInt(HUGE_PAGE) - (mapping.address % BigInt(HUGE_PAGE))) % BigInt(HUGE_PAGE),
      );
      try {
        libc.madvise(mapping, offset, r.size, MADV_HUGEPAGE);
      } catch {
        // A kernel built without THP says EINVAL: the RAM works the same in small pages.
      }
      regions.push({ ...r, hostAddress: mapping.address + BigInt(offset), mapping, offset });
      for (let off = 0; off < r.size; off += CHUNK) {
        const len = Math.min(CHUNK, r.size - off);
        const bytes = new Uint8Array(mapping.buffer, offset + off, len);
        this.chunks.push({
          start: r.start + off,
          end: r.start + off + len,
          bytes,
          view: new DataView(mapping.buffer, offset + off, len),
        });
      }
    }
    this.chunks.sort((a, b) => a.start - b.start);
    this.starts = Float64Array.from(this.chunks, (c) => c.start);
    this.regions = regions;
    this.totalBytes = layout.reduce((n, r) => n + r.size, 0);
  }

  /** The index of the chunk holding `address`, or -1. */
  private indexOf(address: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const c = this.chunks[mid] as Chunk;
      if (address < c.start) hi = mid - 1;
      else if (address >= c.end) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  private findChunk(address: number): Chunk | undefined {
    const i = this.indexOf(address);
    return i < 0 ? undefined : this.chunks[i];
  }

  /**
   * The index of the chunk that holds all of [address, address+length), or -1 when the
   * range is not in RAM or crosses a chunk's end. With chunkView() and chunkStart() it lets
   * a hot path (a virtqueue's indirect tables) point at guest RAM without making a view.
   */
  chunkOf(address: number, length: number): number {
    if (!Number.isSafeInteger(address) || !Number.isSafeInteger(length) || length < 0) return -1;
    const i = this.indexOf(address);
    return i >= 0 && address + length <= (this.chunks[i] as Chunk).end ? i : -1;
  }

  /** The DataView over chunk `index` (from chunkOf); offset 0 is chunkStart(index). */
  chunkView(index: number): DataView {
    const c = this.chunks[index];
    if (!c) throw new RangeError(`Guest memory has no chunk ${index}`);
    return c.view;
  }

  chunkStart(index: number): number {
    const c = this.chunks[index];
    if (!c) throw new RangeError(`Guest memory has no chunk ${index}`);
    return c.start;
  }

  /** True when [address, address+length) lies wholly in RAM (possibly across chunks). */
  contains(address: number, length: number): boolean {
    if (
      !Number.isSafeInteger(address) ||
      !Number.isSafeInteger(length) ||
      address < 0 ||
      length < 0
    )
      return false;
    let a = address;
    const end = address + length;
    if (length === 0) return this.findChunk(address) !== undefined;
    while (a < end) {
      const c = this.findChunk(a);
      if (!c) return false;
      a = c.end;
    }
    return true;
  }

  /**
   * A zero-copy view of guest RAM. The range must lie in one chunk (always true for ranges
   * that do not cross a 1 GiB boundary); callers that need longer spans use read/write.
   */
  slice(address: number, length: number): Uint8Array {
    const i = this.chunkOf(address, length);
    if (i < 0) throw new GuestMemoryError(address, length);
    const c = this.chunks[i] as Chunk;
    return c.bytes.subarray(address - c.start, address - c.start + length);
  }

  /** Copy guest RAM into `out`. */
  read(address: number, out: Uint8Array): void {
    if (!this.contains(address, out.length)) throw new GuestMemoryError(address, out.length);
    let done = 0;
    while (done < out.length) {
      const a = address + done;
      const c = this.findChunk(a) as Chunk;
      const n = Math.min(out.length - done, c.end - a);
      out.set(c.bytes.subarray(a - c.start, a - c.start + n), done);
      done += n;
    }
  }

  /** Copy `data` into guest RAM. */
  write(address: number, data: Uint8Array): void {
    if (!this.contains(address, data.length)) throw new GuestMemoryError(address, data.length);
    let done = 0;
    while (done < data.length) {
      const a = address + done;
      const c = this.findChunk(a) as Chunk;
      const n = Math.min(data.length - done, c.end - a);
      c.bytes.set(data.subarray(done, done + n), a - c.start);
      done += n;
    }
  }

  private scalar(address: number, size: number): [DataView, number] {
    const i = this.chunkOf(address, size);
    if (i < 0) throw new GuestMemoryError(address, size);
    const c = this.chunks[i] as Chunk;
    return [c.view, address - c.start];
  }

  readU8(a: number): number {
    const [v, o] = this.scalar(a, 1);
    return v.getUint8(o);
  }
  readU16(a: number): number {
    const [v, o] = this.scalar(a, 2);
    return v.getUint16(o, true);
  }
  readU32(a: number): number {
    const [v, o] = this.scalar(a, 4);
    return v.getUint32(o, true);
  }
  readU64(a: number): bigint {
    const [v, o] = this.scalar(a, 8);
    return v.getBigUint64(o, true);
  }
  writeU8(a: number, x: number): void {
    const [v, o] = this.scalar(a, 1);
    v.setUint8(o, x);
  }
  writeU16(a: number, x: number): void {
    const [v, o] = this.scalar(a, 2);
    v.setUint16(o, x, true);
  }
  writeU32(a: number, x: number): void {
    const [v, o] = this.scalar(a, 4);
    v.setUint32(o, x, true);
  }
  writeU64(a: number, x: bigint): void {
    const [v, o] = this.scalar(a, 8);
    v.setBigUint64(o, x, true);
  }

  /**
   * Give the pages of a page-aligned range back to the host (MADV_DONTNEED): the guest then
   * reads zeros there, and the VMM's resident memory drops. For the balloon.
   */
  discard(address: number, length: number): void {
    if (address % 4096 !== 0 || length % 4096 !== 0 || !this.contains(address, length)) {
      throw new GuestMemoryError(address, length);
    }
    for (const r of this.regions) {
      const start = Math.max(address, r.start);
      const end = Math.min(address + length, r.start + r.size);
      if (start < end)
        libc.madvise(r.mapping, r.offset + start - r.start, end - start, libc.MADV_DONTNEED);
    }
  }

  /** Unmap all regions. The object must not be used afterwards. */
  close(): void {
    for (const r of this.regions) libc.munmap(r.mapping);
  }
}
