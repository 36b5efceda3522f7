// iovecs over guest RAM: host addresses through the regions, capacity, and consuming a
// short transfer (whole entries dropped, a partly done one moved on).

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { GuestMemory } from "./guest_memory.js";
import { IOV_MAX, IovecList } from "./iovec.js";
import { MIB } from "./layout.js";

const memory = new GuestMemory([
  { start: 0, size: 4 * MIB },
  { start: 8 * MIB, size: 4 * MIB },
]);
after(() => memory.close());
const host = (region: number, offset: number) =>
  (memory.regions[region]?.hostAddress as bigint) + BigInt(offset);

test("guest ranges become host (address, length) pairs, region by region", () => {
  const l = new IovecList(4);
  assert.ok(l.addGuest(memory, 0x1000, 100));
  assert.ok(l.addGuest(memory, 8 * MIB + 0x2000, 200));
  assert.deepEqual([...l.iov.subarray(0, 4)], [host(0, 0x1000), 100n, host(1, 0x2000), 200n]);
  assert.equal(l.count, 2);
  assert.equal(l.bytes, 300);
  assert.equal(l.addGuest(memory, 5 * MIB, 16), false, "the hole is not RAM");
  assert.throws(() => new IovecList(IOV_MAX + 1), RangeError);
});

test("a full list refuses more", () => {
  const l = new IovecList(1);
  assert.ok(l.addGuest(memory, 0, 8));
  assert.equal(l.addGuest(memory, 64, 8), false);
});

test("consume drops whole entries and moves into a partly done one", () => {
  const l = new IovecList(3);
  l.addGuest(memory, 0x1000, 100);
  l.addGuest(memory, 0x3000, 50);
  l.addGuest(memory, 0x5000, 10);
  l.consume(120);
  assert.equal(l.count, 2);
  assert.equal(l.bytes, 40);
  assert.deepEqual([...l.iov.subarray(0, 4)], [host(0, 0x3000 + 20), 30n, host(0, 0x5000), 10n]);
  l.consume(40);
  assert.equal(l.count, 0);
  assert.equal(l.bytes, 0);
});
