// virtio-net (virtio 1.2 §5.1, device type 1) on a Linux TAP: one queue pair (receiveq 0,
// transmitq 1). The guest's struct virtio_net_hdr_v1 and the TAP's vnet header are the same
// 12 bytes, so checksum and segmentation offloads pass straight through, and frames move
// with readv/writev between the TAP and guest RAM (iov.ts) with no copy; only the checked
// transmit header is copied (tx.ts).
//
// Transmit: a notify on queue 1 pops at most `queueSize` chains per event-loop turn (the
// rest is deferred with setImmediate), checks each, writes it to the TAP and returns it.
//
// Receive: the VMM's fd watcher calls us while the TAP is readable (level-triggered). We read
// frames until EAGAIN, at most `queueSize` per call (the watcher calls again if more are
// waiting). Receive chains are popped ahead into `#rxChains` and held until a frame fills
// them: one chain per frame, or with VIRTIO_NET_F_MRG_RXBUF as many as a largest possible
// frame needs (num_buffers says how many were used). When the guest has posted too few
// buffers we stop watching the TAP, and frames wait in the kernel's TAP queue (bounded by
// txqueuelen; the kernel drops and counts beyond it) until the guest posts buffers and
// notifies queue 0, which resumes watching. So a guest that stops refilling costs nothing.
//
// TUNSETOFFLOAD is applied in activate(), from the receive offloads the driver accepted:
// the kernel must never hand the guest a frame it cannot take.
//
// Rate limits (rate_limiter.ts), one limiter each way as Firecracker has: a transmit chain
// waits for its tokens before it is written to the TAP; receiving checks that neither bucket
// is in debt before each read and charges the frame's bytes after it (its size is known only
// then), so the average holds and one frame at most overdraws. While receive is held back we
// stop watching the TAP, and frames wait in its kernel queue as they do for a slow guest.
//
// With `vhost` (vhost.ts) the kernel's vhost-net worker serves both rings instead: this
// device then only negotiates, sets the TAP's offloads, starts vhost on activation and stops
// it on reset, and relays the worker's interrupts; its frame counters stay at zero.

import { readFileSync } from "node:fs";
import koffi from "koffi";
import { errnoName } from "../../../host/errors.js";
import * as libc from "../../../host/libc.js";
import { type GuestMemory, IovecList } from "../../../memory/mod.js";
import {
  type DescriptorBuffer,
  type DescriptorChain,
  type QueueHandle,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_NET,
  type VirtioDevice,
  type VirtioDeviceContext,
} from "../../../virtio/device.js";
import { GuestLog } from "../../../virtio/guest_log.js";
import { commonDeviceOptions } from "../../../virtio/options.js";
import { type LimitConfig, RateLimiter } from "../rate_limiter.js";
import {
  ETH_MAX_FRAME,
  encodeNetConfig,
  formatMac,
  generateMac,
  MAX_PACKET,
  parseMac,
  readConfigBytes,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_NUM_BUFFERS,
  VIRTIO_NET_HDR_SIZE,
} from "./config.js";
import { NetMetrics, type NetMetricsSnapshot } from "./metrics.js";
import { type VirtioNetState, validateNetState } from "./state.js";
import { EAGAIN, Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, validTapName } from "./tap.js";
import { checkTxChain } from "./tx.js";
import { type EventFds, type VhostNetHandle, VhostNetPath, vhostOffer } from "./vhost.js";

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
export const DEFAULT_QUEUE_SIZE = 256;

export interface VirtioNetOptions {
  /** TAP interface name: created if missing (needs CAP_NET_ADMIN), attached to if it exists. */
  tap: string;
  /** Unicast MAC "52:54:00:12:34:56"; default 52:54:00 plus three random octets. */
  mac?: string;
  /** Call `onReady` on the main thread while `fd` is readable (the VMM's FdWatcher.addFd). */
  watch: (fd: number, onReady: () => void) => void;
  /** Stop calling back for `fd` (FdWatcher.removeFd). */
  unwatch: (fd: number) => void;
  /** Name for logs and metrics. Default "virtio-net". */
  name?: string;
  /** Maximum size of each queue (a power of two, 2..32768). Default 256. */
  queueSize?: number;
  /** Where refusals and TAP errors are reported. Default: stderr. */
  log?: (message: string) => void;
  /** Run leftover transmit work later; default setImmediate. */
  defer?: (fn: () => void) => void;
  /**
   * An open /dev/vhost-net (src/host's VhostNet) to serve the rings in the kernel; the device
   * owns it from here on, and closes it on failure too. Needs `watchEventFd`.
   */
  vhost?: VhostNetHandle;
  /** Call `onReady` on the main thread each time eventfd `fd` is signalled (FdWatcher.addEventFd). */
  watchEventFd?: (fd: number, onReady: () => void) => void;
  /** How the vhost path makes and signals eventfds; default libc's eventfd. */
  eventFds?: EventFds;
  /** Limits on what the guest receives and what it sends (not with vhost). */
  limits?: NetLimits;
}

export interface NetLimits {
  rx?: LimitConfig;
  tx?: LimitConfig;
}

/** What limits() reports: each direction's buckets and the time it was held back. */
export interface NetLimitsReport {
  rx: LimitConfig & { throttledMs: number; throttledRequests: number };
  tx: LimitConfig & { throttledMs: number; throttledRequests: number };
}

/** True when either direction has a bucket (an empty {} is no limit). */
function limited(l: NetLimits | undefined): boolean {
  return [l?.rx, l?.tx].some((c) => c?.bandwidth !== undefined || c?.ops !== undefined);
}

const VHOST_UNLIMITED =
  "rate limits need the user-space path: with vhost=on the kernel moves the frames, past the VMM's meters";

const libcEventFds: EventFds = {
  create: () => libc.eventfd(0, libc.EFD_NONBLOCK),
  signal: (fd) => void libc.write(fd, new BigUint64Array([1n])),
  close: (fd) => libc.close(fd),
};

const bit = (n: bigint): bigint => 1n << n;
const has = (features: bigint, n: bigint): boolean => (features & bit(n)) !== 0n;

function cannot(what: string): string {
  return `Cannot create virtio-net: ${what}`;
}

export class VirtioNet implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_NET;
  readonly name: string;
  readonly features: bigint;
  static readonly FEATURES =
    bit(VIRTIO_F_VERSION_1) |
    bit(VIRTIO_F_INDIRECT_DESC) |
    bit(VIRTIO_F_EVENT_IDX) |
    bit(VIRTIO_NET_F_MAC) |
    bit(VIRTIO_NET_F_STATUS) |
    bit(VIRTIO_NET_F_MRG_RXBUF) |
    bit(VIRTIO_NET_F_CSUM) |
    bit(VIRTIO_NET_F_GUEST_CSUM) |
    bit(VIRTIO_NET_F_HOST_TSO4) |
    bit(VIRTIO_NET_F_HOST_TSO6) |
    bit(VIRTIO_NET_F_GUEST_TSO4) |
    bit(VIRTIO_NET_F_GUEST_TSO6);
  readonly queueSizes: readonly number[];
  /** The MAC in config space, "xx:xx:xx:xx:xx:xx". */
  readonly mac: string;
  readonly tapName: string;

  #tap: Tap;
  #vhost: VhostNetPath | undefined;
  #watch: (fd: number, onReady: () => void) => void;
  #unwatch: (fd: number) => void;
  #defer: (fn: () => void) => void;
  readonly #guestLog: GuestLog;
  #metrics = new NetMetrics();
  #configBytes: Uint8Array;
  #queueSize: number;
  #closed = false;
  // Called by the VMM's watcher: nothing may escape into its epoll loop.
  readonly #onReadable = (): void => {
    try {
      this.#receive();
    } catch (e) {
      this.#warn(`receive failed: ${String(e)}`);
    }
  };

  // Transmit header scratch in memory koffi owns, so writev can point at it.
  #hdrPtr: unknown;
  #hdr: Uint8Array;
  #hdrAddress: bigint;
  #rxIov = new IovecList();
  #txIov = new IovecList();

  // Live state between activate() and reset().
  #memory: GuestMemory | undefined;
  #rxq: QueueHandle | undefined;
  #txq: QueueHandle | undefined;
  #features = 0n;
  #mergeable = false;
  /** Bytes of receive buffers to have in hand before reading: a largest possible frame. */
  #rxWant = VIRTIO_NET_HDR_SIZE + ETH_MAX_FRAME;
  #rxChains: DescriptorChain[] = [];
  #rxBytes = 0;
  #watching = false;
  #txScheduled = false;
  #generation = 0;
  readonly #rxLimiter: RateLimiter;
  readonly #txLimiter: RateLimiter;
  /** A transmit chain popped and waiting for the limiter's tokens. */
  #txHeld: DescriptorChain | undefined;
  #txHeldSince = 0;
  #txTimer: NodeJS.Timeout | undefined;
  /** Set while receiving waits for the limiter (the TAP is not watched meanwhile). */
  #rxTimer: NodeJS.Timeout | undefined;
  #rxHeldSince = 0;

  constructor(options: VirtioNetOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(cannot("options must be an object"));
    }
    const { tap, watch, unwatch, vhost, watchEventFd } = options;
    // The vhost handle is ours from the call on: every failure below closes it.
    const refuse = (message: string): never => {
      closeQuietly(vhost);
      throw new TypeError(cannot(message));
    };
    if (typeof tap !== "string" || !validTapName(tap)) {
      refuse(`options.tap ${JSON.stringify(tap)} is not an interface name (1..15 characters)`);
    }
    let mac: Uint8Array | undefined;
    if (options.mac === undefined) {
      mac = generateMac();
    } else {
      mac = typeof options.mac === "string" ? parseMac(options.mac) : undefined;
      if (!mac) {
        refuse(
          `options.mac ${JSON.stringify(options.mac)} is not a unicast MAC address like 52:54:00:12:34:56`,
        );
      }
    }
    if (typeof watch !== "function") refuse("options.watch must be a function");
    if (typeof unwatch !== "function") refuse("options.unwatch must be a function");
    if (vhost !== undefined && typeof watchEventFd !== "function") {
      refuse("options.watchEventFd must be a function when options.vhost is given");
    }
    if (vhost !== undefined && limited(options.limits)) refuse(VHOST_UNLIMITED);
    let rxLimiter: RateLimiter | undefined;
    let txLimiter: RateLimiter | undefined;
    try {
      rxLimiter = new RateLimiter(options.limits?.rx ?? {});
      txLimiter = new RateLimiter(options.limits?.tx ?? {});
    } catch (e) {
      refuse(`options.limits: ${e instanceof Error ? e.message : String(e)}`);
    }
    let common: ReturnType<typeof commonDeviceOptions>;
    try {
      common = commonDeviceOptions(
        options,
        { name: "virtio-net", queueSize: DEFAULT_QUEUE_SIZE },
        cannot,
      );
    } catch (e) {
      closeQuietly(vhost);
      throw e;
    }
    const { name, queueSize, log } = common;

    this.name = name;
    this.tapName = tap;
    this.mac = formatMac(mac as Uint8Array);
    this.queueSizes = [queueSize, queueSize];
    this.#queueSize = queueSize;
    this.#watch = watch;
    this.#unwatch = unwatch;
    this.#guestLog = new GuestLog(this.name, log);
    this.#defer = options.defer ?? ((fn) => setImmediate(fn));
    this.#rxLimiter = rxLimiter as RateLimiter;
    this.#txLimiter = txLimiter as RateLimiter;
    this.#configBytes = encodeNetConfig(mac as Uint8Array, true);
    this.#hdrPtr = koffi.alloc("uint8_t", VIRTIO_NET_HDR_SIZE);
    this.#hdr = new Uint8Array(koffi.view(this.#hdrPtr, VIRTIO_NET_HDR_SIZE));
    this.#hdrAddress = koffi.address(this.#hdrPtr);
    try {
      this.#tap = Tap.open(tap);
    } catch (e) {
      koffi.free(this.#hdrPtr);
      closeQuietly(vhost);
      throw e;
    }
    this.features = VirtioNet.FEATURES;
    if (vhost === undefined || watchEventFd === undefined) return;
    try {
      const path = new VhostNetPath({
        handle: vhost,
        queues: [RX_QUEUE, TX_QUEUE],
        eventFds: options.eventFds ?? libcEventFds,
        watchEventFd,
        unwatch,
        log: (m) => this.#warn(m),
      });
      this.#vhost = path;
      this.features = vhostOffer(VirtioNet.FEATURES, path.features);
    } catch (e) {
      this.#vhost?.close();
      closeQuietly(vhost);
      this.#tap.close();
      koffi.free(this.#hdrPtr);
      throw e;
    }
  }

  /** Recreate a device from a snapshot's state, reattaching to its TAP by name. */
  static fromState(
    state: unknown,
    extra: Pick<VirtioNetOptions, "watch" | "unwatch"> & Partial<VirtioNetOptions>,
  ): VirtioNet {
    const s = validateNetState(state);
    return new VirtioNet({
      ...extra,
      tap: s.tap,
      mac: s.mac,
      name: s.name,
      queueSize: s.queueSize,
    });
  }

  state(): VirtioNetState {
    return {
      version: 1,
      name: this.name,
      tap: this.tapName,
      mac: this.mac,
      queueSize: this.#queueSize,
    };
  }

  /** A copy of the counters (the vhost ones stay 0 on the user-space path). */
  metrics(): NetMetricsSnapshot {
    return { ...this.#metrics.snapshot(), ...this.#vhost?.counters };
  }

  /** Replace the limits at runtime; a direction left out is unlimited. */
  setLimits(limits: NetLimits): void {
    if (this.#vhost && limited(limits)) throw new Error(VHOST_UNLIMITED);
    // Both built before either is applied: a bad one changes nothing.
    const rx = new RateLimiter(limits.rx ?? {});
    const tx = new RateLimiter(limits.tx ?? {});
    this.#rxLimiter.configure(rx.config());
    this.#txLimiter.configure(tx.config());
    // What was held waits no longer than the new limits say.
    if (this.#txTimer) {
      clearTimeout(this.#txTimer);
      this.#txTimer = undefined;
      this.#transmitSafely();
    }
    if (this.#rxTimer) {
      clearTimeout(this.#rxTimer);
      this.#rxTimer = undefined;
      this.#rxLimiter.throttledMs += performance.now() - this.#rxHeldSince;
      this.#onReadable();
    }
  }

  limits(): NetLimitsReport {
    const report = (l: RateLimiter) => ({
      ...l.config(),
      throttledMs: Math.round(l.throttledMs),
      throttledRequests: l.throttledRequests,
    });
    return { rx: report(this.#rxLimiter), tx: report(this.#txLimiter) };
  }

  /** Which path carries frames: "vhost" (the kernel's worker) or "user" (this process). */
  get backend(): "vhost" | "user" {
    return this.#vhost ? "vhost" : "user";
  }

  /** The TAP's fd (for tests and diagnostics); -1 once closed. */
  get tapFd(): number {
    return this.#tap.fd;
  }

  /** True while the device asks the watcher for TAP readiness. */
  get watching(): boolean {
    return this.#watching;
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.#configBytes, offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: mac is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR; ignored.
    this.#metrics.configWrites++;
    this.#warn(`config write of ${data.length} bytes at ${offset} ignored (read-only)`);
  }

  activate(ctx: VirtioDeviceContext): void {
    this.#generation++;
    if (this.#closed) {
      this.#warn("activated after close");
      ctx.needsReset(`${this.name} is closed`);
      return;
    }
    const rxq = ctx.queues[RX_QUEUE];
    const txq = ctx.queues[TX_QUEUE];
    if (!rxq || !txq) {
      this.#warn("activated without both queues");
      ctx.needsReset(`${this.name} needs a receive and a transmit queue`);
      return;
    }
    const f = ctx.features;
    // The spec ties GUEST_TSO* to GUEST_CSUM (§5.1.3.1); a driver that breaks the rule gets
    // no segmentation offload rather than frames it may mishandle.
    let offload = 0;
    if (has(f, VIRTIO_NET_F_GUEST_CSUM)) {
      offload |= TUN_F_CSUM;
      if (has(f, VIRTIO_NET_F_GUEST_TSO4)) offload |= TUN_F_TSO4;
      if (has(f, VIRTIO_NET_F_GUEST_TSO6)) offload |= TUN_F_TSO6;
    }
    try {
      this.#tap.setOffload(offload);
    } catch (e) {
      // The TAP keeps plain frames (the offloads set at open are none), which any driver takes.
      this.#metrics.tapErrors++;
      this.#warn(String(e instanceof Error ? e.message : e));
      offload = 0;
    }
    if (this.#vhost) {
      // The TAP's vnet header stays 12 bytes (set at open): with VERSION_1, which the
      // transport requires, that is the negotiated header size with or without MRG_RXBUF.
      const why = this.#vhost.start({
        memory: ctx.memory,
        features: f,
        offload: ctx.offload,
        needsReset: ctx.needsReset,
        tapFd: this.#tap.fd,
      });
      if (why !== undefined) {
        this.#warn(`cannot start vhost-net: ${why}`);
        ctx.needsReset(`${this.name}: vhost-net did not start`);
      }
      return;
    }
    this.#memory = ctx.memory;
    this.#rxq = rxq;
    this.#txq = txq;
    this.#features = f;
    this.#mergeable = has(f, VIRTIO_NET_F_MRG_RXBUF);
    this.#rxWant =
      VIRTIO_NET_HDR_SIZE +
      ((offload & (TUN_F_TSO4 | TUN_F_TSO6)) !== 0
        ? MAX_PACKET - VIRTIO_NET_HDR_SIZE
        : ETH_MAX_FRAME);
    this.#rxChains = [];
    this.#rxBytes = 0;
    this.#startWatching();
  }

  queueNotify(index: number): void {
    try {
      // GUEST-CONTROLLED: the queue index written to QueueNotify.
      if (this.#vhost) {
        // The worker serves the rings; a notify that reached us is passed on to it.
        if (index === RX_QUEUE || index === TX_QUEUE) this.#vhost.kick(index);
        else this.#metrics.invalidNotifies++;
      } else if (index === RX_QUEUE && this.#rxq) {
        // New receive buffers: take frames now, and watch again if we had stopped.
        this.#receive();
      } else if (index === TX_QUEUE && this.#txq) {
        this.#transmit();
      } else {
        this.#metrics.invalidNotifies++;
        this.#warn(`notify for queue ${index} ignored`);
      }
    } catch (e) {
      // Nothing below should throw; if something does, the vCPU must not see it.
      this.#warn(`queue processing failed: ${String(e)}`);
    }
  }

  reset(): void {
    this.#generation++;
    this.#vhost?.stop();
    clearTimeout(this.#txTimer);
    clearTimeout(this.#rxTimer);
    this.#txTimer = undefined;
    this.#rxTimer = undefined;
    this.#txHeld = undefined;
    this.#stopWatching();
    this.#memory = undefined;
    this.#rxq = undefined;
    this.#txq = undefined;
    this.#features = 0n;
    this.#rxChains = [];
    this.#rxBytes = 0;
  }

  /** Reset, stop watching and close the TAP (a TAP we created disappears). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.reset();
    this.#vhost?.close();
    this.#tap.close();
    koffi.free(this.#hdrPtr);
  }

  /**
   * Frames the kernel dropped because its TAP queue was full (the guest was not taking them):
   * the TAP's tx_dropped from sysfs, or undefined when unreadable.
   */
  hostQueueDropped(): number | undefined {
    try {
      const text = readFileSync(`/sys/class/net/${this.tapName}/statistics/tx_dropped`, "utf8");
      const n = Number.parseInt(text, 10);
      return Number.isSafeInteger(n) ? n : undefined;
    } catch {
      return undefined;
    }
  }

  #warn(message: string): void {
    this.#guestLog.warn(message);
  }

  #startWatching(): void {
    if (this.#watching || this.#closed || this.#tap.fd < 0) return;
    try {
      this.#watch(this.#tap.fd, this.#onReadable);
      this.#watching = true;
    } catch (e) {
      this.#warn(`cannot watch TAP ${this.tapName}: ${String(e)}`);
    }
  }

  #stopWatching(): void {
    if (!this.#watching) return;
    this.#watching = false;
    try {
      this.#unwatch(this.#tap.fd);
    } catch (e) {
      this.#warn(`cannot unwatch TAP ${this.tapName}: ${String(e)}`);
    }
  }

  // ---- transmit ----

  #transmitSafely(): void {
    try {
      this.#transmit();
    } catch (e) {
      this.#warn(`transmit failed: ${String(e)}`);
    }
  }

  #transmit(): void {
    const queue = this.#txq;
    const memory = this.#memory;
    if (!queue || !memory || this.#txTimer) return;
    const limiter = this.#txLimiter;
    const m = this.#metrics;
    let chains = this.#queueSize;
    let more = false;
    let used = false;
    for (;;) {
      if (chains === 0) {
        more = true;
        break;
      }
      if (queue.broken) break;
      const chain = this.#txHeld ?? queue.pop();
      if (!chain) break;
      if (limiter.limited) {
        const wait = limiter.consume(Math.max(0, chain.readableLength - VIRTIO_NET_HDR_SIZE));
        if (wait > 0) {
          if (!this.#txHeld) {
            this.#txHeld = chain;
            this.#txHeldSince = performance.now();
            limiter.throttledRequests++;
          }
          const generation = this.#generation;
          this.#txTimer = setTimeout(() => {
            this.#txTimer = undefined;
            if (generation === this.#generation) this.#transmitSafely();
          }, Math.ceil(wait));
          break;
        }
        if (this.#txHeld) limiter.throttledMs += performance.now() - this.#txHeldSince;
      }
      this.#txHeld = undefined;
      chains--;
      const reason = checkTxChain(memory, chain, this.#features, this.#hdr);
      if (reason === undefined && !this.#txIovFor(memory, chain)) {
        m.txRefused++;
        this.#warn(`transmit chain ${chain.head} refused: more than 1023 segments`);
      } else if (reason !== undefined) {
        m.txRefused++;
        this.#warn(`transmit chain ${chain.head} refused: ${reason}`);
      } else {
        const n = this.#tap.writev(this.#txIov.iov, this.#txIov.count);
        if (n >= 0) {
          m.txFrames++;
          m.txBytes += chain.readableLength - VIRTIO_NET_HDR_SIZE;
        } else {
          m.txDropped++;
          if (-n !== EAGAIN) {
            m.tapErrors++;
            this.#warn(`TAP ${this.tapName}: writev failed: ${errnoName(-n)}`);
          }
        }
      }
      queue.pushUsed(chain.head, 0);
      used = true;
    }
    if (used) queue.notifyIfNeeded();
    if (more && !this.#txScheduled) {
      m.txDeferred++;
      this.#txScheduled = true;
      const generation = this.#generation;
      this.#defer(() => {
        this.#txScheduled = false;
        if (generation === this.#generation) this.#transmitSafely();
      });
    }
  }

  /** The checked header copy, then the chain's readable bytes after the guest's header. */
  #txIovFor(memory: GuestMemory, chain: DescriptorChain): boolean {
    const iov = this.#txIov;
    iov.clear();
    iov.addHost(this.#hdrAddress, VIRTIO_NET_HDR_SIZE);
    let skip = VIRTIO_NET_HDR_SIZE;
    for (const b of chain.readable) {
      const k = Math.min(skip, b.length);
      skip -= k;
      if (!iov.addGuest(memory, b.address + k, b.length - k)) return false;
    }
    return true;
  }

  // ---- receive ----

  #receive(): void {
    const queue = this.#rxq;
    const memory = this.#memory;
    if (!queue || !memory) {
      this.#stopWatching();
      return;
    }
    // Held back by the limiter: its timer resumes; new buffers change nothing until then.
    if (this.#rxTimer) return;
    const m = this.#metrics;
    const limiter = this.#rxLimiter;
    let used = false;
    let watch = true;
    try {
      for (let frames = 0; frames < this.#queueSize; frames++) {
        if (limiter.limited) {
          const wait = limiter.admit();
          if (wait > 0) {
            watch = false;
            limiter.throttledRequests++;
            this.#rxHeldSince = performance.now();
            const generation = this.#generation;
            this.#rxTimer = setTimeout(() => {
              this.#rxTimer = undefined;
              limiter.throttledMs += performance.now() - this.#rxHeldSince;
              if (generation === this.#generation) this.#onReadable();
            }, Math.ceil(wait));
            break;
          }
        }
        if (!this.#haveRxBuffers(queue)) {
          m.rxNoBuffers++;
          watch = false;
          break;
        }
        const iov = this.#rxIovFor(memory);
        const n = this.#tap.readv(iov.iov, iov.count);
        if (n < 0) {
          if (-n !== EAGAIN) {
            // A persistent error would make a level-triggered watcher call us forever:
            // stop until the guest next posts buffers.
            m.tapErrors++;
            this.#warn(`TAP ${this.tapName}: readv failed: ${errnoName(-n)}`);
            watch = false;
          }
          break;
        }
        if (n > iov.bytes || n < VIRTIO_NET_HDR_SIZE) {
          // Truncated (the TAP reports the full length) or nonsense: the buffers were only
          // scribbled on, so they stay ours for the next frame.
          m.rxDropped++;
          this.#warn(`received frame of ${n} bytes dropped (${iov.bytes} bytes of buffers)`);
          continue;
        }
        this.#deliver(memory, queue, n);
        used = true;
        m.rxFrames++;
        m.rxBytes += n - VIRTIO_NET_HDR_SIZE;
        limiter.charge(n - VIRTIO_NET_HDR_SIZE);
      }
    } finally {
      if (used) queue.notifyIfNeeded();
      if (watch) this.#startWatching();
      else this.#stopWatching();
    }
  }

  /** Pop receive chains until a largest frame fits; false when the guest has too few posted. */
  #haveRxBuffers(queue: QueueHandle): boolean {
    let refusals = this.#queueSize;
    for (;;) {
      if (this.#mergeable ? this.#rxBytes >= this.#rxWant : this.#rxChains.length > 0) return true;
      const chain = queue.broken ? undefined : queue.pop();
      if (!chain) break;
      // GUEST-CONTROLLED: receive chains must be device-writable only (§5.1.6.3) and hold
      // at least a header (§5.1.6.3.1).
      if (chain.readable.length > 0 || chain.writableLength < VIRTIO_NET_HDR_SIZE) {
        this.#metrics.rxRefused++;
        this.#warn(
          `receive chain ${chain.head} refused: ${chain.readable.length > 0 ? "device-readable buffers" : `${chain.writableLength} bytes`}`,
        );
        queue.pushUsed(chain.head, 0);
        if (--refusals === 0) break;
        continue;
      }
      this.#rxChains.push(chain);
      this.#rxBytes += chain.writableLength;
    }
    // Ring empty: with mergeable buffers, a full-size ordinary frame is enough to go on (only
    // an offloaded giant could then be truncated); waiting for more could wait forever.
    if (this.#mergeable) return this.#rxBytes >= VIRTIO_NET_HDR_SIZE + ETH_MAX_FRAME;
    return this.#rxChains.length > 0;
  }

  #rxIovFor(memory: GuestMemory): IovecList {
    const iov = this.#rxIov;
    iov.clear();
    const chains = this.#mergeable ? this.#rxChains : this.#rxChains.slice(0, 1);
    outer: for (const chain of chains) {
      for (const b of chain.writable) {
        if (!iov.addGuest(memory, b.address, b.length)) break outer;
      }
      if (iov.bytes >= this.#rxWant) break;
    }
    return iov;
  }

  /** Return the chains holding an `n`-byte packet (header included), setting num_buffers. */
  #deliver(memory: GuestMemory, queue: QueueHandle, n: number): void {
    let left = n;
    let count = 0;
    while (left > 0 && count < this.#rxChains.length) {
      const chain = this.#rxChains[count] as DescriptorChain;
      left -= Math.min(left, chain.writableLength);
      count++;
    }
    const first = this.#rxChains[0] as DescriptorChain;
    // With VERSION_1 the header always has num_buffers; 1 without MRG_RXBUF (§5.1.6.4).
    writeU16At(memory, first.writable, VIRTIO_NET_HDR_NUM_BUFFERS, count);
    left = n;
    for (let i = 0; i < count; i++) {
      const chain = this.#rxChains[i] as DescriptorChain;
      const k = Math.min(left, chain.writableLength);
      queue.pushUsed(chain.head, k);
      left -= k;
      this.#rxBytes -= chain.writableLength;
    }
    this.#rxChains.splice(0, count);
  }
}

function closeQuietly(handle: VhostNetHandle | undefined): void {
  try {
    handle?.close();
  } catch {
    // best effort: the error being reported says what went wrong
  }
}

/** Write a little-endian u16 at byte `offset` of a list of buffers (it may straddle two). */
function writeU16At(
  memory: GuestMemory,
  buffers: readonly DescriptorBuffer[],
  offset: number,
  value: number,
): void {
  for (let j = 0; j < 2; j++) {
    let at = offset + j;
    for (const b of buffers) {
      if (at < b.length) {
        memory.writeU8(b.address + at, (value >> (8 * j)) & 0xff);
        break;
      }
      at -= b.length;
    }
  }
}
