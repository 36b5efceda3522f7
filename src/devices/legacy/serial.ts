// A 16550A UART as Linux's 8250 driver probes and drives it (the model rust-vmm's
// vm-superio and QEMU's serial.c also follow): eight byte-wide registers at offsets 0..7
// from the base (COM1 is 0x3f8, IRQ 4). Transmission is instant, so THR and the shift
// register are always empty; received bytes come from the host through enqueueInput()
// into one bounded ring; interrupts are computed from the enabled sources and driven on
// an injected line. The guest controls every register value and may touch any offset
// with any size: nothing here throws on a guest access.

import type { BusDevice, IrqLine } from "../device.js";
import {
  allocateFastPath,
  FAST_LSR,
  FAST_THR,
  FastPathConsumer,
  type SerialFastPath,
} from "./serial_fast.js";

/** COM1..COM4 bases and the ISA IRQs of COM1/COM3 and COM2/COM4 (IBM PC/AT Technical Reference). */
export const COM_PORTS = [0x3f8, 0x2f8, 0x3e8, 0x2e8] as const;
export const COM1_IRQ = 4;
export const COM2_IRQ = 3;

// Register offsets, PC16550D datasheet (TI SNLS378C) Table 2 "Register Summary".
/** Receiver Buffer (read) / Transmitter Holding (write); Divisor Latch LSB when DLAB=1. */
export const UART_RBR_THR = 0;
/** Interrupt Enable; Divisor Latch MSB when DLAB=1. */
export const UART_IER = 1;
/** Interrupt Identification (read) / FIFO Control (write). */
export const UART_IIR_FCR = 2;
export const UART_LCR = 3;
export const UART_MCR = 4;
export const UART_LSR = 5;
export const UART_MSR = 6;
export const UART_SCR = 7;
/** Number of ports the UART occupies. */
export const UART_REGISTER_COUNT = 8;

// IER bits, PC16550D §8.6.
const IER_ERBFI = 0x01; // received data available
const IER_ETBEI = 0x02; // transmitter holding register empty
const IER_ELSI = 0x04; // receiver line status
const IER_EDSSI = 0x08; // modem status
const IER_MASK = 0x0f; // bits 4-7 read as zero on a 16550A (Linux's XScale UUE probe relies on it)

// IIR values, PC16550D Table 4 "Interrupt Control Functions".
const IIR_NO_INT = 0x01;
const IIR_RLS = 0x06;
const IIR_RDA = 0x04;
const IIR_THRE = 0x02;
const IIR_MSI = 0x00;
const IIR_FIFOS_ENABLED = 0xc0;

// FCR bits, PC16550D §8.5.
const FCR_FIFO_ENABLE = 0x01;
const FCR_RCVR_RESET = 0x02;
const FCR_KEEP = 0xc9; // enable, DMA mode, receiver trigger; the reset bits self-clear

// LCR, PC16550D §8.3.
const LCR_DLAB = 0x80;

// MCR bits, PC16550D §8.8.
const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const MCR_MASK = 0x1f;

// LSR bits, PC16550D §8.4.
const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_PE = 0x04;
const LSR_FE = 0x08;
const LSR_BI = 0x10;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

// MSR bits, PC16550D §8.9.
const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;
const MSR_DELTAS = 0x0f;
/** A host that is always there: carrier, data set ready, clear to send (as vm-superio). */
const MSR_CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS;

/** 115200 / 12 = 9600 baud, the PC BIOS default divisor. */
const DEFAULT_DIVISOR = 12;
const DEFAULT_RX_CAPACITY = 4096;
const DEFAULT_TX_BATCH = 64;
const NEWLINE = 0x0a;

/** How the UART's interrupt output is presented on its IrqLine. */
export type SerialIrqMode = "level" | "edge";

export interface SerialOptions {
  /** Name for logs and bus counters; default "serial". */
  name?: string;
  /** The UART's interrupt output (COM1: IRQ 4). */
  irq: IrqLine;
  /**
   * Receives transmitted bytes. The array is a view of a buffer the UART reuses: the sink
   * must consume or copy it before returning (Node's stream.write keeps a reference, so
   * pass `Buffer.from(bytes)` to a stream).
   */
  out: (bytes: Uint8Array) => void;
  /**
   * "level" (default): irq.set(true/false) whenever the INTR output changes, as the
   * 16550's pin behaves; the VMM maps it to KVM_IRQ_LINE. "edge": irq.pulse() on each
   * rise of INTR, for an irqfd wired to an edge-triggered pin (what the ISA 8259/IOAPIC
   * pin 4 is); the 8250 driver loops on IIR until it reads "no interrupt", so an edge per
   * rise is enough.
   */
  irqMode?: SerialIrqMode;
  /** Bytes of console input held for the guest; beyond this enqueueInput() refuses. */
  rxCapacity?: number;
  /**
   * Transmitted bytes gathered before calling `out` (1 = call per byte). A batch is also
   * flushed on a newline, on any guest access other than a THR write or the first LSR
   * read after it (so a driver that polls LSR or turns to IER/IIR releases its output), on
   * flush(), and on state().
   */
  txBatch?: number;
  /** Called when the guest has read the last queued input byte: the host may resume input. */
  onInputDrained?: () => void;
  /**
   * Offer the fast path of serial_fast.ts (LSR reads and THR writes answered by the vCPU
   * threads): `fastPath` is then the memory to hand them, and flush() must be
   * called when its doorbell rings. Default false.
   */
  fastPath?: boolean;
}

/** Everything needed to recreate the UART; plain JSON. */
export interface SerialState {
  ier: number;
  lcr: number;
  mcr: number;
  lsr: number;
  msr: number;
  scr: number;
  dll: number;
  dlm: number;
  fcr: number;
  threPending: boolean;
  rx: number[];
}

export interface SerialCounters {
  /** Accesses with a size other than 1, 2, 4 or 8 bytes. */
  malformed: number;
  /** Input bytes refused because the ring was full or the UART was in loopback. */
  rxDropped: number;
  /** Loopback bytes lost because the ring was full (real hardware: overrun). */
  loopbackOverruns: number;
}

/** A 16550A UART: register it on the port bus with length {@link UART_REGISTER_COUNT}. */
export class Serial implements BusDevice {
  readonly name: string;
  /** Shared with the vCPU threads when the fast path is on. */
  readonly fastPath: SerialFastPath | undefined;
  #fast: FastPathConsumer | undefined;
  #transmitQueued = (b: number) => this.#transmit(b);

  #irq: IrqLine;
  #out: (bytes: Uint8Array) => void;
  #edge: boolean;
  #onInputDrained: (() => void) | undefined;

  #ier = 0;
  #lcr = 0;
  #mcr = 0;
  #lsr = LSR_THRE | LSR_TEMT;
  #msr = MSR_CONNECTED;
  #scr = 0;
  #dll = DEFAULT_DIVISOR;
  #dlm = 0;
  #fcr = 0;
  #threPending = false;
  #intr = false;

  // Receive ring.
  #rx: Uint8Array;
  #rxHead = 0;
  #rxCount = 0;

  // Transmit batch; #txOne is a prebuilt 1-byte view so the per-byte path allocates nothing.
  #tx: Uint8Array;
  #txLen = 0;
  #txOne: Uint8Array;
  #lastWasThr = false;

  #counters: SerialCounters = { malformed: 0, rxDropped: 0, loopbackOverruns: 0 };

  constructor(options: SerialOptions) {
    const { irq, out } = options;
    if (typeof irq?.set !== "function" || typeof irq.pulse !== "function") {
      throw new TypeError("Cannot create serial: irq must be an IrqLine");
    }
    if (typeof out !== "function")
      throw new TypeError("Cannot create serial: out must be a function");
    const rxCapacity = options.rxCapacity ?? DEFAULT_RX_CAPACITY;
    if (!Number.isSafeInteger(rxCapacity) || rxCapacity < 1 || rxCapacity > 1 << 24) {
      throw new RangeError(`Cannot create serial: rxCapacity ${rxCapacity} is not in 1..2^24`);
    }
    const txBatch = options.txBatch ?? DEFAULT_TX_BATCH;
    if (!Number.isSafeInteger(txBatch) || txBatch < 1 || txBatch > 1 << 20) {
      throw new RangeError(`Cannot create serial: txBatch ${txBatch} is not in 1..2^20`);
    }
    this.name = options.name ?? "serial";
    this.#irq = irq;
    this.#out = out;
    this.#edge = options.irqMode === "edge";
    this.#onInputDrained = options.onInputDrained;
    this.#rx = new Uint8Array(rxCapacity);
    this.#tx = new Uint8Array(txBatch);
    this.#txOne = this.#tx.subarray(0, 1);
    if (options.fastPath) {
      this.fastPath = allocateFastPath();
      this.#fast = new FastPathConsumer(this.fastPath);
      this.#publish();
    }
  }

  /**
   * Tell the vCPU threads which accesses they may answer: only those with no effect the
   * guest could see before the main thread catches up (serial_fast.ts).
   */
  #publish(): void {
    const fast = this.#fast;
    if (!fast) return;
    let flags = 0;
    if (!(this.#lcr & LCR_DLAB) && !(this.#mcr & MCR_LOOP) && !(this.#ier & IER_ETBEI))
      flags |= FAST_THR;
    if (!(this.#lsr & LSR_ERRORS)) flags |= FAST_LSR;
    fast.publish(flags, this.#lsr);
  }

  /** Recreate a UART from {@link Serial.state}; throws TypeError/RangeError on a bad snapshot. */
  static fromState(state: SerialState, options: SerialOptions): Serial {
    const s = new Serial(options);
    const byte = (key: keyof SerialState): number => {
      const v = state[key];
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xff) {
        throw new RangeError(`Cannot restore serial: ${key} is not a byte`);
      }
      return v;
    };
    s.#ier = byte("ier") & IER_MASK;
    s.#lcr = byte("lcr");
    s.#mcr = byte("mcr") & MCR_MASK;
    s.#lsr = (byte("lsr") & LSR_ERRORS) | LSR_THRE | LSR_TEMT;
    s.#msr = byte("msr");
    s.#scr = byte("scr");
    s.#dll = byte("dll");
    s.#dlm = byte("dlm");
    s.#fcr = byte("fcr") & FCR_KEEP;
    if (typeof state.threPending !== "boolean") {
      throw new TypeError("Cannot restore serial: threPending is not a boolean");
    }
    s.#threPending = state.threPending;
    if (!Array.isArray(state.rx) || state.rx.length > s.#rx.length) {
      throw new RangeError("Cannot restore serial: rx is not an array within rxCapacity");
    }
    for (const b of state.rx) {
      if (typeof b !== "number" || !Number.isInteger(b) || b < 0 || b > 0xff) {
        throw new RangeError("Cannot restore serial: rx holds a non-byte");
      }
      s.#rx[s.#rxCount++] = b;
    }
    s.#syncDataReady();
    s.#publish();
    // The line's last level is unknown after a restore, so drive it unconditionally.
    s.#intr = s.#pendingIir() !== IIR_NO_INT;
    if (!s.#edge) s.#irq.set(s.#intr);
    else if (s.#intr) s.#irq.pulse();
    return s;
  }

  /** A JSON-able snapshot; flushes pending output first so none is lost or repeated. */
  state(): SerialState {
    this.flush();
    const rx: number[] = [];
    for (let i = 0; i < this.#rxCount; i++)
      rx.push(this.#rx[(this.#rxHead + i) % this.#rx.length] ?? 0);
    return {
      ier: this.#ier,
      lcr: this.#lcr,
      mcr: this.#mcr,
      lsr: this.#lsr,
      msr: this.#msr,
      scr: this.#scr,
      dll: this.#dll,
      dlm: this.#dlm,
      fcr: this.#fcr,
      threPending: this.#threPending,
      rx,
    };
  }

  /** A copy of the error counters. */
  counters(): SerialCounters {
    return { ...this.#counters };
  }

  /** Free bytes in the receive ring. */
  get inputSpace(): number {
    return this.#rx.length - this.#rxCount;
  }

  /**
   * Queue console input for the guest. Returns how many bytes were taken: input beyond the
   * ring's free space (and all input while the guest has the UART in loopback, where the
   * receive pin is disconnected) is refused and counted, so the host can pause its source
   * and retry after onInputDrained.
   */
  enqueueInput(bytes: Uint8Array): number {
    if (this.#mcr & MCR_LOOP) {
      this.#counters.rxDropped += bytes.length;
      return 0;
    }
    const n = Math.min(bytes.length, this.#rx.length - this.#rxCount);
    for (let i = 0; i < n; i++) this.#pushRx(bytes[i] ?? 0);
    this.#counters.rxDropped += bytes.length - n;
    if (n > 0) {
      this.#syncDataReady();
      this.#updateIrq();
      this.#publish();
    }
    return n;
  }

  /** Hand any output (batched, or queued by the vCPU threads) to the sink now. */
  flush(): void {
    this.#fast?.drain(this.#transmitQueued);
    this.#flushBatch();
  }

  #flushBatch(): void {
    if (this.#txLen === 0) return;
    const n = this.#txLen;
    this.#txLen = 0;
    this.#out(n === 1 ? this.#txOne : this.#tx.subarray(0, n));
  }

  read(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: size. Wider accesses are split into byte cycles as the ISA bus does.
    const n = data.length;
    if (n !== 1 && n !== 2 && n !== 4 && n !== 8) {
      this.#counters.malformed++;
      data.fill(0xff);
      return;
    }
    // Bytes the vCPU threads queued were written before this access.
    this.#fast?.drain(this.#transmitQueued);
    for (let i = 0; i < n; i++) data[i] = this.#readByte(offset + i);
    this.#publish();
  }

  write(offset: number, data: Uint8Array): void {
    const n = data.length;
    if (n !== 1 && n !== 2 && n !== 4 && n !== 8) {
      this.#counters.malformed++;
      return;
    }
    this.#fast?.drain(this.#transmitQueued);
    for (let i = 0; i < n; i++) this.#writeByte(offset + i, data[i] ?? 0);
    this.#publish();
  }

  #readByte(offset: number): number {
    // A driver that polls LSR right after a THR write is about to write again; anything
    // else means the burst is over and the batch should reach the host.
    if (offset === UART_LSR && this.#lastWasThr) {
      this.#lastWasThr = false;
    } else {
      this.#lastWasThr = false;
      this.#flushBatch();
    }
    const dlab = (this.#lcr & LCR_DLAB) !== 0;
    // GUEST-CONTROLLED: offset; anything outside 0..7 (NaN included) reads all-ones.
    switch (offset) {
      case UART_RBR_THR:
        return dlab ? this.#dll : this.#popRx();
      case UART_IER:
        return dlab ? this.#dlm : this.#ier;
      case UART_IIR_FCR: {
        const iir = this.#pendingIir();
        // Reading IIR while it reports THRE is one of the two ways to clear THRE (§8.6).
        if (iir === IIR_THRE) {
          this.#threPending = false;
          this.#updateIrq();
        }
        return iir | (this.#fcr & FCR_FIFO_ENABLE ? IIR_FIFOS_ENABLED : 0);
      }
      case UART_LCR:
        return this.#lcr;
      case UART_MCR:
        return this.#mcr;
      case UART_LSR: {
        const lsr = this.#lsr;
        // Error bits clear on read (§8.4).
        if (lsr & LSR_ERRORS) {
          this.#lsr &= ~LSR_ERRORS;
          this.#updateIrq();
        }
        return lsr;
      }
      case UART_MSR: {
        const msr = this.#msr;
        // Delta bits clear on read (§8.9).
        if (msr & MSR_DELTAS) {
          this.#msr &= ~MSR_DELTAS;
          this.#updateIrq();
        }
        return msr;
      }
      case UART_SCR:
        return this.#scr;
      default:
        return 0xff;
    }
  }

  #writeByte(offset: number, value: number): void {
    const isThr = offset === UART_RBR_THR && (this.#lcr & LCR_DLAB) === 0;
    if (!isThr) this.#flushBatch();
    this.#lastWasThr = isThr;
    const dlab = (this.#lcr & LCR_DLAB) !== 0;
    // GUEST-CONTROLLED: offset and value; unknown offsets are ignored.
    switch (offset) {
      case UART_RBR_THR:
        if (dlab) this.#dll = value;
        else this.#transmit(value);
        return;
      case UART_IER: {
        if (dlab) {
          this.#dlm = value;
          return;
        }
        const old = this.#ier;
        this.#ier = value & IER_MASK;
        // Enabling ETBEI with THR empty raises THRE at once; disabling drops it (as QEMU).
        if ((this.#ier ^ old) & IER_ETBEI) this.#threPending = (this.#ier & IER_ETBEI) !== 0;
        this.#updateIrq();
        return;
      }
      case UART_IIR_FCR:
        if (value & FCR_RCVR_RESET) {
          this.#rxHead = 0;
          this.#rxCount = 0;
          this.#syncDataReady();
        }
        // Bit 2 (XMIT FIFO reset) needs nothing: the transmitter is always empty.
        this.#fcr = value & FCR_KEEP;
        this.#updateIrq();
        return;
      case UART_LCR:
        this.#lcr = value;
        return;
      case UART_MCR:
        this.#mcr = value & MCR_MASK;
        this.#setModemStatus(this.#mcr & MCR_LOOP ? loopbackStatus(this.#mcr) : MSR_CONNECTED);
        this.#updateIrq();
        return;
      case UART_LSR:
        // Writable only for factory test (§8.4 note); ignore.
        return;
      case UART_MSR:
        return;
      case UART_SCR:
        this.#scr = value;
        return;
      default:
        return;
    }
  }

  #transmit(value: number): void {
    if (this.#mcr & MCR_LOOP) {
      // Loopback: the transmitter output feeds the receiver (§8.8 bit 4).
      if (this.#rxCount < this.#rx.length) {
        this.#pushRx(value);
        this.#syncDataReady();
      } else {
        this.#counters.loopbackOverruns++;
      }
    } else {
      this.#tx[this.#txLen++] = value;
      if (this.#txLen === this.#tx.length || value === NEWLINE) this.#flushBatch();
    }
    // The byte left THR at once: writing THR cleared THRE, emptying it sets it again.
    this.#threPending = true;
    this.#updateIrq();
  }

  #setModemStatus(status: number): void {
    const old = this.#msr;
    const changed = (old ^ status) & (MSR_CTS | MSR_DSR | MSR_DCD);
    let deltas = old & MSR_DELTAS;
    if (changed & MSR_CTS) deltas |= MSR_DCTS;
    if (changed & MSR_DSR) deltas |= MSR_DDSR;
    if (changed & MSR_DCD) deltas |= MSR_DDCD;
    // TERI: ring indicator went from on to off.
    if (old & MSR_RI && !(status & MSR_RI)) deltas |= MSR_TERI;
    this.#msr = status | deltas;
  }

  #pushRx(b: number): void {
    this.#rx[(this.#rxHead + this.#rxCount) % this.#rx.length] = b;
    this.#rxCount++;
  }

  #popRx(): number {
    if (this.#rxCount === 0) return 0;
    const b = this.#rx[this.#rxHead] ?? 0;
    this.#rxHead = (this.#rxHead + 1) % this.#rx.length;
    this.#rxCount--;
    this.#syncDataReady();
    this.#updateIrq();
    if (this.#rxCount === 0) this.#onInputDrained?.();
    return b;
  }

  #syncDataReady(): void {
    if (this.#rxCount > 0) this.#lsr |= LSR_DR;
    else this.#lsr &= ~LSR_DR;
  }

  /** The highest-priority enabled pending source (PC16550D Table 4), or IIR_NO_INT. */
  #pendingIir(): number {
    const ier = this.#ier;
    if (ier & IER_ELSI && this.#lsr & LSR_ERRORS) return IIR_RLS;
    if (ier & IER_ERBFI && this.#rxCount > 0) return IIR_RDA;
    if (ier & IER_ETBEI && this.#threPending) return IIR_THRE;
    if (ier & IER_EDSSI && this.#msr & MSR_DELTAS) return IIR_MSI;
    return IIR_NO_INT;
  }

  #updateIrq(): void {
    // OUT2 gates INTR on PC boards, but neither QEMU nor vm-superio model that and some
    // early consoles never set it, so the output follows the pending state alone.
    const intr = this.#pendingIir() !== IIR_NO_INT;
    if (intr === this.#intr) return;
    this.#intr = intr;
    if (!this.#edge) this.#irq.set(intr);
    else if (intr) this.#irq.pulse();
  }
}

/** MSR status bits in loopback: DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD (PC16550D §8.8 bit 4). */
function loopbackStatus(mcr: number): number {
  return (
    (mcr & MCR_DTR ? MSR_DSR : 0) |
    (mcr & MCR_RTS ? MSR_CTS : 0) |
    (mcr & MCR_OUT1 ? MSR_RI : 0) |
    (mcr & MCR_OUT2 ? MSR_DCD : 0)
  );
}
