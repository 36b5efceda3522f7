// Unit tests for the AML encoder: the byte encodings of §20 checked against hand-worked
// values, especially at the width boundaries where off-by-one errors hide.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  and,
  eisaId,
  FieldAccess,
  FieldUpdate,
  field,
  integer,
  interrupt,
  ioPort,
  lEqual,
  local,
  memory32Fixed,
  method,
  name,
  nameString,
  pkg,
  pkgLength,
  resourceTemplate,
  string,
} from "./aml.js";

const bytes = (a: Uint8Array) => [...a];
const ascii = (text: string) => [...text].map((c) => c.charCodeAt(0));

/** Decode a PkgLength the way §20.2.4 defines it, to check the encoder against. */
function decodePkgLength(a: Uint8Array): number {
  const lead = a[0] ?? 0;
  const follow = lead >> 6;
  if (follow === 0) return lead & 0x3f;
  let value = lead & 0x0f;
  for (let i = 1; i <= follow; i++) value |= (a[i] ?? 0) << (4 + 8 * (i - 1));
  return value;
}

test("pkgLength picks the smallest width and counts its own bytes", () => {
  const cases: [number, number][] = [
    [0, 1],
    [62, 1],
    [63, 2],
    [4093, 2],
    [4094, 3],
    [(1 << 20) - 4, 3],
    [(1 << 20) - 3, 4],
    [(1 << 28) - 5, 4],
  ];
  for (const [body, width] of cases) {
    const encoded = pkgLength(body);
    assert.equal(encoded.length, width, `body ${body}`);
    assert.equal(decodePkgLength(encoded), body + width, `body ${body}`);
  }
  assert.throws(() => pkgLength((1 << 28) - 4), RangeError);
  assert.throws(() => pkgLength(-1), RangeError);
});

test("integer uses the smallest encoding", () => {
  assert.deepEqual(bytes(integer(0)), [0x00]);
  assert.deepEqual(bytes(integer(1)), [0x01]);
  assert.deepEqual(bytes(integer(2)), [0x0a, 2]);
  assert.deepEqual(bytes(integer(0xff)), [0x0a, 0xff]);
  assert.deepEqual(bytes(integer(0x100)), [0x0b, 0x00, 0x01]);
  assert.deepEqual(bytes(integer(0x1_0000)), [0x0c, 0, 0, 1, 0]);
  assert.deepEqual(bytes(integer(0xffff_ffff)), [0x0c, 0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(bytes(integer(0x1_0000_0000)), [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(bytes(integer(0xffff_ffff_ffff_ffffn)), [0x0e, ...Array(8).fill(0xff)]);
  assert.throws(() => integer(-1), RangeError);
  assert.throws(() => integer(2n ** 64n), RangeError);
});

test("nameString handles root, parent, dual and multi-segment paths", () => {
  assert.deepEqual(bytes(nameString("_HID")), ascii("_HID"));
  assert.deepEqual(bytes(nameString("_S5")), ascii("_S5_"));
  assert.deepEqual(bytes(nameString("\\_SB")), [0x5c, ...ascii("_SB_")]);
  const dual = nameString("\\_SB.PWRB");
  assert.equal(dual[0], 0x5c);
  assert.equal(dual[1], 0x2e);
  assert.equal(dual.length, 10);
  const multi = nameString("^A.B.C");
  assert.deepEqual(bytes(multi.subarray(0, 3)), [0x5e, 0x2f, 3]);
  assert.equal(multi.length, 3 + 12);
  assert.deepEqual(bytes(nameString("\\")), [0x5c, 0x00]);
  assert.throws(() => nameString("lower"), TypeError);
  assert.throws(() => nameString("TOOLONG"), TypeError);
  assert.throws(() => nameString("1ABC"), TypeError);
});

test("eisaId compresses as ASL's EisaId does", () => {
  // EisaId("PNP0C0C") is 0x0C0CD041 in every ASL compiler.
  assert.deepEqual(bytes(eisaId("PNP0C0C")), [0x0c, 0x41, 0xd0, 0x0c, 0x0c]);
  assert.deepEqual(bytes(eisaId("PNP0501")), [0x0c, 0x41, 0xd0, 0x05, 0x01]);
  assert.throws(() => eisaId("pnp0501"), TypeError);
});

test("string is NUL-terminated ASCII", () => {
  assert.deepEqual(bytes(string("AB")), [0x0d, 0x41, 0x42, 0x00]);
  assert.throws(() => string("é"), TypeError);
});

test("package and name encode element count and length", () => {
  const p = pkg([integer(5), integer(0)]);
  assert.deepEqual(bytes(p), [0x12, 0x05, 0x02, 0x0a, 0x05, 0x00]);
  assert.deepEqual(bytes(name("_UID", integer(0))), [0x08, ...ascii("_UID"), 0x00]);
});

test("resource descriptors have their fixed sizes and an End Tag closes the template", () => {
  assert.deepEqual(bytes(ioPort(0x3f8, 8)), [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]);
  const mem = memory32Fixed(true, 0xd000_0000, 0x1000);
  assert.deepEqual(bytes(mem), [0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0]);
  const irq = interrupt(5, { edge: true, activeLow: false, shared: false });
  assert.deepEqual(bytes(irq), [0x89, 6, 0, 0x03, 1, 5, 0, 0, 0]);
  const rt = resourceTemplate([mem, irq]);
  // BufferOp, PkgLength, BufferSize (byte), 12 + 9 + 2 bytes of descriptors.
  assert.deepEqual(bytes(rt.subarray(0, 4)), [0x11, 1 + 2 + 23, 0x0a, 23]);
  assert.deepEqual(bytes(rt.subarray(-2)), [0x79, 0x00]);
  assert.throws(() => ioPort(0x10000, 8), RangeError);
  assert.throws(() => memory32Fixed(true, 2 ** 32, 1), RangeError);
});

test("field widths are encoded as raw bit counts, not lengths", () => {
  const f = field("GDST", FieldAccess.DWord, FieldUpdate.WriteAsZeros, [
    { name: "GDAT", bits: 32 },
    { name: "WIDE", bits: 64 },
  ]);
  // ExtOp, FieldOp, PkgLength, "GDST", flags, "GDAT", 32, "WIDE", 0x40 0x04 (= 64).
  assert.deepEqual(bytes(f.subarray(0, 2)), [0x5b, 0x81]);
  assert.equal(f[7], 0x03 | (2 << 5));
  assert.equal(f[12], 32);
  assert.deepEqual(bytes(f.subarray(17)), [0x40, 0x04]);
});

test("method encodes argument count and the serialized flag", () => {
  const m = method("_EVT", 1, true, [lEqual(and(local(0), integer(1)), integer(1))]);
  assert.equal(m[0], 0x14);
  assert.equal(m[6], 0x09);
  assert.throws(() => method("_EVT", 8, false, []), RangeError);
});
