// virtio-balloon (virtio 1.2 §5.5, device type 5): the host sets a target (num_pages, in
// 4 KiB pages) and the guest driver gives that many pages back through the inflateq and
// takes them again through the deflateq, reporting its progress in `actual`. Inflated
// pages are dropped from the host with madvise(MADV_DONTNEED) on guest RAM, so the VMM's
// resident memory falls; a page the guest touches again later simply faults in as zeros
// (anonymous memory), which is why a deflate needs only bookkeeping and
// VIRTIO_BALLOON_F_MUST_TELL_HOST is not offered. VIRTIO_BALLOON_F_DEFLATE_ON_OOM lets the
// guest deflate under memory pressure instead of OOM-killing.
//
// Every PFN is guest-controlled: each must name a 4 KiB page wholly inside guest RAM or it
// is refused and counted; adjacent PFNs are coalesced into one discard. Which pages are in
// the balloon is a bitmap over guest RAM (one bit a page: 512 bytes for 16 MiB, 2 MiB for
// 64 GiB), so the bookkeeping is bounded by RAM size whatever the guest sends. One
// event-loop turn handles at most `queueSize` chains and 64 Ki PFNs per queue; the rest
// waits for a later turn, so a guest cannot make the main thread spin.
//
// Statistics (VIRTIO_BALLOON_F_STATS_VQ, §5.5.6.3): the driver posts one buffer of
// (le16 tag, le64 value) entries; the device keeps the values and holds the buffer;
// requestStats() hands it back, which is the device's way of asking for fresh numbers.

import type { GuestMemory } from "../../../memory/mod.js";
import {
  type DescriptorChain,
  type QueueHandle,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BALLOON,
  type VirtioDevice,
  type VirtioDeviceContext,
} from "../../../virtio/device.js";
import { GuestLog } from "../../../virtio/guest_log.js";
import {
  BALLOON_CONFIG_SIZE,
  BALLOON_PAGE_SIZE,
  BALLOON_STAT_NAMES,
  DEFLATEQ,
  INFLATEQ,
  OFF_ACTUAL,
  OFF_NUM_PAGES,
  STAT_ENTRY_BYTES,
  STATSQ,
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_STATS_VQ,
} from "./config.js";
import { BalloonMetrics, type BalloonMetricsSnapshot } from "./metrics.js";

export const BALLOON_QUEUE_SIZE = 256;
/** Most PFN bytes in one inflate/deflate chain (Linux sends 256 PFNs, 1 KiB, at a time). */
export const BALLOON_MAX_CHAIN_BYTES = 64 * 1024;
/** Most PFNs handled per queue per event-loop turn. */
export const BALLOON_PFNS_PER_TURN = 64 * 1024;
/** Most bytes in a statistics buffer (Linux sends 16 entries, 160 bytes). */
export const BALLOON_MAX_STATS_BYTES = 64 * STAT_ENTRY_BYTES;
const MAX_U32 = 0xffff_ffff;

export interface VirtioBalloonOptions {
  /** Name for logs and metrics. Default "virtio-balloon0". */
  name?: string;
  /** Where refusals and host errors are reported. Default: stderr. */
  log?: (message: string) => void;
  /** Maximum size of each queue (a power of two, 2..32768). Default 256. */
  queueSize?: number;
  /** PFNs handled per queue per event-loop turn. Default 64 Ki. */
  pfnsPerTurn?: number;
  /** Run leftover work later; default setImmediate. */
  defer?: (fn: () => void) => void;
}

/** What the host knows about the balloon and the guest's memory. */
export interface BalloonStats {
  /** The host's target (num_pages), in 4 KiB pages. */
  targetPages: number;
  /** What the driver last wrote to `actual`, in 4 KiB pages. */
  actualPages: number;
  /** Pages in the balloon now by the device's own count (discarded, not yet deflated). */
  inflatedPages: number;
  /** Latest guest statistics by name (bytes for *_memory and disk_caches, else counts). */
  guest: Record<string, number>;
  /** Statistics buffers received so far, and when the last one came (ms since the epoch). */
  statsUpdates: number;
  statsUpdatedAt: number | undefined;
  /** True while the guest holds the buffer returned by requestStats(). */
  statsRequested: boolean;
}

function cannot(what: string): string {
  return `Cannot create virtio-balloon: ${what}`;
}

const bit = (n: bigint): bigint => 1n << n;

export class VirtioBalloon implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BALLOON;
  readonly name: string;
  readonly features =
    bit(VIRTIO_F_VERSION_1) |
    bit(VIRTIO_F_INDIRECT_DESC) |
    bit(VIRTIO_F_EVENT_IDX) |
    bit(VIRTIO_BALLOON_F_STATS_VQ) |
    bit(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
  readonly queueSizes: readonly number[];

  readonly #defer: (fn: () => void) => void;
  readonly #pfnsPerTurn: number;
  readonly #metrics = new BalloonMetrics();
  readonly #guestLog: GuestLog;
  readonly #config = new Uint8Array(BALLOON_CONFIG_SIZE);
  readonly #configView = new DataView(this.#config.buffer);
  /** PFN and stats buffers are copied here (once per chain) before they are parsed. */
  readonly #scratch = new Uint8Array(BALLOON_MAX_CHAIN_BYTES);
  readonly #scratchView = new DataView(this.#scratch.buffer);

  // Which pages are in the balloon: one bit per 4 KiB page of guest RAM, regions in order.
  #bitmapFor: GuestMemory | undefined;
  #bitmap = new Uint8Array(0);
  #regionStarts: number[] = [];
  #regionEnds: number[] = [];
  #regionBase: number[] = [];
  #inflated = 0;

  #guest: Record<string, number> = {};
  #statsUpdates = 0;
  #statsUpdatedAt: number | undefined;

  // Live state between activate() and reset().
  #ctx: VirtioDeviceContext | undefined;
  #statsHeld: DescriptorChain | undefined;
  #statsRequested = false;
  #scheduled = [false, false];

  constructor(options: VirtioBalloonOptions = {}) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(cannot("options must be an object"));
    }
    const name = options.name ?? "virtio-balloon0";
    if (typeof name !== "string" || name.length === 0) {
      throw new TypeError(cannot("options.name must be a non-empty string"));
    }
    const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
    if (typeof log !== "function") throw new TypeError(cannot("options.log must be a function"));
    const queueSize = options.queueSize ?? BALLOON_QUEUE_SIZE;
    if (
      !Number.isSafeInteger(queueSize) ||
      queueSize < 2 ||
      queueSize > 32768 ||
      (queueSize & (queueSize - 1)) !== 0
    ) {
      throw new RangeError(cannot(`queueSize ${queueSize} is not a power of two in 2..32768`));
    }
    const pfnsPerTurn = options.pfnsPerTurn ?? BALLOON_PFNS_PER_TURN;
    if (!Number.isSafeInteger(pfnsPerTurn) || pfnsPerTurn <= 0) {
      throw new RangeError(cannot(`pfnsPerTurn ${pfnsPerTurn} is not a positive integer`));
    }
    this.name = name;
    this.#guestLog = new GuestLog(this.name, log);
    this.#defer = options.defer ?? ((fn) => setImmediate(fn));
    this.#pfnsPerTurn = pfnsPerTurn;
    this.queueSizes = [queueSize, queueSize, queueSize];
  }

  /** A copy of the device's counters. */
  metrics(): BalloonMetricsSnapshot {
    return this.#metrics.snapshot();
  }

  /** The balloon's state and the guest's latest statistics. */
  stats(): BalloonStats {
    return {
      targetPages: this.#configView.getUint32(OFF_NUM_PAGES, true),
      actualPages: this.#configView.getUint32(OFF_ACTUAL, true),
      inflatedPages: this.#inflated,
      guest: { ...this.#guest },
      statsUpdates: this.#statsUpdates,
      statsUpdatedAt: this.#statsUpdatedAt,
      statsRequested: this.#statsRequested,
    };
  }

  /**
   * Ask the guest to hold `pages` 4 KiB pages in the balloon: num_pages changes and, when
   * the driver is live, a configuration change interrupt follows (§5.5.6).
   */
  setTarget(pages: number): void {
    if (typeof pages !== "number" || !Number.isSafeInteger(pages) || pages < 0 || pages > MAX_U32) {
      throw new RangeError(`Cannot set the balloon target: ${String(pages)} is not in 0..2^32-1`);
    }
    if (pages === this.#configView.getUint32(OFF_NUM_PAGES, true)) return;
    this.#configView.setUint32(OFF_NUM_PAGES, pages, true);
    this.#ctx?.interrupt.configChanged();
  }

  /**
   * Ask the guest for fresh statistics by returning the buffer it posted (§5.5.6.3).
   * False when there is nothing to return: the driver has posted no buffer (yet, or it
   * did not negotiate VIRTIO_BALLOON_F_STATS_VQ), or an earlier request is unanswered.
   */
  requestStats(): boolean {
    const chain = this.#statsHeld;
    const q = this.#ctx?.queues[STATSQ];
    if (!chain || !q) return false;
    this.#statsHeld = undefined;
    this.#statsRequested = true;
    q.pushUsed(chain.head, 0);
    q.notifyIfNeeded();
    return true;
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    // GUEST-CONTROLLED: offset and length of a config read.
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= BALLOON_CONFIG_SIZE) return;
    const n = Math.min(data.length, BALLOON_CONFIG_SIZE - offset);
    data.set(this.#config.subarray(offset, offset + n));
  }

  writeConfig(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: only `actual` (bytes 4..7) is the driver's to write (§5.5.4).
    if (
      !Number.isSafeInteger(offset) ||
      offset < OFF_ACTUAL ||
      data.length === 0 ||
      offset + data.length > OFF_ACTUAL + 4
    ) {
      this.#metrics.refusedConfigWrites++;
      this.#warn(`refused config write of ${data.length} bytes at offset ${offset}`);
      return;
    }
    this.#config.set(data, offset);
  }

  activate(ctx: VirtioDeviceContext): void {
    this.#ctx = ctx;
    this.#statsRequested = false;
    this.#prepareBitmap(ctx.memory);
    // Linux posts its stats buffer (and may queue PFNs) before DRIVER_OK, when the
    // transport drops the notification: look at every ring now.
    this.#guard(() => {
      this.#servePages(INFLATEQ);
      this.#servePages(DEFLATEQ);
      this.#serveStats();
    });
  }

  queueNotify(index: number): void {
    if (!this.#ctx) {
      this.#metrics.invalidNotifies++;
      return;
    }
    if (index === INFLATEQ || index === DEFLATEQ) this.#guard(() => this.#servePages(index));
    else if (index === STATSQ) this.#guard(() => this.#serveStats());
    else this.#metrics.invalidNotifies++;
  }

  reset(): void {
    // The driver's balloon is gone with it: the pages were discarded and read as zeros, so
    // they are simply the guest's again. The host's target stays.
    this.#ctx = undefined;
    this.#statsHeld = undefined;
    this.#statsRequested = false;
    this.#bitmap.fill(0);
    this.#inflated = 0;
    this.#configView.setUint32(OFF_ACTUAL, 0, true);
  }

  #prepareBitmap(memory: GuestMemory): void {
    if (this.#bitmapFor === memory) return;
    const regions = [...memory.regions].sort((a, b) => a.start - b.start);
    let pages = 0;
    this.#regionStarts = [];
    this.#regionEnds = [];
    this.#regionBase = [];
    for (const r of regions) {
      this.#regionStarts.push(r.start);
      this.#regionEnds.push(r.start + r.size);
      this.#regionBase.push(pages);
      pages += Math.ceil(r.size / BALLOON_PAGE_SIZE);
    }
    this.#bitmap = new Uint8Array(Math.ceil(pages / 8));
    this.#bitmapFor = memory;
    this.#inflated = 0;
  }

  /** Bit index of the page at `address` (already checked to lie in RAM), or -1. */
  #pageIndex(address: number): number {
    for (let i = 0; i < this.#regionStarts.length; i++) {
      const start = this.#regionStarts[i] as number;
      if (address >= start && address < (this.#regionEnds[i] as number)) {
        return (this.#regionBase[i] as number) + Math.floor((address - start) / BALLOON_PAGE_SIZE);
      }
    }
    return -1;
  }

  /** Handle inflate or deflate requests within this turn's budget. */
  #servePages(index: number): void {
    const ctx = this.#ctx;
    const q = ctx?.queues[index];
    if (!ctx || !q) return;
    const inflate = index === INFLATEQ;
    let chains = this.queueSizes[index] as number;
    let budget = this.#pfnsPerTurn;
    let more = false;
    let used = false;
    while (!q.broken) {
      if (chains === 0 || budget <= 0) {
        more = true;
        break;
      }
      const chain = q.pop();
      if (!chain) break;
      chains--;
      used = true;
      // GUEST-CONTROLLED: the chain's shape: device-readable only, whole le32 PFNs, bounded.
      const bytes = chain.readableLength;
      if (chain.writable.length > 0 || bytes % 4 !== 0 || bytes > BALLOON_MAX_CHAIN_BYTES) {
        this.#refuse(
          q,
          chain,
          `${bytes} PFN bytes${chain.writable.length > 0 ? " and device-writable buffers" : ""}`,
        );
        continue;
      }
      this.#gather(ctx.memory, chain);
      const n = bytes / 4;
      if (inflate) {
        this.#metrics.inflateRequests++;
        this.#inflate(ctx.memory, n);
      } else {
        this.#metrics.deflateRequests++;
        this.#deflate(ctx.memory, n);
      }
      budget -= n;
      q.pushUsed(chain.head, 0);
    }
    if (used) q.notifyIfNeeded();
    if (more && !this.#scheduled[index]) {
      this.#metrics.deferred++;
      this.#scheduled[index] = true;
      this.#defer(() => {
        this.#scheduled[index] = false;
        this.#guard(() => this.#servePages(index));
      });
    }
  }

  /** Copy a chain's readable bytes (at most the scratch size, checked by the caller). */
  #gather(memory: GuestMemory, chain: DescriptorChain): void {
    let at = 0;
    for (const b of chain.readable) {
      if (b.length === 0) continue;
      // The range was checked to lie in RAM; read() handles 1 GiB views.
      memory.read(b.address, this.#scratch.subarray(at, at + b.length));
      at += b.length;
    }
  }

  #inflate(memory: GuestMemory, n: number): void {
    let runStart = -1;
    let runEnd = -1;
    for (let i = 0; i < n; i++) {
      // GUEST-CONTROLLED: a PFN; its page must lie wholly in guest RAM (pfn < 2^32, so the
      // address stays below 2^44, a safe integer).
      const address = this.#scratchView.getUint32(4 * i, true) * BALLOON_PAGE_SIZE;
      const page = memory.contains(address, BALLOON_PAGE_SIZE) ? this.#pageIndex(address) : -1;
      if (page < 0) {
        this.#metrics.refusedPfns++;
        continue;
      }
      const mask = 1 << (page & 7);
      const byte = page >>> 3;
      const old = this.#bitmap[byte] as number;
      if (old & mask) {
        this.#metrics.duplicateInflates++;
      } else {
        this.#bitmap[byte] = old | mask;
        this.#inflated++;
        this.#metrics.pagesInflated++;
      }
      // Discarding a page twice is harmless, so duplicates extend runs like any other page.
      if (address === runEnd) {
        runEnd += BALLOON_PAGE_SIZE;
      } else {
        if (runStart >= 0) this.#discard(memory, runStart, runEnd - runStart);
        runStart = address;
        runEnd = address + BALLOON_PAGE_SIZE;
      }
    }
    if (runStart >= 0) this.#discard(memory, runStart, runEnd - runStart);
  }

  #deflate(memory: GuestMemory, n: number): void {
    for (let i = 0; i < n; i++) {
      // GUEST-CONTROLLED: a PFN, checked as for inflate.
      const address = this.#scratchView.getUint32(4 * i, true) * BALLOON_PAGE_SIZE;
      const page = memory.contains(address, BALLOON_PAGE_SIZE) ? this.#pageIndex(address) : -1;
      if (page < 0) {
        this.#metrics.refusedPfns++;
        continue;
      }
      const mask = 1 << (page & 7);
      const byte = page >>> 3;
      const old = this.#bitmap[byte] as number;
      if (old & mask) {
        this.#bitmap[byte] = old & ~mask;
        this.#inflated--;
        this.#metrics.pagesDeflated++;
      } else {
        // Allowed (the page is the guest's either way), but worth knowing about.
        this.#metrics.unknownDeflates++;
      }
    }
  }

  #discard(memory: GuestMemory, address: number, length: number): void {
    this.#metrics.discards++;
    try {
      memory.discard(address, length);
    } catch (e) {
      this.#metrics.discardErrors++;
      this.#warn(`discard of 0x${address.toString(16)}+${length} failed: ${String(e)}`);
    }
  }

  /** Take statistics buffers: parse each, hold the latest until requestStats(). */
  #serveStats(): void {
    const ctx = this.#ctx;
    const q = ctx?.queues[STATSQ];
    if (!ctx || !q) return;
    let used = false;
    for (let chains = this.queueSizes[STATSQ] as number; chains > 0 && !q.broken; chains--) {
      const chain = q.pop();
      if (!chain) break;
      // GUEST-CONTROLLED: the chain's shape: device-readable only.
      if (chain.writable.length > 0) {
        this.#refuse(q, chain, "stats chain with device-writable buffers");
        used = true;
        continue;
      }
      this.#statsRequested = false;
      const bytes = chain.readableLength;
      // GUEST-CONTROLLED: whole 10-byte entries, bounded. A malformed buffer is still the
      // driver's one stats buffer, so it is held (without its values) to keep the protocol.
      if (bytes % STAT_ENTRY_BYTES !== 0 || bytes > BALLOON_MAX_STATS_BYTES) {
        this.#metrics.refusedChains++;
        this.#warn(`refused stats buffer of ${bytes} bytes`);
      } else {
        this.#gather(ctx.memory, chain);
        this.#takeStats(bytes / STAT_ENTRY_BYTES);
      }
      const previous = this.#statsHeld;
      this.#statsHeld = chain;
      if (previous) {
        // The driver has one stats buffer (§5.5.6.3); a second one means the first is
        // not coming back otherwise. Return it, counted.
        this.#refuse(q, previous, "a second stats buffer while one is held");
        used = true;
      }
    }
    if (used) q.notifyIfNeeded();
  }

  #takeStats(entries: number): void {
    const guest: Record<string, number> = { ...this.#guest };
    for (let i = 0; i < entries; i++) {
      const at = i * STAT_ENTRY_BYTES;
      // GUEST-CONTROLLED: the tag; unknown tags are ignored (§5.5.6.3.1).
      const tag = this.#scratchView.getUint16(at, true);
      const name = BALLOON_STAT_NAMES[tag];
      if (name === undefined) {
        this.#metrics.unknownStatTags++;
        continue;
      }
      // Values above 2^53 lose precision as numbers; no real counter gets there.
      guest[name] = Number(this.#scratchView.getBigUint64(at + 2, true));
    }
    this.#guest = guest;
    this.#statsUpdates++;
    this.#metrics.statsUpdates++;
    this.#statsUpdatedAt = Date.now();
  }

  #refuse(q: QueueHandle, chain: DescriptorChain, why: string): void {
    this.#metrics.refusedChains++;
    this.#warn(`refused chain ${chain.head} on queue ${q.index}: ${why}`);
    q.pushUsed(chain.head, 0);
  }

  // Nothing in the device should throw; if something does, the vCPU must not see it.
  #guard(fn: () => void): void {
    this.#guestLog.guard(fn);
  }

  #warn(message: string): void {
    this.#guestLog.warn(message);
  }
}
