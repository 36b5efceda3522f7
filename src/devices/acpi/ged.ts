// The Generic Event Device (ACPI 6.5 §5.6.9) of Vessel's hardware-reduced platform: a
// memory-mapped event register and one edge-triggered interrupt. A hardware-reduced
// platform has no fixed power button or GPE blocks, so host-side events (the power button)
// are latched here, the interrupt fires, and the DSDT's `_EVT` method reads the register to
// learn what happened and Notifies the matching device.

import type { BusDevice, IrqLine } from "../device.js";

/** Offset of the 32-bit event register. Reading returns pending events and clears them. */
export const GED_EVENT_OFFSET = 0;
/** Width of the event register in bytes; the DSDT's field over it is DWordAcc, 32 bits. */
export const GED_EVENT_SIZE = 4;
/** Bytes of MMIO space the device decodes (the rest reads zero). */
export const GED_MMIO_SIZE = 0x10;
/** Event bit: the power button was pressed (`_EVT` Notifies the PNP0C0C device with 0x80). */
export const GED_EVENT_POWER_BUTTON = 1 << 0;

/** What the device has ignored, for metrics and debugging. */
export interface GedCounters {
  /** Accesses touching bytes with no register behind them (counted once per access). */
  unknownAccesses: number;
  /** Writes that fall wholly within the read-only event register. */
  ignoredWrites: number;
}

/** The GED event register as an MMIO device. */
export class GedDevice implements BusDevice {
  readonly name: string;
  readonly counters: GedCounters = { unknownAccesses: 0, ignoredWrites: 0 };
  readonly #irq: IrqLine;
  #pending = 0;

  constructor(irq: IrqLine, name = "ged") {
    this.name = name;
    this.#irq = irq;
  }

  /** Events latched and not yet read by the guest. */
  get pending(): number {
    return this.#pending;
  }

  /** Press the power button: latch the event and raise the (edge-triggered) interrupt. */
  pressPowerButton(): void {
    this.#raise(GED_EVENT_POWER_BUTTON);
  }

  #raise(event: number): void {
    this.#pending = (this.#pending | event) >>> 0;
    this.#irq.pulse();
  }

  read(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: offset and data.length. Each byte is looked up on its own, so any
    // size at any offset is safe; bytes of the event register that are returned are
    // cleared, so an event is reported exactly once however the guest slices its reads.
    let delivered = 0;
    let unknown = false;
    for (let i = 0; i < data.length; i++) {
      const at = offset + i - GED_EVENT_OFFSET;
      if (Number.isInteger(at) && at >= 0 && at < GED_EVENT_SIZE) {
        data[i] = (this.#pending >>> (8 * at)) & 0xff;
        delivered |= 0xff << (8 * at);
      } else {
        data[i] = 0;
        unknown = true;
      }
    }
    this.#pending = (this.#pending & ~delivered) >>> 0;
    if (unknown) this.counters.unknownAccesses++;
  }

  write(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: nothing here is writable; just classify the access for the counters.
    const start = offset - GED_EVENT_OFFSET;
    const end = start + data.length;
    if (start >= 0 && end <= GED_EVENT_SIZE) this.counters.ignoredWrites++;
    else this.counters.unknownAccesses++;
  }
}
