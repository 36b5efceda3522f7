// The power-management registers of Vessel's hardware-reduced ACPI platform: the sleep
// control, sleep status and reset registers the FADT points at (ACPI 6.5 §4.8.3.7, §4.8.3.6),
// as three byte-wide ports in one small port-I/O range. They exist so that the guest's
// ordinary `poweroff` and `reboot` paths reach the VMM as requests instead of hanging.

import type { BusDevice, VmRequestSink } from "../device.js";

/** Offset of the Sleep Control Register within the range. */
export const PM_SLEEP_CONTROL_OFFSET = 0;
/** Offset of the Sleep Status Register within the range. */
export const PM_SLEEP_STATUS_OFFSET = 1;
/** Offset of the Reset Register within the range. */
export const PM_RESET_OFFSET = 2;
/** Bytes of port space the device decodes (one reserved byte keeps it 4-aligned). */
export const PM_PORT_SIZE = 4;

// §4.8.3.7 Sleep Control and Status Registers, Table 4.19 / 4.20.
/** SLP_TYPx field of the sleep control register: bits 4:2. */
export const SLP_TYP_SHIFT = 2;
export const SLP_TYP_MASK = 0x07;
/** SLP_EN: write-only; a 1 makes the platform enter the state in SLP_TYPx. */
export const SLP_EN = 1 << 5;
/** WAK_STS in the sleep status register (write 1 to clear); the guest clears it first. */
export const WAK_STS = 1 << 7;

/**
 * The SLP_TYP value meaning S5 (soft off). The value is platform-defined: the DSDT's `_S5`
 * package hands exactly this number to the guest.
 */
export const SLP_TYP_S5 = 5;

/** The value the guest writes to the reset register (FADT RESET_VALUE, §5.2.9). */
export const ACPI_RESET_VALUE = 0x01;

/** What the device has ignored, for metrics and debugging. */
export interface PmCounters {
  /** Writes with a value that requests nothing we support (sleep states other than S5, ...). */
  ignoredWrites: number;
  /** Accesses touching bytes outside the three registers (counted once per access). */
  unknownAccesses: number;
}

/** The PM register block as a port-I/O device. */
export class AcpiPmDevice implements BusDevice {
  readonly name: string;
  readonly counters: PmCounters = { ignoredWrites: 0, unknownAccesses: 0 };
  readonly #requests: VmRequestSink;

  constructor(requests: VmRequestSink, name = "acpi-pm") {
    this.name = name;
    this.#requests = requests;
  }

  read(offset: number, data: Uint8Array): void {
    // Control and reset are write-only, and WAK_STS is never set because we never sleep:
    // every byte reads zero. Still count reads beyond the registers.
    data.fill(0);
    for (let i = 0; i < data.length; i++) {
      if (!isRegister(offset + i)) {
        this.counters.unknownAccesses++;
        return;
      }
    }
  }

  write(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: offset and data.length. A wide access touches consecutive byte-wide
    // registers, as it would on real port hardware; bytes outside them are dropped.
    let unknown = false;
    for (let i = 0; i < data.length; i++) {
      if (isRegister(offset + i)) this.#writeByte(offset + i, data[i] ?? 0);
      else unknown = true;
    }
    if (unknown) this.counters.unknownAccesses++;
  }

  #writeByte(offset: number, value: number): void {
    switch (offset) {
      case PM_SLEEP_CONTROL_OFFSET: {
        const slpTyp = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
        if ((value & SLP_EN) !== 0 && slpTyp === SLP_TYP_S5) {
          this.#requests("poweroff", "guest entered ACPI S5 (SLP_EN with SLP_TYP=S5)");
        } else {
          this.counters.ignoredWrites++;
        }
        return;
      }
      case PM_SLEEP_STATUS_OFFSET:
        // Clearing WAK_STS before sleeping is expected and harmless; anything else is not.
        if (value !== WAK_STS && value !== 0) this.counters.ignoredWrites++;
        return;
      case PM_RESET_OFFSET:
        if (value === ACPI_RESET_VALUE) {
          this.#requests("reset", "guest wrote RESET_VALUE to the ACPI reset register");
        } else {
          this.counters.ignoredWrites++;
        }
        return;
    }
  }
}

function isRegister(offset: number): boolean {
  return (
    offset === PM_SLEEP_CONTROL_OFFSET ||
    offset === PM_SLEEP_STATUS_OFFSET ||
    offset === PM_RESET_OFFSET
  );
}
