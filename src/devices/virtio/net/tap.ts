// A Linux TAP interface as virtio-net's backend: /dev/net/tun opened non-blocking, bound to a
// named interface with TUNSETIFF (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: the kernel creates
// the interface if it does not exist, or attaches to an existing persistent one), a 12-byte
// vnet header (struct virtio_net_hdr_v1, the same layout the guest uses, so the header passes
// through untouched) and, once the driver has negotiated its receive offloads, TUNSETOFFLOAD.
// Frames move with readv/writev over iovecs of raw host addresses, so a frame goes straight
// between the TAP and guest RAM with no copy. The libc calls are declared here (not in
// host/) because only this backend needs them. Errors name the call and the TAP.

import koffi from "koffi";
import { errnoName } from "../../../host/errors.js";

const lib = koffi.load("libc.so.6");
const openFn = lib.func("int open(const char *path, int flags, int mode)");
const closeFn = lib.func("int close(int fd)");
const ioctlPtr = lib.func("int ioctl(int fd, unsigned long req, void *arg)");
const ioctlInt = lib.func("int ioctl(int fd, unsigned long req, uintptr_t arg)");
// iovecs are passed as a BigUint64Array of (base, len) pairs: no per-call marshalling.
const readvFn = lib.func("intptr_t readv(int fd, void *iov, int iovcnt)");
const writevFn = lib.func("intptr_t writev(int fd, void *iov, int iovcnt)");

const O_RDWR = 2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
export const EAGAIN = 11;
const EINTR = 4;

// <linux/if_tun.h>
const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
const TUNSETOFFLOAD = 0x400454d0; // _IOW('T', 208, unsigned int)
const TUNSETVNETHDRSZ = 0x400454d8; // _IOW('T', 216, int)
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;
/** IFNAMSIZ includes the terminating NUL. */
const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;
/** sizeof(struct virtio_net_hdr_v1) with num_buffers (virtio 1.2 §5.1.6). */
export const TAP_VNET_HDR_SIZE = 12;

/** A failed call on a TAP: `code` is the errno name, `call` the libc call. */
export class TapError extends Error {
  readonly code: string;
  constructor(
    readonly tap: string,
    readonly call: string,
    readonly errno: number,
    what = "Cannot use",
  ) {
    const name = errnoName(errno);
    super(`${what} TAP ${tap}: ${call} failed: ${name}`);
    this.name = "TapError";
    this.code = name;
  }
}

/** Is `name` acceptable to the kernel as an interface name (dev_valid_name)? */
export function validTapName(name: string): boolean {
  return (
    name.length > 0 &&
    name.length < IFNAMSIZ &&
    name !== "." &&
    name !== ".." &&
    /^[\x21-\x7e]+$/.test(name) &&
    !name.includes("/") &&
    !name.includes(":")
  );
}

export class Tap {
  readonly name: string;
  #fd: number;

  private constructor(name: string, fd: number) {
    this.name = name;
    this.#fd = fd;
  }

  /** Open (creating if needed) the TAP `name` with a 12-byte vnet header, non-blocking. */
  static open(name: string): Tap {
    if (!validTapName(name)) {
      throw new TypeError(
        `Cannot open TAP: name ${JSON.stringify(name)} is not a valid interface name`,
      );
    }
    const fd = openFn("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC, 0) as number;
    if (fd < 0) throw new TapError(name, "open(/dev/net/tun)", koffi.errno(), "Cannot open");
    try {
      const ifr = Buffer.alloc(IFREQ_SIZE);
      ifr.write(name, 0, "latin1");
      ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, IFNAMSIZ);
      if ((ioctlPtr(fd, TUNSETIFF, ifr) as number) < 0) {
        throw new TapError(name, "TUNSETIFF", koffi.errno(), "Cannot open");
      }
      const size = new Int32Array([TAP_VNET_HDR_SIZE]);
      if ((ioctlPtr(fd, TUNSETVNETHDRSZ, size) as number) < 0) {
        throw new TapError(name, "TUNSETVNETHDRSZ", koffi.errno(), "Cannot open");
      }
      // Until the driver negotiates receive offloads the kernel must hand us plain frames.
      if ((ioctlInt(fd, TUNSETOFFLOAD, 0) as number) < 0) {
        throw new TapError(name, "TUNSETOFFLOAD", koffi.errno(), "Cannot open");
      }
    } catch (e) {
      closeFn(fd);
      throw e;
    }
    return new Tap(name, fd);
  }

  /** The file descriptor, for readiness watching; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** Tell the kernel which offloads the reader (the guest) accepts: TUN_F_* bits. */
  setOffload(flags: number): void {
    if ((ioctlInt(this.#fd, TUNSETOFFLOAD, flags >>> 0) as number) < 0) {
      throw new TapError(this.name, `TUNSETOFFLOAD(0x${flags.toString(16)})`, koffi.errno());
    }
  }

  /**
   * readv one frame (vnet header first) into `count` (base, len) pairs of `iov`. Returns the
   * frame's full length (larger than the iovecs when truncated), or -errno (-EAGAIN: none).
   */
  readv(iov: BigUint64Array, count: number): number {
    for (;;) {
      const n = Number(readvFn(this.#fd, iov, count));
      if (n >= 0) return n;
      const e = koffi.errno();
      if (e !== EINTR) return -e;
    }
  }

  /** writev one frame (vnet header first); bytes written or -errno. */
  writev(iov: BigUint64Array, count: number): number {
    for (;;) {
      const n = Number(writevFn(this.#fd, iov, count));
      if (n >= 0) return n;
      const e = koffi.errno();
      if (e !== EINTR) return -e;
    }
  }

  /** Close the fd (a TAP the kernel created for us disappears with it). Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    closeFn(this.#fd);
    this.#fd = -1;
  }
}
