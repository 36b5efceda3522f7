// Property-based fuzzing of balloon PFN buffers end to end: random chains (any length,
// partial PFNs, PFNs in RAM, just past it and up to 2^32-1, stray writable buffers, direct
// and indirect) on the inflate and deflate queues. Properties: nothing throws out of the
// device, every discard is page-aligned, inside RAM and covers only pages the guest named,
// no access is attempted outside RAM, every chain comes back, and the device's count of
// inflated pages matches a model (so it stays bounded by RAM).

import assert from "node:assert/strict";
import { after, it } from "node:test";
import fc from "fast-check";
import { MIB, ramRegions } from "../../../memory/mod.js";
import { VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import { WatchedMemory } from "../../../virtio/testing/watched_memory.js";
import { VirtioBalloon } from "./mod.js";

const RAM = 16 * MIB;
const PAGE = 4096;
const RAM_PAGES = RAM / PAGE;
/** Guest RAM below this holds the driver double's rings and heap. */
const HARNESS_END = 9 * MIB;

// Records every discard; really discards only above the harness, since the fuzzer may name
// (or, with odd buffer lengths, assemble) any page, including the double's own rings.
class DiscardWatchingMemory extends WatchedMemory {
  discarded: { address: number; length: number }[] = [];
  override discard(address: number, length: number): void {
    this.discarded.push({ address, length });
    if (!this.contains(address, length)) this.outside++;
    const start = Math.max(address, HARNESS_END);
    if (start < address + length) super.discard(start, address + length - start);
  }
}

const memory = new DiscardWatchingMemory(ramRegions(RAM));
after(() => memory.close());

const logs: string[] = [];
const dev = new VirtioBalloon({ log: (m) => logs.push(m), queueSize: 16, defer: () => {} });
const transport = new VirtioMmioTransport({ device: dev, memory, irq: { set() {}, pulse() {} } });
const driver = new VirtioMmioDriver({ memory, transport });
driver.init();
const BUF_BYTES = 64 * 1024 + 64;
const areas = [driver.alloc(BUF_BYTES), driver.alloc(BUF_BYTES), driver.alloc(BUF_BYTES)];
const model = new Set<number>();

const pfn = fc.oneof(
  fc.integer({ min: 0, max: RAM_PAGES - 1 }),
  fc.integer({ min: RAM_PAGES - 2, max: RAM_PAGES + 4 }),
  fc.integer({ min: 0, max: 0xffff_ffff }),
  fc.constant(0xffff_ffff),
);
const buffer = fc.record({
  pfns: fc.array(pfn, { maxLength: 40 }),
  // Bytes cut from or added past the PFNs: makes lengths that are not multiples of 4.
  extra: fc.oneof(
    { arbitrary: fc.constant(0), weight: 4 },
    { arbitrary: fc.integer({ min: -3, max: 3 }), weight: 1 },
  ),
  writable: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  huge: fc.integer({ min: 0, max: 50 }).map((n) => n === 0),
});
const chain = fc.record({
  deflate: fc.boolean(),
  indirect: fc.boolean(),
  buffers: fc.array(buffer, { minLength: 1, maxLength: 3 }),
});

function encode(list: number[], length: number): Uint8Array {
  const b = new Uint8Array(Math.max(length, 4 * list.length));
  const v = new DataView(b.buffer);
  list.forEach((p, i) => {
    v.setUint32(4 * i, p, true);
  });
  return b.subarray(0, length);
}

it("virtio-balloon: hostile PFN buffers never throw and never discard outside RAM", () => {
  fc.assert(
    fc.property(fc.array(chain, { minLength: 1, maxLength: 6 }), (chains) => {
      const outside = memory.outside;
      const errors = transport.stats().deviceErrors;
      for (const c of chains) {
        const q = driver.queue(c.deflate ? 1 : 0);
        // Readable buffers first (the double and §2.7.4.2 want that order).
        const specs = [...c.buffers].sort((a, b) => Number(a.writable) - Number(b.writable));
        let total = 0;
        let anyWritable = false;
        const posted = specs.map((b, i) => {
          const length = b.huge
            ? 64 * 1024 + 4
            : Math.max(1, Math.min(BUF_BYTES, 4 * b.pfns.length + b.extra));
          const bytes = encode(b.pfns, Math.min(length, 4 * b.pfns.length));
          if (b.writable) anyWritable = true;
          else total += length;
          return { address: areas[i] as number, length, writable: b.writable, data: bytes };
        });
        const stream = new Uint8Array(total);
        let at = 0;
        for (const p of posted) {
          if (p.writable) continue;
          memory.write(p.address, new Uint8Array(p.length));
          memory.write(p.address, p.data);
          stream.set(memory.slice(p.address, p.length), at);
          at += p.length;
        }
        memory.discarded = [];
        const r = q.add(
          posted.map(({ address, length, writable }) => ({ address, length, writable })),
          { indirect: c.indirect },
        );
        q.kick();
        assert.deepEqual(q.takeUsed(), [{ id: r.head, len: 0 }], "every chain comes back");
        const accepted = !anyWritable && total % 4 === 0 && total <= 64 * 1024;
        const sent = new Set<number>();
        if (accepted) {
          // The PFNs as the device sees them: the readable bytes in order.
          const v = new DataView(stream.buffer);
          for (let i = 0; i + 4 <= total; i += 4) {
            const p = v.getUint32(i, true);
            if (p >= RAM_PAGES) continue;
            sent.add(p);
            if (c.deflate) model.delete(p);
            else model.add(p);
          }
        }
        for (const d of memory.discarded) {
          assert.ok(!c.deflate && accepted, "discard only on an accepted inflate");
          assert.equal(d.address % PAGE, 0);
          assert.equal(d.length % PAGE, 0);
          assert.ok(d.length > 0 && d.address + d.length <= RAM, "discard inside RAM");
          for (let a = d.address; a < d.address + d.length; a += PAGE) {
            assert.ok(sent.has(a / PAGE), `discarded page ${a / PAGE} was not named`);
          }
        }
      }
      assert.equal(dev.stats().inflatedPages, model.size, "inflated count matches the model");
      assert.ok(model.size <= RAM_PAGES);
      assert.equal(memory.outside, outside, "an access was attempted outside guest RAM");
      assert.equal(transport.stats().deviceErrors, errors, "the device threw");
      assert.ok(!logs.some((m) => m.includes("failed")), "nothing failed inside the device");
    }),
    { numRuns: 1000 },
  );
  const m = dev.metrics();
  assert.ok(m.pagesInflated > 0 && m.pagesDeflated > 0 && m.refusedPfns > 0, "explored");
  assert.ok(m.refusedChains > 0 && m.discards > 0, "explored");
});
