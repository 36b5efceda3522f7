// virtio-blk (virtio 1.2 §5.2) backed by a raw image file: one request queue, requests
// parsed and checked by request.ts, data moved between the image and guest RAM with no
// copy (preadv/pwritev with iovecs of guest RAM's host addresses, see startTransfer()).
//
// Why libuv's thread pool and not io_uring: koffi's asynchronous calls (preadv, pwritev) and
// Node's fs.fdatasync run on libuv's worker pool, which exists in every Node process,
// needs no native addon or extra dependency, keeps the main thread and
// the vCPU threads free while the disk works, and is sized by UV_THREADPOOL_SIZE (default
// 4, of which the fd watcher's epoll_wait holds one for good, so disks share three; raise
// it for deep queues). At most 192 calls are in the pool's queue at once across all disks
// (src/host/libc.ts: koffi's own limit is 256); requests past that wait their turn.
// io_uring would save a thread hop per request but needs a native binding, is disabled in
// many container runtimes (seccomp, kernel.io_uring_disabled) and would be a second I/O
// engine to keep correct; the pool is the right first engine and the seam is #io().
// Two cases need no pool, as nothing in them waits for a disk, and they skip its two thread
// hops (there and back) per request: an image on tmpfs or ramfs is read and written right on
// the main thread; elsewhere a read first tries preadv2 with RWF_NOWAIT, which completes at
// once from the page cache or says EAGAIN, and only what is not cached goes to the pool (a
// file system without RWF_NOWAIT says EOPNOTSUPP once, and its reads go to the pool after).
//
// Lifecycle: the image is opened in the constructor (so a bad path or size fails when the
// VM is built, not when the guest first touches the disk) and closed by close(), which
// waits for host I/O in flight. reset() stops popping the queue and bumps a generation
// counter: completions of I/O issued before it are dropped (no status byte, no used entry,
// no interrupt). A host read already handed to the kernel cannot be recalled, so it may
// still land in the buffers it was given; settled() resolves once nothing is in flight,
// for a transport that wants to hold back the reset's completion until then.
//
// Discard and write-zeroes go through fallocate(2) (hole punching / zero ranges), which the
// host binding calls synchronously on the main thread; the call is deferred one event-loop
// turn so it never runs inside queueNotify. On a filesystem without those modes a discard
// is dropped (it is only a hint) and a write-zeroes falls back to writing zero buffers.

import * as fs from "node:fs";
import { constants as osConstants } from "node:os";
import { errnoName } from "../../../host/errors.js";
import * as libc from "../../../host/libc.js";
import { type GuestMemory, IOV_MAX, IovecList } from "../../../memory/mod.js";
import {
  type DescriptorChain,
  type QueueHandle,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
  type VirtioDevice,
  type VirtioDeviceContext,
} from "../../../virtio/device.js";
import { GuestLog } from "../../../virtio/guest_log.js";
import { commonDeviceOptions } from "../../../virtio/options.js";
import { type LimitConfig, RateLimiter } from "../rate_limiter.js";
import {
  type BlockConfig,
  blockConfig,
  encodeBlockConfig,
  readConfigBytes,
  SECTOR_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
} from "./config.js";
import { BlockMetrics, type BlockMetricsSnapshot } from "./metrics.js";
import {
  type BlockRequest,
  type GuestRange,
  parseRequest,
  type RequestLimits,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "./request.js";
import { type VirtioBlockState, validateBlockState } from "./state.js";

export const DEFAULT_QUEUE_SIZE = 256;
/** Entries of a reusable iovec list: a default-size queue's longest chain fits. */
const POOLED_IOV_ENTRIES = DEFAULT_QUEUE_SIZE;
/** Reusable lists kept (16 requests in flight reuse theirs; more make new ones). */
const IOV_POOL = 16;
const EOPNOTSUPP = osConstants.errno.EOPNOTSUPP;
const EINTR = osConstants.errno.EINTR;
const EAGAIN = osConstants.errno.EAGAIN;
const RWF_NOWAIT = libc.RWF_NOWAIT;

export interface VirtioBlockOptions {
  /** Raw image file; its size must be a positive multiple of 512 bytes. */
  path: string;
  /** Open O_RDONLY and offer VIRTIO_BLK_F_RO. Default false. */
  readOnly?: boolean;
  /** GET_ID answer: printable ASCII, at most 20 bytes. Default "". */
  serial?: string;
  /** Name for logs and metrics. Default "virtio-blk". */
  name?: string;
  /** Maximum queue size (a power of two, 2..32768); also bounds requests in flight. Default 256. */
  queueSize?: number;
  /** Where refusals and host errors are reported. Default: stderr. */
  log?: (message: string) => void;
  /** Bandwidth and operation limits (token buckets); none by default. */
  limits?: LimitConfig;
  /**
   * "auto" (default): transfers that need no disk wait (tmpfs images, reads the page cache
   * holds) run at once and their requests complete in the same turn; "pool": every
   * transfer goes to libuv's thread pool, as QEMU's aio=threads.
   */
  io?: "auto" | "pool";
}

const bit = (n: bigint): bigint => 1n << n;

function has(features: bigint, n: bigint): boolean {
  return (features & bit(n)) !== 0n;
}

function cannot(what: string): string {
  return `Cannot create virtio-blk: ${what}`;
}

/** A virtio-blk device serving one raw image file. */
export class VirtioBlock implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_BLOCK;
  readonly name: string;
  readonly features: bigint;
  readonly queueSizes: readonly number[];
  readonly path: string;
  readonly readOnly: boolean;
  readonly serial: string;
  readonly config: Readonly<BlockConfig>;

  #fd: number;
  /** How transfers skip the pool (see the header); `nowait` turns off on EOPNOTSUPP. */
  readonly #engine: TransferEngine;
  #configBytes: Uint8Array;
  #id: Uint8Array;
  #maxInFlight: number;
  readonly #guestLog: GuestLog;
  #metrics = new BlockMetrics();

  // Live state between activate() and reset().
  #memory: GuestMemory | undefined;
  #queue: QueueHandle | undefined;
  #ctx: VirtioDeviceContext | undefined;
  #limits: RequestLimits;
  #generation = 0;
  #usedPending = false;
  #notifyScheduled = false;
  #closed = false;
  #idleWaiters: (() => void)[] = [];
  readonly #limiter: RateLimiter;
  /** A popped request waiting for the rate limiter's tokens. */
  #held: DescriptorChain | undefined;
  #throttleTimer: NodeJS.Timeout | undefined;
  #heldSince = 0;
  readonly #iovPool: IovecList[] = [];

  constructor(options: VirtioBlockOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(cannot("options must be an object"));
    }
    const { path } = options;
    if (typeof path !== "string" || path.length === 0) {
      throw new TypeError(cannot("options.path must be a non-empty string"));
    }
    const readOnly = options.readOnly ?? false;
    if (typeof readOnly !== "boolean") {
      throw new TypeError(cannot("options.readOnly must be a boolean"));
    }
    const serial = options.serial ?? "";
    if (typeof serial !== "string") throw new TypeError(cannot("options.serial must be a string"));
    if (serial.length > VIRTIO_BLK_ID_BYTES || !/^[\x20-\x7e]*$/.test(serial)) {
      throw new RangeError(
        cannot(
          `options.serial ${JSON.stringify(serial)} is not printable ASCII of at most 20 bytes`,
        ),
      );
    }
    const { name, queueSize, log } = commonDeviceOptions(
      options,
      { name: "virtio-blk", queueSize: DEFAULT_QUEUE_SIZE },
      cannot,
    );
    const pool = options.io === "pool";
    if (options.io !== undefined && options.io !== "auto" && !pool)
      throw new RangeError(cannot(`io ${String(options.io)} is not "auto" or "pool"`));

    const fd = openImage(path, readOnly);
    let size: number;
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) throw new TypeError(cannot(`${path} is not a regular file`));
      size = st.size;
      if (size === 0 || size % SECTOR_SIZE !== 0) {
        throw new RangeError(
          cannot(`image ${path} is ${size} bytes, not a positive multiple of ${SECTOR_SIZE}`),
        );
      }
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }

    this.name = name;
    this.path = path;
    this.readOnly = readOnly;
    this.serial = serial;
    this.#fd = fd;
    this.#engine = { inMemory: !pool && isInMemory(fd), nowait: !pool };
    this.#guestLog = new GuestLog(this.name, log);
    try {
      this.#limiter = new RateLimiter(options.limits ?? {});
    } catch (e) {
      throw new RangeError(cannot(`limits: ${e instanceof Error ? e.message : String(e)}`));
    }
    this.#maxInFlight = queueSize;
    this.queueSizes = [queueSize];
    this.config = Object.freeze(blockConfig(size / SECTOR_SIZE, queueSize));
    this.#configBytes = encodeBlockConfig(this.config);
    this.#id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    for (let i = 0; i < serial.length; i++) this.#id[i] = serial.charCodeAt(i);
    this.features =
      bit(VIRTIO_F_VERSION_1) |
      bit(VIRTIO_F_INDIRECT_DESC) |
      bit(VIRTIO_F_EVENT_IDX) |
      bit(VIRTIO_BLK_F_SEG_MAX) |
      bit(VIRTIO_BLK_F_BLK_SIZE) |
      bit(VIRTIO_BLK_F_FLUSH) |
      bit(VIRTIO_BLK_F_DISCARD) |
      bit(VIRTIO_BLK_F_WRITE_ZEROES) |
      (readOnly ? bit(VIRTIO_BLK_F_RO) : 0n);
    this.#limits = this.#limitsFor(0n);
  }

  /**
   * Recreate a device from a snapshot's state, reopening the image by path. The image must
   * still have the capacity recorded in the state.
   */
  static fromState(state: unknown, extra: { log?: (message: string) => void } = {}): VirtioBlock {
    const s = validateBlockState(state);
    const options: VirtioBlockOptions = {
      path: s.path,
      readOnly: s.readOnly,
      serial: s.serial,
      name: s.name,
      queueSize: s.queueSize,
    };
    if (extra.log) options.log = extra.log;
    const dev = new VirtioBlock(options);
    if (dev.config.capacity !== s.config.capacity) {
      const capacity = dev.config.capacity;
      void dev.close();
      throw new RangeError(
        `Cannot restore virtio-blk: ${s.path} has ${capacity} sectors, the snapshot ${s.config.capacity}`,
      );
    }
    return dev;
  }

  /** What a snapshot needs (plain JSON). Queue state belongs to the transport. */
  state(): VirtioBlockState {
    return {
      version: 1,
      name: this.name,
      path: this.path,
      readOnly: this.readOnly,
      serial: this.serial,
      queueSize: this.#maxInFlight,
      config: { ...this.config },
    };
  }

  /** A copy of the counters. */
  metrics(): BlockMetricsSnapshot {
    return this.#metrics.snapshot();
  }

  /** Resolves once no host I/O is in flight (after reset(), before close()). */
  settled(): Promise<void> {
    if (this.#metrics.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.#configBytes, offset, data);
  }

  writeConfig(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: every field is read-only without VIRTIO_BLK_F_CONFIG_WCE; ignored.
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
    const queue = ctx.queues[0];
    if (!queue) {
      this.#warn("activated without a request queue");
      ctx.needsReset(`${this.name} needs one queue`);
      return;
    }
    this.#ctx = ctx;
    this.#memory = ctx.memory;
    this.#queue = queue;
    this.#limits = this.#limitsFor(ctx.features);
    this.#usedPending = false;
  }

  queueNotify(index: number): void {
    // GUEST-CONTROLLED: the queue index written to QueueNotify.
    if (index !== 0 || !this.#queue) {
      this.#metrics.invalidNotifies++;
      this.#warn(`notify for queue ${index} ignored`);
      return;
    }
    try {
      this.#drain();
      this.#flushNotify();
    } catch (e) {
      // Nothing below should throw; if something does, the vCPU must not see it.
      this.#warn(`queue processing failed: ${String(e)}`);
    }
  }

  reset(): void {
    this.#generation++;
    // A held request belonged to the old rings; it is dropped with them.
    this.#held = undefined;
    if (this.#throttleTimer) clearTimeout(this.#throttleTimer);
    this.#throttleTimer = undefined;
    this.#ctx = undefined;
    this.#memory = undefined;
    this.#queue = undefined;
    this.#usedPending = false;
  }

  /** Reset, wait for host I/O in flight, close the image. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.reset();
    await this.settled();
    fs.closeSync(this.#fd);
  }

  #limitsFor(features: bigint): RequestLimits {
    const c = this.config;
    return {
      capacity: c.capacity,
      maxDiscardSectors: c.maxDiscardSectors,
      maxDiscardSeg: c.maxDiscardSeg,
      maxWriteZeroesSectors: c.maxWriteZeroesSectors,
      maxWriteZeroesSeg: c.maxWriteZeroesSeg,
      flush: has(features, VIRTIO_BLK_F_FLUSH),
      discard: has(features, VIRTIO_BLK_F_DISCARD),
      writeZeroes: has(features, VIRTIO_BLK_F_WRITE_ZEROES),
    };
  }

  #warn(message: string): void {
    this.#guestLog.warn(message);
  }

  /** Replace the rate limits at runtime (an empty config removes them). */
  setLimits(limits: LimitConfig): void {
    this.#limiter.configure(limits);
    if (this.#throttleTimer) {
      clearTimeout(this.#throttleTimer);
      this.#throttleTimer = undefined;
    }
    this.#drain();
    this.#flushNotify();
  }

  limits(): LimitConfig & { throttledMs: number; throttledRequests: number } {
    return {
      ...this.#limiter.config(),
      throttledMs: Math.round(this.#limiter.throttledMs),
      throttledRequests: this.#limiter.throttledRequests,
    };
  }

  /** Pop and start requests while there is room in flight and the rate limits allow. */
  #drain(): void {
    const queue = this.#queue;
    const memory = this.#memory;
    if (!queue || !memory || this.#throttleTimer) return;
    while (this.#metrics.inFlight < this.#maxInFlight && !queue.broken) {
      let chain = this.#held;
      if (!chain) {
        try {
          chain = queue.pop();
        } catch (e) {
          this.#warn(`queue pop failed: ${String(e)}`);
          this.#ctx?.needsReset(`${this.name}: queue failed`);
          return;
        }
        if (!chain) return;
      }
      if (this.#limiter.limited) {
        // The chain's buffer lengths are what the request moves (header and status aside).
        const wait = this.#limiter.consume(chain.readableLength + chain.writableLength);
        if (wait > 0) {
          if (!this.#held) {
            this.#held = chain;
            this.#heldSince = performance.now();
            this.#limiter.throttledRequests++;
          }
          const generation = this.#generation;
          this.#throttleTimer = setTimeout(() => {
            this.#throttleTimer = undefined;
            if (generation !== this.#generation) return;
            this.#drain();
            this.#flushNotify();
          }, Math.ceil(wait));
          return;
        }
        if (this.#held) this.#limiter.throttledMs += performance.now() - this.#heldSince;
      }
      this.#held = undefined;
      this.#start(chain, memory, queue);
    }
  }

  #start(chain: DescriptorChain, memory: GuestMemory, queue: QueueHandle): void {
    const parsed = parseRequest(memory, chain, this.#limits);
    if (!parsed.ok) {
      const r = parsed.refusal;
      if (r.unsupported) this.#metrics.unsupportedRequests++;
      else this.#metrics.refused++;
      this.#warn(`request ${r.head} refused: ${r.reason}`);
      this.#complete(memory, queue, r.head, r.statusAddress, r.status, 0);
      return;
    }
    const req = parsed.request;
    const m = this.#metrics;
    switch (req.type) {
      case VIRTIO_BLK_T_IN:
        m.readRequests++;
        break;
      case VIRTIO_BLK_T_OUT:
        m.writeRequests++;
        break;
      case VIRTIO_BLK_T_FLUSH:
        m.flushRequests++;
        break;
      case VIRTIO_BLK_T_DISCARD:
        m.discardRequests++;
        break;
      case VIRTIO_BLK_T_WRITE_ZEROES:
        m.writeZeroesRequests++;
        break;
      case VIRTIO_BLK_T_GET_ID: {
        m.getIdRequests++;
        let status = VIRTIO_BLK_S_OK;
        let done = 0;
        try {
          for (const r of req.data) {
            memory.write(r.address, this.#id.subarray(done, done + r.length));
            done += r.length;
          }
        } catch (e) {
          status = VIRTIO_BLK_S_IOERR;
          this.#warn(`GET_ID ${req.head}: ${String(e)}`);
        }
        this.#complete(memory, queue, req.head, req.statusAddress, status, done);
        return;
      }
    }
    if (this.readOnly && req.type !== VIRTIO_BLK_T_IN && req.type !== VIRTIO_BLK_T_FLUSH) {
      // §5.2.6.2: a write to a VIRTIO_BLK_F_RO device gets IOERR and writes nothing.
      m.readOnlyRefusals++;
      this.#warn(`request ${req.head} (type ${req.type}) refused: read-only disk`);
      this.#complete(memory, queue, req.head, req.statusAddress, VIRTIO_BLK_S_IOERR, 0);
      return;
    }
    m.inFlight++;
    if (m.inFlight > m.inFlightHighWater) m.inFlightHighWater = m.inFlight;
    const generation = this.#generation;
    let io: Promise<void>;
    if (req.type === VIRTIO_BLK_T_IN || req.type === VIRTIO_BLK_T_OUT) {
      // What completes here (tmpfs, or reads from the page cache) is finished in this turn;
      // the caller's #flushNotify then sends the interrupt before anything else runs.
      let t: GuestTransfer;
      const iov = this.#pooledIov(req.data.length);
      try {
        t = startTransfer(
          req.type === VIRTIO_BLK_T_IN ? "read" : "write",
          this.#fd,
          memory,
          req.data,
          req.offset,
          this.#engine,
          iov,
        );
      } catch (e) {
        this.#releaseIov(iov);
        this.#finish(generation, req, e, true);
        return;
      }
      if (t.iov.count === 0) {
        this.#releaseIov(t.iov);
        this.#finish(generation, req, undefined, true);
        return;
      }
      // The list goes back only once the kernel is done with it, reset or not.
      io = continueTransfer(t, this.#engine).finally(() => this.#releaseIov(t.iov));
    } else {
      try {
        io = this.#io(req);
      } catch (e) {
        io = Promise.reject(e);
      }
    }
    io.then(
      () => this.#finish(generation, req, undefined),
      (e: unknown) => this.#finish(generation, req, e),
    ).catch((e: unknown) => this.#warn(`completion of request ${req.head} failed: ${String(e)}`));
  }

  /**
   * A reusable iovec list for a transfer of `buffers` guest buffers, or undefined when
   * that many do not fit one (startTransfer then sizes its own). Lists are kept for reuse
   * (one per request made ~20 % of the main thread's work on a 1 MiB request in the lab),
   * at most IOV_POOL of them, so a burst of requests in flight leaves no lasting memory.
   */
  #pooledIov(buffers: number): IovecList | undefined {
    if (buffers > POOLED_IOV_ENTRIES) return undefined;
    const reused = this.#iovPool.pop();
    if (!reused) return new IovecList(POOLED_IOV_ENTRIES);
    reused.clear();
    return reused;
  }

  #releaseIov(iov: IovecList | undefined): void {
    if (iov?.capacity === POOLED_IOV_ENTRIES && this.#iovPool.length < IOV_POOL) {
      this.#iovPool.push(iov);
    }
  }

  /** Host I/O for one checked request other than IN and OUT; rejects on a host error. */
  async #io(req: BlockRequest): Promise<void> {
    const fd = this.#fd;
    switch (req.type) {
      case VIRTIO_BLK_T_FLUSH:
        return new Promise((resolve, reject) =>
          fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())),
        );
      case VIRTIO_BLK_T_DISCARD:
        // fallocate is synchronous (koffi); let queueNotify return before it runs.
        await nextTurn();
        for (const s of req.segments) {
          // Discard is a hint (§5.2.6.2 "MAY deallocate"): a filesystem without hole
          // punching simply keeps the data.
          tryFallocate(
            fd,
            libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE,
            s.offset,
            s.length,
          );
        }
        return;
      case VIRTIO_BLK_T_WRITE_ZEROES:
        await nextTurn();
        for (const s of req.segments) {
          // Reads must return zeroes afterwards whichever way we get there (§5.2.6.2).
          const unmap = s.unmap && this.config.writeZeroesMayUnmap;
          if (
            unmap &&
            tryFallocate(
              fd,
              libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE,
              s.offset,
              s.length,
            )
          ) {
            continue;
          }
          if (
            tryFallocate(
              fd,
              libc.FALLOC_FL_ZERO_RANGE | libc.FALLOC_FL_KEEP_SIZE,
              s.offset,
              s.length,
            )
          ) {
            continue;
          }
          await writeZeroes(fd, s.offset, s.length);
        }
        return;
      default:
        throw new Error(`request type ${req.type} reached I/O`);
    }
  }

  /** `now`: called from #start, whose caller flushes the notification itself. */
  #finish(generation: number, req: BlockRequest, error: unknown, now = false): void {
    const m = this.#metrics;
    m.inFlight--;
    try {
      if (generation !== this.#generation) {
        // Reset (or re-activated) since this I/O started: the chain is no longer ours.
        m.droppedAfterReset++;
        return;
      }
      const memory = this.#memory;
      const queue = this.#queue;
      if (!memory || !queue) return;
      let status = VIRTIO_BLK_S_OK;
      let written = 0;
      if (error === undefined) {
        if (req.type === VIRTIO_BLK_T_IN) {
          m.bytesRead += req.dataLength;
          written = req.dataLength;
        } else if (req.type === VIRTIO_BLK_T_OUT) {
          m.bytesWritten += req.dataLength;
        }
      } else {
        status = VIRTIO_BLK_S_IOERR;
        m.ioErrors++;
        this.#warn(`request ${req.head} (type ${req.type}) failed on the host: ${String(error)}`);
      }
      this.#complete(memory, queue, req.head, req.statusAddress, status, written);
      if (!now) this.#scheduleNotify();
    } finally {
      if (m.inFlight === 0 && this.#idleWaiters.length > 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const w of waiters) w();
      }
    }
  }

  /** Write the status byte and hand the chain back; `written` excludes the status byte. */
  #complete(
    memory: GuestMemory,
    queue: QueueHandle,
    head: number,
    statusAddress: number | undefined,
    status: number,
    written: number,
  ): void {
    let used = 0;
    if (statusAddress !== undefined) {
      try {
        memory.writeU8(statusAddress, status);
        used = written + 1;
      } catch (e) {
        this.#warn(`request ${head}: status byte unwritable: ${String(e)}`);
      }
    }
    try {
      queue.pushUsed(head, used);
      this.#usedPending = true;
    } catch (e) {
      this.#warn(`request ${head}: pushUsed failed: ${String(e)}`);
    }
  }

  /** Coalesce completions that arrive in one event-loop turn into one notification. */
  #scheduleNotify(): void {
    if (this.#notifyScheduled) return;
    this.#notifyScheduled = true;
    setImmediate(() => {
      this.#notifyScheduled = false;
      try {
        // Room in flight may have opened: pick up requests that waited for it.
        this.#drain();
        this.#flushNotify();
      } catch (e) {
        this.#warn(`deferred queue work failed: ${String(e)}`);
      }
    });
  }

  #flushNotify(): void {
    if (!this.#usedPending || !this.#queue) return;
    this.#usedPending = false;
    try {
      this.#queue.notifyIfNeeded();
    } catch (e) {
      this.#warn(`notify failed: ${String(e)}`);
    }
  }
}

function openImage(path: string, readOnly: boolean): number {
  try {
    return fs.openSync(path, readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const wrapped = new Error(cannot(`cannot open ${path}: ${err.message}`), { cause: e });
    Object.assign(wrapped, { code: err.code });
    throw wrapped;
  }
}

/** Which transfers may run on the main thread (see the header). */
export interface TransferEngine {
  /** The image is in memory (tmpfs, ramfs): every transfer runs here. */
  inMemory: boolean;
  /** Reads try RWF_NOWAIT here first (until the file system says it has no such thing). */
  nowait: boolean;
}

function isInMemory(fd: number): boolean {
  try {
    const type = libc.fsType(fd);
    return type === libc.TMPFS_MAGIC || type === libc.RAMFS_MAGIC;
  } catch {
    return false;
  }
}

/** A transfer under way: what is left of its iovecs and where in the image it goes on. */
export interface GuestTransfer {
  readonly op: "read" | "write";
  readonly fd: number;
  readonly iov: IovecList;
  pos: number;
}

/**
 * Start a preadv/pwritev between the image and guest ranges, straight from their host
 * addresses (one iovec array per request: no view object per buffer, and none of Node's
 * per-buffer work in fs.readv), moving here what `engine` allows. Throws on a host error.
 * When the returned transfer has no iovecs left it is complete, and the caller can finish
 * the request in this same turn (its interrupt then goes out before the event loop runs
 * anything else); otherwise continueTransfer() moves the rest on libuv's pool.
 */
export function startTransfer(
  op: "read" | "write",
  fd: number,
  memory: GuestMemory,
  ranges: readonly GuestRange[],
  position: number,
  engine: TransferEngine,
  /** An empty list with room for `ranges` to reuse; one is made otherwise. */
  reuse?: IovecList,
): GuestTransfer {
  // Ranges lie in RAM (the queue checked each buffer) and RAM regions are not adjacent,
  // so no range is split: one entry each.
  const iov = reuse ?? new IovecList(Math.max(1, Math.min(ranges.length, IOV_MAX)));
  for (const r of ranges) {
    if (!iov.addGuest(memory, r.address, r.length)) {
      throw new Error(`${ranges.length} buffers do not fit one ${op} (${IOV_MAX} at most)`);
    }
  }
  const t: GuestTransfer = { op, fd, iov, pos: position };
  moveHere(t, engine);
  return t;
}

/** As much as can be moved without waiting for a disk; throws if the request failed. */
function moveHere(t: GuestTransfer, engine: TransferEngine): void {
  const { op, fd, iov } = t;
  while (iov.count > 0 && (engine.inMemory || (op === "read" && engine.nowait))) {
    const n = libc.iovSync(op, fd, iov.iov, iov.count, t.pos, engine.inMemory ? 0 : RWF_NOWAIT);
    if (n === -EINTR) continue;
    if (n === 0) throw new Error(`${op} at offset ${t.pos} transferred nothing`);
    if (n > 0) {
      t.pos += n;
      iov.consume(n);
      // A short RWF_NOWAIT read stopped at what is not cached: the pool waits for it.
      if (!engine.inMemory) break;
      continue;
    }
    if (engine.inMemory || (n !== -EAGAIN && n !== -EOPNOTSUPP)) {
      throw new Error(`${op} at offset ${t.pos} failed: ${errnoName(-n)}`);
    }
    if (n === -EOPNOTSUPP) engine.nowait = false;
    break;
  }
}

/** The rest of a started transfer, on libuv's thread pool. Short transfers continue. */
export function continueTransfer(t: GuestTransfer, engine: TransferEngine): Promise<void> {
  return new Promise((resolve, reject) => {
    const { op, fd, iov } = t;
    const step = (): void => {
      try {
        moveHere(t, engine);
      } catch (e) {
        reject(e);
        return;
      }
      if (iov.count === 0) {
        resolve();
        return;
      }
      libc.iovAsync(op, fd, iov.iov, iov.count, t.pos, (n) => {
        if (n === -EINTR) step();
        else if (n < 0) reject(new Error(`${op} at offset ${t.pos} failed: ${errnoName(-n)}`));
        else if (n === 0) reject(new Error(`${op} at offset ${t.pos} transferred nothing`));
        else {
          t.pos += n;
          iov.consume(n);
          step();
        }
      });
    };
    step();
  });
}

/** readv/writev until every view is done; short transfers continue, zero bytes is an error. */
function transferAll(
  op: "read" | "write",
  fd: number,
  views: Uint8Array[],
  position: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let bufs = views;
    let pos = position;
    const done = (err: NodeJS.ErrnoException | null, n: number): void => {
      if (err) {
        reject(err);
      } else if (n <= 0) {
        reject(new Error(`${op} at offset ${pos} transferred nothing`));
      } else {
        pos += n;
        bufs = advance(bufs, n);
        step();
      }
    };
    const step = (): void => {
      if (bufs.length === 0) resolve();
      else if (op === "read") fs.readv(fd, bufs, pos, done);
      else fs.writev(fd, bufs, pos, done);
    };
    step();
  });
}

/** Drop the first `n` bytes from a list of views. */
function advance(views: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  let left = n;
  while (i < views.length && left >= (views[i] as Uint8Array).length) {
    left -= (views[i] as Uint8Array).length;
    i++;
  }
  const rest = views.slice(i);
  const first = rest[0];
  if (first && left > 0) rest[0] = first.subarray(left);
  return rest;
}

/** fallocate, reporting false when the filesystem does not support the mode. */
function tryFallocate(fd: number, mode: number, offset: number, length: number): boolean {
  if (length === 0) return true;
  try {
    libc.fallocate(fd, mode, offset, length);
    return true;
  } catch (e) {
    if ((e as { errno?: unknown }).errno === EOPNOTSUPP) return false;
    throw e;
  }
}

let zeroes: Uint8Array | undefined;

/** Write zero bytes over a range (for filesystems without FALLOC_FL_ZERO_RANGE). */
async function writeZeroes(fd: number, offset: number, length: number): Promise<void> {
  zeroes ??= new Uint8Array(1024 * 1024);
  const z = zeroes;
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const n = Math.min(z.length, end - pos);
    await transferAll("write", fd, [z.subarray(0, n)], pos);
    pos += n;
  }
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
