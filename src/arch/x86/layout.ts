// Fixed guest-physical addresses the x86 boot code uses below 1 MiB. They follow the usual
// direct-boot layout (Firecracker, Cloud Hypervisor): structures in conventional memory,
// the kernel at 1 MiB, ACPI tables in the BIOS area where Linux also looks for an RSDP.

export const GDT_ADDRESS = 0x500;
export const IDT_ADDRESS = 0x520;
export const PVH_INFO_ADDRESS = 0x6000;
export const PVH_MEMMAP_ADDRESS = 0x6040;
export const ZERO_PAGE_ADDRESS = 0x7000;
export const BOOT_STACK_POINTER = 0x8ff0;
export const PML4_ADDRESS = 0x9000;
export const PDPT_ADDRESS = 0xa000;
/** Four page directories, one per GiB of the identity map. */
export const PD_ADDRESS = 0xb000;
export const CMDLINE_ADDRESS = 0x20000;
export const CMDLINE_MAX = 0x10000;
/** End of usable conventional memory; the EBDA conventionally starts here. */
export const EBDA_START = 0x9fc00;
export const ACPI_AREA_START = 0xe0000;
export const HIMEM_START = 0x100000;
/** Where a relocatable bzImage decompresses itself by default (CONFIG_PHYSICAL_START). */
export const KERNEL_RUN_ADDRESS = 0x1000000;

// e820 entry types (Linux arch/x86/include/uapi/asm/e820.h / ACPI "Address Range Types").
export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}
