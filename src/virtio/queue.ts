// The device side of a split virtqueue (virtio 1.2 §2.7). The transport configures it
// (size, the three ring addresses, ready) and checks it with validate(); the device pops
// descriptor chains, hands them back with pushUsed() and signals with notifyIfNeeded().
// Every field in the rings and descriptors is written by the guest, possibly while we read
// it, so each is read from guest memory once, checked, and never trusted afterwards: a
// chain is walked into private scratch arrays and validated as a whole (indices, loops,
// length, indirect rules, buffer ranges, ordering) before the device sees any of it. A
// malformed chain is logged, counted and returned to the driver as used with 0 bytes; a
// ring the driver has broken (head index out of range, avail idx running ahead by more
// than the size) stops the queue. Nothing here throws on guest input.

import { type GuestMemory, GuestMemoryError } from "../memory/mod.js";
import {
  type DescriptorBuffer,
  type DescriptorChain,
  type QueueHandle,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
} from "./device.js";

// Descriptor flags, virtio 1.2 §2.7.5.
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
// Ring flags, §2.7.6 and §2.7.8.
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Largest queue size a split virtqueue can have (§2.7: "Queue Size ... maximum 32768"). */
export const MAX_QUEUE_SIZE = 32768;

// Alignment of each part, §2.7 table "Virtqueue Part / Alignment / Size".
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;
/** Sizes of each part, same table (they include used_event / avail_event). */
export const descTableSize = (size: number): number => 16 * size;
export const availRingSize = (size: number): number => 6 + 2 * size;
export const usedRingSize = (size: number): number => 6 + 8 * size;

const TWO_32 = 0x1_0000_0000;

export type QueueLogger = (message: string) => void;

export interface QueueOptions {
  /** Index of the queue within its device. */
  index: number;
  /** QueueNumMax: the largest size the driver may choose (a power of two, ≤ 32768). */
  maxSize: number;
  memory: GuestMemory;
  /** Where malformed chains and broken rings are reported; default: nowhere (counted only). */
  log?: QueueLogger;
  /** Raise a used-buffer notification (the transport sets InterruptStatus and pulses the line). */
  signal?: () => void;
  /** Called once when the driver breaks the ring and the queue stops. */
  onBroken?: (reason: string) => void;
}

export interface QueueStats {
  /** Chains handed to the device. */
  popped: number;
  /** Chains refused as malformed and returned to the driver with 0 bytes. */
  malformed: number;
  /** Times the queue was stopped because the driver broke the ring. */
  broken: number;
  /** Used elements written. */
  used: number;
  /** Interrupts raised / suppressed by NO_INTERRUPT or EVENT_IDX. */
  notified: number;
  suppressed: number;
}

// A view of one ring part, built once when the queue goes ready (or of one indirect table,
// built when a chain enters it): when the part lies in one guest-memory chunk (always, for
// rings a driver allocates from naturally aligned pages) it is a DataView, so accesses
// allocate nothing; otherwise it goes through GuestMemory's bounds-checked scalar accessors.
class RingView {
  private view: DataView | undefined;
  /** Where `base` lies in `view`. */
  private offset = 0;
  private base = 0;
  constructor(
    private readonly memory: GuestMemory,
    base: number,
    length: number,
  ) {
    this.retarget(base, length);
  }
  /**
   * Point at another range without allocating (the queue reuses one view for every
   * chain's indirect table). A range across a chunk's end is read through the bounds-checked
   * scalar accessors instead.
   */
  retarget(base: number, length: number): void {
    this.base = base;
    const i = this.memory.chunkOf(base, length);
    if (i >= 0) {
      this.view = this.memory.chunkView(i);
      this.offset = base - this.memory.chunkStart(i);
    } else {
      this.view = undefined;
      this.offset = 0;
    }
  }
  u16(off: number): number {
    return this.view
      ? this.view.getUint16(this.offset + off, true)
      : this.memory.readU16(this.base + off);
  }
  u32(off: number): number {
    return this.view
      ? this.view.getUint32(this.offset + off, true)
      : this.memory.readU32(this.base + off);
  }
  setU16(off: number, v: number): void {
    if (this.view) this.view.setUint16(this.offset + off, v, true);
    else this.memory.writeU16(this.base + off, v);
  }
  setU32(off: number, v: number): void {
    if (this.view) this.view.setUint32(this.offset + off, v, true);
    else this.memory.writeU32(this.base + off, v);
  }
}

// A full memory barrier. JS has no fence primitive, but a sequentially consistent
// Atomics.store compiles to XCHG on x86-64 in V8, which orders every earlier store before
// every later load, the one reordering x86 (TSO) otherwise allows. We need it where the
// device writes one field and then reads a field the driver writes (used idx → used_event
// / flags; avail_event → avail idx); without it both sides can miss each other's update
// and the queue stalls (the "lost notification" race virtio's mb() prevents).
const FENCE = new Int32Array(new SharedArrayBuffer(4));
function fullBarrier(): void {
  Atomics.store(FENCE, 0, 0);
}

/** A split virtqueue, device side. Implements the QueueHandle devices see. */
export class Queue implements QueueHandle {
  readonly index: number;
  readonly maxSize: number;
  /** Set by the transport (QueueNum, QueueDesc*, QueueDriver*, QueueDevice*). */
  size: number;
  descTable = 0;
  availRing = 0;
  usedRing = 0;

  private readonly memory: GuestMemory;
  private readonly log: QueueLogger;
  private readonly signal: () => void;
  private readonly onBroken: (reason: string) => void;

  private isReady = false;
  private isBroken = false;
  private eventIdx = false;
  private indirect = false;
  private desc: RingView | undefined;
  private avail: RingView | undefined;
  private used: RingView | undefined;
  /** The indirect table of the chain being parsed (one view, retargeted per table). */
  private readonly tableView: RingView;
  /** Device-private counters; never read back from guest memory. */
  private nextAvail = 0;
  private nextUsed = 0;
  /** nextUsed at the last notifyIfNeeded() that decided; the "old" of vring_need_event. */
  private signalledUsed = 0;
  private pendingSignal = false;

  // Per-pop scratch, allocated once per queue: a chain is parsed into these and validated
  // whole before any DescriptorChain object is made. `stamp` marks descriptors visited in
  // the current chain (loop detection) without clearing an array per pop.
  private readonly bufAddr: Float64Array;
  private readonly bufLen: Float64Array;
  private readonly visited: Uint32Array;
  private stamp = 0;
  private parsedCount = 0;
  private parsedReadable = 0;
  private parsedReadableLength = 0;
  private parsedWritableLength = 0;

  private readonly counters: QueueStats = {
    popped: 0,
    malformed: 0,
    broken: 0,
    used: 0,
    notified: 0,
    suppressed: 0,
  };

  constructor(options: QueueOptions) {
    const { index, maxSize } = options;
    if (!Number.isInteger(index) || index < 0) {
      throw new RangeError(`Cannot create virtqueue: index ${index} is not a natural number`);
    }
    if (!isPowerOfTwo(maxSize) || maxSize > MAX_QUEUE_SIZE) {
      throw new RangeError(
        `Cannot create virtqueue ${index}: maximum size ${maxSize} is not a power of two in 1..${MAX_QUEUE_SIZE}`,
      );
    }
    this.index = index;
    this.maxSize = maxSize;
    this.size = maxSize;
    this.memory = options.memory;
    this.tableView = new RingView(this.memory, 0, 0);
    this.log = options.log ?? (() => {});
    this.signal = options.signal ?? (() => {});
    this.onBroken = options.onBroken ?? (() => {});
    this.bufAddr = new Float64Array(maxSize);
    this.bufLen = new Float64Array(maxSize);
    this.visited = new Uint32Array(maxSize);
  }

  get ready(): boolean {
    return this.isReady;
  }

  get broken(): boolean {
    return this.isBroken;
  }

  stats(): QueueStats {
    return { ...this.counters };
  }

  /**
   * Why the current configuration cannot be used, or undefined when it can: the size is a
   * power of two in 1..maxSize and each part is aligned (§2.7) and wholly in guest RAM.
   */
  validate(): string | undefined {
    const { size } = this;
    if (!isPowerOfTwo(size) || size > this.maxSize) {
      return `size ${size} is not a power of two in 1..${this.maxSize}`;
    }
    const parts: [string, number, number, number][] = [
      ["descriptor table", this.descTable, DESC_ALIGN, descTableSize(size)],
      ["available ring", this.availRing, AVAIL_ALIGN, availRingSize(size)],
      ["used ring", this.usedRing, USED_ALIGN, usedRingSize(size)],
    ];
    for (const [name, address, align, length] of parts) {
      if (!Number.isSafeInteger(address) || address % align !== 0) {
        return `${name} at 0x${address.toString(16)} is not ${align}-byte aligned`;
      }
      if (!this.memory.contains(address, length)) {
        return `${name} 0x${address.toString(16)}+${length} is not in guest RAM`;
      }
    }
    return undefined;
  }

  /**
   * QueueReady=1: validate and start from index 0 of both rings. Returns the reason the
   * configuration is refused (the queue stays not ready), or undefined.
   */
  enable(): string | undefined {
    const reason = this.validate();
    if (reason !== undefined) return reason;
    this.desc = new RingView(this.memory, this.descTable, descTableSize(this.size));
    this.avail = new RingView(this.memory, this.availRing, availRingSize(this.size));
    this.used = new RingView(this.memory, this.usedRing, usedRingSize(this.size));
    this.nextAvail = 0;
    this.nextUsed = 0;
    this.signalledUsed = 0;
    this.pendingSignal = false;
    this.isBroken = false;
    this.isReady = true;
    return undefined;
  }

  /** QueueReady=0 or a device reset: stop using the rings. */
  disable(): void {
    this.isReady = false;
    this.desc = this.avail = this.used = undefined;
  }

  /** The negotiated features that change ring handling; set by the transport at DRIVER_OK. */
  setFeatures(features: bigint): void {
    this.eventIdx = (features & (1n << VIRTIO_F_EVENT_IDX)) !== 0n;
    this.indirect = (features & (1n << VIRTIO_F_INDIRECT_DESC)) !== 0n;
  }

  /** Back to the reset state of §2.4 (not ready, size = max, addresses 0). */
  reset(): void {
    this.disable();
    this.size = this.maxSize;
    this.descTable = this.availRing = this.usedRing = 0;
    this.eventIdx = this.indirect = false;
    this.isBroken = false;
    this.nextAvail = this.nextUsed = this.signalledUsed = 0;
    this.pendingSignal = false;
  }

  /**
   * The next available chain, fully validated, or undefined when there is none (or the
   * queue is not ready or broken). Malformed chains met on the way are returned to the
   * driver with 0 bytes and skipped; at most `size` ring entries are consumed per call.
   * Allocation: one DescriptorChain with its two arrays and one small object per buffer,
   * made only after the whole chain validated (the contract hands out independent chains,
   * which a device may hold while it does I/O); nothing is allocated per descriptor read.
   */
  pop(): DescriptorChain | undefined {
    if (!this.isReady || this.isBroken) return undefined;
    const avail = this.avail as RingView;
    const size = this.size;
    try {
      // At most `size` entries per call, even while a vCPU keeps publishing malformed
      // chains concurrently: pop() always terminates.
      for (let budget = size; budget > 0; budget--) {
        // GUEST-CONTROLLED: avail idx. More than `size` entries ahead of us is impossible
        // for a correct driver (§2.7.13.3) and would make us re-read entries: broken ring.
        let availIdx = avail.u16(2);
        let pending = (availIdx - this.nextAvail) & 0xffff;
        if (pending === 0) {
          if (!this.eventIdx) break;
          // Ask for a kick at the next entry (avail_event, §2.7.10), then look again: the
          // driver may have published after our read but before it saw avail_event.
          (this.used as RingView).setU16(4 + 8 * size, this.nextAvail);
          fullBarrier();
          availIdx = avail.u16(2);
          pending = (availIdx - this.nextAvail) & 0xffff;
          if (pending === 0) break;
        }
        if (pending > size) {
          this.breakQueue(
            `avail idx ${availIdx} is ${pending} entries ahead of ${this.nextAvail} (size ${size})`,
          );
          return undefined;
        }
        // The driver writes ring entries and descriptors before the idx that publishes
        // them (its wmb); x86 does not reorder our loads with each other, so everything
        // read below is at least as new as the idx just read.
        // GUEST-CONTROLLED: head index, checked against the size before any use.
        const head = avail.u16(4 + 2 * (this.nextAvail % size));
        this.nextAvail = (this.nextAvail + 1) & 0xffff;
        if (head >= size) {
          this.breakQueue(`head index ${head} is not below the queue size ${size}`);
          return undefined;
        }
        const reason = this.parseChain(head);
        if (reason === undefined) {
          this.counters.popped++;
          return this.buildChain(head);
        }
        this.counters.malformed++;
        this.log(`virtqueue ${this.index}: malformed chain at head ${head}: ${reason}`);
        this.pushUsed(head, 0);
        this.pendingSignal = true;
      }
    } catch (e) {
      // Only reachable if a validated range stopped being accessible; never from the guest.
      if (!(e instanceof GuestMemoryError)) throw e;
      this.breakQueue(e.message);
      return undefined;
    }
    // Chains refused above were given back without the device knowing: signal for them.
    if (this.pendingSignal) this.notifyIfNeeded();
    return undefined;
  }

  /** Put `head` in the used ring with `written` bytes (§2.7.8). Device bugs throw RangeError. */
  pushUsed(head: number, written: number): void {
    if (!this.isReady) return;
    if (!Number.isInteger(head) || head < 0 || head >= this.size) {
      throw new RangeError(`Cannot return descriptor ${head} on virtqueue ${this.index}`);
    }
    if (!Number.isInteger(written) || written < 0 || written >= TWO_32) {
      throw new RangeError(`Cannot report ${written} bytes written on virtqueue ${this.index}`);
    }
    const used = this.used as RingView;
    const slot = 4 + 8 * (this.nextUsed % this.size);
    // Order matters: the driver reads used idx and then the elements below it. The element
    // must be in memory before the idx that publishes it, or the driver reads a stale id
    // and completes the wrong request. These are plain stores in program order, which V8
    // does not reorder among themselves and x86 (TSO) makes visible in order.
    used.setU32(slot, head);
    used.setU32(slot + 4, written);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    used.setU16(2, this.nextUsed);
    this.counters.used++;
  }

  /**
   * Signal the driver if it wants to hear about the used entries added since the last
   * call: with EVENT_IDX when used idx passed used_event (vring_need_event, §2.7.10),
   * without it unless VIRTQ_AVAIL_F_NO_INTERRUPT is set (§2.7.7). Returns true if signalled.
   */
  notifyIfNeeded(): boolean {
    this.pendingSignal = false;
    if (!this.isReady) return false;
    const old = this.signalledUsed;
    const now = this.nextUsed;
    if (old === now) return false;
    // used idx was written just before; it must be visible before we read the driver's
    // suppression field, or we may skip an interrupt the driver is about to wait for.
    fullBarrier();
    const avail = this.avail as RingView;
    let need: boolean;
    if (this.eventIdx) {
      // GUEST-CONTROLLED: used_event; any value is acceptable, it only suppresses.
      const usedEvent = avail.u16(4 + 2 * this.size);
      need = ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    } else {
      // GUEST-CONTROLLED: avail flags; only bit 0 has a meaning, the rest is ignored.
      need = (avail.u16(0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    this.signalledUsed = now;
    if (need) {
      this.counters.notified++;
      this.signal();
    } else {
      this.counters.suppressed++;
    }
    return need;
  }

  private breakQueue(reason: string): void {
    this.counters.broken++;
    this.isBroken = true;
    this.log(`virtqueue ${this.index}: stopped, the driver broke the ring: ${reason}`);
    this.onBroken(reason);
  }

  // Walk the chain at `head` into the scratch arrays. Returns why it is malformed, or
  // undefined. Bounds (§2.7.5.3.1, §2.7.13.3.1): at most `size` buffers in the chain;
  // every index below the size of its table; a direct descriptor visited twice is a loop;
  // an indirect table of n entries walked more than n steps is a loop; so the walk ends
  // after at most 2*size+1 reads whatever the guest wrote.
  private parseChain(head: number): string | undefined {
    const size = this.size;
    const memory = this.memory;
    const desc = this.desc as RingView;
    if (++this.stamp === 0xffff_ffff) {
      this.visited.fill(0);
      this.stamp = 1;
    }
    const stamp = this.stamp;
    let count = 0;
    let readable = 0;
    let readableLength = 0;
    let writableLength = 0;
    let sawWritable = false;
    let inIndirect = false;
    // The indirect table, read through one view made when the chain enters it: a table
    // holds up to `size` descriptors (Linux puts a whole large request in one), and the
    // bounds-checked scalar reads would search the chunks five times per descriptor.
    let table: RingView | undefined;
    let entries = size;
    let indirectSteps = 0;
    let index = head;
    for (;;) {
      if (index >= entries) return `descriptor index ${index} is not below ${entries}`;
      if (inIndirect) {
        if (++indirectSteps > entries) return "the indirect table's chain loops";
      } else {
        if (this.visited[index] === stamp) return `the chain loops back to descriptor ${index}`;
        this.visited[index] = stamp;
      }
      // GUEST-CONTROLLED: the whole descriptor. Each field is read once, here.
      const t = inIndirect ? (table as RingView) : desc;
      const d = 16 * index;
      const lo = t.u32(d);
      const hi = t.u32(d + 4);
      const len = t.u32(d + 8);
      const flags = t.u16(d + 12);
      const next = t.u16(d + 14);
      // Addresses ≥ 2^53 are not representable and are far outside any guest's RAM.
      if (hi >= 0x20_0000) return `buffer address 0x${hi.toString(16)}xxxxxxxx is not in RAM`;
      const address = hi * TWO_32 + lo;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) return "INDIRECT descriptor without VIRTIO_F_INDIRECT_DESC";
        if (inIndirect) return "INDIRECT descriptor inside an indirect table";
        if (flags & VIRTQ_DESC_F_NEXT) return "INDIRECT descriptor with NEXT";
        if (len === 0 || len % 16 !== 0) return `indirect table length ${len} is not 16*n, n>0`;
        if (!memory.contains(address, len)) {
          return `indirect table 0x${address.toString(16)}+${len} is not in RAM`;
        }
        // The WRITE flag of the descriptor pointing to a table is ignored (§2.7.5.3.2).
        inIndirect = true;
        table = this.tableView;
        table.retarget(address, len);
        entries = len / 16;
        index = 0;
        continue;
      }
      if (count >= size) return `chain has more than ${size} descriptors`;
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (writable) sawWritable = true;
      else if (sawWritable) return "a driver-readable descriptor follows a device-writable one";
      if (!memory.contains(address, len)) {
        return `buffer 0x${address.toString(16)}+${len} is not in RAM`;
      }
      if (writable) writableLength += len;
      else {
        readableLength += len;
        readable++;
      }
      if (readableLength + writableLength >= TWO_32) return "total chain length is 2^32 or more";
      this.bufAddr[count] = address;
      this.bufLen[count] = len;
      count++;
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      index = next;
    }
    this.parsedCount = count;
    this.parsedReadable = readable;
    this.parsedReadableLength = readableLength;
    this.parsedWritableLength = writableLength;
    return undefined;
  }

  private buildChain(head: number): DescriptorChain {
    const readable: DescriptorBuffer[] = [];
    const writable: DescriptorBuffer[] = [];
    for (let i = 0; i < this.parsedCount; i++) {
      const buffer: DescriptorBuffer = {
        address: this.bufAddr[i] as number,
        length: this.bufLen[i] as number,
        writable: i >= this.parsedReadable,
      };
      (buffer.writable ? writable : readable).push(buffer);
    }
    return {
      head,
      readable,
      writable,
      readableLength: this.parsedReadableLength,
      writableLength: this.parsedWritableLength,
    };
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && n <= 0x4000_0000 && (n & (n - 1)) === 0;
}
