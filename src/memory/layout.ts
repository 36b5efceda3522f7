// Where guest RAM goes in the guest-physical address space on x86-64. RAM starts at 0; the
// 1 GiB below 4 GiB is left as a hole for MMIO devices, the IOAPIC and the LAPIC, so a guest
// with more than 3 GiB gets the remainder above 4 GiB (as QEMU and Firecracker do).

export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;

/** Start of the MMIO hole below 4 GiB. */
export const MMIO_HOLE_START = 3 * GIB;
/** End of the hole: RAM resumes at 4 GiB. */
export const MMIO_HOLE_END = 4 * GIB;
/** Where virtio-mmio and other VMM MMIO devices are placed (inside the hole, below the IOAPIC). */
export const MMIO_DEVICES_START = 0xd000_0000;
export const IOAPIC_ADDRESS = 0xfec0_0000;
export const LAPIC_ADDRESS = 0xfee0_0000;

export interface RamRegion {
  /** Guest-physical start. */
  readonly start: number;
  readonly size: number;
}

/** Split `bytes` of RAM around the MMIO hole. */
export function ramRegions(bytes: number): RamRegion[] {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 4096 !== 0) {
    throw new RangeError(
      `Cannot lay out guest memory: size ${bytes} is not a positive multiple of 4096`,
    );
  }
  const low = Math.min(bytes, MMIO_HOLE_START);
  const regions: RamRegion[] = [{ start: 0, size: low }];
  if (bytes > low) regions.push({ start: MMIO_HOLE_END, size: bytes - low });
  return regions;
}
