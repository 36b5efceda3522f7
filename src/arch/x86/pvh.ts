// Booting an ELF vmlinux through its PVH entry point (the Xen PVH boot ABI that Linux
// implements with CONFIG_PVH): load the PT_LOAD segments at their physical addresses, find
// the XEN_ELFNOTE_PHYS32_ENTRY note, and build hvm_start_info with the command line,
// initrd module, memory map and RSDP. The vCPU then starts in 32-bit protected mode with
// paging off and %ebx pointing at hvm_start_info. ELF fields are untrusted input.

import type { GuestMemory } from "../../memory/mod.js";
import { KernelImageError } from "./bzimage.js";
import {
  CMDLINE_ADDRESS,
  CMDLINE_MAX,
  type E820Entry,
  PVH_INFO_ADDRESS,
  PVH_MEMMAP_ADDRESS,
} from "./layout.js";

const ELF_MAGIC = 0x464c457f;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const PT_NOTE = 4;
/** xen/include/public/elfnote.h */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** xen/include/public/arch-x86/hvm/start_info.h */
const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
const START_INFO_SIZE = 56;
const MODLIST_ENTRY_SIZE = 32;
const MEMMAP_ENTRY_SIZE = 24;
const MAX_PHDRS = 256;

export function isElf(image: Uint8Array): boolean {
  return (
    image.length >= 4 &&
    new DataView(image.buffer, image.byteOffset, 4).getUint32(0, true) === ELF_MAGIC
  );
}

interface Segment {
  offset: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

export interface ParsedElf {
  segments: Segment[];
  pvhEntry: number;
}

function u64(dv: DataView, off: number, what: string): number {
  const v = dv.getBigUint64(off, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    throw new KernelImageError(`ELF ${what} is out of range`);
  return Number(v);
}

export function parseElf(image: Uint8Array): ParsedElf {
  if (image.length < 64 || !isElf(image)) throw new KernelImageError("not an ELF file");
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image[4] !== ELFCLASS64 || image[5] !== ELFDATA2LSB || dv.getUint16(18, true) !== EM_X86_64) {
    throw new KernelImageError("ELF kernel is not a 64-bit little-endian x86-64 image");
  }
  const phoff = u64(dv, 32, "program header offset");
  const phentsize = dv.getUint16(54, true);
  const phnum = dv.getUint16(56, true);
  if (
    phentsize < 56 ||
    phnum === 0 ||
    phnum > MAX_PHDRS ||
    phoff + phnum * phentsize > image.length
  ) {
    throw new KernelImageError("ELF program headers are missing or lie outside the file");
  }
  const segments: Segment[] = [];
  let pvhEntry: number | undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const type = dv.getUint32(ph, true);
    const offset = u64(dv, ph + 8, "segment offset");
    const paddr = u64(dv, ph + 24, "segment address");
    const filesz = u64(dv, ph + 32, "segment size");
    const memsz = u64(dv, ph + 40, "segment size");
    if (offset + filesz > image.length)
      throw new KernelImageError(`ELF segment ${i} lies outside the file`);
    if (type === PT_LOAD) {
      if (filesz > memsz) throw new KernelImageError(`ELF segment ${i} has filesz > memsz`);
      segments.push({ offset, paddr, filesz, memsz });
    } else if (type === PT_NOTE) {
      pvhEntry ??= findPvhNote(dv, offset, filesz);
    }
  }
  if (pvhEntry === undefined) {
    throw new KernelImageError(
      "ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH",
    );
  }
  if (segments.length === 0) throw new KernelImageError("ELF kernel has no loadable segments");
  return { segments, pvhEntry };
}

function findPvhNote(dv: DataView, start: number, size: number): number | undefined {
  let p = start;
  const end = start + size;
  while (p + 12 <= end) {
    const namesz = dv.getUint32(p, true);
    const descsz = dv.getUint32(p + 4, true);
    const type = dv.getUint32(p + 8, true);
    const nameOff = p + 12;
    const descOff = nameOff + align4(namesz);
    const next = descOff + align4(descsz);
    if (namesz > size || descsz > size || next > end) return undefined;
    const isXen =
      namesz === 4 &&
      dv.getUint8(nameOff) === 0x58 && // "Xen\0"
      dv.getUint8(nameOff + 1) === 0x65 &&
      dv.getUint8(nameOff + 2) === 0x6e;
    if (isXen && type === XEN_ELFNOTE_PHYS32_ENTRY && (descsz === 4 || descsz === 8)) {
      return dv.getUint32(descOff, true);
    }
    p = next;
  }
  return undefined;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

export interface PvhLoadOptions {
  cmdline: string;
  initrd?: Uint8Array | undefined;
  initrdAddress?: number;
  e820: readonly E820Entry[];
  rsdpAddress?: number | undefined;
  lowRamEnd: number;
}

export interface LoadedPvh {
  entry: number;
  startInfo: number;
}

export function loadPvh(mem: GuestMemory, image: Uint8Array, opts: PvhLoadOptions): LoadedPvh {
  const elf = parseElf(image);
  let kernelEnd = 0;
  for (const s of elf.segments) {
    if (!mem.contains(s.paddr, s.memsz)) {
      throw new KernelImageError(
        `too little memory: ELF segment at 0x${s.paddr.toString(16)} (+${s.memsz} bytes) is outside guest RAM`,
      );
    }
    mem.write(s.paddr, image.subarray(s.offset, s.offset + s.filesz));
    if (s.memsz > s.filesz) mem.write(s.paddr + s.filesz, new Uint8Array(s.memsz - s.filesz));
    kernelEnd = Math.max(kernelEnd, s.paddr + s.memsz);
  }
  const cmdline = new TextEncoder().encode(opts.cmdline);
  if (cmdline.length >= CMDLINE_MAX) throw new KernelImageError("command line is too long");
  mem.write(CMDLINE_ADDRESS, cmdline);
  mem.writeU8(CMDLINE_ADDRESS + cmdline.length, 0);

  const info = PVH_INFO_ADDRESS;
  mem.write(info, new Uint8Array(START_INFO_SIZE + MODLIST_ENTRY_SIZE));
  mem.writeU32(info, XEN_HVM_START_MAGIC_VALUE);
  mem.writeU32(info + 4, 1); // version 1 has the memory map fields
  mem.writeU64(info + 16, 0n);
  mem.writeU64(info + 24, BigInt(CMDLINE_ADDRESS));
  mem.writeU64(info + 32, BigInt(opts.rsdpAddress ?? 0));
  if (opts.initrd && opts.initrd.length > 0) {
    const size = opts.initrd.length;
    const address = Math.floor((opts.lowRamEnd - size) / 4096) * 4096;
    if (address < kernelEnd)
      throw new KernelImageError("too little memory: the initrd does not fit above the kernel");
    mem.write(address, opts.initrd);
    const mod = info + START_INFO_SIZE;
    mem.writeU64(mod, BigInt(address));
    mem.writeU64(mod + 8, BigInt(size));
    mem.writeU32(info + 12, 1);
    mem.writeU64(info + 16, BigInt(mod));
  }
  opts.e820.forEach((e, i) => {
    const a = PVH_MEMMAP_ADDRESS + i * MEMMAP_ENTRY_SIZE;
    mem.writeU64(a, BigInt(e.addr));
    mem.writeU64(a + 8, BigInt(e.size));
    mem.writeU32(a + 16, e.type);
    mem.writeU32(a + 20, 0);
  });
  if (PVH_MEMMAP_ADDRESS + opts.e820.length * MEMMAP_ENTRY_SIZE > 0x7000)
    throw new RangeError("too many e820 entries");
  mem.writeU64(info + 40, BigInt(PVH_MEMMAP_ADDRESS));
  mem.writeU32(info + 48, opts.e820.length);
  return { entry: elf.pvhEntry, startInfo: info };
}
