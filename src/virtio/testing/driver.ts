// A driver-side test double for virtio-mmio devices: it plays the guest's part, building
// descriptor tables and rings in a GuestMemory and driving a transport only through its
// registers, in the order Linux's virtio_mmio.c and virtio_ring.c do. Every device's
// tests use it.
//
// Usage:
//
//   const memory = new GuestMemory(ramRegions(16 * MIB));
//   const transport = new VirtioMmioTransport({ device, memory, irq });
//   const driver = new VirtioMmioDriver({ memory, transport });
//   driver.init();                                   // probe .. DRIVER_OK, all queues
//   const q = driver.queue(0);
//   const buf = driver.alloc(64);                    // guest RAM from the double's heap
//   q.add([{ address: buf, length: 64, writable: true }]);   // or { data } / indirect
//   q.kick();                                        // QueueNotify write
//   const [{ id, len }] = q.takeUsed();              // new used elements, descriptors freed
//   driver.ackInterrupts();                          // read InterruptStatus, write ACK
//
// - init(options) runs the whole sequence (reset, ACKNOWLEDGE, DRIVER, read features,
//   write features, FEATURES_OK, check it stuck, set up queues, DRIVER_OK) and throws
//   DriverError at the first step the device refuses. The steps are public too
//   (probe, reset, addStatus, negotiate, setupQueue, ...) so tests can stop anywhere.
// - Buffers: `{ length, writable?, data?, address? }`. Without an address the double
//   allocates one (bump allocator, never freed: pass addresses in long loops).
// - add(..., { indirect: true }) puts the buffers in an indirect table (from a per-queue
//   pool, one table slot per head, so long runs do not exhaust memory).
// - Raw access for hostile tests: writeDescriptor(), publish(head), setAvailIdx(), and the
//   ring addresses (desc, avail, used) to write anything at all.

import type { BusDevice } from "../../devices/device.js";
import type { GuestMemory } from "../../memory/mod.js";
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from "../device.js";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_DEVICE_HIGH,
  VIRTIO_MMIO_QUEUE_DEVICE_LOW,
  VIRTIO_MMIO_QUEUE_DRIVER_HIGH,
  VIRTIO_MMIO_QUEUE_DRIVER_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
  VIRTIO_MMIO_VERSION_2,
} from "../mmio.js";
import {
  availRingSize,
  descTableSize,
  usedRingSize,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../queue.js";

/** The device refused a step of the initialisation, as Linux would report it. */
export class DriverError extends Error {
  readonly code = "VIRTIO_DRIVER_REFUSED";
  constructor(message: string) {
    super(message);
    this.name = "DriverError";
  }
}

export interface BufferSpec {
  length: number;
  /** Device-writable (VIRTQ_DESC_F_WRITE). Readable buffers must come first. */
  writable?: boolean;
  /** Bytes copied into the buffer before it is posted (readable buffers). */
  data?: Uint8Array;
  /** Where the buffer is; allocated from the heap when absent. */
  address?: number;
}

export interface PostedBuffer {
  address: number;
  length: number;
  writable: boolean;
}

export interface UsedElement {
  id: number;
  len: number;
}

export interface InitOptions {
  /** Features the driver wants; the double accepts (wanted & offered). Default: everything offered. */
  features?: bigint;
  /** Size per queue (default: QueueNumMax). Missing entries use the maximum. */
  queueSizes?: number[];
  /** How many queues to set up (default: every queue the device has). */
  queues?: number;
}

export interface DriverOptions {
  memory: GuestMemory;
  transport: BusDevice;
  /** Guest RAM the double may allocate from; default [1 MiB, 1 MiB + 8 MiB). */
  heapStart?: number;
  heapEnd?: number;
}

const HEAP_START = 0x10_0000;
const HEAP_SIZE = 0x80_0000;
/** Entries in each per-head indirect table slot of the pool. */
const INDIRECT_SLOT_ENTRIES = 32;

export class VirtioMmioDriver {
  readonly memory: GuestMemory;
  readonly transport: BusDevice;
  /** What the device offered / what was accepted, after negotiate(). */
  deviceFeatures = 0n;
  features = 0n;
  private readonly queues: DriverQueue[] = [];
  private heap: number;
  private readonly heapEnd: number;
  private readonly word = new Uint8Array(4);

  constructor(options: DriverOptions) {
    this.memory = options.memory;
    this.transport = options.transport;
    this.heap = options.heapStart ?? HEAP_START;
    this.heapEnd = options.heapEnd ?? this.heap + HEAP_SIZE;
  }

  // ---- registers ---------------------------------------------------------------------

  readReg(offset: number): number {
    this.word.fill(0);
    this.transport.read(offset, this.word);
    const w = this.word;
    return (
      ((w[0] as number) |
        ((w[1] as number) << 8) |
        ((w[2] as number) << 16) |
        ((w[3] as number) << 24)) >>>
      0
    );
  }

  writeReg(offset: number, value: number): void {
    const w = new Uint8Array(4);
    new DataView(w.buffer).setUint32(0, value >>> 0, true);
    this.transport.write(offset, w);
  }

  /** Bump-allocate `length` bytes of guest RAM (zeroed), aligned to `align`. */
  alloc(length: number, align = 16): number {
    const address = Math.ceil(this.heap / align) * align;
    if (address + length > this.heapEnd) {
      throw new RangeError(`Cannot allocate ${length} bytes: the test driver's heap is full`);
    }
    this.heap = address + length;
    this.memory.write(address, new Uint8Array(length));
    return address;
  }

  // ---- initialisation, as virtio_mmio.c / virtio.c --------------------------------------

  /** vm_probe: magic, version 2, a nonzero device ID. Returns the device and vendor IDs. */
  probe(): { deviceId: number; vendorId: number } {
    const magic = this.readReg(VIRTIO_MMIO_MAGIC_VALUE);
    if (magic !== VIRTIO_MMIO_MAGIC) throw new DriverError(`wrong magic 0x${magic.toString(16)}`);
    const version = this.readReg(VIRTIO_MMIO_VERSION);
    if (version !== VIRTIO_MMIO_VERSION_2) throw new DriverError(`version ${version} not 2`);
    const deviceId = this.readReg(VIRTIO_MMIO_DEVICE_ID);
    if (deviceId === 0) throw new DriverError("no device (ID 0)");
    return { deviceId, vendorId: this.readReg(VIRTIO_MMIO_VENDOR_ID) };
  }

  /** vm_reset: write 0, then (as the spec asks) read back until it reads 0. */
  reset(): void {
    this.writeReg(VIRTIO_MMIO_STATUS, 0);
    if (this.status() !== 0) throw new DriverError("status did not read 0 after reset");
    for (const q of this.queues) q.forget();
    this.queues.length = 0;
  }

  status(): number {
    return this.readReg(VIRTIO_MMIO_STATUS);
  }

  /** virtio_add_status: read, OR in `bit`, write back. */
  addStatus(bit: number): void {
    this.writeReg(VIRTIO_MMIO_STATUS, this.status() | bit);
  }

  readDeviceFeatures(): bigint {
    this.writeReg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    const high = this.readReg(VIRTIO_MMIO_DEVICE_FEATURES);
    this.writeReg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    const low = this.readReg(VIRTIO_MMIO_DEVICE_FEATURES);
    this.deviceFeatures = (BigInt(high) << 32n) | BigInt(low);
    return this.deviceFeatures;
  }

  writeDriverFeatures(features: bigint): void {
    this.writeReg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    this.writeReg(VIRTIO_MMIO_DRIVER_FEATURES, Number((features >> 32n) & 0xffff_ffffn));
    this.writeReg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    this.writeReg(VIRTIO_MMIO_DRIVER_FEATURES, Number(features & 0xffff_ffffn));
    this.features = features;
  }

  /** Read features, write (wanted & offered), set FEATURES_OK and check it stuck. */
  negotiate(wanted: bigint = ~0n): bigint {
    const offered = this.readDeviceFeatures();
    const accepted = offered & wanted;
    if ((accepted & (1n << VIRTIO_F_VERSION_1)) === 0n) {
      throw new DriverError("device does not offer VIRTIO_F_VERSION_1");
    }
    this.writeDriverFeatures(accepted);
    this.addStatus(VIRTIO_CONFIG_S_FEATURES_OK);
    if ((this.status() & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
      throw new DriverError("device refused FEATURES_OK");
    }
    return accepted;
  }

  /** vm_setup_vq: select, check not ready, read max, program size and rings, ready = 1. */
  setupQueue(index: number, size?: number): DriverQueue {
    this.writeReg(VIRTIO_MMIO_QUEUE_SEL, index);
    if (this.readReg(VIRTIO_MMIO_QUEUE_READY) !== 0) {
      throw new DriverError(`queue ${index} is already set up`);
    }
    const max = this.readReg(VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max === 0) throw new DriverError(`queue ${index} does not exist`);
    const n = size ?? max;
    const desc = this.alloc(descTableSize(n), 4096);
    const avail = this.alloc(availRingSize(n), 2);
    const used = this.alloc(usedRingSize(n), 4096);
    const indirectPool = this.alloc(n * INDIRECT_SLOT_ENTRIES * 16, 16);
    this.writeReg(VIRTIO_MMIO_QUEUE_NUM, n);
    this.writeAddress(VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, desc);
    this.writeAddress(VIRTIO_MMIO_QUEUE_DRIVER_LOW, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, avail);
    this.writeAddress(VIRTIO_MMIO_QUEUE_DEVICE_LOW, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, used);
    this.writeReg(VIRTIO_MMIO_QUEUE_READY, 1);
    if (this.readReg(VIRTIO_MMIO_QUEUE_READY) !== 1) {
      throw new DriverError(`device refused queue ${index}`);
    }
    const q = new DriverQueue(this, index, n, desc, avail, used, indirectPool);
    this.queues[index] = q;
    return q;
  }

  private writeAddress(lowReg: number, highReg: number, address: number): void {
    this.writeReg(lowReg, address % 0x1_0000_0000);
    this.writeReg(highReg, Math.floor(address / 0x1_0000_0000));
  }

  /** The whole Linux sequence, probe to DRIVER_OK. Returns the accepted features. */
  init(options: InitOptions = {}): bigint {
    this.probe();
    this.reset();
    this.addStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.addStatus(VIRTIO_CONFIG_S_DRIVER);
    const features = this.negotiate(options.features ?? ~0n);
    let count = options.queues;
    if (count === undefined) {
      count = 0;
      for (;;) {
        this.writeReg(VIRTIO_MMIO_QUEUE_SEL, count);
        if (this.readReg(VIRTIO_MMIO_QUEUE_NUM_MAX) === 0) break;
        count++;
      }
    }
    for (let i = 0; i < count; i++) this.setupQueue(i, options.queueSizes?.[i]);
    this.addStatus(VIRTIO_CONFIG_S_DRIVER_OK);
    if ((this.status() & VIRTIO_CONFIG_S_DRIVER_OK) === 0) {
      throw new DriverError("device refused DRIVER_OK");
    }
    return features;
  }

  queue(index: number): DriverQueue {
    const q = this.queues[index];
    if (!q) throw new RangeError(`Queue ${index} has not been set up`);
    return q;
  }

  // ---- config space and interrupts ---------------------------------------------------

  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.transport.read(VIRTIO_MMIO_CONFIG + offset, out);
    return out;
  }

  writeConfig(offset: number, data: Uint8Array): void {
    this.transport.write(VIRTIO_MMIO_CONFIG + offset, data);
  }

  configGeneration(): number {
    return this.readReg(VIRTIO_MMIO_CONFIG_GENERATION);
  }

  interruptStatus(): number {
    return this.readReg(VIRTIO_MMIO_INTERRUPT_STATUS);
  }

  /** vm_interrupt: read InterruptStatus, acknowledge exactly those bits, return them. */
  ackInterrupts(): number {
    const bits = this.interruptStatus();
    if (bits !== 0) this.writeReg(VIRTIO_MMIO_INTERRUPT_ACK, bits);
    return bits;
  }

  /** Features negotiated that the ring code cares about. */
  get eventIdx(): boolean {
    return (this.features & (1n << VIRTIO_F_EVENT_IDX)) !== 0n;
  }
  get indirectDesc(): boolean {
    return (this.features & (1n << VIRTIO_F_INDIRECT_DESC)) !== 0n;
  }
}

/** The driver's side of one split virtqueue (virtio_ring.c's split ring, simplified). */
export class DriverQueue {
  private readonly free: number[] = [];
  private readonly chains = new Map<number, number[]>();
  private availIdx = 0;
  private lastUsed = 0;

  constructor(
    private readonly driver: VirtioMmioDriver,
    readonly index: number,
    readonly size: number,
    /** Guest addresses of the three parts; write there directly for hostile tests. */
    readonly desc: number,
    readonly avail: number,
    readonly used: number,
    private readonly indirectPool: number,
  ) {
    for (let i = size - 1; i >= 0; i--) this.free.push(i);
  }

  get freeDescriptors(): number {
    return this.free.length;
  }

  /**
   * Post a chain and publish it in the avail ring (without kicking). Buffers without an
   * address are allocated and `data` copied in. Returns the head and where each buffer is.
   */
  add(
    buffers: BufferSpec[],
    options: { indirect?: boolean } = {},
  ): { head: number; buffers: PostedBuffer[] } {
    if (buffers.length === 0) throw new RangeError("Cannot post an empty chain");
    const memory = this.driver.memory;
    const posted = buffers.map((b) => {
      const address = b.address ?? this.driver.alloc(Math.max(b.length, 1));
      if (b.data) memory.write(address, b.data.subarray(0, b.length));
      return { address, length: b.length, writable: b.writable === true };
    });
    const used: number[] = [];
    const take = (): number => {
      const i = this.free.pop();
      if (i === undefined) throw new RangeError(`Queue ${this.index} has no free descriptors`);
      used.push(i);
      return i;
    };
    let head: number;
    if (options.indirect) {
      head = take();
      const n = posted.length;
      const table =
        n <= INDIRECT_SLOT_ENTRIES
          ? this.indirectPool + head * INDIRECT_SLOT_ENTRIES * 16
          : this.driver.alloc(16 * n);
      posted.forEach((b, i) => {
        const last = i === n - 1;
        writeDescriptorAt(memory, table + 16 * i, {
          address: b.address,
          length: b.length,
          flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          next: last ? 0 : i + 1,
        });
      });
      this.writeDescriptor(head, {
        address: table,
        length: 16 * n,
        flags: VIRTQ_DESC_F_INDIRECT,
        next: 0,
      });
    } else {
      if (posted.length > this.free.length) {
        throw new RangeError(`Queue ${this.index} has no free descriptors`);
      }
      const ids = posted.map(() => take());
      head = ids[0] as number;
      posted.forEach((b, i) => {
        const next = ids[i + 1];
        this.writeDescriptor(ids[i] as number, {
          address: b.address,
          length: b.length,
          flags:
            (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (next === undefined ? 0 : VIRTQ_DESC_F_NEXT),
          next: next ?? 0,
        });
      });
    }
    this.chains.set(head, used);
    this.publish(head);
    return { head, buffers: posted };
  }

  /** Write descriptor `i` of the ring's table (any values: hostile tests use this). */
  writeDescriptor(
    i: number,
    d: { address: number; length: number; flags: number; next: number },
  ): void {
    writeDescriptorAt(this.driver.memory, this.desc + 16 * i, d);
  }

  /** Put `head` in the next avail slot and advance avail idx (as virtqueue_add + kick prep). */
  publish(head: number): void {
    const memory = this.driver.memory;
    memory.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    memory.writeU16(this.avail + 2, this.availIdx);
  }

  /** Overwrite avail idx with any value (hostile tests). */
  setAvailIdx(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.driver.memory.writeU16(this.avail + 2, this.availIdx);
  }

  /** Notify the device: a QueueNotify write of the queue index. */
  kick(): void {
    this.driver.writeReg(VIRTIO_MMIO_QUEUE_NOTIFY, this.index);
  }

  /** Used elements added since the last call; descriptors of chains posted by add() are freed. */
  takeUsed(): UsedElement[] {
    const memory = this.driver.memory;
    const idx = memory.readU16(this.used + 2);
    const out: UsedElement[] = [];
    while (this.lastUsed !== idx) {
      const slot = this.used + 4 + 8 * (this.lastUsed % this.size);
      const id = memory.readU32(slot);
      out.push({ id, len: memory.readU32(slot + 4) });
      const ids = this.chains.get(id);
      if (ids) {
        this.chains.delete(id);
        for (const i of ids) this.free.push(i);
      }
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** used_event (EVENT_IDX): interrupt me when used idx passes this. */
  setUsedEvent(idx: number): void {
    this.driver.memory.writeU16(this.avail + 4 + 2 * this.size, idx & 0xffff);
  }

  /** VIRTQ_AVAIL_F_NO_INTERRUPT on or off. */
  setNoInterrupt(on: boolean): void {
    this.driver.memory.writeU16(this.avail, on ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0);
  }

  /** avail_event as the device last wrote it (EVENT_IDX). */
  availEvent(): number {
    return this.driver.memory.readU16(this.used + 4 + 8 * this.size);
  }

  usedIdx(): number {
    return this.driver.memory.readU16(this.used + 2);
  }

  /** Called on reset: this queue's state is gone. */
  forget(): void {
    this.chains.clear();
    this.free.length = 0;
  }
}

function writeDescriptorAt(
  memory: GuestMemory,
  at: number,
  d: { address: number; length: number; flags: number; next: number },
): void {
  memory.writeU32(at, d.address % 0x1_0000_0000);
  memory.writeU32(at + 4, Math.floor(d.address / 0x1_0000_0000) >>> 0);
  memory.writeU32(at + 8, d.length >>> 0);
  memory.writeU16(at + 12, d.flags & 0xffff);
  memory.writeU16(at + 14, d.next & 0xffff);
}
