// iovecs over guest RAM for readv/writev on the TAP: (host address, length) pairs in one
// BigUint64Array made once per device, so a frame moves between the kernel and guest memory
// with no copy and no allocation per frame. A guest-physical range is turned into host
// addresses through the RAM regions (split where one region ends, which only happens for
// ranges the queue already checked lie in RAM, e.g. across the MMIO hole they cannot span).

import type { GuestMemory } from "../../../memory/mod.js";
import { IOV_MAX } from "./tap.js";

export class IovecList {
  /** (iov_base, iov_len) pairs, as struct iovec on x86-64. */
  readonly iov = new BigUint64Array(2 * IOV_MAX);
  count = 0;
  bytes = 0;

  clear(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Append a host range; false when the list is full. */
  addHost(address: bigint, length: number): boolean {
    if (length === 0) return true;
    if (this.count >= IOV_MAX) return false;
    this.iov[2 * this.count] = address;
    this.iov[2 * this.count + 1] = BigInt(length);
    this.count++;
    this.bytes += length;
    return true;
  }

  /**
   * Append guest range [address, address + length); false when part of it is not in RAM or
   * the list is full (the list may then hold part of the range).
   */
  addGuest(memory: GuestMemory, address: number, length: number): boolean {
    let a = address;
    let left = length;
    while (left > 0) {
      let placed = false;
      for (const r of memory.regions) {
        if (a >= r.start && a < r.start + r.size) {
          const n = Math.min(left, r.start + r.size - a);
          if (!this.addHost(r.hostAddress + BigInt(a - r.start), n)) return false;
          a += n;
          left -= n;
          placed = true;
          break;
        }
      }
      if (!placed) return false;
    }
    return true;
  }
}
