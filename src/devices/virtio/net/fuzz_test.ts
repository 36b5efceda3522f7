// Property-based fuzzing of the transmit chain and header check (tx.ts): any chain layout,
// any header bytes, any negotiated features. The check never throws, and whatever it
// accepts obeys the rules the TAP relies on.

import assert from "node:assert/strict";
import { after, it } from "node:test";
import fc from "fast-check";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import type { DescriptorBuffer, DescriptorChain } from "../../../virtio/device.js";
import {
  ETH_HLEN,
  MAX_PACKET,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_HDR_SIZE,
} from "./config.js";
import { checkTxChain, gather } from "./tx.js";

const RAM = 4 * MIB;
const memory = new GuestMemory(ramRegions(RAM));
after(() => memory.close());

const buffer = fc.record({
  // Mostly in RAM, sometimes straddling its end or far outside (the queue would refuse
  // those, but the check must not depend on it).
  address: fc.oneof(
    fc.integer({ min: 0, max: 0x1_0000 }),
    fc.integer({ min: RAM - 64, max: RAM + 64 }),
    fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  ),
  length: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 2 * MAX_PACKET })),
  writable: fc.boolean(),
});

it("virtio-net: the transmit check accepts only well-formed chains and never throws", () => {
  const hdr = new Uint8Array(VIRTIO_NET_HDR_SIZE);
  fc.assert(
    fc.property(
      fc.array(buffer, { minLength: 1, maxLength: 6 }),
      fc.uint8Array({ minLength: 12, maxLength: 12 }),
      fc.bigInt({ min: 0n, max: (1n << 16n) - 1n }),
      (bufs, header, features) => {
        const first = bufs[0] as DescriptorBuffer;
        if (memory.contains(first.address, 12)) memory.write(first.address, header);
        const readable = bufs.filter((b) => !b.writable);
        const writable = bufs.filter((b) => b.writable);
        const chain: DescriptorChain = {
          head: 0,
          readable,
          writable,
          readableLength: readable.reduce((n, b) => n + b.length, 0),
          writableLength: writable.reduce((n, b) => n + b.length, 0),
        };
        const reason = checkTxChain(memory, chain, features, hdr);
        if (reason !== undefined) {
          assert.equal(typeof reason, "string");
          return;
        }
        assert.equal(writable.length, 0);
        assert.ok(chain.readableLength >= VIRTIO_NET_HDR_SIZE + ETH_HLEN);
        assert.ok(chain.readableLength <= MAX_PACKET);
        const seen = new Uint8Array(12);
        assert.ok(gather(memory, readable, seen, 12), "the header was readable");
        // The checked copy is the guest's header with num_buffers cleared.
        assert.deepEqual(hdr.subarray(0, 10), seen.subarray(0, 10));
        assert.equal(hdr[10], 0);
        assert.equal(hdr[11], 0);
        const flags = hdr[0] as number;
        const gso = hdr[1] as number;
        const frame = chain.readableLength - 12;
        assert.equal(flags & ~1, 0, "only NEEDS_CSUM");
        if (flags & 1) {
          assert.ok(features & (1n << VIRTIO_NET_F_CSUM));
          const v = new DataView(hdr.buffer);
          assert.ok(v.getUint16(6, true) + v.getUint16(8, true) + 2 <= frame);
        }
        if (gso !== 0) {
          assert.ok(gso === 1 || gso === 4, "TCPv4 or TCPv6 only");
          const f = gso === 1 ? VIRTIO_NET_F_HOST_TSO4 : VIRTIO_NET_F_HOST_TSO6;
          assert.ok(features & (1n << f));
          assert.ok(flags & 1);
        }
      },
    ),
    { numRuns: 2000 },
  );
});
