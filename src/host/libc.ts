// libc entry points through koffi. Only the calls the VMM needs, each declared with the
// exact argument types, and thin wrappers that turn a -1 return into a HostError. No policy
// lives here. This module is loaded separately in every thread that uses it (each worker
// thread has its own koffi bindings).

import koffi from "koffi";
import { HostError } from "./errors.js";

const lib = koffi.load("libc.so.6");

// ioctl is variadic in C; declaring fixed prototypes is safe on x86-64 because glibc's
// wrapper only takes one pointer-sized argument, and it keeps the hot KVM_RUN call cheap.
const ioctlPtr = lib.func("int ioctl(int fd, unsigned long req, void *arg)");
const ioctlInt = lib.func("int ioctl(int fd, unsigned long req, uintptr_t arg)");
const openFn = lib.func("int open(const char *path, int flags, int mode)");
const closeFn = lib.func("int close(int fd)");
const mmapFn = lib.func(
  "void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)",
);
const munmapFn = lib.func("int munmap(void *addr, size_t len)");
const madviseFn = lib.func("int madvise(void *addr, size_t len, int advice)");
const eventfdFn = lib.func("int eventfd(unsigned int initval, int flags)");
const readFn = lib.func("intptr_t read(int fd, void *buf, size_t count)");
const writeFn = lib.func("intptr_t write(int fd, const void *buf, size_t count)");
const syscallFn = lib.func("long syscall(long nr, long a, long b, long c)");
const fallocateFn = lib.func("int fallocate(int fd, int mode, int64_t offset, int64_t len)");
// iovecs are passed as a BigUint64Array of (base, len) pairs: no per-call marshalling.
const preadvFn = lib.func("intptr_t preadv(int fd, void *iov, int iovcnt, int64_t offset)");
const pwritevFn = lib.func("intptr_t pwritev(int fd, void *iov, int iovcnt, int64_t offset)");
const preadv2Fn = lib.func(
  "intptr_t preadv2(int fd, void *iov, int iovcnt, int64_t offset, int flags)",
);
const fstatfsFn = lib.func("int fstatfs(int fd, void *buf)");
const setAffinityFn = lib.func("int sched_setaffinity(int pid, size_t size, const void *mask)");
const getAffinityFn = lib.func("int sched_getaffinity(int pid, size_t size, void *mask)");
const sigmaskFn = lib.func("int pthread_sigmask(int how, const void *set, void *oldset)");
const socketFn = lib.func("int socket(int domain, int type, int protocol)");

export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MADV_DONTNEED = 4;
export const MADV_MERGEABLE = 12;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
const SYS_gettid = 186;
const SYS_tgkill = 234;
const SIG_UNBLOCK = 1;

/** An opaque pointer returned by libc (koffi external). */
export type Pointer = unknown;

const EINTR = 4;

function check(call: string, ret: number | bigint): number {
  const n = Number(ret);
  if (n < 0) throw new HostError(call, koffi.errno());
  return n;
}

/**
 * Run a call again while a signal interrupts it. Signals are routine here (vCPU kicks,
 * profilers, SIGCHLD), and KVM's ioctls return EINTR instead of restarting.
 */
function retrying(call: string, f: () => number | bigint): number {
  for (;;) {
    const n = Number(f());
    if (n >= 0) return n;
    const errno = koffi.errno();
    if (errno !== EINTR) throw new HostError(call, errno);
  }
}

/** ioctl with a pointer argument (a Buffer/TypedArray is passed by address). */
export function ioctl(
  fd: number,
  request: number,
  arg: ArrayBufferView | null,
  name: string,
): number {
  return retrying(`ioctl(${name})`, () => ioctlPtr(fd, request, arg));
}

/** ioctl with an integer argument. */
export function ioctlValue(
  fd: number,
  request: number,
  arg: number | bigint,
  name: string,
): number {
  return retrying(`ioctl(${name})`, () => ioctlInt(fd, request, arg));
}

/** ioctl returning -errno instead of throwing; for the KVM_RUN hot path. */
export function ioctlRaw(fd: number, request: number, arg: number): number {
  const r = ioctlInt(fd, request, arg) as number;
  return r < 0 ? -koffi.errno() : r;
}

export function open(path: string, flags: number): number {
  return retrying(`open(${path})`, () => openFn(path, flags | O_CLOEXEC, 0));
}

export function close(fd: number): void {
  check("close", closeFn(fd));
}

export interface Mapping {
  readonly pointer: Pointer;
  readonly address: bigint;
  readonly length: number;
  readonly buffer: ArrayBuffer;
}

/** mmap and wrap the result in an ArrayBuffer that aliases the mapping (no copy). */
export function mmap(length: number, prot: number, flags: number, fd = -1, offset = 0): Mapping {
  const pointer = mmapFn(null, length, prot, flags, fd, offset);
  const address = koffi.address(pointer);
  if (address === 0xffffffffffffffffn || address === 0n) {
    throw new HostError(`mmap(${length} bytes)`, koffi.errno());
  }
  return { pointer, address, length, buffer: koffi.view(pointer, length) };
}

export function munmap(mapping: Mapping): void {
  check("munmap", munmapFn(mapping.pointer, mapping.length));
}

/** madvise over a byte range of a mapping. */
export function madvise(mapping: Mapping, offset: number, length: number, advice: number): void {
  check("madvise", madviseFn(pointerAt(mapping, offset), length, advice));
}

function pointerAt(mapping: Mapping, offset: number): Pointer {
  // koffi accepts a typed array view as a pointer to its first byte.
  return new Uint8Array(mapping.buffer, offset, 1);
}

export function eventfd(initial: number, flags: number): number {
  return check("eventfd", eventfdFn(initial, flags | EFD_CLOEXEC));
}

export function read(fd: number, buf: ArrayBufferView): number {
  return retrying("read", () => readFn(fd, buf, buf.byteLength));
}

export function write(fd: number, buf: ArrayBufferView): number {
  return retrying("write", () => writeFn(fd, buf, buf.byteLength));
}

export function gettid(): number {
  return Number(syscallFn(SYS_gettid, 0, 0, 0));
}

export function tgkill(tgid: number, tid: number, signal: number): void {
  check("tgkill", syscallFn(SYS_tgkill, tgid, tid, signal));
}

/** CPU masks up to 1024 CPUs (glibc's cpu_set_t). */
const CPU_SET_BYTES = 128;

/** Pin thread `tid` (0: the caller) to `cpus`. */
export function setAffinity(tid: number, cpus: readonly number[]): void {
  const mask = new Uint8Array(CPU_SET_BYTES);
  for (const c of cpus) {
    if (!Number.isInteger(c) || c < 0 || c >= CPU_SET_BYTES * 8)
      throw new RangeError(`CPU ${c} is out of range`);
    mask[c >> 3] = (mask[c >> 3] ?? 0) | (1 << (c & 7));
  }
  const rc = setAffinityFn(tid, CPU_SET_BYTES, mask) as number;
  if (rc !== 0) throw new HostError("sched_setaffinity", koffi.errno());
}

/** The CPUs thread `tid` (0: the caller) may run on. */
export function getAffinity(tid: number): number[] {
  const mask = new Uint8Array(CPU_SET_BYTES);
  const rc = getAffinityFn(tid, CPU_SET_BYTES, mask) as number;
  if (rc !== 0) throw new HostError("sched_getaffinity", koffi.errno());
  const cpus: number[] = [];
  mask.forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) cpus.push(i * 8 + b);
  });
  return cpus;
}

/** Unblock one signal in the calling thread (Node starts worker threads with all blocked). */
export function unblockSignal(signal: number): void {
  const set = new BigUint64Array(16);
  set[0] = 1n << BigInt(signal - 1);
  const rc = sigmaskFn(SIG_UNBLOCK, set, null) as number;
  if (rc !== 0) throw new HostError("pthread_sigmask", rc);
}

export function socket(domain: number, type: number, protocol: number): number {
  return check("socket", socketFn(domain, type | O_CLOEXEC, protocol));
}

export function errno(): number {
  return koffi.errno();
}

/**
 * Map a whole file copy-on-write. Loading a kernel or initrd through a mapping instead of
 * readFileSync keeps the VMM from holding a heap copy after the guest has its own.
 */
export function mapFile(path: string, size: number): Mapping {
  const fd = open(path, O_RDONLY);
  try {
    return mmap(size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  } finally {
    close(fd);
  }
}

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

/**
 * preadv (op "read") or pwritev ("write") of `count` iovecs at `offset`, run on libuv's thread
 * pool through koffi's asynchronous call; `done` gets the byte count or -errno on the main
 * thread. `iov` and the memory it points at must stay alive and mapped until then.
 */
export function iovAsync(
  op: "read" | "write",
  fd: number,
  iov: BigUint64Array,
  count: number,
  offset: number,
  done: (result: number) => void,
): void {
  const fn = op === "read" ? preadvFn : pwritevFn;
  const start = (): void => {
    iovInFlight++;
    const finish = (result: number): void => {
      iovInFlight--;
      iovWaiting.shift()?.();
      done(result);
    };
    try {
      fn.async(fd, iov, count, offset, (err: unknown, n: number | bigint) => {
        // errno first: starting the next call must not come between the call and its errno.
        const r = err ? -EIO : Number(n) < 0 ? -koffi.errno() : Number(n);
        finish(r);
      });
    } catch {
      // koffi refused the call (its table of asynchronous calls is full despite the budget):
      // an I/O error for this request, never an exception in a completion callback.
      setImmediate(() => finish(-EIO));
    }
  };
  if (iovInFlight < IOV_ASYNC_BUDGET) start();
  else iovWaiting.push(start);
}

/** preadv2's flag: fail with EAGAIN rather than wait for the disk (data not in page cache). */
export const RWF_NOWAIT = 0x08;

/**
 * preadv2 (op "read", with `flags`) or pwritev ("write") right here, on the calling thread;
 * the byte count or -errno. For I/O that cannot wait on a disk: a file in memory, or a read
 * with RWF_NOWAIT.
 */
export function iovSync(
  op: "read" | "write",
  fd: number,
  iov: BigUint64Array,
  count: number,
  offset: number,
  flags = 0,
): number {
  const n = Number(
    op === "read" ? preadv2Fn(fd, iov, count, offset, flags) : pwritevFn(fd, iov, count, offset),
  );
  return n < 0 ? -koffi.errno() : n;
}

/** statfs(2) f_type values of the file systems that keep files in memory. */
export const TMPFS_MAGIC = 0x01021994;
export const RAMFS_MAGIC = 0x858458f6;

/** The type of the file system `fd` lives on (struct statfs's first field, f_type). */
export function fsType(fd: number): number {
  const buf = new BigInt64Array(16); // struct statfs is 120 bytes on x86-64
  check("fstatfs", fstatfsFn(fd, buf));
  return Number(buf[0]);
}

/**
 * koffi runs at most 256 asynchronous calls at once (max_async_calls) and throws past that;
 * the fd watcher's epoll_wait holds one for good. Block I/O keeps below this budget across
 * every disk: calls past it wait their turn here, so a deep queue is slower, never failed.
 */
const IOV_ASYNC_BUDGET = 192;
let iovInFlight = 0;
const iovWaiting: (() => void)[] = [];
const EIO = 5;

/** fallocate(2): punch holes for discard, zero ranges for write-zeroes. */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  retrying("fallocate", () => fallocateFn(fd, mode, offset, length));
}
