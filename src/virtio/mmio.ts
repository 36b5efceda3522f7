// The virtio-mmio transport, version 2 (virtio 1.2 §4.2, modern devices only), as a
// BusDevice. It owns the registers the driver programs: it negotiates features (only
// offered bits, VIRTIO_F_VERSION_1 required), walks the device status through a table of
// valid transitions, takes queue configuration only while the queue is not ready and the
// device not live, validates each queue when the driver marks it ready, and on DRIVER_OK
// activates the device with per-activation queue handles (so a device finishing I/O after
// a reset cannot touch the rings of the next session). Notifications arrive either as a
// QueueNotify write or, when the VMM registers a KVM ioeventfd on notifyAddress() with
// datamatch = queue index, through that eventfd (useIoEventFd()) without a vCPU exit; a
// device whose rings a kernel backend serves (vhost) may take such an eventfd over for one
// activation (QueueOffload). Interrupts are InterruptStatus bits plus an injected IrqLine;
// with an edge-triggered line, InterruptStatus can live in shared memory so the VMM's vCPU
// threads answer the driver's InterruptStatus reads and InterruptACK writes (two per
// interrupt in Linux's vm_interrupt) without a round trip to the main thread. Every guest access is checked: a bad
// one is counted (stats()) and ignored, reads of nothing give 0, and nothing throws.

import type { BusDevice, IrqLine } from "../devices/device.js";
import type { GuestMemory } from "../memory/mod.js";
import {
  type DescriptorChain,
  type QueueHandle,
  type QueueOffload,
  VIRTIO_F_VERSION_1,
  type VirtioDevice,
  type VirtioDeviceContext,
} from "./device.js";
import { Queue, type QueueStats } from "./queue.js";

// Register offsets, virtio 1.2 §4.2.2 "MMIO Device Register Layout".
export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
export const VIRTIO_MMIO_VERSION = 0x004;
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
export const VIRTIO_MMIO_STATUS = 0x070;
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
export const VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094;
export const VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4;
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
export const VIRTIO_MMIO_CONFIG = 0x100;

/** "virt" little-endian, §4.2.2. */
export const VIRTIO_MMIO_MAGIC = 0x7472_6976;
/** Version 2: the non-legacy interface, §4.2.2. */
export const VIRTIO_MMIO_VERSION_2 = 2;
/** VendorID: "VSSL" as little-endian bytes. */
export const VESSEL_VENDOR_ID = 0x4c53_5356;
/** Bytes of MMIO space each transport occupies (registers, then device config to the end). */
export const VIRTIO_MMIO_REGION_SIZE = 0x1000;

// Device status bits, §2.1.
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// InterruptStatus bits, §4.2.2.
export const VIRTIO_MMIO_INT_VRING = 1;
export const VIRTIO_MMIO_INT_CONFIG = 2;

const ACK = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRV = VIRTIO_CONFIG_S_DRIVER;
const FOK = VIRTIO_CONFIG_S_FEATURES_OK;
const DOK = VIRTIO_CONFIG_S_DRIVER_OK;

/**
 * The driver-initiated status transitions §3.1.1 allows, one bit at a time, as
 * [current, next]. Besides these: 0 resets from any state, FAILED may be added to any
 * state, rewriting the current value is a no-op; everything else is refused and counted.
 */
export const STATUS_TRANSITIONS: readonly (readonly [number, number])[] = [
  [0, ACK],
  [ACK, ACK | DRV],
  [ACK | DRV, ACK | DRV | FOK],
  [ACK | DRV | FOK, ACK | DRV | FOK | DOK],
];

export interface VirtioMmioOptions {
  device: VirtioDevice;
  memory: GuestMemory;
  irq: IrqLine;
  /** "edge" (default): pulse() per interrupt, for an irqfd on an edge GSI. "level": set(). */
  trigger?: "edge" | "level";
  /** Guest-physical base the VMM maps this transport at; needed for notifyAddress(). */
  base?: number;
  /** Main-thread eventfd watching (the VMM's FdWatcher); needed for useIoEventFd(). */
  eventFds?: EventFdWatch;
  /**
   * Where InterruptStatus lives: element 0 of this (usually shared) array, updated only with
   * Atomics, so another thread may read it and clear acknowledged bits as the registers at
   * sharedRegisters() do. Edge trigger only: a level line must drop on the acknowledgement.
   */
  interruptStatus?: Int32Array;
  log?: (message: string) => void;
}

/** Call `onReady` on the main thread each time eventfd `fd` is signalled; stop with remove. */
export interface EventFdWatch {
  add(fd: number, onReady: () => void): void;
  remove(fd: number): void;
}

export interface VirtioMmioStats {
  /** Status writes that were not a valid transition. */
  refusedStatus: number;
  /** FEATURES_OK refused (unoffered bits or no VERSION_1), or DriverFeatures written out of turn. */
  badFeatures: number;
  /** QueueReady=1 refused because the configuration failed validation. */
  badQueueConfigs: number;
  /** Queue register writes outside the window in which they are allowed. */
  refusedQueueWrites: number;
  /** Wrong width, unaligned, unknown offset, read of a write-only or write of a read-only register. */
  malformedAccesses: number;
  notifications: number;
  /** Notifications for a queue that does not exist or before DRIVER_OK. */
  badNotifications: number;
  interrupts: number;
  resets: number;
  /** DEVICE_NEEDS_RESET raised (device request, broken ring, device error). */
  needsReset: number;
  /** Exceptions thrown by the device model (bugs), caught here. */
  deviceErrors: number;
  queues: QueueStats[];
}

/** One KVM ioeventfd the VMM should register for this transport. */
export interface IoEventFdSpec {
  address: number;
  length: 4;
  datamatch: number;
  queue: number;
}

export class VirtioMmioTransport implements BusDevice {
  readonly name: string;
  readonly device: VirtioDevice;
  private readonly memory: GuestMemory;
  private readonly irq: IrqLine;
  private readonly level: boolean;
  private readonly base: number | undefined;
  private readonly eventFdWatch: EventFdWatch | undefined;
  private readonly log: (message: string) => void;
  private readonly queues: Queue[];
  private readonly offered: bigint;
  private readonly offeredLow: number;
  private readonly offeredHigh: number;

  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  /** The driver wrote a nonzero DriverFeatures word above bit 63 (never offered). */
  private driverFeaturesBeyond = false;
  private queueSel = 0;
  /** InterruptStatus, element 0; see VirtioMmioOptions.interruptStatus. */
  private readonly isr: Int32Array;
  private lineHigh = false;
  private configGeneration = 0;
  private activated = false;
  /** Bumped by every reset; handles and contexts from an older epoch are inert. */
  private epoch = 0;
  /** Each queue's ioeventfd (useIoEventFd), and whether a device has taken it over. */
  private readonly kickFds: (number | undefined)[];
  private readonly kickTaken: boolean[];

  private readonly counters: Omit<VirtioMmioStats, "queues"> = {
    refusedStatus: 0,
    badFeatures: 0,
    badQueueConfigs: 0,
    refusedQueueWrites: 0,
    malformedAccesses: 0,
    notifications: 0,
    badNotifications: 0,
    interrupts: 0,
    resets: 0,
    needsReset: 0,
    deviceErrors: 0,
  };

  constructor(options: VirtioMmioOptions) {
    const { device, memory, irq } = options;
    if (device.queueSizes.length === 0) {
      throw new RangeError(`Cannot create virtio-mmio transport: ${device.name} has no queues`);
    }
    this.name = device.name;
    this.device = device;
    this.memory = memory;
    this.irq = irq;
    this.level = options.trigger === "level";
    if (
      options.interruptStatus !== undefined &&
      (this.level || options.interruptStatus.length < 1)
    ) {
      throw new TypeError(
        `Cannot create virtio-mmio transport: a shared InterruptStatus needs an edge-triggered line and one element`,
      );
    }
    this.isr = options.interruptStatus ?? new Int32Array(1);
    Atomics.store(this.isr, 0, 0);
    this.base = options.base;
    this.eventFdWatch = options.eventFds;
    this.log = options.log ?? (() => {});
    this.offered = (device.features | (1n << VIRTIO_F_VERSION_1)) & 0xffff_ffff_ffff_ffffn;
    this.offeredLow = Number(this.offered & 0xffff_ffffn);
    this.offeredHigh = Number(this.offered >> 32n);
    this.queues = device.queueSizes.map(
      (maxSize, index) =>
        new Queue({
          index,
          maxSize,
          memory,
          log: (m) => this.log(`${this.name}: ${m}`),
          signal: () => this.raise(VIRTIO_MMIO_INT_VRING),
          onBroken: (reason) => this.setNeedsReset(`queue ${index} broken: ${reason}`),
        }),
    );
    this.kickFds = this.queues.map(() => undefined);
    this.kickTaken = this.queues.map(() => false);
  }

  stats(): VirtioMmioStats {
    return { ...this.counters, queues: this.queues.map((q) => q.stats()) };
  }

  /** The current device status byte (for diagnostics and tests). */
  deviceStatus(): number {
    return this.status;
  }

  /** Guest-physical address of QueueNotify, for KVM_IOEVENTFD registration. */
  notifyAddress(): number {
    if (this.base === undefined) {
      throw new TypeError(`Cannot give ${this.name}'s notify address: no base was configured`);
    }
    return this.base + VIRTIO_MMIO_QUEUE_NOTIFY;
  }

  /**
   * With a shared InterruptStatus, the guest-physical addresses whose 4-byte accesses another
   * thread may answer from it: a read of `status` returns it, a write to `ack` clears the
   * written bits (§4.2.2; nothing else happens on either). Undefined without one.
   */
  sharedRegisters(): { status: number; ack: number } | undefined {
    if (!(this.isr.buffer instanceof SharedArrayBuffer) || this.base === undefined) {
      return undefined;
    }
    return {
      status: this.base + VIRTIO_MMIO_INTERRUPT_STATUS,
      ack: this.base + VIRTIO_MMIO_INTERRUPT_ACK,
    };
  }

  /** One ioeventfd per queue: 4-byte write of the queue index to notifyAddress(). */
  ioEventFds(): IoEventFdSpec[] {
    const address = this.notifyAddress();
    return this.queues.map((_, queue) => ({ address, length: 4, datamatch: queue, queue }));
  }

  /** The ioeventfd registered for `queue` fired (the guest wrote the index to QueueNotify). */
  notifyFromEventfd(queue: number): void {
    this.notify(queue);
  }

  /**
   * `fd` is the ioeventfd the VMM registered for `queue` (see ioEventFds()): watch it and
   * deliver its signals as notifications, unless a device takes it over (QueueOffload).
   */
  useIoEventFd(queue: number, fd: number): void {
    const watch = this.eventFdWatch;
    if (!watch) {
      throw new TypeError(`Cannot watch ${this.name}'s ioeventfd: no eventFds watcher was given`);
    }
    if (!Number.isInteger(queue) || queue < 0 || queue >= this.queues.length) {
      throw new RangeError(`Cannot use an ioeventfd for ${this.name}: no queue ${queue}`);
    }
    if (this.kickFds[queue] !== undefined) {
      throw new RangeError(`Cannot use an ioeventfd for ${this.name}: queue ${queue} has one`);
    }
    watch.add(fd, () => this.notifyFromEventfd(queue));
    this.kickFds[queue] = fd;
  }

  // ---- BusDevice ---------------------------------------------------------------------

  read(offset: number, data: Uint8Array): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= VIRTIO_MMIO_REGION_SIZE) {
      this.malformed(data);
      return;
    }
    if (offset >= VIRTIO_MMIO_CONFIG) {
      data.fill(0);
      this.guarded(() => this.device.readConfig(offset - VIRTIO_MMIO_CONFIG, data));
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) {
      this.malformed(data);
      return;
    }
    const value = this.readRegister(offset);
    if (value === undefined) {
      this.malformed(data);
      return;
    }
    data[0] = value & 0xff;
    data[1] = (value >>> 8) & 0xff;
    data[2] = (value >>> 16) & 0xff;
    data[3] = (value >>> 24) & 0xff;
  }

  write(offset: number, data: Uint8Array): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= VIRTIO_MMIO_REGION_SIZE) {
      this.counters.malformedAccesses++;
      return;
    }
    if (offset >= VIRTIO_MMIO_CONFIG) {
      this.guarded(() => this.device.writeConfig(offset - VIRTIO_MMIO_CONFIG, data));
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) {
      this.counters.malformedAccesses++;
      return;
    }
    // GUEST-CONTROLLED: the value; each register below checks its own range.
    const value =
      ((data[0] as number) |
        ((data[1] as number) << 8) |
        ((data[2] as number) << 16) |
        ((data[3] as number) << 24)) >>>
      0;
    if (!this.writeRegister(offset, value)) this.counters.malformedAccesses++;
  }

  // ---- registers ---------------------------------------------------------------------

  private readRegister(offset: number): number | undefined {
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO_VERSION:
        return VIRTIO_MMIO_VERSION_2;
      case VIRTIO_MMIO_DEVICE_ID:
        return this.device.deviceType;
      case VIRTIO_MMIO_VENDOR_ID:
        return VESSEL_VENDOR_ID;
      case VIRTIO_MMIO_DEVICE_FEATURES:
        if (this.deviceFeaturesSel === 0) return this.offeredLow;
        if (this.deviceFeaturesSel === 1) return this.offeredHigh;
        return 0;
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return this.queues[this.queueSel]?.maxSize ?? 0;
      case VIRTIO_MMIO_QUEUE_READY:
        return this.queues[this.queueSel]?.ready ? 1 : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS:
        return Atomics.load(this.isr, 0) >>> 0;
      case VIRTIO_MMIO_STATUS:
        return this.status;
      // No shared memory regions: a length of -1 says "no such region" (§4.2.2).
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
      case VIRTIO_MMIO_SHM_BASE_LOW:
      case VIRTIO_MMIO_SHM_BASE_HIGH:
        return 0xffff_ffff;
      case VIRTIO_MMIO_CONFIG_GENERATION:
        return this.configGeneration;
      default:
        return undefined;
    }
  }

  // Returns false for an offset that is not a writable register.
  private writeRegister(offset: number, value: number): boolean {
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = value;
        return true;
      case VIRTIO_MMIO_DRIVER_FEATURES:
        this.writeDriverFeatures(value);
        return true;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = value;
        return true;
      case VIRTIO_MMIO_QUEUE_SEL:
        // Any value may be selected; a nonexistent queue reads QueueNumMax 0 (§4.2.3.2).
        this.queueSel = value;
        return true;
      case VIRTIO_MMIO_QUEUE_NUM:
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
      case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        this.writeQueueConfig(offset, value);
        return true;
      case VIRTIO_MMIO_QUEUE_READY:
        this.writeQueueReady(value);
        return true;
      case VIRTIO_MMIO_QUEUE_NOTIFY:
        // Without VIRTIO_F_NOTIFICATION_DATA (never offered) the value is the queue index.
        this.notify(value);
        return true;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        Atomics.and(this.isr, 0, ~value);
        this.updateLevel();
        return true;
      case VIRTIO_MMIO_STATUS:
        this.writeStatus(value);
        return true;
      case VIRTIO_MMIO_SHM_SEL:
        return true;
      default:
        return false;
    }
  }

  private writeDriverFeatures(value: number): void {
    // Features are negotiated between DRIVER and FEATURES_OK (§3.1.1 steps 4-5).
    if (this.status !== (ACK | DRV)) {
      this.counters.badFeatures++;
      this.log(`${this.name}: DriverFeatures written in status 0x${this.status.toString(16)}`);
      return;
    }
    const sel = this.driverFeaturesSel;
    if (sel === 0) {
      this.driverFeatures = (this.driverFeatures & ~0xffff_ffffn) | BigInt(value);
    } else if (sel === 1) {
      this.driverFeatures = (this.driverFeatures & 0xffff_ffffn) | (BigInt(value) << 32n);
    } else if (value !== 0) {
      // Judged at FEATURES_OK, so the driver learns through the status read-back.
      this.driverFeaturesBeyond = true;
    }
  }

  private writeStatus(value: number): void {
    const current = this.status & ~VIRTIO_CONFIG_S_NEEDS_RESET;
    // GUEST-CONTROLLED: the new status. NEEDS_RESET is the device's bit: a driver writing
    // back what it read (Linux's virtio_add_status) may include it; it is not a request.
    const next = value & ~VIRTIO_CONFIG_S_NEEDS_RESET;
    if (value === 0) {
      this.reset();
      return;
    }
    if (next === current) return;
    if (next > 0xff) {
      this.refuseStatus(value, "not a status byte");
      return;
    }
    if (next & VIRTIO_CONFIG_S_FAILED) {
      // The driver gave up (§2.1.1): allowed from any state, nothing else may change.
      if ((next & ~VIRTIO_CONFIG_S_FAILED) !== current) {
        this.refuseStatus(value, "FAILED with other bits changed");
        return;
      }
      this.status |= VIRTIO_CONFIG_S_FAILED;
      return;
    }
    if (current & VIRTIO_CONFIG_S_FAILED) {
      this.refuseStatus(value, "device has FAILED");
      return;
    }
    const allowed = STATUS_TRANSITIONS.some(([from, to]) => from === current && to === next);
    if (!allowed) {
      this.refuseStatus(value, "not a valid transition");
      return;
    }
    if (next & ~current & FOK) {
      const why = this.featuresProblem();
      if (why !== undefined) {
        this.counters.badFeatures++;
        this.log(`${this.name}: FEATURES_OK refused: ${why}`);
        return;
      }
    }
    this.status = (this.status & VIRTIO_CONFIG_S_NEEDS_RESET) | next;
    if (next & ~current & DOK) this.activate();
  }

  private refuseStatus(value: number, why: string): void {
    this.counters.refusedStatus++;
    this.log(
      `${this.name}: status 0x${value.toString(16)} refused in 0x${this.status.toString(16)}: ${why}`,
    );
  }

  private featuresProblem(): string | undefined {
    const unoffered = this.driverFeatures & ~this.offered;
    if (unoffered !== 0n || this.driverFeaturesBeyond) {
      return `driver accepted features not offered (0x${unoffered.toString(16)})`;
    }
    if ((this.driverFeatures & (1n << VIRTIO_F_VERSION_1)) === 0n) {
      return "driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)";
    }
    return undefined;
  }

  // The queue selected by QueueSel when its registers may be written: after FEATURES_OK,
  // before DRIVER_OK, not FAILED, and while the queue is not ready (§4.2.3.2).
  private configurableQueue(): Queue | undefined {
    const q = this.queues[this.queueSel];
    const s = this.status;
    if (!q || (s & FOK) === 0 || (s & (DOK | VIRTIO_CONFIG_S_FAILED)) !== 0 || q.ready) {
      this.counters.refusedQueueWrites++;
      return undefined;
    }
    return q;
  }

  private writeQueueConfig(offset: number, value: number): void {
    const q = this.configurableQueue();
    if (!q) return;
    // GUEST-CONTROLLED: sizes and addresses are only stored here; enable() validates them.
    switch (offset) {
      case VIRTIO_MMIO_QUEUE_NUM:
        q.size = value;
        break;
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
        q.descTable = setLow(q.descTable, value);
        break;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        q.descTable = setHigh(q.descTable, value);
        break;
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
        q.availRing = setLow(q.availRing, value);
        break;
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        q.availRing = setHigh(q.availRing, value);
        break;
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
        q.usedRing = setLow(q.usedRing, value);
        break;
      default:
        q.usedRing = setHigh(q.usedRing, value);
        break;
    }
  }

  private writeQueueReady(value: number): void {
    const q = this.queues[this.queueSel];
    if (value === 0) {
      // Stopping a queue is allowed whenever the device is not live (Linux does it on
      // teardown, after the reset); it is already stopped after a reset.
      if (!q || (this.status & DOK) !== 0) this.counters.refusedQueueWrites++;
      else q.disable();
      return;
    }
    if (value !== 1) {
      this.counters.refusedQueueWrites++;
      return;
    }
    const queue = this.configurableQueue();
    if (!queue) return;
    const why = queue.enable();
    if (why !== undefined) {
      this.counters.badQueueConfigs++;
      this.log(`${this.name}: queue ${queue.index} refused: ${why}`);
    }
  }

  private notify(index: number): void {
    if ((this.status & DOK) === 0 || !this.activated || index >= this.queues.length) {
      this.counters.badNotifications++;
      return;
    }
    this.counters.notifications++;
    this.guarded(() => this.device.queueNotify(index));
  }

  // ---- activation, interrupts, reset -------------------------------------------------

  private activate(): void {
    const epoch = this.epoch;
    const features = this.driverFeatures;
    for (const q of this.queues) q.setFeatures(features);
    const live = () => this.epoch === epoch;
    const offload: QueueOffload = {
      rings: (index) => {
        const q = this.queues[index];
        if (!live() || !q?.ready) return undefined;
        return {
          size: q.size,
          descTable: q.descTable,
          availRing: q.availRing,
          usedRing: q.usedRing,
        };
      },
      takeKickFd: (index) => (live() ? this.takeKickFd(index) : undefined),
      usedBuffers: (index) => {
        if (live() && this.queues[index]?.ready) this.raise(VIRTIO_MMIO_INT_VRING);
      },
    };
    const ctx: VirtioDeviceContext = {
      memory: this.memory,
      queues: this.queues.map((q) => new EpochQueueHandle(q, () => this.epoch === epoch)),
      interrupt: {
        queue: (index) => {
          if (this.epoch === epoch) this.queues[index]?.notifyIfNeeded();
        },
        configChanged: () => {
          if (this.epoch === epoch) this.configChanged();
        },
      },
      features,
      needsReset: (reason) => {
        if (this.epoch === epoch) this.setNeedsReset(reason);
      },
      offload,
    };
    this.activated = true;
    this.guarded(() => this.device.activate(ctx));
  }

  private takeKickFd(index: number): number | undefined {
    const fd = this.kickFds[index];
    if (fd === undefined || this.kickTaken[index]) return undefined;
    this.eventFdWatch?.remove(fd);
    this.kickTaken[index] = true;
    return fd;
  }

  // After a reset the backend that took an ioeventfd has let go of it: watch it again.
  private returnKickFds(): void {
    this.kickTaken.forEach((taken, index) => {
      const fd = this.kickFds[index];
      if (!taken || fd === undefined) return;
      this.kickTaken[index] = false;
      this.eventFdWatch?.add(fd, () => this.notifyFromEventfd(index));
    });
  }

  private configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.status & DOK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  private setNeedsReset(reason: string): void {
    this.counters.needsReset++;
    this.log(`${this.name}: device needs reset: ${reason}`);
    if (this.status & VIRTIO_CONFIG_S_NEEDS_RESET) return;
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    // §2.1.2: with DRIVER_OK set, the device must send a configuration change notification.
    if (this.status & DOK) this.raise(VIRTIO_MMIO_INT_CONFIG);
  }

  private raise(bit: number): void {
    // Set before the line fires: a driver woken by it must read the bit.
    Atomics.or(this.isr, 0, bit);
    this.counters.interrupts++;
    if (this.level) this.updateLevel();
    else this.irq.pulse();
  }

  private updateLevel(): void {
    if (!this.level) return;
    const high = Atomics.load(this.isr, 0) !== 0;
    if (high !== this.lineHigh) {
      this.lineHigh = high;
      this.irq.set(high);
    }
  }

  /**
   * Device reset (§2.4, §4.2.3.1): a Status write of 0, or the VMM resetting the machine.
   * The device stops I/O, every register returns to its initial value, queues are not
   * ready, pending interrupts are dropped. The config generation keeps counting.
   */
  reset(): void {
    this.counters.resets++;
    this.epoch++;
    if (this.activated) this.guarded(() => this.device.reset());
    this.activated = false;
    this.returnKickFds();
    this.status = 0;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.driverFeatures = 0n;
    this.driverFeaturesBeyond = false;
    this.queueSel = 0;
    for (const q of this.queues) q.reset();
    Atomics.store(this.isr, 0, 0);
    this.updateLevel();
  }

  // A device model that throws has a bug; the guest must not be able to turn it into a
  // VMM crash. Count it and ask the driver to reset the device.
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.counters.deviceErrors++;
      this.setNeedsReset(`device error: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private malformed(data: Uint8Array): void {
    this.counters.malformedAccesses++;
    data.fill(0);
  }
}

// The queue as one activation of the device sees it: after a reset it is inert, so a
// device completing I/O late cannot write into the rings of the driver's next session.
class EpochQueueHandle implements QueueHandle {
  constructor(
    private readonly queue: Queue,
    private readonly live: () => boolean,
  ) {}
  get index(): number {
    return this.queue.index;
  }
  get broken(): boolean {
    return this.queue.broken;
  }
  pop(): DescriptorChain | undefined {
    return this.live() ? this.queue.pop() : undefined;
  }
  pushUsed(head: number, written: number): void {
    if (this.live()) this.queue.pushUsed(head, written);
  }
  notifyIfNeeded(): void {
    if (this.live()) this.queue.notifyIfNeeded();
  }
}

const TWO_32 = 0x1_0000_0000;
function setLow(address: number, low: number): number {
  return Math.floor(address / TWO_32) * TWO_32 + low;
}
function setHigh(address: number, high: number): number {
  return high * TWO_32 + (address % TWO_32);
}
