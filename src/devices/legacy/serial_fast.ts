// The UART's fast path, shared between the Serial model (main thread) and the vCPU threads.
// Linux's serial console writes each byte by polling LSR until THRE and then writing THR,
// with THR-empty interrupts off; forwarded to the main thread, that is two round trips per
// byte (in the lab, about 1 ms per byte, against 0.28 ms under QEMU). While the UART is in
// a state where neither access has a side effect the guest could see at once, the vCPU
// thread answers both itself:
// - an LSR read returns the word the model publishes (only while no error bit is set,
//   since reading LSR clears them);
// - a THR write goes into a ring the model drains on the main thread, where each byte is
//   transmitted exactly as a forwarded write would have been, only a little later: only
//   while DLAB, loopback and the THR-empty interrupt are all off.
// The model republishes the flags after every register access it handles, and drains the
// ring before handling any access, so the guest sees its writes in order. This file has
// no imports: the vCPU worker loads it.
//
// Producers (vCPU threads) append under a spin lock (two vCPUs printing at once is rare
// and each append is a few stores); the one consumer is the main thread. Head and tail
// are free-running 32-bit counters. A full ring makes the write take the slow path.

/** Cell indices in `cells`. */
const F_FLAGS = 0;
const F_LSR = 1;
const F_LOCK = 2;
const F_HEAD = 3;
const F_TAIL = 4;
/** 1 while the main thread has been told there are bytes to drain. */
export const F_DOORBELL = 5;
const CELLS = 6;

/** A THR write may go into the ring. */
export const FAST_THR = 1;
/** An LSR read may be answered from F_LSR. */
export const FAST_LSR = 2;

export const FAST_RING_BYTES = 4096;

export interface SerialFastPath {
  /** Int32 cells, see F_*. */
  cells: SharedArrayBuffer;
  ring: SharedArrayBuffer;
}

export function allocateFastPath(): SerialFastPath {
  return {
    cells: new SharedArrayBuffer(4 * CELLS),
    ring: new SharedArrayBuffer(FAST_RING_BYTES),
  };
}

/** The vCPU thread's side: views made once per thread. */
export class FastPathProducer {
  readonly #cells: Int32Array;
  readonly #ring: Uint8Array;
  constructor(shared: SerialFastPath) {
    this.#cells = new Int32Array(shared.cells);
    this.#ring = new Uint8Array(shared.ring);
  }

  /** The LSR value, or -1 when the read must go to the model. */
  readLsr(): number {
    const c = this.#cells;
    return Atomics.load(c, F_FLAGS) & FAST_LSR ? Atomics.load(c, F_LSR) : -1;
  }

  /**
   * Queue a THR byte; false when the write must go to the model. The first byte after a
   * drain rings the doorbell (Atomics.notify on F_DOORBELL), which wakes the main thread.
   */
  writeThr(byte: number): boolean {
    const c = this.#cells;
    if (!(Atomics.load(c, F_FLAGS) & FAST_THR)) return false;
    while (Atomics.compareExchange(c, F_LOCK, 0, 1) !== 0) {
      // Another vCPU is appending: a few stores.
    }
    const head = Atomics.load(c, F_HEAD);
    const queued = (head - Atomics.load(c, F_TAIL)) | 0;
    if (queued >= FAST_RING_BYTES) {
      Atomics.store(c, F_LOCK, 0);
      return false;
    }
    this.#ring[head & (FAST_RING_BYTES - 1)] = byte;
    Atomics.store(c, F_HEAD, (head + 1) | 0);
    Atomics.store(c, F_LOCK, 0);
    if (Atomics.exchange(c, F_DOORBELL, 1) === 0) Atomics.notify(c, F_DOORBELL);
    return true;
  }
}

/** The model's side (main thread). */
export class FastPathConsumer {
  readonly cells: Int32Array;
  readonly #ring: Uint8Array;
  constructor(shared: SerialFastPath) {
    this.cells = new Int32Array(shared.cells);
    this.#ring = new Uint8Array(shared.ring);
  }

  publish(flags: number, lsr: number): void {
    Atomics.store(this.cells, F_LSR, lsr);
    Atomics.store(this.cells, F_FLAGS, flags);
  }

  /** Hand every queued byte to `each`, oldest first. */
  drain(each: (byte: number) => void): void {
    const c = this.cells;
    Atomics.store(c, F_DOORBELL, 0);
    let tail = Atomics.load(c, F_TAIL);
    const head = Atomics.load(c, F_HEAD);
    while (tail !== head) {
      each(this.#ring[tail & (FAST_RING_BYTES - 1)] ?? 0);
      tail = (tail + 1) | 0;
    }
    Atomics.store(c, F_TAIL, tail);
  }
}
