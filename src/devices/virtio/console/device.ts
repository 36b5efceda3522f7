// virtio-console (virtio 1.2 §5.3, device type 3) with one port and no MULTIPORT: the
// guest's /dev/hvc0. Queue 0 (receiveq) holds device-writable buffers the host fills with
// input; queue 1 (transmitq) carries device-readable buffers of guest output, handed to the
// `out` sink as views of guest RAM (no copy, so the sink must consume them synchronously).
//
// Receive buffers are popped from the ring as soon as the driver posts them and held here
// until input arrives (at most a queue's worth: beyond that the ring keeps them), because
// the transport offers no way to peek. Host input that finds no buffer waits in a bounded
// backlog (64 KiB by default); what does not fit is dropped and counted, and
// enqueueInput() says how much it took. A guest cannot make the main thread spin: one
// turn transmits at most `queueSize` chains and about 1 MiB, the rest waits for a later
// event-loop turn. Chains in the wrong direction (readable buffers on the receiveq,
// writable ones on the transmitq) are refused: returned with 0 bytes, counted, logged.

import { GuestMemoryError } from "../../../memory/mod.js";
import {
  type DescriptorChain,
  type QueueHandle,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_CONSOLE,
  type VirtioDevice,
  type VirtioDeviceContext,
} from "../../../virtio/device.js";
import { GuestLog } from "../../../virtio/guest_log.js";
import {
  CONSOLE_CONFIG_SIZE,
  OFF_COLS,
  OFF_EMERG_WR,
  OFF_ROWS,
  RECEIVEQ,
  TRANSMITQ,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_SIZE,
  validateDimension,
} from "./config.js";
import { ConsoleMetrics, type ConsoleMetricsSnapshot } from "./metrics.js";

export const CONSOLE_QUEUE_SIZE = 256;
/** Host input kept while the guest has no receive buffer. */
export const CONSOLE_INPUT_BACKLOG = 64 * 1024;
/** Guest output handed to the sink per event-loop turn (whole chains: may overshoot once). */
export const CONSOLE_TX_BYTES_PER_TURN = 1024 * 1024;
/** Copy size when a transmit buffer cannot be one zero-copy view (it crosses a 1 GiB view). */
const SCRATCH_BYTES = 64 * 1024;

export interface VirtioConsoleOptions {
  /** Receives guest output; the view is only valid during the call. */
  out: (bytes: Uint8Array) => void;
  /** Name for logs and metrics. Default "virtio-console0". */
  name?: string;
  /** Where refusals are reported. Default: stderr. */
  log?: (message: string) => void;
  /** Initial terminal size (VIRTIO_CONSOLE_F_SIZE). Default 80x24. */
  cols?: number;
  rows?: number;
  /** Maximum queue size (a power of two, 2..32768). Default 256. */
  queueSize?: number;
  /** Bytes of host input held while the guest has no receive buffer. Default 64 KiB. */
  inputBacklog?: number;
  /** Guest output per event-loop turn. Default 1 MiB. */
  txBytesPerTurn?: number;
  /** Run leftover work later; default setImmediate. */
  defer?: (fn: () => void) => void;
}

function cannot(what: string): string {
  return `Cannot create virtio-console: ${what}`;
}

function positive(n: unknown, name: string): number {
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n <= 0) {
    throw new RangeError(cannot(`${name} ${String(n)} is not a positive integer`));
  }
  return n;
}

export class VirtioConsole implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_CONSOLE;
  readonly name: string;
  readonly features =
    (1n << VIRTIO_F_VERSION_1) |
    (1n << VIRTIO_F_INDIRECT_DESC) |
    (1n << VIRTIO_F_EVENT_IDX) |
    (1n << VIRTIO_CONSOLE_F_SIZE) |
    (1n << VIRTIO_CONSOLE_F_EMERG_WRITE);
  readonly queueSizes: readonly number[];

  readonly #out: (bytes: Uint8Array) => void;
  readonly #defer: (fn: () => void) => void;
  readonly #txBudget: number;
  readonly #metrics = new ConsoleMetrics();
  readonly #guestLog: GuestLog;
  #cols: number;
  #rows: number;
  readonly #config = new Uint8Array(CONSOLE_CONFIG_SIZE);
  readonly #configView = new DataView(this.#config.buffer);
  readonly #emergency = new Uint8Array(1);
  #scratch: Uint8Array | undefined;

  // Host input not yet delivered: a ring buffer.
  readonly #backlog: Uint8Array;
  #backlogStart = 0;
  #backlogLength = 0;

  // Live state between activate() and reset().
  #ctx: VirtioDeviceContext | undefined;
  #rxq: QueueHandle | undefined;
  #txq: QueueHandle | undefined;
  /** Receive chains popped and waiting for input, oldest first. */
  #rxHeld: DescriptorChain[] = [];
  #txScheduled = false;

  constructor(options: VirtioConsoleOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(cannot("options must be an object"));
    }
    if (typeof options.out !== "function") {
      throw new TypeError(cannot("options.out must be a function"));
    }
    const name = options.name ?? "virtio-console0";
    if (typeof name !== "string" || name.length === 0) {
      throw new TypeError(cannot("options.name must be a non-empty string"));
    }
    const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
    if (typeof log !== "function") throw new TypeError(cannot("options.log must be a function"));
    const queueSize = options.queueSize ?? CONSOLE_QUEUE_SIZE;
    if (
      !Number.isSafeInteger(queueSize) ||
      queueSize < 2 ||
      queueSize > 32768 ||
      (queueSize & (queueSize - 1)) !== 0
    ) {
      throw new RangeError(cannot(`queueSize ${queueSize} is not a power of two in 2..32768`));
    }
    this.name = name;
    this.#out = options.out;
    this.#guestLog = new GuestLog(this.name, log);
    this.#defer = options.defer ?? ((fn) => setImmediate(fn));
    this.#txBudget = positive(
      options.txBytesPerTurn ?? CONSOLE_TX_BYTES_PER_TURN,
      "txBytesPerTurn",
    );
    this.#backlog = new Uint8Array(
      positive(options.inputBacklog ?? CONSOLE_INPUT_BACKLOG, "inputBacklog"),
    );
    this.queueSizes = [queueSize, queueSize];
    this.#cols = validateDimension(options.cols ?? 80, "cols");
    this.#rows = validateDimension(options.rows ?? 24, "rows");
    this.#encodeSize();
  }

  /** A copy of the device's counters. */
  metrics(): ConsoleMetricsSnapshot {
    return this.#metrics.snapshot();
  }

  /** The terminal size the guest is told (VIRTIO_CONSOLE_F_SIZE). */
  get size(): { cols: number; rows: number } {
    return { cols: this.#cols, rows: this.#rows };
  }

  /** Host input bytes waiting for a guest receive buffer. */
  get pendingInput(): number {
    return this.#backlogLength;
  }

  /**
   * Tell the guest the terminal is now cols x rows: the config changes and, when the driver
   * is live, a configuration change interrupt follows (§5.3.6.2 console size). Linux
   * reads the new size and resizes hvc0 (SIGWINCH for the foreground job).
   */
  resize(cols: number, rows: number): void {
    const c = validateDimension(cols, "cols");
    const r = validateDimension(rows, "rows");
    if (c === this.#cols && r === this.#rows) return;
    this.#cols = c;
    this.#rows = r;
    this.#encodeSize();
    const ctx = this.#ctx;
    if (!ctx) return;
    this.#metrics.resizes++;
    ctx.interrupt.configChanged();
  }

  /**
   * Queue host input for the guest and deliver what fits into its receive buffers now.
   * Returns how many bytes were accepted; the rest (beyond the backlog) is dropped.
   */
  enqueueInput(bytes: Uint8Array): number {
    if (!(bytes instanceof Uint8Array)) {
      throw new TypeError(`Cannot queue console input: ${typeof bytes} is not a Uint8Array`);
    }
    const cap = this.#backlog.length;
    const n = Math.min(bytes.length, cap - this.#backlogLength);
    // At most two copies: up to the end of the ring, then from its start.
    const end = (this.#backlogStart + this.#backlogLength) % cap;
    const first = Math.min(n, cap - end);
    this.#backlog.set(bytes.subarray(0, first), end);
    if (n > first) this.#backlog.set(bytes.subarray(first, n), 0);
    this.#backlogLength += n;
    this.#metrics.inputDropped += bytes.length - n;
    this.#deliver();
    return n;
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    // GUEST-CONTROLLED: offset and length of a config read.
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= CONSOLE_CONFIG_SIZE) return;
    const n = Math.min(data.length, CONSOLE_CONFIG_SIZE - offset);
    data.set(this.#config.subarray(offset, offset + n));
  }

  writeConfig(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: only the first byte of emerg_wr is honoured (§5.3.4: the driver
    // writes one character there); every other field is read-only.
    if (offset === OFF_EMERG_WR && data.length >= 1 && data.length <= 4) {
      this.#emergency[0] = data[0] as number;
      this.#metrics.emergencyBytes++;
      this.#emit(this.#emergency);
      return;
    }
    this.#metrics.refusedConfigWrites++;
    this.#warn(`refused config write of ${data.length} bytes at offset ${offset}`);
  }

  activate(ctx: VirtioDeviceContext): void {
    this.#ctx = ctx;
    this.#rxq = ctx.queues[RECEIVEQ];
    this.#txq = ctx.queues[TRANSMITQ];
    // Linux posts receive buffers (and may transmit) before DRIVER_OK, when the transport
    // drops the notification: look at both rings now.
    this.#guard(() => {
      this.#takeReceiveBuffers();
      this.#deliver();
      this.#transmit();
    });
  }

  queueNotify(index: number): void {
    if (!this.#ctx) {
      this.#metrics.invalidNotifies++;
      return;
    }
    if (index === RECEIVEQ) {
      this.#guard(() => {
        this.#takeReceiveBuffers();
        this.#deliver();
      });
    } else if (index === TRANSMITQ) {
      this.#guard(() => this.#transmit());
    } else {
      this.#metrics.invalidNotifies++;
    }
  }

  reset(): void {
    // Held receive chains belong to the old rings: forget them. Undelivered input stays in
    // the backlog for the next driver (what a serial line would do with typed-ahead keys).
    // A scheduled transmit continuation finds no queue and does nothing.
    this.#ctx = undefined;
    this.#rxq = undefined;
    this.#txq = undefined;
    this.#rxHeld = [];
  }

  #encodeSize(): void {
    this.#configView.setUint16(OFF_COLS, this.#cols, true);
    this.#configView.setUint16(OFF_ROWS, this.#rows, true);
  }

  /** Pop receive buffers until the ring is empty or a queue's worth is held. */
  #takeReceiveBuffers(): void {
    const q = this.#rxq;
    if (!q) return;
    const max = this.queueSizes[RECEIVEQ] as number;
    let refused = false;
    while (this.#rxHeld.length < max && !q.broken) {
      const chain = q.pop();
      if (!chain) break;
      // GUEST-CONTROLLED: the chain's shape; receive buffers must be device-writable only.
      if (chain.readable.length > 0 || chain.writableLength === 0) {
        this.#refuse(q, chain, "receive chain with readable or no writable buffers");
        refused = true;
        continue;
      }
      this.#rxHeld.push(chain);
    }
    if (refused) q.notifyIfNeeded();
  }

  /** Move backlog bytes into held receive buffers, one chain at a time. */
  #deliver(): void {
    const q = this.#rxq;
    const ctx = this.#ctx;
    if (!q || !ctx) return;
    const cap = this.#backlog.length;
    let used = false;
    while (this.#backlogLength > 0) {
      // Buffers left in the ring while a queue's worth was held are taken as room frees.
      if (this.#rxHeld.length === 0) this.#takeReceiveBuffers();
      const chain = this.#rxHeld.shift();
      if (!chain) break;
      let written = 0;
      for (const b of chain.writable) {
        let room = b.length;
        let at = b.address;
        while (room > 0 && this.#backlogLength > 0) {
          const n = Math.min(room, this.#backlogLength, cap - this.#backlogStart);
          const piece = this.#backlog.subarray(this.#backlogStart, this.#backlogStart + n);
          // The chain's ranges were checked to lie in RAM; write() handles 1 GiB views.
          ctx.memory.write(at, piece);
          at += n;
          room -= n;
          written += n;
          this.#backlogStart = (this.#backlogStart + n) % cap;
          this.#backlogLength -= n;
        }
        if (this.#backlogLength === 0) break;
      }
      if (this.#backlogLength === 0) this.#backlogStart = 0;
      this.#metrics.bytesIn += written;
      q.pushUsed(chain.head, written);
      used = true;
    }
    if (used) q.notifyIfNeeded();
  }

  /** Hand transmitted bytes to the sink, within this turn's budget. */
  #transmit(): void {
    const q = this.#txq;
    const ctx = this.#ctx;
    if (!q || !ctx) return;
    let chains = this.queueSizes[TRANSMITQ] as number;
    let bytes = 0;
    let more = false;
    let used = false;
    while (!q.broken) {
      if (chains === 0 || bytes >= this.#txBudget) {
        more = true;
        break;
      }
      const chain = q.pop();
      if (!chain) break;
      chains--;
      // GUEST-CONTROLLED: transmit buffers must be device-readable only (§5.3.6.1).
      if (chain.writable.length > 0) {
        this.#refuse(q, chain, "transmit chain with device-writable buffers");
        used = true;
        continue;
      }
      for (const b of chain.readable) {
        if (b.length === 0) continue;
        this.#send(ctx, b.address, b.length);
      }
      bytes += chain.readableLength;
      this.#metrics.bytesOut += chain.readableLength;
      q.pushUsed(chain.head, 0);
      used = true;
    }
    if (used) q.notifyIfNeeded();
    if (more && !this.#txScheduled) {
      this.#metrics.deferred++;
      this.#txScheduled = true;
      this.#defer(() => {
        this.#txScheduled = false;
        this.#guard(() => this.#transmit());
      });
    }
  }

  // A zero-copy view when the range lies in one of guest memory's 1 GiB views; otherwise
  // copied out in pieces through a scratch buffer.
  #send(ctx: VirtioDeviceContext, address: number, length: number): void {
    let view: Uint8Array | undefined;
    try {
      view = ctx.memory.slice(address, length);
    } catch (e) {
      if (!(e instanceof GuestMemoryError)) throw e;
    }
    if (view) {
      this.#emit(view);
      return;
    }
    this.#scratch ??= new Uint8Array(SCRATCH_BYTES);
    for (let done = 0; done < length; ) {
      const n = Math.min(SCRATCH_BYTES, length - done);
      const piece = this.#scratch.subarray(0, n);
      ctx.memory.read(address + done, piece);
      this.#emit(piece);
      done += n;
    }
  }

  #emit(bytes: Uint8Array): void {
    try {
      this.#out(bytes);
    } catch (e) {
      this.#metrics.sinkErrors++;
      this.#warn(`output sink failed: ${String(e)}`);
    }
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
