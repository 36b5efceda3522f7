// virtio-rng (virtio 1.2 §5.4, device type 4): one request queue; each request is a chain
// of device-writable buffers that the device fills with random bytes from the host's
// getrandom (node:crypto randomFillSync straight into the guest-memory view, no copy) and
// returns with the number of bytes written. A guest cannot make the VMM's main thread
// spin: one turn serves at most `queueSize` chains, at most 64 KiB per chain (the spec
// lets the device return fewer bytes than the buffer holds, §5.4.6.1) and at most 1 MiB
// in all; anything left is served on a later event-loop turn (setImmediate), so other
// devices and vCPU exits are answered in between.

import { randomFillSync } from "node:crypto";
import { GuestMemoryError } from "../../../memory/mod.js";
import {
  type QueueHandle,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_RNG,
  type VirtioDevice,
  type VirtioDeviceContext,
} from "../../../virtio/device.js";
import { RngMetrics } from "./metrics.js";

export const RNG_QUEUE_SIZE = 256;
/** Most bytes given to one request (a short answer is allowed, §5.4.6.1). */
export const RNG_MAX_BYTES_PER_REQUEST = 64 * 1024;
/** Most bytes produced per event-loop turn. */
export const RNG_MAX_BYTES_PER_TURN = 1024 * 1024;

export interface VirtioRngOptions {
  name?: string;
  queueSize?: number;
  maxBytesPerRequest?: number;
  maxBytesPerTurn?: number;
  /** Fill a buffer with random bytes; default node:crypto randomFillSync (getrandom). */
  random?: (buffer: Uint8Array) => void;
  /** Run leftover work later; default setImmediate. */
  defer?: (fn: () => void) => void;
}

export class VirtioRng implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_RNG;
  readonly name: string;
  readonly features =
    (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_INDIRECT_DESC) | (1n << VIRTIO_F_EVENT_IDX);
  readonly queueSizes: readonly number[];
  readonly metrics = new RngMetrics();

  private readonly maxPerRequest: number;
  private readonly maxPerTurn: number;
  private readonly random: (buffer: Uint8Array) => void;
  private readonly defer: (fn: () => void) => void;
  private ctx: VirtioDeviceContext | undefined;
  private queue: QueueHandle | undefined;
  private scheduled = false;
  private scratch: Uint8Array | undefined;

  constructor(options: VirtioRngOptions = {}) {
    this.name = options.name ?? "virtio-rng0";
    this.queueSizes = [options.queueSize ?? RNG_QUEUE_SIZE];
    this.maxPerRequest = positive(
      options.maxBytesPerRequest ?? RNG_MAX_BYTES_PER_REQUEST,
      "maxBytesPerRequest",
    );
    this.maxPerTurn = positive(
      options.maxBytesPerTurn ?? RNG_MAX_BYTES_PER_TURN,
      "maxBytesPerTurn",
    );
    this.random = options.random ?? ((b) => randomFillSync(b));
    this.defer = options.defer ?? ((fn) => setImmediate(fn));
  }

  readConfig(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  writeConfig(): void {}

  activate(ctx: VirtioDeviceContext): void {
    this.ctx = ctx;
    this.queue = ctx.queues[0];
  }

  queueNotify(index: number): void {
    if (index !== 0 || !this.queue) {
      this.metrics.refused++;
      return;
    }
    this.process();
  }

  reset(): void {
    // A continuation already scheduled finds no queue and does nothing.
    this.ctx = undefined;
    this.queue = undefined;
  }

  /** Serve requests until the ring is empty or this turn's budget is spent. */
  private process(): void {
    const queue = this.queue;
    const ctx = this.ctx;
    if (!queue || !ctx) return;
    let budget = this.maxPerTurn;
    let chains = this.queueSizes[0] as number;
    let more = false;
    for (;;) {
      if (budget === 0 || chains === 0) {
        more = true;
        break;
      }
      const chain = queue.pop();
      if (!chain) break;
      chains--;
      if (chain.writableLength === 0) {
        this.metrics.refused++;
        queue.pushUsed(chain.head, 0);
        continue;
      }
      let want = Math.min(chain.writableLength, this.maxPerRequest, budget);
      let written = 0;
      for (const b of chain.writable) {
        if (want === 0) break;
        const n = Math.min(b.length, want);
        if (n === 0) continue; // a zero-length buffer is legal and gets nothing
        this.fill(ctx, b.address, n);
        written += n;
        want -= n;
      }
      budget -= written;
      this.metrics.requests++;
      this.metrics.bytes += written;
      queue.pushUsed(chain.head, written);
    }
    queue.notifyIfNeeded();
    if (more && !this.scheduled) {
      this.metrics.deferred++;
      this.scheduled = true;
      this.defer(() => {
        this.scheduled = false;
        this.process();
      });
    }
  }

  // The chain's ranges were checked to be in RAM; a range that crosses one of guest
  // memory's 1 GiB views cannot be one zero-copy slice, so it goes through a scratch copy.
  private fill(ctx: VirtioDeviceContext, address: number, length: number): void {
    try {
      this.random(ctx.memory.slice(address, length));
    } catch (e) {
      if (!(e instanceof GuestMemoryError)) throw e;
      this.scratch ??= new Uint8Array(this.maxPerRequest);
      const tmp = this.scratch.subarray(0, length);
      this.random(tmp);
      ctx.memory.write(address, tmp);
    }
  }
}

function positive(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new RangeError(`Cannot create virtio-rng: ${name} ${n} is not a positive integer`);
  }
  return n;
}
