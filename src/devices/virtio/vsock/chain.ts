// Sequential access to the bytes of a descriptor chain: a vsock packet is a header followed
// by payload, and a driver may split both across buffers anywhere (Linux 6.1 posts the
// header and the payload as two buffers, later kernels as one). The chain's ranges were
// checked against guest RAM by the queue; GuestMemory.read/write copy across its 1 GiB
// views. One cursor per direction is kept by the device and reset per chain.

import type { GuestMemory } from "../../../memory/mod.js";
import type { DescriptorBuffer } from "../../../virtio/device.js";

export class ChainCursor {
  #memory: GuestMemory | undefined;
  #buffers: readonly DescriptorBuffer[] = [];
  #index = 0;
  #offset = 0;

  /** Start at the first byte of `buffers` (all readable or all writable ones of a chain). */
  reset(memory: GuestMemory, buffers: readonly DescriptorBuffer[]): this {
    this.#memory = memory;
    this.#buffers = buffers;
    this.#index = 0;
    this.#offset = 0;
    return this;
  }

  /** Copy the next `out.length` bytes of the chain into `out`; false if the chain is shorter. */
  read(out: Uint8Array): boolean {
    return this.#step(out, false);
  }

  /** Copy `data` into the next bytes of the chain; false if the chain is shorter. */
  write(data: Uint8Array): boolean {
    return this.#step(data, true);
  }

  #step(bytes: Uint8Array, toGuest: boolean): boolean {
    const memory = this.#memory;
    if (!memory) return false;
    let done = 0;
    while (done < bytes.length) {
      const b = this.#buffers[this.#index];
      if (!b) return false;
      const n = Math.min(bytes.length - done, b.length - this.#offset);
      if (n > 0) {
        const piece = bytes.subarray(done, done + n);
        if (toGuest) memory.write(b.address + this.#offset, piece);
        else memory.read(b.address + this.#offset, piece);
        done += n;
        this.#offset += n;
      }
      if (this.#offset >= b.length) {
        this.#index++;
        this.#offset = 0;
      }
    }
    return true;
  }
}
