// /dev/vhost-net: the kernel's in-kernel virtio-net data path. One open file is one vhost-net
// device with two rings (receive 0, transmit 1) whose worker thread moves frames between
// the rings in guest RAM and a TAP. Typed wrappers for its ioctls, each turning a failure
// into a HostError naming the call; no policy (which features, what order) lives here.

import { close, ioctl, O_RDWR, open } from "./libc.js";
import * as abi from "./vhost_abi.js";

export const VHOST_NET_PATH = "/dev/vhost-net";

export class VhostNet {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Open /dev/vhost-net (or `path`); a HostError with code ENOENT when it is missing. */
  static open(path: string = VHOST_NET_PATH): VhostNet {
    return new VhostNet(open(path, O_RDWR));
  }

  get fd(): number {
    return this.#fd;
  }

  /** Bind the device to this process: its worker uses our address space (call first). */
  setOwner(): void {
    ioctl(this.#fd, abi.VHOST_SET_OWNER, null, "VHOST_SET_OWNER");
  }

  getFeatures(): bigint {
    const out = new BigUint64Array(1);
    ioctl(this.#fd, abi.VHOST_GET_FEATURES, out, "VHOST_GET_FEATURES");
    return out[0] as bigint;
  }

  setFeatures(features: bigint): void {
    ioctl(
      this.#fd,
      abi.VHOST_SET_FEATURES,
      new BigUint64Array([features]),
      `VHOST_SET_FEATURES(0x${features.toString(16)})`,
    );
  }

  setMemTable(regions: readonly abi.VhostMemoryRegion[]): void {
    ioctl(this.#fd, abi.VHOST_SET_MEM_TABLE, abi.encodeMemoryTable(regions), "VHOST_SET_MEM_TABLE");
  }

  setVringNum(index: number, num: number): void {
    ioctl(
      this.#fd,
      abi.VHOST_SET_VRING_NUM,
      abi.encodePair(index, num),
      `VHOST_SET_VRING_NUM(${index})`,
    );
  }

  setVringBase(index: number, base: number): void {
    ioctl(
      this.#fd,
      abi.VHOST_SET_VRING_BASE,
      abi.encodePair(index, base),
      `VHOST_SET_VRING_BASE(${index})`,
    );
  }

  /** The ring's next available index; the kernel stops the ring when asked. */
  getVringBase(index: number): number {
    const buf = abi.encodePair(index, 0);
    ioctl(this.#fd, abi.VHOST_GET_VRING_BASE, buf, `VHOST_GET_VRING_BASE(${index})`);
    return new DataView(buf.buffer).getUint32(4, true);
  }

  setVringAddr(addr: abi.VhostVringAddr): void {
    ioctl(
      this.#fd,
      abi.VHOST_SET_VRING_ADDR,
      abi.encodeVringAddr(addr),
      `VHOST_SET_VRING_ADDR(${addr.index})`,
    );
  }

  /** The eventfd whose signal makes the worker look at the ring (-1: none). */
  setVringKick(index: number, fd: number): void {
    this.#file(abi.VHOST_SET_VRING_KICK, "VHOST_SET_VRING_KICK", index, fd);
  }

  /** The eventfd the worker signals when the driver should be interrupted (-1: none). */
  setVringCall(index: number, fd: number): void {
    this.#file(abi.VHOST_SET_VRING_CALL, "VHOST_SET_VRING_CALL", index, fd);
  }

  /** The eventfd the worker signals when the ring is unusable (a bad descriptor...). */
  setVringErr(index: number, fd: number): void {
    this.#file(abi.VHOST_SET_VRING_ERR, "VHOST_SET_VRING_ERR", index, fd);
  }

  /** Attach ring `index` to a TAP's fd, or detach it with -1 (the ring stops). */
  setBackend(index: number, fd: number): void {
    this.#file(abi.VHOST_NET_SET_BACKEND, "VHOST_NET_SET_BACKEND", index, fd);
  }

  #file(request: number, name: string, index: number, fd: number): void {
    ioctl(this.#fd, request, abi.encodePair(index, fd), `${name}(${index}, ${fd})`);
  }

  /** Close the device; the kernel stops its worker and drops its references. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    close(this.#fd);
    this.#fd = -1;
  }
}
