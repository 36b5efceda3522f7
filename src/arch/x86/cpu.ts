// Initial vCPU state for a direct kernel boot: the VMM's own GDT and identity page tables,
// segment and control registers for 64-bit (bzImage) or 32-bit flat (PVH) entry, boot
// MSRs, FPU defaults, LAPIC LINT pins, and per-vCPU CPUID with APIC IDs and topology.

import type { CpuidEntry, Regs, Segment, Sregs, VcpuFd } from "../../host/mod.js";
import { abi } from "../../host/mod.js";
import type { GuestMemory } from "../../memory/mod.js";
import {
  BOOT_STACK_POINTER,
  GDT_ADDRESS,
  IDT_ADDRESS,
  PD_ADDRESS,
  PDPT_ADDRESS,
  PML4_ADDRESS,
} from "./layout.js";

// Control register and EFER bits (Intel SDM Vol. 3A 2.5, AMD APM Vol. 2 3.1).
const X86_CR0_PE = 0x1n;
const X86_CR0_ET = 0x10n;
const X86_CR0_PG = 0x80000000n;
const X86_CR4_PAE = 0x20n;
const EFER_LME = 0x100n;
const EFER_LMA = 0x400n;

// GDT flag words in Firecracker's compact notation: access byte low, flags nibble high.
// Selectors 0x10 and 0x18 are __BOOT_CS and __BOOT_DS, as the boot protocol requires.
const GDT_CODE64 = 0xa09b;
const GDT_CODE32 = 0xc09b;
const GDT_DATA = 0xc093;
const GDT_TSS = 0x808b;
const SEL_CODE = 0x10;
const SEL_DATA = 0x18;
const SEL_TSS = 0x20;

function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base);
  const l = BigInt(limit);
  const f = BigInt(flags);
  return (
    ((b & 0xff000000n) << 32n) |
    ((f & 0xf0ffn) << 40n) |
    ((l & 0xf0000n) << 32n) |
    ((b & 0xffffffn) << 16n) |
    (l & 0xffffn)
  );
}

function segmentFromFlags(selector: number, flags: number, base: number, limit: number): Segment {
  const g = (flags >> 15) & 1;
  return {
    base: BigInt(base),
    limit: g ? limit * 4096 + 4095 : limit,
    selector,
    type: flags & 0xf,
    present: (flags >> 7) & 1,
    dpl: (flags >> 5) & 3,
    db: (flags >> 14) & 1,
    s: (flags >> 4) & 1,
    l: (flags >> 13) & 1,
    g,
    avl: (flags >> 12) & 1,
    unusable: 0,
  };
}

export type BootMode = "long64" | "pvh32";

/** Write the GDT, an empty IDT, and (for 64-bit entry) identity page tables for 4 GiB. */
export function writeBootTables(mem: GuestMemory, mode: BootMode): void {
  const code = mode === "long64" ? GDT_CODE64 : GDT_CODE32;
  const gdt = [
    0n,
    0n,
    gdtEntry(code, 0, 0xfffff),
    gdtEntry(GDT_DATA, 0, 0xfffff),
    gdtEntry(GDT_TSS, 0, 0xfffff),
  ];
  gdt.forEach((e, i) => {
    mem.writeU64(GDT_ADDRESS + i * 8, e);
  });
  mem.writeU64(IDT_ADDRESS, 0n);
  if (mode !== "long64") return;
  // 2 MiB pages: PML4[0] -> PDPT, PDPT[0..3] -> four page directories of 512 entries.
  mem.writeU64(PML4_ADDRESS, BigInt(PDPT_ADDRESS) | 0x3n);
  for (let i = 0; i < 4; i++) {
    const pd = PD_ADDRESS + i * 4096;
    mem.writeU64(PDPT_ADDRESS + i * 8, BigInt(pd) | 0x3n);
    for (let j = 0; j < 512; j++) {
      mem.writeU64(pd + j * 8, (BigInt(i * 512 + j) << 21n) | 0x83n);
    }
  }
}

/** Registers for the kernel entry of either boot mode. */
export function setupBootRegisters(
  vcpu: VcpuFd,
  mode: BootMode,
  entry: number,
  bootInfo: number,
): void {
  const code = mode === "long64" ? GDT_CODE64 : GDT_CODE32;
  const s: Sregs = vcpu.getSregs();
  const cs = segmentFromFlags(SEL_CODE, code, 0, 0xfffff);
  const ds = segmentFromFlags(SEL_DATA, GDT_DATA, 0, 0xfffff);
  s.cs = cs;
  s.ds = ds;
  s.es = ds;
  s.fs = ds;
  s.gs = ds;
  s.ss = ds;
  s.tr = segmentFromFlags(SEL_TSS, GDT_TSS, 0, 0xfffff);
  s.gdt = { base: BigInt(GDT_ADDRESS), limit: 5 * 8 - 1 };
  s.idt = { base: BigInt(IDT_ADDRESS), limit: 7 };
  if (mode === "long64") {
    s.cr0 = (s.cr0 | X86_CR0_PE | X86_CR0_PG | X86_CR0_ET) & 0xffffffffn;
    s.cr3 = BigInt(PML4_ADDRESS);
    s.cr4 |= X86_CR4_PAE;
    s.efer |= EFER_LME | EFER_LMA;
  } else {
    s.cr0 = (s.cr0 | X86_CR0_PE | X86_CR0_ET) & ~X86_CR0_PG & 0xffffffffn;
    s.cr3 = 0n;
    s.cr4 = 0n;
    s.efer = 0n;
  }
  vcpu.setSregs(s);
  const regs: Partial<Regs> = { rip: BigInt(entry), rflags: 0x2n };
  if (mode === "long64") {
    // boot.rst 64-bit protocol: %rsi holds the zero page address.
    regs.rsi = BigInt(bootInfo);
    regs.rsp = BigInt(BOOT_STACK_POINTER);
    regs.rbp = BigInt(BOOT_STACK_POINTER);
  } else {
    // PVH: %ebx holds the physical address of hvm_start_info.
    regs.rbx = BigInt(bootInfo);
  }
  vcpu.setRegs(regs);
}

// MSR indexes (Intel SDM Vol. 4).
const MSR_IA32_SYSENTER_CS = 0x174;
const MSR_IA32_SYSENTER_ESP = 0x175;
const MSR_IA32_SYSENTER_EIP = 0x176;
const MSR_STAR = 0xc0000081;
const MSR_LSTAR = 0xc0000082;
const MSR_CSTAR = 0xc0000083;
const MSR_SYSCALL_MASK = 0xc0000084;
const MSR_KERNEL_GS_BASE = 0xc0000102;
const MSR_IA32_TSC = 0x10;
const MSR_IA32_MISC_ENABLE = 0x1a0;
const MSR_MTRR_DEF_TYPE = 0x2ff;
const MISC_ENABLE_FAST_STRING = 1n;
/** MTRRs enabled, default type write-back, so the guest does not run uncached. */
const MTRR_ENABLE_WB = (1n << 11n) | 6n;

export function setupMsrs(vcpu: VcpuFd): void {
  vcpu.setMsrs([
    { index: MSR_IA32_SYSENTER_CS, data: 0n },
    { index: MSR_IA32_SYSENTER_ESP, data: 0n },
    { index: MSR_IA32_SYSENTER_EIP, data: 0n },
    { index: MSR_STAR, data: 0n },
    { index: MSR_CSTAR, data: 0n },
    { index: MSR_KERNEL_GS_BASE, data: 0n },
    { index: MSR_SYSCALL_MASK, data: 0n },
    { index: MSR_LSTAR, data: 0n },
    { index: MSR_IA32_TSC, data: 0n },
    { index: MSR_IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING },
    { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE_WB },
  ]);
}

export function setupFpu(vcpu: VcpuFd): void {
  // Power-on values: x87 control word 0x37f (all exceptions masked), MXCSR 0x1f80.
  vcpu.setFpu(0x37f, 0x1f80);
}

/** LINT0 as ExtINT and LINT1 as NMI, as a PC's firmware leaves them (MP spec 5.1). */
export function setupLapic(vcpu: VcpuFd): void {
  const lapic = vcpu.getLapic();
  const dv = new DataView(lapic.buffer);
  const DELIVERY_MODE_MASK = ~(7 << 8);
  dv.setUint32(
    abi.APIC_LVT0,
    (dv.getUint32(abi.APIC_LVT0, true) & DELIVERY_MODE_MASK) | (7 << 8),
    true,
  );
  dv.setUint32(
    abi.APIC_LVT1,
    (dv.getUint32(abi.APIC_LVT1, true) & DELIVERY_MODE_MASK) | (4 << 8),
    true,
  );
  vcpu.setLapic(lapic);
}

// CPUID bits (Intel SDM Vol. 2A CPUID; AMD APM Vol. 3 E.3).
const CPUID_1_ECX_HYPERVISOR = 1 << 31;
const CPUID_1_EDX_HTT = 1 << 28;
const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

/**
 * Per-vCPU CPUID: KVM's supported set with this vCPU's APIC ID and a topology of `count`
 * single-threaded cores in one package, consistent across leaves 1, 4, 0xB/0x1F and AMD's
 * 0x80000008/0x8000001E so the guest's scheduler sees what the MADT says.
 */
export function vcpuCpuid(
  supported: readonly CpuidEntry[],
  id: number,
  count: number,
): CpuidEntry[] {
  const coreBits = Math.ceil(Math.log2(Math.max(count, 1)));
  const out: CpuidEntry[] = [];
  const hasLeaf = (fn: number) => supported.some((e) => e.function === fn);
  for (const e of supported) {
    const c = { ...e };
    switch (c.function) {
      case 1:
        c.ebx = ((c.ebx & 0x0000ffff) | ((count & 0xff) << 16) | ((id & 0xff) << 24)) >>> 0;
        c.ecx = (c.ecx | CPUID_1_ECX_HYPERVISOR) >>> 0;
        c.edx = count > 1 ? (c.edx | CPUID_1_EDX_HTT) >>> 0 : (c.edx & ~CPUID_1_EDX_HTT) >>> 0;
        break;
      case 4:
        // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
        c.eax =
          ((c.eax & 0x3fff) |
            ((count - 1) << 26) |
            (((c.eax >> 5) & 7) >= 3 ? (count - 1) << 14 : 0)) >>>
          0;
        break;
      case 0xb:
      case 0x1f:
        continue; // rebuilt below
      case 0x80000008:
        c.ecx = ((c.ecx & ~0xf0ff) | (coreBits << 12) | ((count - 1) & 0xff)) >>> 0;
        break;
      case 0x8000001e:
        c.eax = id;
        c.ebx = id & 0xff; // compute unit id; one thread per unit
        c.ecx = 0;
        break;
      default:
        break;
    }
    out.push(c);
  }
  for (const fn of [0xb, 0x1f]) {
    if (!hasLeaf(fn)) continue;
    const levels = [
      { eax: 0, ebx: 1, type: 1 }, // SMT: one thread per core
      { eax: coreBits, ebx: count, type: 2 }, // Core
    ];
    levels.forEach((l, index) => {
      out.push({
        function: fn,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax: l.eax,
        ebx: l.ebx,
        ecx: (l.type << 8) | index,
        edx: id,
      });
    });
    out.push({
      function: fn,
      index: 2,
      flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
      eax: 0,
      ebx: 0,
      ecx: 2,
      edx: id,
    });
  }
  return out;
}
