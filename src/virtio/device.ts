// The contract between a virtio transport (virtio-mmio today) and a virtio device model.
// Devices know nothing of KVM or of the transport's registers: the transport negotiates
// features, sets up queues in guest memory and calls the device when the driver notifies
// a queue; the device consumes descriptor chains and signals used buffers through the
// transport. virtio 1.2 section numbers are cited where a rule comes from the spec.

import type { GuestMemory } from "../memory/mod.js";

/** Device IDs (virtio 1.2 §5). */
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_VSOCK = 19;

/** Feature bits every device offers or understands (virtio 1.2 §6). */
export const VIRTIO_F_INDIRECT_DESC = 28n;
export const VIRTIO_F_EVENT_IDX = 29n;
export const VIRTIO_F_VERSION_1 = 32n;

/** What the transport hands a device for each queue once the driver sets DRIVER_OK. */
export interface QueueHandle {
  /** Queue index within the device. */
  readonly index: number;
  /**
   * Pop the next available descriptor chain, fully validated, or undefined when the ring
   * is empty. A malformed chain is counted and never returned (see the queue's stats).
   */
  pop(): DescriptorChain | undefined;
  /** Return a chain to the driver with the number of bytes written into it. */
  pushUsed(head: number, written: number): void;
  /** Tell the driver about used buffers, honouring EVENT_IDX / NO_INTERRUPT suppression. */
  notifyIfNeeded(): void;
  /** True when the queue has been stopped because the driver broke the ring. */
  readonly broken: boolean;
}

/** One guest buffer of a chain; the address range has been checked to lie in guest RAM. */
export interface DescriptorBuffer {
  address: number;
  length: number;
  writable: boolean;
}

export interface DescriptorChain {
  /** Head index, to hand back with pushUsed. */
  head: number;
  /** Driver-readable buffers first, then device-writable ones (§2.7.4.2 ordering checked). */
  readable: DescriptorBuffer[];
  writable: DescriptorBuffer[];
  /** Total bytes in readable and in writable buffers. */
  readableLength: number;
  writableLength: number;
}

/** What a device gets to signal the driver. */
export interface VirtioInterrupt {
  /** A used-buffer notification for a queue (the transport may suppress or coalesce it). */
  queue(index: number): void;
  /** The device configuration changed (§2.5.1 configuration change notification). */
  configChanged(): void;
}

export interface VirtioDeviceContext {
  memory: GuestMemory;
  queues: QueueHandle[];
  interrupt: VirtioInterrupt;
  /** Features the driver accepted (a subset of the offer). */
  features: bigint;
  /** Ask the transport to set DEVICE_NEEDS_RESET (§2.1.2) after an unrecoverable error. */
  needsReset(reason: string): void;
  /** For a device whose rings a host kernel backend serves (vhost); absent in plain tests. */
  offload?: QueueOffload;
}

/** Where the driver put one queue's rings, in guest-physical addresses (§2.7). */
export interface RingLayout {
  size: number;
  descTable: number;
  availRing: number;
  usedRing: number;
}

/**
 * What a transport gives a device that hands its rings to a host kernel backend (vhost):
 * the backend reads and writes the rings itself, is woken by the eventfd KVM signals on the
 * driver's notify, and decides itself when the driver wants an interrupt (EVENT_IDX,
 * NO_INTERRUPT). Valid for one activation, like the queue handles.
 */
export interface QueueOffload {
  /**
   * Queue `index` as the driver configured it: validated when it went ready (size a power
   * of two within the maximum, each part aligned and wholly in guest RAM); undefined when
   * the queue is not ready.
   */
  rings(index: number): RingLayout | undefined;
  /**
   * Take over queue `index`'s notifications: the eventfd KVM signals when the driver writes
   * the queue's index to QueueNotify. The VMM stops watching it until the device is reset.
   * Undefined when the transport has none (notifications then arrive as queueNotify()).
   */
  takeKickFd(index: number): number | undefined;
  /**
   * A used-buffer interrupt for queue `index` that the backend has decided on: no
   * suppression check here (the backend applied the driver's), only InterruptStatus and the
   * interrupt line.
   */
  usedBuffers(index: number): void;
}

/** A virtio device model. */
export interface VirtioDevice {
  readonly deviceType: number;
  /** Name for logs and metrics, e.g. "virtio-blk0". */
  readonly name: string;
  /** Feature bits offered to the driver, including the transport-independent ones it supports. */
  readonly features: bigint;
  /** Maximum size of each queue; its length is the number of queues. */
  readonly queueSizes: readonly number[];
  /** Device-specific configuration space (§4.2.2.2 offset 0x100); reads past the end give 0. */
  readConfig(offset: number, data: Uint8Array): void;
  writeConfig(offset: number, data: Uint8Array): void;
  /** The driver set DRIVER_OK: queues are live. */
  activate(ctx: VirtioDeviceContext): void;
  /** The driver notified queue `index` (from an ioeventfd or an MMIO write). */
  queueNotify(index: number): void;
  /** The driver reset the device: drop queue state, stop I/O in flight. */
  reset(): void;
}
