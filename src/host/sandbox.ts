// libc calls a process uses to confine itself: mounts and pivot_root for a private root,
// setns for a thread's network namespace, credentials and capabilities, prctl, seccomp, and
// execve for re-executing through a namespace launcher. Thin typed wrappers that turn a failure into a HostError naming the
// call; which mounts, which ids and which filter are decided above this layer (src/jail/).

import koffi from "koffi";
import { HostError } from "./errors.js";

const lib = koffi.load("libc.so.6");

const mountFn = lib.func(
  "int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)",
);
const umount2Fn = lib.func("int umount2(const char *target, int flags)");
const chdirFn = lib.func("int chdir(const char *path)");
const setresuidFn = lib.func("int setresuid(uint32_t ruid, uint32_t euid, uint32_t suid)");
const setresgidFn = lib.func("int setresgid(uint32_t rgid, uint32_t egid, uint32_t sgid)");
const setgroupsFn = lib.func("int setgroups(size_t size, const uint32_t *list)");
const prctlFn = lib.func(
  "int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)",
);
const fcntlFn = lib.func("int fcntl(int fd, int cmd, int arg)");
const setnsFn = lib.func("int setns(int fd, int nstype)");
const execveFn = lib.func("int execve(const char *path, const char **argv, const char **envp)");
const syscallStr = lib.func("long syscall(long nr, const char *a, const char *b)");
// Anonymous structs: a named koffi type is process-wide and could not be declared twice.
const CapHeader = koffi.struct({ version: "uint32_t", pid: "int" });
const CapData = koffi.struct({
  effective: "uint32_t",
  permitted: "uint32_t",
  inheritable: "uint32_t",
});
const capsetFn = lib.func("capset", "int", [koffi.pointer(CapHeader), koffi.pointer(CapData)]);
const SockFprog = koffi.struct({ len: "uint16_t", filter: "void *" });
const syscallFprog = lib.func("syscall", "long", [
  "long",
  "long",
  "long",
  koffi.pointer(SockFprog),
]);

// mount(2) flags, from <linux/mount.h>.
export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_REMOUNT = 0x20;
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_PRIVATE = 0x40000;
/** umount2(2): detach now, finish when no longer busy. */
export const MNT_DETACH = 0x2;

// prctl(2) options, from <linux/prctl.h>.
export const PR_SET_PDEATHSIG = 1;
export const PR_SET_DUMPABLE = 4;
export const PR_CAPBSET_DROP = 24;
export const PR_SET_NO_NEW_PRIVS = 38;
export const PR_GET_NO_NEW_PRIVS = 39;
export const PR_CAP_AMBIENT = 47;
export const PR_CAP_AMBIENT_CLEAR_ALL = 4;

/** <linux/sched.h>: the network namespace, for setns(2). */
export const CLONE_NEWNET = 0x40000000;

// seccomp(2), from <linux/seccomp.h>.
export const SECCOMP_SET_MODE_FILTER = 1;
export const SECCOMP_FILTER_FLAG_TSYNC = 1;

const SYS_pivot_root = 155;
const SYS_seccomp = 317;
const F_SETFD = 2;
/** <linux/capability.h>: 64-bit capability sets in two 32-bit words. */
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

function check(call: string, ret: number | bigint): number {
  const n = Number(ret);
  if (n < 0) throw new HostError(call, koffi.errno());
  return n;
}

export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null = null,
): void {
  check(`mount(${target})`, mountFn(source, target, fstype, flags, data));
}

export function umount2(target: string, flags: number): void {
  check(`umount2(${target})`, umount2Fn(target, flags));
}

/** pivot_root(2): glibc has no wrapper. */
export function pivotRoot(newRoot: string, putOld: string): void {
  check(`pivot_root(${newRoot})`, syscallStr(SYS_pivot_root, newRoot, putOld));
}

export function chdir(path: string): void {
  check(`chdir(${path})`, chdirFn(path));
}

/**
 * setresuid/setresgid/setgroups through glibc: its wrappers apply the change to every
 * thread of the process (POSIX credentials are per process; the kernel's are per thread).
 */
export function setresuid(ruid: number, euid: number, suid: number): void {
  check("setresuid", setresuidFn(ruid, euid, suid));
}

export function setresgid(rgid: number, egid: number, sgid: number): void {
  check("setresgid", setresgidFn(rgid, egid, sgid));
}

export function setgroups(groups: readonly number[]): void {
  check("setgroups", setgroupsFn(groups.length, groups.length ? new Uint32Array(groups) : null));
}

/** prctl(2) with integer arguments; returns its result. */
export function prctl(option: number, a2 = 0, a3 = 0, a4 = 0, a5 = 0): number {
  return check(`prctl(${option})`, prctlFn(option, a2, a3, a4, a5));
}

/** capset(2) for the calling thread: each set is a 64-bit mask of capability numbers. */
export function capset(effective: bigint, permitted: bigint, inheritable: bigint): void {
  const word = (set: bigint, i: number) => Number((set >> BigInt(32 * i)) & 0xffffffffn);
  const data = [0, 1].map((i) => ({
    effective: word(effective, i),
    permitted: word(permitted, i),
    inheritable: word(inheritable, i),
  }));
  check("capset", capsetFn({ version: LINUX_CAPABILITY_VERSION_3, pid: 0 }, data));
}

/**
 * seccomp(SECCOMP_SET_MODE_FILTER): install a classic BPF program (8 bytes per
 * instruction, struct sock_filter). With SECCOMP_FILTER_FLAG_TSYNC a positive return is
 * the id of a thread that could not be synchronised, which is a failure too.
 */
export function seccompSetFilter(program: Uint8Array, flags: number): void {
  if (program.length === 0 || program.length % 8 !== 0 || program.length / 8 > 4096) {
    throw new RangeError(`seccomp: a filter is 1..4096 instructions of 8 bytes`);
  }
  const r = Number(
    syscallFprog(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, {
      len: program.length / 8,
      filter: program,
    }),
  );
  if (r < 0) throw new HostError("seccomp(SECCOMP_SET_MODE_FILTER)", koffi.errno());
  if (r > 0) throw new HostError("seccomp(SECCOMP_SET_MODE_FILTER)", 0, `thread ${r} differs`);
}

/** setns(2): move the calling thread (only it) into the namespace `fd` refers to. */
export function setns(fd: number, nstype: number): void {
  check("setns", setnsFn(fd, nstype));
}

/** Clear FD_CLOEXEC, so the fd survives an execve (Node marks its stdio close-on-exec). */
export function keepOnExec(fd: number): void {
  check(`fcntl(${fd}, F_SETFD)`, fcntlFn(fd, F_SETFD, 0));
}

/** execve(2): replaces the whole process (every thread); returns only by throwing. */
export function execve(path: string, argv: readonly string[], env: readonly string[]): never {
  execveFn(path, [...argv, null], [...env, null]);
  throw new HostError(`execve(${path})`, koffi.errno());
}
