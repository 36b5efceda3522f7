// virtio-net's kernel fast path: /dev/vhost-net moves frames between the rings in guest RAM
// and the TAP in a kernel worker thread, so no frame passes through this process. This file
// is the policy over src/host's vhost bindings: which features to offer and to ack, the
// start order (QEMU's vhost_dev_start and vhost_net_start_one: features, memory table, then
// per ring num/base/addr/kick/call, then the TAP as backend) and the stop order (backend
// detached, ring stopped, eventfds unbound), done on every device reset and at close.
//
// Notifications: the driver's notify reaches the worker directly through the queue's KVM
// ioeventfd, which the transport hands over for the activation. Interrupts cannot take the
// same shortcut on virtio-mmio: Linux's vm_interrupt reads InterruptStatus and looks at the
// rings only when bit 0 is set, and KVM's irqfd cannot set a register. So the worker's call
// eventfd is watched on the main thread, which sets InterruptStatus and fires the irqfd
// (QEMU does the same for virtio-mmio). One call eventfd serves both rings: a virtio-mmio
// device has one interrupt, and the driver scans every ring on it.
//
// The guest is hostile here too: the ring addresses were validated by the transport (in
// RAM, aligned), the memory table covers guest RAM and nothing else, and the worker checks
// every descriptor against that table itself; a ring it cannot use is reported on the
// error eventfd, which asks the driver to reset the device.

import type { VhostMemoryRegion, VhostVringAddr } from "../../../host/vhost_abi.js";
import type { GuestMemory } from "../../../memory/mod.js";
import {
  type QueueOffload,
  type RingLayout,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../../../virtio/device.js";
import { availRingSize, descTableSize, usedRingSize } from "../../../virtio/queue.js";
import { VIRTIO_NET_F_MRG_RXBUF } from "./config.js";
import type { NetMetricsSnapshot } from "./metrics.js";

/** VIRTIO_F_NOTIFY_ON_EMPTY (virtio 1.2 §6.3, legacy). */
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24n;
/** VIRTIO_F_ACCESS_PLATFORM (§6): the device would translate through an IOMMU. */
export const VIRTIO_F_ACCESS_PLATFORM = 33n;
/** VIRTIO_F_RING_PACKED (§6). */
export const VIRTIO_F_RING_PACKED = 34n;
/** vhost's own bits (linux/vhost.h): dirty logging, and vhost supplying the vnet header. */
const VHOST_F_LOG_ALL = 26n;
const VHOST_NET_F_VIRTIO_NET_HDR = 27n;

const bit = (n: bigint): bigint => 1n << n;

/**
 * The feature bits whose implementation is the ring's, so vhost's when it serves the rings
 * (QEMU's kernel_feature_bits for vhost-net). Everything else a virtio-net device offers
 * (MAC, STATUS, checksum and segmentation offloads) is config space or vnet header
 * contents, which vhost passes through untouched.
 */
export const VHOST_RING_FEATURES =
  bit(VIRTIO_F_NOTIFY_ON_EMPTY) |
  bit(VIRTIO_F_INDIRECT_DESC) |
  bit(VIRTIO_F_EVENT_IDX) |
  bit(VIRTIO_NET_F_MRG_RXBUF) |
  bit(VIRTIO_F_VERSION_1) |
  bit(VIRTIO_F_ACCESS_PLATFORM) |
  bit(VIRTIO_F_RING_PACKED);

/**
 * What to offer the driver when vhost serves the rings: the device's offer without the
 * ring features this vhost lacks. ACCESS_PLATFORM is never offered (the guest's addresses
 * are physical; vhost would otherwise wait for IOTLB messages we never send). Throws when
 * vhost lacks VERSION_1, which this device requires (legacy drivers are not supported).
 */
export function vhostOffer(deviceFeatures: bigint, vhostFeatures: bigint): bigint {
  if ((vhostFeatures & bit(VIRTIO_F_VERSION_1)) === 0n) {
    throw new RangeError(
      `vhost-net offers features 0x${vhostFeatures.toString(16)} without VIRTIO_F_VERSION_1`,
    );
  }
  const lacking = VHOST_RING_FEATURES & ~vhostFeatures;
  return deviceFeatures & ~lacking & ~bit(VIRTIO_F_ACCESS_PLATFORM) & ~bit(VIRTIO_F_RING_PACKED);
}

/**
 * What to tell vhost (VHOST_SET_FEATURES) once the driver accepted `driverFeatures`: only the
 * ring features (vhost refuses bits it does not know), never dirty logging or vhost-made
 * vnet headers: the TAP carries the 12-byte header itself (TUNSETVNETHDRSZ).
 */
export function vhostAck(driverFeatures: bigint, vhostFeatures: bigint): bigint {
  return (
    driverFeatures &
    vhostFeatures &
    VHOST_RING_FEATURES &
    ~bit(VHOST_F_LOG_ALL) &
    ~bit(VHOST_NET_F_VIRTIO_NET_HDR)
  );
}

/** The guest RAM regions as a vhost memory table (guest-physical → our virtual address). */
export function vhostMemoryTable(memory: GuestMemory): VhostMemoryRegion[] {
  return memory.regions.map((r) => ({
    guestPhysAddr: BigInt(r.start),
    size: BigInt(r.size),
    userspaceAddr: r.hostAddress,
  }));
}

/**
 * Our virtual address of guest range [address, address+length), which must lie in one RAM
 * region (vhost reads each ring part as one user-space range); undefined otherwise.
 */
export function hostAddressOf(
  memory: GuestMemory,
  address: number,
  length: number,
): bigint | undefined {
  for (const r of memory.regions) {
    if (address >= r.start && address + length <= r.start + r.size) {
      return r.hostAddress + BigInt(address - r.start);
    }
  }
  return undefined;
}

/** The calls this path makes on /dev/vhost-net: src/host's VhostNet, or a fake in tests. */
export interface VhostNetHandle {
  setOwner(): void;
  getFeatures(): bigint;
  setFeatures(features: bigint): void;
  setMemTable(regions: readonly VhostMemoryRegion[]): void;
  setVringNum(index: number, num: number): void;
  setVringBase(index: number, base: number): void;
  getVringBase(index: number): number;
  setVringAddr(addr: VhostVringAddr): void;
  setVringKick(index: number, fd: number): void;
  setVringCall(index: number, fd: number): void;
  setVringErr(index: number, fd: number): void;
  setBackend(index: number, fd: number): void;
  close(): void;
}

/** Eventfds for the path: created and signalled through src/host's libc in production. */
export interface EventFds {
  create(): number;
  signal(fd: number): void;
  close(fd: number): void;
}

export interface VhostNetPathOptions {
  handle: VhostNetHandle;
  /** Queue indices in ring order (receive, transmit). */
  queues: readonly number[];
  eventFds: EventFds;
  /** Watch an eventfd on the main thread (FdWatcher.addEventFd: the counter is drained). */
  watchEventFd: (fd: number, onReady: () => void) => void;
  unwatch: (fd: number) => void;
  log: (message: string) => void;
}

/** Counters of the vhost path, merged into the device's metrics (see metrics.ts). */
export type VhostCounters = Pick<
  NetMetricsSnapshot,
  "vhostInterrupts" | "vhostKicksRelayed" | "vhostErrors" | "vhostStarts"
>;

interface Started {
  offload: QueueOffload;
  /** Per ring: the eventfd that wakes the worker. */
  kickFds: number[];
  needsReset: (reason: string) => void;
}

export class VhostNetPath {
  readonly features: bigint;
  readonly counters: VhostCounters = {
    vhostInterrupts: 0,
    vhostKicksRelayed: 0,
    vhostErrors: 0,
    vhostStarts: 0,
  };
  readonly #o: VhostNetPathOptions;
  readonly #callFd: number;
  readonly #errFd: number;
  /** Kick eventfds we made for rings whose transport had no ioeventfd to hand over. */
  readonly #ownKickFds = new Map<number, number>();
  #started: Started | undefined;
  #closed = false;

  /** Take ownership of an open vhost-net handle: set the owner, read its features. */
  constructor(options: VhostNetPathOptions) {
    this.#o = options;
    const { handle } = options;
    handle.setOwner();
    this.features = handle.getFeatures();
    this.#callFd = options.eventFds.create();
    try {
      this.#errFd = options.eventFds.create();
    } catch (e) {
      options.eventFds.close(this.#callFd);
      throw e;
    }
  }

  get running(): boolean {
    return this.#started !== undefined;
  }

  /**
   * Hand the rings to vhost for one activation, with the TAP `tapFd` as backend. Returns why
   * it could not (everything set so far is undone), or undefined.
   */
  start(ctx: {
    memory: GuestMemory;
    features: bigint;
    offload: QueueOffload | undefined;
    needsReset: (reason: string) => void;
    tapFd: number;
  }): string | undefined {
    if (this.#closed) return "vhost-net is closed";
    this.stop();
    const { offload } = ctx;
    if (!offload) return "the transport cannot hand its rings to a kernel backend";
    const { handle, queues } = this.#o;
    const started: Started = { offload, kickFds: [], needsReset: ctx.needsReset };
    try {
      handle.setFeatures(vhostAck(ctx.features, this.features));
      handle.setMemTable(vhostMemoryTable(ctx.memory));
      // Watch before any ring can signal, so no interrupt is lost; stop() unwatches.
      this.#started = started;
      this.#o.watchEventFd(this.#callFd, this.#onCall);
      this.#o.watchEventFd(this.#errFd, this.#onError);
      for (const [ring, queue] of queues.entries()) {
        const layout = offload.rings(queue);
        if (!layout) throw new VhostStartError(`queue ${queue} is not ready`);
        const addr = ringAddresses(ctx.memory, layout, ring);
        handle.setVringNum(ring, layout.size);
        // A fresh activation: the driver starts both rings at index 0 (§2.7).
        handle.setVringBase(ring, 0);
        handle.setVringAddr(addr);
        const kick = offload.takeKickFd(queue) ?? this.#ownKickFd(ring);
        started.kickFds[ring] = kick;
        handle.setVringKick(ring, kick);
        handle.setVringCall(ring, this.#callFd);
        handle.setVringErr(ring, this.#errFd);
      }
      for (const ring of queues.keys()) handle.setBackend(ring, ctx.tapFd);
    } catch (e) {
      this.counters.vhostErrors++;
      this.stop();
      return e instanceof Error ? e.message : String(e);
    }
    this.counters.vhostStarts++;
    // Buffers the driver posted before its kicks reached the worker are looked at now, as
    // QEMU does by starting with the host notifier set.
    for (const fd of started.kickFds) this.#o.eventFds.signal(fd);
    return undefined;
  }

  /** A notification that came to us (an MMIO write, or a watcher event already in flight). */
  kick(ring: number): void {
    const fd = this.#started?.kickFds[ring];
    if (fd === undefined) return;
    this.counters.vhostKicksRelayed++;
    this.#o.eventFds.signal(fd);
  }

  /**
   * Detach the TAP and stop the rings; the worker has finished with guest RAM when this
   * returns (the kernel flushes it on VHOST_NET_SET_BACKEND). Idempotent.
   */
  stop(): void {
    const started = this.#started;
    if (!started) return;
    this.#started = undefined;
    const { handle, queues } = this.#o;
    let detached = true;
    for (const ring of queues.keys())
      if (!this.#quietly(() => handle.setBackend(ring, -1))) detached = false;
    if (!detached) {
      // The worker may still be on the old rings: closing the device is what surely stops it
      // (the kernel flushes and frees the worker on release). This path is then done for.
      this.#o.log("vhost-net would not detach the TAP; closing it");
      this.#quietly(() => this.#o.unwatch(this.#callFd));
      this.#quietly(() => this.#o.unwatch(this.#errFd));
      this.close();
      return;
    }
    for (const ring of queues.keys()) {
      this.#quietly(() => handle.getVringBase(ring));
      this.#quietly(() => handle.setVringKick(ring, -1));
      this.#quietly(() => handle.setVringCall(ring, -1));
      this.#quietly(() => handle.setVringErr(ring, -1));
    }
    this.#quietly(() => this.#o.unwatch(this.#callFd));
    this.#quietly(() => this.#o.unwatch(this.#errFd));
  }

  /** Stop, close /dev/vhost-net and the eventfds. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.stop();
    this.#closed = true;
    this.#quietly(() => this.#o.handle.close());
    const fds = [this.#callFd, this.#errFd, ...this.#ownKickFds.values()];
    for (const fd of fds) this.#quietly(() => this.#o.eventFds.close(fd));
    this.#ownKickFds.clear();
  }

  // The worker wants the driver interrupted: VRING in InterruptStatus, then the irqfd.
  readonly #onCall = (): void => {
    const started = this.#started;
    if (!started) return;
    this.counters.vhostInterrupts++;
    started.offload.usedBuffers(this.#o.queues[0] as number);
  };

  readonly #onError = (): void => {
    const started = this.#started;
    if (!started) return;
    this.counters.vhostErrors++;
    this.#o.log("vhost-net reported a ring error (a descriptor outside guest RAM?)");
    started.needsReset("vhost-net could not use a ring");
  };

  #ownKickFd(ring: number): number {
    let fd = this.#ownKickFds.get(ring);
    if (fd === undefined) {
      fd = this.#o.eventFds.create();
      this.#ownKickFds.set(ring, fd);
    }
    return fd;
  }

  // Teardown continues past a failed call: each later step still releases something.
  /** Run one teardown step; false (counted and logged) when it failed. */
  #quietly(fn: () => unknown): boolean {
    try {
      fn();
      return true;
    } catch (e) {
      this.counters.vhostErrors++;
      this.#o.log(`vhost-net teardown: ${e instanceof Error ? e.message : String(e)}`);
      return false;
    }
  }
}

class VhostStartError extends Error {}

/** vhost_vring_addr for one ring: each part must lie in one RAM region. */
function ringAddresses(memory: GuestMemory, layout: RingLayout, ring: number): VhostVringAddr {
  const part = (name: string, address: number, length: number): bigint => {
    // GUEST-CONTROLLED: ring addresses; the transport checked them, this checks the host side.
    const host = hostAddressOf(memory, address, length);
    if (host === undefined) {
      throw new VhostStartError(
        `ring ${ring}: ${name} 0x${address.toString(16)}+${length} is not in one RAM region`,
      );
    }
    return host;
  };
  return {
    index: ring,
    flags: 0,
    desc: part("descriptor table", layout.descTable, descTableSize(layout.size)),
    used: part("used ring", layout.usedRing, usedRingSize(layout.size)),
    avail: part("available ring", layout.availRing, availRingSize(layout.size)),
    log: 0n,
  };
}
