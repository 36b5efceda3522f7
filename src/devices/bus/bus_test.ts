// Unit and property tests for the bus: mapping rules, dispatch offsets, the all-ones
// answer for everything unmapped, and the counters.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import type { BusDevice } from "../device.js";
import { Bus, MMIO_SPACE_SIZE, PIO_SPACE_SIZE } from "./bus.js";

/** Records every access; reads return the offset in each byte. */
class Probe implements BusDevice {
  readonly log: string[] = [];
  constructor(readonly name: string) {}
  read(offset: number, data: Uint8Array): void {
    this.log.push(`r${offset}:${data.length}`);
    data.fill(offset & 0xff);
  }
  write(offset: number, data: Uint8Array): void {
    this.log.push(`w${offset}:${Array.from(data).join(",")}`);
  }
}

describe("Bus.insert", () => {
  it("accepts adjacent ranges and refuses overlaps", () => {
    const bus = Bus.pio();
    bus.insert(0x3f8, 8, new Probe("a"));
    bus.insert(0x400, 4, new Probe("b")); // adjacent above
    bus.insert(0x3f0, 8, new Probe("c")); // adjacent below
    assert.throws(() => bus.insert(0x3ff, 1, new Probe("d")), RangeError);
    assert.throws(() => bus.insert(0x3f0, 0x20, new Probe("e")), RangeError);
    assert.throws(() => bus.insert(0x3fc, 2, new Probe("f")), RangeError);
    assert.throws(() => bus.insert(0x3e0, 0x11, new Probe("g")), RangeError);
    assert.deepEqual(
      bus.stats().ranges.map((r) => r.name),
      ["c", "a", "b"],
    );
  });

  it("refuses empty and out-of-range ranges", () => {
    const bus = Bus.pio();
    assert.throws(() => bus.insert(0x60, 0, new Probe("x")), RangeError);
    assert.throws(() => bus.insert(-1, 1, new Probe("x")), RangeError);
    assert.throws(() => bus.insert(0xffff, 2, new Probe("x")), RangeError);
    assert.throws(() => bus.insert(PIO_SPACE_SIZE, 1, new Probe("x")), RangeError);
    assert.throws(() => bus.insert(1.5, 1, new Probe("x")), RangeError);
    assert.throws(() => bus.insert(0, Number.NaN, new Probe("x")), RangeError);
    bus.insert(0xffff, 1, new Probe("last"));
  });

  it("grows past its initial capacity", () => {
    const bus = Bus.mmio();
    for (let i = 40; i >= 0; i--) bus.insert(0xd000_0000 + i * 0x1000, 0x1000, new Probe(`d${i}`));
    const data = new Uint8Array(4);
    bus.read(0xd000_0000 + 17 * 0x1000 + 0x10, data);
    const r = bus.stats().ranges.find((x) => x.name === "d17");
    assert.equal(r?.reads, 1);
  });
});

describe("Bus dispatch", () => {
  it("passes the offset from the base", () => {
    const bus = Bus.pio();
    const dev = new Probe("serial");
    bus.insert(0x3f8, 8, dev);
    const one = new Uint8Array(1);
    bus.read(0x3fd, one);
    assert.equal(one[0], 5);
    bus.write(0x3f8, Uint8Array.of(0x41));
    assert.deepEqual(dev.log, ["r5:1", "w0:65"]);
  });

  it("answers unmapped reads with all-ones and counts both directions", () => {
    const bus = Bus.pio();
    bus.insert(0x70, 2, new Probe("rtc"));
    const d = new Uint8Array(4).fill(0x12);
    bus.read(0x80, d);
    assert.deepEqual(Array.from(d), [0xff, 0xff, 0xff, 0xff]);
    bus.write(0x80, Uint8Array.of(1));
    bus.write(0x6f, Uint8Array.of(1));
    const s = bus.stats();
    assert.equal(s.unmappedReads, 1);
    assert.equal(s.unmappedWrites, 2);
  });

  it("refuses accesses that straddle a range end", () => {
    const bus = Bus.pio();
    const dev = new Probe("rtc");
    bus.insert(0x70, 2, dev);
    const d = new Uint8Array(2);
    bus.read(0x71, d);
    assert.deepEqual(Array.from(d), [0xff, 0xff]);
    bus.write(0x71, Uint8Array.of(1, 2, 3, 4));
    bus.read(0x70, d); // exactly fits
    assert.deepEqual(dev.log, ["r0:2"]);
    assert.equal(bus.stats().straddled, 2);
  });

  it("refuses malformed sizes", () => {
    const bus = Bus.pio();
    const dev = new Probe("x");
    bus.insert(0, 0x100, dev);
    for (const n of [0, 3, 5, 16]) {
      const d = new Uint8Array(n);
      bus.read(0x10, d);
      assert.ok(d.every((b) => b === 0xff));
      bus.write(0x10, d);
    }
    assert.equal(dev.log.length, 0);
    assert.equal(bus.stats().malformed, 8);
  });

  it("treats NaN, fractional and huge addresses as unmapped", () => {
    const bus = Bus.mmio();
    bus.insert(0, 0x1000, new Probe("low"));
    const d = new Uint8Array(1);
    for (const a of [Number.NaN, 0.5, -1, MMIO_SPACE_SIZE, Number.POSITIVE_INFINITY]) {
      bus.read(a, d);
      bus.write(a, d);
    }
    const s = bus.stats();
    assert.equal(s.unmappedReads, 5);
    assert.equal(s.unmappedWrites, 5);
  });

  it("counts per range", () => {
    const bus = Bus.mmio();
    bus.insert(0xfee0_0000, 0x1000, new Probe("a"));
    bus.insert(0xfec0_0000, 0x1000, new Probe("b"));
    const d = new Uint8Array(4);
    bus.read(0xfee0_0020, d);
    bus.read(0xfee0_0030, d);
    bus.write(0xfec0_0010, d);
    assert.deepEqual(bus.stats().ranges, [
      { name: "b", base: 0xfec0_0000, length: 0x1000, reads: 0, writes: 1 },
      { name: "a", base: 0xfee0_0000, length: 0x1000, reads: 2, writes: 0 },
    ]);
  });
});

describe("Bus fuzz", () => {
  it("never throws, never passes an out-of-range access, reads keep their length", () => {
    const ranges: Array<[number, number]> = [
      [0x20, 2],
      [0x60, 1],
      [0x64, 1],
      [0x70, 2],
      [0x3f8, 8],
    ];
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            addr: fc.oneof(fc.integer({ min: -2, max: 0x10001 }), fc.double()),
            size: fc.integer({ min: 0, max: 9 }),
            write: fc.boolean(),
          }),
          { maxLength: 200 },
        ),
        (ops) => {
          const bus = Bus.pio();
          const seen: Array<[number, number, number]> = [];
          for (const [base, len] of ranges) {
            const check = (offset: number, data: Uint8Array): void => {
              seen.push([offset, data.length, len]);
            };
            bus.insert(base, len, { name: `d${base}`, read: check, write: check });
          }
          for (const op of ops) {
            const data = new Uint8Array(op.size);
            if (op.write) bus.write(op.addr, data);
            else bus.read(op.addr, data);
            assert.equal(data.length, op.size);
          }
          for (const [offset, size, len] of seen) {
            assert.ok(Number.isInteger(offset) && offset >= 0 && offset + size <= len);
          }
        },
      ),
    );
  });
});
