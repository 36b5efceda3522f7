// Tests for guest memory: layout around the MMIO hole, bounds checks, cross-chunk copies.
import assert from "node:assert/strict";
import { test } from "node:test";
import { GuestMemory, GuestMemoryError } from "./guest_memory.js";
import { GIB, MIB, MMIO_HOLE_END, MMIO_HOLE_START, ramRegions } from "./layout.js";

test("ramRegions puts memory above 4 GiB only when it exceeds the hole start", () => {
  assert.deepEqual(ramRegions(512 * MIB), [{ start: 0, size: 512 * MIB }]);
  assert.deepEqual(ramRegions(4 * GIB), [
    { start: 0, size: MMIO_HOLE_START },
    { start: MMIO_HOLE_END, size: GIB },
  ]);
  assert.throws(() => ramRegions(1000), RangeError);
  assert.throws(() => ramRegions(0), RangeError);
});

test("reads and writes inside RAM round-trip; outside RAM is an error, not a crash", () => {
  const mem = new GuestMemory(ramRegions(16 * MIB));
  try {
    mem.writeU32(0x1000, 0xdeadbeef);
    assert.equal(mem.readU32(0x1000), 0xdeadbeef);
    mem.writeU64(16 * MIB - 8, 0x1122334455667788n);
    assert.equal(mem.readU64(16 * MIB - 8), 0x1122334455667788n);
    assert.throws(() => mem.readU64(16 * MIB - 4), GuestMemoryError);
    assert.throws(() => mem.readU8(16 * MIB), GuestMemoryError);
    assert.throws(() => mem.readU8(-1), GuestMemoryError);
    assert.throws(() => mem.slice(16 * MIB - 2, 4), GuestMemoryError);
    assert.throws(() => mem.write(2 ** 60, new Uint8Array(1)), GuestMemoryError);
    assert.equal(mem.contains(0, 16 * MIB), true);
    assert.equal(mem.contains(0, 16 * MIB + 1), false);
    assert.equal(mem.contains(Number.NaN, 1), false);
  } finally {
    mem.close();
  }
});

test("copies span chunk boundaries; the MMIO hole is not RAM", () => {
  const mem = new GuestMemory(ramRegions(3 * GIB + 64 * MIB));
  try {
    const data = Uint8Array.from({ length: 64 }, (_, i) => i);
    mem.write(GIB - 32, data);
    const back = new Uint8Array(64);
    mem.read(GIB - 32, back);
    assert.deepEqual(back, data);
    assert.equal(mem.contains(MMIO_HOLE_START, 1), false);
    assert.equal(mem.contains(MMIO_HOLE_END, 64 * MIB), true);
    assert.throws(() => mem.read(MMIO_HOLE_START - 8, new Uint8Array(16)), GuestMemoryError);
  } finally {
    mem.close();
  }
});
