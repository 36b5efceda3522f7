// The address-decoding buses (port I/O and MMIO) that route vCPU exits to device models.

export type { BusOptions, BusRangeStats, BusStats } from "./bus.js";
export { Bus, MMIO_SPACE_SIZE, PIO_SPACE_SIZE } from "./bus.js";
