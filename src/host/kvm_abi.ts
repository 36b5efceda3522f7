// The kernel's KVM ABI for x86-64 in one place: ioctl request numbers, capability numbers,
// exit reasons and the byte layouts of the structs we exchange. Names follow
// include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h; offsets are for x86-64.

const KVMIO = 0xae;
const io = (nr: number) => (KVMIO << 8) | nr;
const ior = (nr: number, size: number) => ((2 << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
const iow = (nr: number, size: number) => ((1 << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
const iowr = (nr: number, size: number) => ((3 << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;

export const KVM_API_VERSION = 12;

// Sizes of the fixed parts of the structs (kvm.h).
export const SIZEOF_KVM_REGS = 144;
export const SIZEOF_KVM_SREGS = 312;
export const SIZEOF_KVM_FPU = 416;
export const SIZEOF_KVM_LAPIC_STATE = 1024;
export const SIZEOF_KVM_CPUID_ENTRY2 = 40;
export const SIZEOF_KVM_MSR_ENTRY = 16;
export const SIZEOF_KVM_USERSPACE_MEMORY_REGION = 32;
export const SIZEOF_KVM_PIT_CONFIG = 64;
export const SIZEOF_KVM_IRQ_LEVEL = 8;
export const SIZEOF_KVM_IRQFD = 32;
export const SIZEOF_KVM_IOEVENTFD = 64;

export const KVM_GET_API_VERSION = io(0x00);
export const KVM_CREATE_VM = io(0x01);
export const KVM_CHECK_EXTENSION = io(0x03);
export const KVM_GET_VCPU_MMAP_SIZE = io(0x04);
export const KVM_GET_SUPPORTED_CPUID = iowr(0x05, 8);
export const KVM_CREATE_VCPU = io(0x41);
export const KVM_SET_USER_MEMORY_REGION = iow(0x46, SIZEOF_KVM_USERSPACE_MEMORY_REGION);
export const KVM_SET_TSS_ADDR = io(0x47);
export const KVM_SET_IDENTITY_MAP_ADDR = iow(0x48, 8);
export const KVM_CREATE_IRQCHIP = io(0x60);
export const KVM_IRQ_LINE = iow(0x61, SIZEOF_KVM_IRQ_LEVEL);
export const KVM_IRQFD = iow(0x76, SIZEOF_KVM_IRQFD);
export const KVM_CREATE_PIT2 = iow(0x77, SIZEOF_KVM_PIT_CONFIG);
export const KVM_IOEVENTFD = iow(0x79, SIZEOF_KVM_IOEVENTFD);
export const KVM_RUN = io(0x80);
export const KVM_GET_REGS = ior(0x81, SIZEOF_KVM_REGS);
export const KVM_SET_REGS = iow(0x82, SIZEOF_KVM_REGS);
export const KVM_GET_SREGS = ior(0x83, SIZEOF_KVM_SREGS);
export const KVM_SET_SREGS = iow(0x84, SIZEOF_KVM_SREGS);
export const KVM_SET_MSRS = iow(0x89, 8);
export const KVM_GET_FPU = ior(0x8c, SIZEOF_KVM_FPU);
export const KVM_SET_FPU = iow(0x8d, SIZEOF_KVM_FPU);
export const KVM_GET_LAPIC = ior(0x8e, SIZEOF_KVM_LAPIC_STATE);
export const KVM_SET_LAPIC = iow(0x8f, SIZEOF_KVM_LAPIC_STATE);
export const KVM_SET_CPUID2 = iow(0x90, 8);

// Capabilities (kvm.h KVM_CAP_*).
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_HLT = 1;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_IMMEDIATE_EXIT = 136;

// Exit reasons (kvm.h KVM_EXIT_*).
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;
/** One past the highest exit reason we count individually; others share the last slot. */
export const KVM_EXIT_REASON_SLOTS = 41;

export const EXIT_REASON_NAMES: readonly string[] = (() => {
  const names: string[] = Array.from({ length: KVM_EXIT_REASON_SLOTS }, (_, i) => `reason_${i}`);
  const known: [number, string][] = [
    [KVM_EXIT_UNKNOWN, "unknown"],
    [KVM_EXIT_EXCEPTION, "exception"],
    [KVM_EXIT_IO, "io"],
    [KVM_EXIT_HYPERCALL, "hypercall"],
    [KVM_EXIT_DEBUG, "debug"],
    [KVM_EXIT_HLT, "hlt"],
    [KVM_EXIT_MMIO, "mmio"],
    [KVM_EXIT_IRQ_WINDOW_OPEN, "irq_window_open"],
    [KVM_EXIT_SHUTDOWN, "shutdown"],
    [KVM_EXIT_FAIL_ENTRY, "fail_entry"],
    [KVM_EXIT_INTR, "intr"],
    [KVM_EXIT_INTERNAL_ERROR, "internal_error"],
    [KVM_EXIT_SYSTEM_EVENT, "system_event"],
  ];
  for (const [n, name] of known) names[n] = name;
  return names;
})();

// struct kvm_run (x86-64): fixed header, then the exit union at offset 32.
export const RUN_IMMEDIATE_EXIT = 1;
export const RUN_EXIT_REASON = 8;
export const RUN_EXIT = 32;
// union member io: __u8 direction, size; __u16 port; __u32 count; __u64 data_offset
export const RUN_IO_DIRECTION = RUN_EXIT + 0;
export const RUN_IO_SIZE = RUN_EXIT + 1;
export const RUN_IO_PORT = RUN_EXIT + 2;
export const RUN_IO_COUNT = RUN_EXIT + 4;
export const RUN_IO_DATA_OFFSET = RUN_EXIT + 8;
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;
// union member mmio: __u64 phys_addr; __u8 data[8]; __u32 len; __u8 is_write
export const RUN_MMIO_PHYS_ADDR = RUN_EXIT + 0;
export const RUN_MMIO_DATA = RUN_EXIT + 8;
export const RUN_MMIO_LEN = RUN_EXIT + 16;
export const RUN_MMIO_IS_WRITE = RUN_EXIT + 20;
// union member internal: __u32 suberror; __u32 ndata; __u64 data[16]
export const RUN_INTERNAL_SUBERROR = RUN_EXIT + 0;
export const RUN_INTERNAL_NDATA = RUN_EXIT + 4;
export const RUN_INTERNAL_DATA = RUN_EXIT + 8;
// union member fail_entry: __u64 hardware_entry_failure_reason; __u32 cpu
export const RUN_FAIL_ENTRY_REASON = RUN_EXIT + 0;
// union member system_event: __u32 type; __u32 ndata; ...
export const RUN_SYSTEM_EVENT_TYPE = RUN_EXIT + 0;
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;

// struct kvm_segment: base u64, limit u32, selector u16, type, present, dpl, db, s, l, g,
// avl, unusable, padding (u8 each) = 24 bytes.
export const SIZEOF_KVM_SEGMENT = 24;
// struct kvm_sregs field offsets.
export const SREGS_CS = 0;
export const SREGS_DS = 24;
export const SREGS_ES = 48;
export const SREGS_FS = 72;
export const SREGS_GS = 96;
export const SREGS_SS = 120;
export const SREGS_TR = 144;
export const SREGS_LDT = 168;
export const SREGS_GDT = 192; // struct kvm_dtable { u64 base; u16 limit; u16 padding[3]; }
export const SREGS_IDT = 208;
export const SREGS_CR0 = 224;
export const SREGS_CR2 = 232;
export const SREGS_CR3 = 240;
export const SREGS_CR4 = 248;
export const SREGS_CR8 = 256;
export const SREGS_EFER = 264;
export const SREGS_APIC_BASE = 272;

// struct kvm_regs: 18 u64 in this order.
export const REGS_ORDER = [
  "rax",
  "rbx",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "rsp",
  "rbp",
  "r8",
  "r9",
  "r10",
  "r11",
  "r12",
  "r13",
  "r14",
  "r15",
  "rip",
  "rflags",
] as const;

// struct kvm_fpu offsets.
export const FPU_FCW = 128;
export const FPU_MXCSR = 408;

// struct kvm_lapic_state is the 1 KiB APIC register page.
export const APIC_LVT0 = 0x350;
export const APIC_LVT1 = 0x360;

export const KVM_PIT_SPEAKER_DUMMY = 1;
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
