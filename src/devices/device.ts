// The contract between the buses and every device model. Devices know nothing of KVM:
// they see offsets within their own range and raise interrupts through an injected line.

/** A device on the port-I/O or MMIO bus. `offset` is relative to the registered base. */
export interface BusDevice {
  /** Short name for logs and counters, e.g. "serial0". */
  readonly name: string;
  /** Fill `data` (1, 2, 4 or 8 bytes) with the value at `offset`. */
  read(offset: number, data: Uint8Array): void;
  /** Consume the bytes in `data` written at `offset`. */
  write(offset: number, data: Uint8Array): void;
}

/** An interrupt line given to a device; the VMM wires it to KVM_IRQ_LINE or an irqfd. */
export interface IrqLine {
  /** Level-triggered lines: drive the level. Edge-triggered users call pulse(). */
  set(level: boolean): void;
  pulse(): void;
}

/** What a device may ask of the VM as a whole (power-off, reset). */
export type VmRequest = "poweroff" | "reset";
export type VmRequestSink = (request: VmRequest, reason: string) => void;
