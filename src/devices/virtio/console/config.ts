// The virtio-console configuration space (virtio 1.2 §5.3.4) and feature bits (§5.3.3).
// This device has one port (no VIRTIO_CONSOLE_F_MULTIPORT), so max_nr_ports is left zero;
// cols/rows are meaningful with VIRTIO_CONSOLE_F_SIZE and emerg_wr with
// VIRTIO_CONSOLE_F_EMERG_WRITE, the only field the driver may write.

/** Feature bits (virtio 1.2 §5.3.3). */
export const VIRTIO_CONSOLE_F_SIZE = 0n;
export const VIRTIO_CONSOLE_F_MULTIPORT = 1n;
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2n;

// Field offsets in struct virtio_console_config (§5.3.4).
export const OFF_COLS = 0; // le16
export const OFF_ROWS = 2; // le16
export const OFF_MAX_NR_PORTS = 4; // le32, zero: MULTIPORT not offered
export const OFF_EMERG_WR = 8; // le32, write-only
/** Bytes of config this device implements; reads beyond give zero. */
export const CONSOLE_CONFIG_SIZE = 12;

/** Queue indices without MULTIPORT (§5.3.2). */
export const RECEIVEQ = 0;
export const TRANSMITQ = 1;

/** Check a terminal dimension (le16 in config space). */
export function validateDimension(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > 0xffff) {
    throw new RangeError(`Cannot size virtio-console: ${name} ${String(value)} is not in 0..65535`);
  }
  return value;
}
