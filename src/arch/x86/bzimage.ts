// The Linux/x86 boot protocol for bzImage (Documentation/arch/x86/boot.rst): check the
// setup header, load the protected-mode kernel at 1 MiB, place the initrd below
// initrd_addr_max, and fill the zero page (boot_params) with the command line, initrd,
// e820 map and RSDP address. Every field read from the file is checked: a kernel image is
// input from a person and may be anything.

import type { GuestMemory } from "../../memory/mod.js";
import {
  CMDLINE_ADDRESS,
  CMDLINE_MAX,
  type E820Entry,
  HIMEM_START,
  KERNEL_RUN_ADDRESS,
  ZERO_PAGE_ADDRESS,
} from "./layout.js";

// Setup header fields, as offsets into the zero page / file (boot.rst "The real-mode kernel header").
const HDR_SETUP_SECTS = 0x1f1;
const HDR_JUMP_END = 0x201;
const HDR_BOOT_FLAG = 0x1fe;
const HDR_HEADER = 0x202;
const HDR_VERSION = 0x206;
const HDR_TYPE_OF_LOADER = 0x210;
const HDR_LOADFLAGS = 0x211;
const HDR_RAMDISK_IMAGE = 0x218;
const HDR_RAMDISK_SIZE = 0x21c;
const HDR_HEAP_END_PTR = 0x224;
const HDR_CMD_LINE_PTR = 0x228;
const HDR_INITRD_ADDR_MAX = 0x22c;
const HDR_XLOADFLAGS = 0x236;
const HDR_CMDLINE_SIZE = 0x238;
const HDR_INIT_SIZE = 0x260;
// boot_params fields outside the setup header (arch/x86/include/uapi/asm/bootparam.h).
const BP_ACPI_RSDP_ADDR = 0x070;
const BP_EXT_RAMDISK_IMAGE = 0x0c0;
const BP_EXT_RAMDISK_SIZE = 0x0c4;
const BP_EXT_CMD_LINE_PTR = 0x0c8;
const BP_E820_ENTRIES = 0x1e8;
const BP_E820_TABLE = 0x2d0;
const E820_MAX_ENTRIES_ZEROPAGE = 128;

const BOOT_FLAG = 0xaa55;
const HDRS_MAGIC = 0x53726448; // "HdrS"
const LOADED_HIGH = 0x01;
const CAN_USE_HEAP = 0x80;
const XLF_KERNEL_64 = 0x01;
/** 2.12 introduced xloadflags, which says whether the 64-bit entry exists. */
const MIN_PROTOCOL = 0x020c;
/** 2.14 introduced acpi_rsdp_addr. */
const PROTOCOL_ACPI_RSDP = 0x020e;
/** Undefined bootloader ID (boot.rst "type_of_loader"). */
const LOADER_UNDEFINED = 0xff;
const ZERO_PAGE_SIZE = 4096;

export class KernelImageError extends Error {
  readonly code = "BAD_KERNEL_IMAGE";
  constructor(message: string) {
    super(message);
    this.name = "KernelImageError";
  }
}

export interface BzImageInfo {
  protocol: number;
  setupBytes: number;
  initSize: number;
  initrdAddrMax: number;
  cmdlineSize: number;
}

/** Validate a bzImage's setup header; throws KernelImageError with the reason. */
export function parseBzImage(image: Uint8Array): BzImageInfo {
  if (image.length < 0x400) throw new KernelImageError("not a bzImage: file is too small");
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (
    dv.getUint16(HDR_BOOT_FLAG, true) !== BOOT_FLAG ||
    dv.getUint32(HDR_HEADER, true) !== HDRS_MAGIC
  ) {
    throw new KernelImageError("not a bzImage: no Linux boot signature (0xAA55 / HdrS)");
  }
  const protocol = dv.getUint16(HDR_VERSION, true);
  if (protocol < MIN_PROTOCOL) {
    throw new KernelImageError(
      `boot protocol ${fmtProtocol(protocol)} is older than 2.12, which Vessel needs`,
    );
  }
  if ((dv.getUint8(HDR_LOADFLAGS) & LOADED_HIGH) === 0) {
    throw new KernelImageError(
      "kernel is not a bzImage (LOADED_HIGH clear: zImage is not supported)",
    );
  }
  if ((dv.getUint16(HDR_XLOADFLAGS, true) & XLF_KERNEL_64) === 0) {
    throw new KernelImageError("kernel has no 64-bit entry point (XLF_KERNEL_64 clear)");
  }
  let setupSects = dv.getUint8(HDR_SETUP_SECTS);
  if (setupSects === 0) setupSects = 4;
  const setupBytes = (setupSects + 1) * 512;
  if (setupBytes >= image.length)
    throw new KernelImageError("not a bzImage: setup code covers the whole file");
  return {
    protocol,
    setupBytes,
    initSize: dv.getUint32(HDR_INIT_SIZE, true),
    initrdAddrMax: dv.getUint32(HDR_INITRD_ADDR_MAX, true),
    cmdlineSize: dv.getUint32(HDR_CMDLINE_SIZE, true),
  };
}

function fmtProtocol(v: number): string {
  return `${v >> 8}.${(v & 0xff).toString().padStart(2, "0")}`;
}

export interface LoadOptions {
  cmdline: string;
  initrd?: Uint8Array | undefined;
  e820: readonly E820Entry[];
  rsdpAddress?: number | undefined;
  /** End of RAM below 4 GiB (exclusive). */
  lowRamEnd: number;
}

export interface LoadedKernel {
  entry: number;
  zeroPage: number;
  initrd?: { address: number; size: number };
}

/** Load a bzImage and its boot parameters into guest memory. */
export function loadBzImage(mem: GuestMemory, image: Uint8Array, opts: LoadOptions): LoadedKernel {
  const info = parseBzImage(image);
  const kernel = image.subarray(info.setupBytes);
  const needed =
    KERNEL_RUN_ADDRESS + Math.max(info.initSize, kernel.length) + (opts.initrd?.length ?? 0);
  if (opts.lowRamEnd < needed) {
    throw new KernelImageError(
      `too little memory: this kernel and initrd need at least ${Math.ceil(needed / 2 ** 20)} MiB of RAM`,
    );
  }
  mem.write(HIMEM_START, kernel);

  // The zero page starts as a copy of the setup header; the rest is ours to fill.
  mem.write(ZERO_PAGE_ADDRESS, new Uint8Array(ZERO_PAGE_SIZE));
  const headerEnd = Math.min(0x202 + (image[HDR_JUMP_END] ?? 0), ZERO_PAGE_SIZE, info.setupBytes);
  mem.write(ZERO_PAGE_ADDRESS + HDR_SETUP_SECTS, image.subarray(HDR_SETUP_SECTS, headerEnd));
  const zp = (off: number) => ZERO_PAGE_ADDRESS + off;
  mem.writeU8(zp(HDR_TYPE_OF_LOADER), LOADER_UNDEFINED);
  mem.writeU8(zp(HDR_LOADFLAGS), mem.readU8(zp(HDR_LOADFLAGS)) | CAN_USE_HEAP);
  mem.writeU16(zp(HDR_HEAP_END_PTR), 0xfe00);

  const cmdline = new TextEncoder().encode(opts.cmdline);
  const cmdlineLimit = Math.min(info.cmdlineSize || 255, CMDLINE_MAX - 1);
  if (cmdline.length > cmdlineLimit) {
    throw new KernelImageError(
      `command line is ${cmdline.length} bytes; this kernel accepts at most ${cmdlineLimit}`,
    );
  }
  mem.write(CMDLINE_ADDRESS, new Uint8Array(cmdline.length + 1));
  mem.write(CMDLINE_ADDRESS, cmdline);
  mem.writeU32(zp(HDR_CMD_LINE_PTR), CMDLINE_ADDRESS);
  mem.writeU32(zp(BP_EXT_CMD_LINE_PTR), 0);

  let initrdInfo: { address: number; size: number } | undefined;
  if (opts.initrd && opts.initrd.length > 0) {
    const size = opts.initrd.length;
    const ceiling = Math.min(opts.lowRamEnd, (info.initrdAddrMax || 0x37ffffff) + 1);
    const address = Math.floor((ceiling - size) / 4096) * 4096;
    const kernelEnd = KERNEL_RUN_ADDRESS + Math.max(info.initSize, kernel.length);
    if (address < kernelEnd) {
      throw new KernelImageError(
        `too little memory: the initrd (${size} bytes) does not fit below initrd_addr_max above the kernel`,
      );
    }
    mem.write(address, opts.initrd);
    mem.writeU32(zp(HDR_RAMDISK_IMAGE), address);
    mem.writeU32(zp(HDR_RAMDISK_SIZE), size);
    mem.writeU32(zp(BP_EXT_RAMDISK_IMAGE), 0);
    mem.writeU32(zp(BP_EXT_RAMDISK_SIZE), 0);
    initrdInfo = { address, size };
  }

  if (opts.e820.length > E820_MAX_ENTRIES_ZEROPAGE) throw new RangeError("too many e820 entries");
  mem.writeU8(zp(BP_E820_ENTRIES), opts.e820.length);
  opts.e820.forEach((e, i) => {
    const a = zp(BP_E820_TABLE + i * 20);
    mem.writeU64(a, BigInt(e.addr));
    mem.writeU64(a + 8, BigInt(e.size));
    mem.writeU32(a + 16, e.type);
  });
  if (opts.rsdpAddress !== undefined && info.protocol >= PROTOCOL_ACPI_RSDP) {
    mem.writeU64(zp(BP_ACPI_RSDP_ADDR), BigInt(opts.rsdpAddress));
  }

  // The 64-bit entry point is 0x200 past the start of the protected-mode kernel (boot.rst).
  return {
    entry: HIMEM_START + 0x200,
    zeroPage: ZERO_PAGE_ADDRESS,
    ...(initrdInfo ? { initrd: initrdInfo } : {}),
  };
}
