// The VMM's seccomp filter: an allow-list of the system calls a running VMM makes (Node,
// libuv, V8, koffi and our own code); everything else kills the whole process. Derived
// from `strace -f` of `vessel run` after the jail point to its exit, through every control
// op, the console socket, a terminal, a TAP, rng and balloon devices, the outcome file and
// virtio-blk's I/O path (tests/jail_filtered_io.ts); a TAP's readv/writev come from
// reading tap.ts, as no test guest here sends frames. One filter for every thread: they all
// run the same runtime, and per-thread lists would differ in a handful of calls while
// costing an install per thread. README.md ("The jail") says what it leaves reachable.

import { BpfAssembler, encode, type Insn } from "./bpf.js";
import { type SyscallName, X86_64 } from "./syscalls.js";

/** <linux/audit.h>: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
// Actions, from <linux/seccomp.h>.
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
const ENOSYS = 38;

// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const DATA_NR = 0;
const DATA_ARCH = 4;
/** The low 32 bits of args[i] (little-endian). */
const argLow = (i: number) => 16 + 8 * i;

// ioctl request types (bits 8..15 of the request number).
/** <linux/kvm.h> KVMIO: every /dev/kvm, VM and vCPU ioctl. */
export const KVMIO = 0xae;
/** <linux/vhost.h> VHOST_VIRTIO. */
export const VHOST_VIRTIO = 0xaf;
/** 'T': terminal ioctls (TCGETS, TCSETS, TIOCGWINSZ, FIONBIO...) and TUN's (TUNSETIFF...). */
export const TTY_AND_TUN = 0x54;
/** <asm-generic/ioctls.h>: fake terminal input; with the user's terminal it types commands. */
export const TIOCSTI = 0x5412;
/** <sys/socket.h>: the only socket family a VMM with vsock may create. */
export const AF_UNIX = 1;
/** <asm-generic/ioctls.h>: console-specific subcommands (selection paste). */
export const TIOCLINUX = 0x541c;

// clone(2) flags, from <linux/sched.h>.
export const CLONE_THREAD = 0x00010000;
/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET. */
export const CLONE_NAMESPACES = 0x00020000 | 0x7e000000;

// prctl(2) options that name things (harmless).
export const PR_SET_NAME = 15;
export const PR_GET_NAME = 16;
export const PR_SET_VMA = 0x53564d41;

export interface SyscallGroup {
  why: string;
  calls: readonly SyscallName[];
}

/** Allowed with any arguments. */
export const ALLOWED: readonly SyscallGroup[] = [
  {
    why: "fds opened before the jail: console, sockets, eventfds, TAP, disk images",
    calls: [
      "read",
      "write",
      "readv",
      "writev",
      "pread64",
      "pwrite64",
      "preadv",
      "pwritev",
      "preadv2",
      "pwritev2",
      "lseek",
      "close",
      "fcntl",
      "fstat",
      "fsync",
      "fdatasync",
      "fallocate",
    ],
  },
  {
    why: "files inside the jail: vCPU workers import their modules; the outcome file",
    calls: ["openat", "statx", "newfstatat", "readlink", "getcwd", "rename", "unlink"],
  },
  {
    why: "memory: the V8 heap and JIT, malloc, thread stacks, balloon page release",
    calls: ["mmap", "munmap", "mprotect", "madvise", "mremap", "brk"],
  },
  {
    why: "threads: vCPU workers, libuv's pool, V8's platform threads",
    calls: [
      "futex",
      "set_robust_list",
      "rseq",
      "exit",
      "gettid",
      "sched_yield",
      "sched_getaffinity",
      // vcpu-pin: the VMM pins its own vCPU threads (the PID namespace and the dropped
      // capabilities keep it to its own threads).
      "sched_setaffinity",
    ],
  },
  {
    why: "signals: vCPU kicks (tgkill SIGUSR2), SIGINT/SIGTERM/SIGPWR handlers",
    calls: [
      "rt_sigaction",
      "rt_sigprocmask",
      "rt_sigreturn",
      "tgkill",
      "getpid",
      "restart_syscall",
    ],
  },
  {
    why: "time (clocks the vDSO does not serve, such as thread CPU time)",
    calls: ["clock_gettime", "clock_getres", "gettimeofday", "nanosleep", "clock_nanosleep"],
  },
  {
    why: "event loops: libuv's in each thread, koffi's epoll thread for ioeventfds",
    calls: ["epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2", "pipe2"],
  },
  {
    why: "control and console sockets, already listening",
    calls: ["accept4", "shutdown"],
  },
  {
    why: "what Node reads about its process when a worker thread starts",
    calls: ["getuid", "geteuid", "getgid", "getegid", "capget", "uname", "sysinfo", "prlimit64"],
  },
  { why: "randomness: V8's seeds, virtio-rng", calls: ["getrandom"] },
  { why: "the end", calls: ["exit_group"] },
];

/**
 * Refused with ENOSYS rather than killed: glibc creates threads with clone3 and falls back
 * to clone on ENOSYS (whose flags a filter can read, unlike clone3's struct); libuv falls
 * back from io_uring to its thread pool.
 */
export const REFUSED_ENOSYS: readonly SyscallName[] = ["clone3", "io_uring_setup"];

/** Allowed with some arguments only; the checks are in vmmFilter(). */
export const ARGUMENT_CHECKED: readonly SyscallName[] = ["ioctl", "clone", "prctl"];

/** Every other call kills the process: these are the ones tests try. */
export const EXAMPLES_FORBIDDEN: readonly SyscallName[] = [
  "socket",
  "connect",
  "bind",
  "execve",
  "fork",
  "ptrace",
  "mount",
  "pivot_root",
  "chroot",
  "unshare",
  "setns",
  "setuid",
  "capset",
  "bpf",
  "perf_event_open",
  "userfaultfd",
  "process_vm_readv",
  "kill",
  "seccomp",
];

/** What a VMM with a vsock device adds: guest connections to the host's `<uds>_<port>`. */
export const VSOCK_CONNECT: SyscallGroup = {
  why: "vsock: a guest's connection to host port P connects to the Unix socket <uds>_P",
  // socket only for AF_UNIX (checked in vmmFilter); libuv reads SO_ERROR once connected.
  calls: ["socket", "connect", "getsockopt"],
};

export interface FilterOptions {
  /** Allow AF_UNIX sockets to be made and connected (a vsock device's outbound path). */
  unixConnect?: boolean;
}

/** The VMM's filter as BPF instructions. */
export function vmmFilter(opts: FilterOptions = {}): Insn[] {
  const nr = (name: SyscallName) => X86_64[name];
  const asm = new BpfAssembler();
  // A call made through another ABI (i386 int 0x80) has other numbers: kill it outright.
  asm.loadWord(DATA_ARCH).jeq(AUDIT_ARCH_X86_64, undefined, "kill");
  asm.loadWord(DATA_NR);
  // ioctl first: KVM_RUN is the hottest call, and the kernel's per-call verdict cache
  // cannot skip an argument-dependent rule. (x32 numbers, with bit 30 set, match nothing.)
  asm.jeq(nr("ioctl"), "ioctl");
  asm.jeq(nr("clone"), "clone");
  asm.jeq(nr("prctl"), "prctl");
  if (opts.unixConnect) {
    asm.jeq(nr("socket"), "socket");
    asm.jeq(nr("connect"), "allow").jeq(nr("getsockopt"), "allow");
  }
  for (const name of REFUSED_ENOSYS) asm.jeq(nr(name), "enosys");
  for (const group of ALLOWED) for (const name of group.calls) asm.jeq(nr(name), "allow");
  asm.jump("kill");

  // ioctl: KVM, vhost, terminal and TUN requests; never TIOCSTI or TIOCLINUX. The kernel
  // reads the request as an unsigned int, so the low word is the whole request.
  asm.label("ioctl").loadWord(argLow(1));
  asm.jeq(TIOCSTI, "kill").jeq(TIOCLINUX, "kill");
  asm.rsh(8).and(0xff);
  asm.jeq(KVMIO, "allow").jeq(VHOST_VIRTIO, "allow").jeq(TTY_AND_TUN, "allow");
  asm.jump("kill");

  // clone: threads only (no new processes), and no new namespaces.
  asm.label("clone").loadWord(argLow(0));
  asm.jset(CLONE_NAMESPACES, "kill").jset(CLONE_THREAD, "allow");
  asm.jump("kill");

  // prctl: only naming threads and mappings (Node and V8 versions after 20 do).
  asm.label("prctl").loadWord(argLow(0));
  asm.jeq(PR_SET_NAME, "allow").jeq(PR_GET_NAME, "allow").jeq(PR_SET_VMA, "allow");
  asm.jump("kill");

  // socket: Unix only. The jail's network namespace is empty, and its mount namespace
  // shows only the vsock's own directory, so there is nothing else to connect to.
  if (opts.unixConnect) {
    asm.label("socket").loadWord(argLow(0));
    asm.jeq(AF_UNIX, "allow");
    asm.jump("kill");
  }

  asm.label("kill").ret(SECCOMP_RET_KILL_PROCESS);
  asm.label("allow").ret(SECCOMP_RET_ALLOW);
  asm.label("enosys").ret(SECCOMP_RET_ERRNO | ENOSYS);
  return asm.assemble();
}

/** The filter as seccomp(2) takes it. */
export function vmmFilterProgram(opts: FilterOptions = {}): Uint8Array {
  return encode(vmmFilter(opts));
}
