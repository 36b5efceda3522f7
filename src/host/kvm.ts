// Typed wrappers for the three KVM file descriptors: the system (/dev/kvm), a VM, and a
// vCPU. Structs are encoded with DataView at the offsets in kvm_abi.ts. This layer has no
// device or boot knowledge and no policy: it exposes what the kernel offers and turns
// failures into HostError / MissingCapabilityError.

import { HostError, MissingCapabilityError } from "./errors.js";
import * as abi from "./kvm_abi.js";
import {
  close,
  ioctl,
  ioctlValue,
  MAP_SHARED,
  type Mapping,
  mmap,
  O_RDWR,
  open,
  PROT_READ,
  PROT_WRITE,
} from "./libc.js";

export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

export interface DescriptorTable {
  base: bigint;
  limit: number;
}

export type Regs = Record<(typeof abi.REGS_ORDER)[number], bigint>;

export interface Sregs {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  ldt: Segment;
  gdt: DescriptorTable;
  idt: DescriptorTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** The raw interrupt bitmap, kept so a get/modify/set round trip preserves it. */
  interruptBitmap: Uint8Array;
}

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

const SEGMENT_FIELDS = ["type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable"] as const;

function readSegment(dv: DataView, off: number): Segment {
  const seg = {
    base: dv.getBigUint64(off, true),
    limit: dv.getUint32(off + 8, true),
    selector: dv.getUint16(off + 12, true),
  } as Segment;
  SEGMENT_FIELDS.forEach((f, i) => {
    seg[f] = dv.getUint8(off + 14 + i);
  });
  return seg;
}

function writeSegment(dv: DataView, off: number, seg: Segment): void {
  dv.setBigUint64(off, seg.base, true);
  dv.setUint32(off + 8, seg.limit, true);
  dv.setUint16(off + 12, seg.selector, true);
  SEGMENT_FIELDS.forEach((f, i) => {
    dv.setUint8(off + 14 + i, seg[f]);
  });
}

const SREG_SEGMENTS = [
  ["cs", abi.SREGS_CS],
  ["ds", abi.SREGS_DS],
  ["es", abi.SREGS_ES],
  ["fs", abi.SREGS_FS],
  ["gs", abi.SREGS_GS],
  ["ss", abi.SREGS_SS],
  ["tr", abi.SREGS_TR],
  ["ldt", abi.SREGS_LDT],
] as const;
const SREG_CONTROL = [
  ["cr0", abi.SREGS_CR0],
  ["cr2", abi.SREGS_CR2],
  ["cr3", abi.SREGS_CR3],
  ["cr4", abi.SREGS_CR4],
  ["cr8", abi.SREGS_CR8],
  ["efer", abi.SREGS_EFER],
  ["apicBase", abi.SREGS_APIC_BASE],
] as const;

/** The system file descriptor: /dev/kvm. */
export class Kvm {
  readonly fd: number;
  constructor(path = "/dev/kvm") {
    this.fd = open(path, O_RDWR);
    const version = ioctlValue(this.fd, abi.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION");
    if (version !== abi.KVM_API_VERSION) {
      close(this.fd);
      throw new Error(
        `Cannot use ${path}: KVM API version ${version}, Vessel needs ${abi.KVM_API_VERSION}`,
      );
    }
  }

  checkExtension(cap: number): number {
    return ioctlValue(this.fd, abi.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION");
  }

  /** Throw MissingCapabilityError unless every named capability is present. */
  requireExtensions(caps: Record<string, number>): void {
    for (const [name, cap] of Object.entries(caps)) {
      if (this.checkExtension(cap) <= 0) throw new MissingCapabilityError(name);
    }
  }

  vcpuMmapSize(): number {
    return ioctlValue(this.fd, abi.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
  }

  /** KVM_GET_SUPPORTED_CPUID, retrying with a larger buffer on E2BIG. */
  supportedCpuid(): CpuidEntry[] {
    for (let n = 128; n <= 4096; n *= 2) {
      const buf = new Uint8Array(8 + n * abi.SIZEOF_KVM_CPUID_ENTRY2);
      const dv = new DataView(buf.buffer);
      dv.setUint32(0, n, true);
      try {
        ioctl(this.fd, abi.KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID");
      } catch (e) {
        if (e instanceof HostError && e.code === "E2BIG") continue;
        throw e;
      }
      const count = dv.getUint32(0, true);
      const entries: CpuidEntry[] = [];
      for (let i = 0; i < count; i++) {
        const o = 8 + i * abi.SIZEOF_KVM_CPUID_ENTRY2;
        entries.push({
          function: dv.getUint32(o, true),
          index: dv.getUint32(o + 4, true),
          flags: dv.getUint32(o + 8, true),
          eax: dv.getUint32(o + 12, true),
          ebx: dv.getUint32(o + 16, true),
          ecx: dv.getUint32(o + 20, true),
          edx: dv.getUint32(o + 24, true),
        });
      }
      return entries;
    }
    throw new HostError("ioctl(KVM_GET_SUPPORTED_CPUID)", 7, "more than 4096 entries");
  }

  createVm(): VmFd {
    return new VmFd(this, ioctlValue(this.fd, abi.KVM_CREATE_VM, 0, "KVM_CREATE_VM"));
  }

  close(): void {
    close(this.fd);
  }
}

/** A VM file descriptor. */
export class VmFd {
  constructor(
    readonly kvm: Kvm,
    readonly fd: number,
  ) {}

  checkExtension(cap: number): number {
    return ioctlValue(this.fd, abi.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION");
  }

  setUserMemoryRegion(
    slot: number,
    guestPhysAddr: bigint,
    size: bigint,
    userAddr: bigint,
    flags = 0,
  ): void {
    const buf = new Uint8Array(abi.SIZEOF_KVM_USERSPACE_MEMORY_REGION);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, slot, true);
    dv.setUint32(4, flags, true);
    dv.setBigUint64(8, guestPhysAddr, true);
    dv.setBigUint64(16, size, true);
    dv.setBigUint64(24, userAddr, true);
    ioctl(this.fd, abi.KVM_SET_USER_MEMORY_REGION, buf, "KVM_SET_USER_MEMORY_REGION");
  }

  setTssAddr(addr: number): void {
    ioctlValue(this.fd, abi.KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR");
  }

  setIdentityMapAddr(addr: bigint): void {
    const buf = new BigUint64Array([addr]);
    ioctl(this.fd, abi.KVM_SET_IDENTITY_MAP_ADDR, buf, "KVM_SET_IDENTITY_MAP_ADDR");
  }

  createIrqchip(): void {
    ioctlValue(this.fd, abi.KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
  }

  createPit2(flags: number): void {
    const buf = new Uint8Array(abi.SIZEOF_KVM_PIT_CONFIG);
    new DataView(buf.buffer).setUint32(0, flags, true);
    ioctl(this.fd, abi.KVM_CREATE_PIT2, buf, "KVM_CREATE_PIT2");
  }

  /** Drive an interrupt line of the in-kernel irqchip (GSI number, level). */
  irqLine(gsi: number, level: boolean): void {
    const buf = new Uint32Array([gsi, level ? 1 : 0]);
    ioctl(this.fd, abi.KVM_IRQ_LINE, buf, "KVM_IRQ_LINE");
  }

  /** Route writes of an eventfd to a GSI, or undo that with deassign. */
  irqfd(fd: number, gsi: number, deassign = false): void {
    const buf = new Uint32Array(abi.SIZEOF_KVM_IRQFD / 4);
    buf[0] = fd;
    buf[1] = gsi;
    buf[2] = deassign ? abi.KVM_IRQFD_FLAG_DEASSIGN : 0;
    ioctl(this.fd, abi.KVM_IRQFD, buf, "KVM_IRQFD");
  }

  /** Signal an eventfd when the guest writes `len` bytes at `addr` (MMIO unless pio). */
  ioeventfd(
    fd: number,
    addr: bigint,
    len: number,
    opts: { pio?: boolean; datamatch?: bigint } = {},
  ): void {
    const buf = new Uint8Array(abi.SIZEOF_KVM_IOEVENTFD);
    const dv = new DataView(buf.buffer);
    let flags = opts.pio ? abi.KVM_IOEVENTFD_FLAG_PIO : 0;
    if (opts.datamatch !== undefined) {
      flags |= abi.KVM_IOEVENTFD_FLAG_DATAMATCH;
      dv.setBigUint64(0, opts.datamatch, true);
    }
    dv.setBigUint64(8, addr, true);
    dv.setUint32(16, len, true);
    dv.setInt32(20, fd, true);
    dv.setUint32(24, flags, true);
    ioctl(this.fd, abi.KVM_IOEVENTFD, buf, "KVM_IOEVENTFD");
  }

  createVcpu(id: number): VcpuFd {
    return new VcpuFd(
      this,
      ioctlValue(this.fd, abi.KVM_CREATE_VCPU, id, `KVM_CREATE_VCPU ${id}`),
      id,
    );
  }

  close(): void {
    close(this.fd);
  }
}

/** A vCPU file descriptor. State accessors are for setup and debugging, not the hot path. */
export class VcpuFd {
  constructor(
    readonly vm: VmFd,
    readonly fd: number,
    readonly id: number,
  ) {}

  /** Map this vCPU's kvm_run area (shared with the kernel). */
  mapRun(): Mapping {
    return mmap(this.vm.kvm.vcpuMmapSize(), PROT_READ | PROT_WRITE, MAP_SHARED, this.fd, 0);
  }

  getRegs(): Regs {
    const buf = new BigUint64Array(abi.SIZEOF_KVM_REGS / 8);
    ioctl(this.fd, abi.KVM_GET_REGS, buf, "KVM_GET_REGS");
    const regs = {} as Regs;
    abi.REGS_ORDER.forEach((name, i) => {
      regs[name] = buf[i] ?? 0n;
    });
    return regs;
  }

  setRegs(regs: Partial<Regs>): void {
    const buf = new BigUint64Array(abi.SIZEOF_KVM_REGS / 8);
    abi.REGS_ORDER.forEach((name, i) => {
      buf[i] = regs[name] ?? 0n;
    });
    ioctl(this.fd, abi.KVM_SET_REGS, buf, "KVM_SET_REGS");
  }

  getSregs(): Sregs {
    const buf = new Uint8Array(abi.SIZEOF_KVM_SREGS);
    ioctl(this.fd, abi.KVM_GET_SREGS, buf, "KVM_GET_SREGS");
    const dv = new DataView(buf.buffer);
    const s = {} as Record<string, unknown>;
    for (const [name, off] of SREG_SEGMENTS) s[name] = readSegment(dv, off);
    s.gdt = {
      base: dv.getBigUint64(abi.SREGS_GDT, true),
      limit: dv.getUint16(abi.SREGS_GDT + 8, true),
    };
    s.idt = {
      base: dv.getBigUint64(abi.SREGS_IDT, true),
      limit: dv.getUint16(abi.SREGS_IDT + 8, true),
    };
    for (const [name, off] of SREG_CONTROL) s[name] = dv.getBigUint64(off, true);
    s.interruptBitmap = buf.slice(280, 312);
    return s as unknown as Sregs;
  }

  setSregs(s: Sregs): void {
    const buf = new Uint8Array(abi.SIZEOF_KVM_SREGS);
    const dv = new DataView(buf.buffer);
    for (const [name, off] of SREG_SEGMENTS) writeSegment(dv, off, s[name]);
    dv.setBigUint64(abi.SREGS_GDT, s.gdt.base, true);
    dv.setUint16(abi.SREGS_GDT + 8, s.gdt.limit, true);
    dv.setBigUint64(abi.SREGS_IDT, s.idt.base, true);
    dv.setUint16(abi.SREGS_IDT + 8, s.idt.limit, true);
    for (const [name, off] of SREG_CONTROL) dv.setBigUint64(off, s[name], true);
    buf.set(s.interruptBitmap.subarray(0, 32), 280);
    ioctl(this.fd, abi.KVM_SET_SREGS, buf, "KVM_SET_SREGS");
  }

  setCpuid(entries: readonly CpuidEntry[]): void {
    const buf = new Uint8Array(8 + entries.length * abi.SIZEOF_KVM_CPUID_ENTRY2);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, entries.length, true);
    entries.forEach((e, i) => {
      const o = 8 + i * abi.SIZEOF_KVM_CPUID_ENTRY2;
      dv.setUint32(o, e.function, true);
      dv.setUint32(o + 4, e.index, true);
      dv.setUint32(o + 8, e.flags, true);
      dv.setUint32(o + 12, e.eax, true);
      dv.setUint32(o + 16, e.ebx, true);
      dv.setUint32(o + 20, e.ecx, true);
      dv.setUint32(o + 24, e.edx, true);
    });
    ioctl(this.fd, abi.KVM_SET_CPUID2, buf, "KVM_SET_CPUID2");
  }

  /** KVM_SET_MSRS; fails unless the kernel accepted every entry. */
  setMsrs(msrs: readonly { index: number; data: bigint }[]): void {
    const buf = new Uint8Array(8 + msrs.length * abi.SIZEOF_KVM_MSR_ENTRY);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, msrs.length, true);
    msrs.forEach((m, i) => {
      const o = 8 + i * abi.SIZEOF_KVM_MSR_ENTRY;
      dv.setUint32(o, m.index, true);
      dv.setBigUint64(o + 8, m.data, true);
    });
    const set = ioctl(this.fd, abi.KVM_SET_MSRS, buf, "KVM_SET_MSRS");
    if (set !== msrs.length) {
      const bad = msrs[set];
      throw new Error(
        `KVM_SET_MSRS set ${set} of ${msrs.length} MSRs; refused 0x${bad?.index.toString(16)}`,
      );
    }
  }

  /** Set the x87 control word and MXCSR to their power-on values for a fresh vCPU. */
  setFpu(fcw: number, mxcsr: number): void {
    const buf = new Uint8Array(abi.SIZEOF_KVM_FPU);
    const dv = new DataView(buf.buffer);
    dv.setUint16(abi.FPU_FCW, fcw, true);
    dv.setUint32(abi.FPU_MXCSR, mxcsr, true);
    ioctl(this.fd, abi.KVM_SET_FPU, buf, "KVM_SET_FPU");
  }

  getLapic(): Uint8Array {
    const buf = new Uint8Array(abi.SIZEOF_KVM_LAPIC_STATE);
    ioctl(this.fd, abi.KVM_GET_LAPIC, buf, "KVM_GET_LAPIC");
    return buf;
  }

  setLapic(state: Uint8Array): void {
    ioctl(this.fd, abi.KVM_SET_LAPIC, state, "KVM_SET_LAPIC");
  }

  close(): void {
    close(this.fd);
  }
}
