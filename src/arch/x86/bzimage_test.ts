// Tests for the boot protocol loaders: a synthetic bzImage header exercises every check,
// and property-based fuzzing shows that arbitrary bytes only ever produce a
// KernelImageError, never a crash or a write outside guest RAM.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { GuestMemory, MIB, ramRegions } from "../../memory/mod.js";
import { KernelImageError, loadBzImage, parseBzImage } from "./bzimage.js";
import { e820Map } from "./e820.js";
import { CMDLINE_ADDRESS, E820_RAM, ZERO_PAGE_ADDRESS } from "./layout.js";
import { loadPvh, parseElf } from "./pvh.js";

function fakeBzImage(
  opts: { version?: number; xloadflags?: number; initSize?: number } = {},
): Uint8Array {
  const img = new Uint8Array(0x1000 + 4096);
  const dv = new DataView(img.buffer);
  img[0x1f1] = 7; // setup_sects: 8 sectors of setup code
  dv.setUint16(0x1fe, 0xaa55, true);
  img[0x201] = 0x66; // jump offset: header ends at 0x268
  dv.setUint32(0x202, 0x53726448, true);
  dv.setUint16(0x206, opts.version ?? 0x020f, true);
  img[0x211] = 0x01; // LOADED_HIGH
  dv.setUint32(0x22c, 0x7fffffff, true);
  dv.setUint16(0x236, opts.xloadflags ?? 0x1, true);
  dv.setUint32(0x238, 2047, true);
  dv.setUint32(0x260, opts.initSize ?? 2 * MIB, true);
  img.fill(0xcc, 0x1000);
  return img;
}

test("a well-formed bzImage loads: kernel at 1 MiB, zero page, command line, initrd, e820", () => {
  const mem = new GuestMemory(ramRegions(64 * MIB));
  try {
    const regions = ramRegions(64 * MIB);
    const initrd = new Uint8Array(8192).fill(7);
    const k = loadBzImage(mem, fakeBzImage(), {
      cmdline: "console=ttyS0",
      initrd,
      e820: e820Map(regions),
      rsdpAddress: 0xe0000,
      lowRamEnd: 64 * MIB,
    });
    assert.equal(k.entry, 0x100200);
    assert.equal(mem.readU8(0x100000), 0xcc);
    assert.equal(mem.readU32(ZERO_PAGE_ADDRESS + 0x228), CMDLINE_ADDRESS);
    assert.equal(new TextDecoder().decode(mem.slice(CMDLINE_ADDRESS, 13)), "console=ttyS0");
    assert.equal(mem.readU8(CMDLINE_ADDRESS + 13), 0);
    const addr = mem.readU32(ZERO_PAGE_ADDRESS + 0x218);
    assert.equal(addr % 4096, 0);
    assert.ok(addr + initrd.length <= 64 * MIB);
    assert.equal(mem.readU32(ZERO_PAGE_ADDRESS + 0x21c), initrd.length);
    assert.equal(mem.readU8(ZERO_PAGE_ADDRESS + 0x210), 0xff);
    assert.equal(mem.readU64(ZERO_PAGE_ADDRESS + 0x70), 0xe0000n);
    assert.equal(mem.readU8(ZERO_PAGE_ADDRESS + 0x1e8), 3);
    assert.equal(mem.readU32(ZERO_PAGE_ADDRESS + 0x2d0 + 16), E820_RAM);
  } finally {
    mem.close();
  }
});

test("bzImage checks: old protocol, no 64-bit entry, not a kernel, too little memory", () => {
  assert.throws(() => parseBzImage(fakeBzImage({ version: 0x0206 })), /older than 2.12/);
  assert.throws(() => parseBzImage(fakeBzImage({ xloadflags: 0 })), /no 64-bit entry/);
  assert.throws(() => parseBzImage(new Uint8Array(100)), /too small/);
  assert.throws(() => parseBzImage(new Uint8Array(4096)), /no Linux boot signature/);
  const mem = new GuestMemory(ramRegions(32 * MIB));
  try {
    assert.throws(
      () =>
        loadBzImage(mem, fakeBzImage({ initSize: 30 * MIB }), {
          cmdline: "",
          e820: [],
          lowRamEnd: 32 * MIB,
        }),
      /too little memory/,
    );
    assert.throws(
      () =>
        loadBzImage(mem, fakeBzImage(), {
          cmdline: "x".repeat(5000),
          e820: [],
          lowRamEnd: 32 * MIB,
        }),
      /command line is 5000 bytes/,
    );
  } finally {
    mem.close();
  }
});

test("fuzz: random bytes and mutated headers only ever raise KernelImageError", () => {
  const mem = new GuestMemory(ramRegions(32 * MIB));
  const base = fakeBzImage();
  try {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ minLength: 0, maxLength: 2048 }),
          fc
            .array(
              fc.tuple(
                fc.integer({ min: 0, max: base.length - 1 }),
                fc.integer({ min: 0, max: 255 }),
              ),
              {
                maxLength: 16,
              },
            )
            .map((muts) => {
              const img = base.slice();
              for (const [i, v] of muts) img[i] = v;
              return img;
            }),
        ),
        (img) => {
          for (const f of [
            () => loadBzImage(mem, img, { cmdline: "a", e820: [], lowRamEnd: 32 * MIB }),
            () => parseElf(img),
          ]) {
            try {
              f();
            } catch (e) {
              if (!(e instanceof KernelImageError)) throw e;
            }
          }
        },
      ),
      { numRuns: 2000 },
    );
  } finally {
    mem.close();
  }
});

test("fuzz: ELF headers with hostile program headers never write outside guest RAM", () => {
  const mem = new GuestMemory(ramRegions(16 * MIB));
  try {
    fc.assert(
      fc.property(
        fc.record({
          phnum: fc.integer({ min: 0, max: 300 }),
          phoff: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
          paddr: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
          filesz: fc.bigInt({ min: 0n, max: 2n ** 40n }),
          memsz: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        }),
        (h) => {
          const img = new Uint8Array(512);
          const dv = new DataView(img.buffer);
          dv.setUint32(0, 0x464c457f, true);
          img[4] = 2;
          img[5] = 1;
          dv.setUint16(18, 62, true);
          dv.setBigUint64(32, h.phoff, true);
          dv.setUint16(54, 56, true);
          dv.setUint16(56, h.phnum, true);
          if (h.phoff === 64n) {
            dv.setUint32(64, 1, true);
            dv.setBigUint64(64 + 24, h.paddr, true);
            dv.setBigUint64(64 + 32, h.filesz, true);
            dv.setBigUint64(64 + 40, h.memsz, true);
          }
          try {
            loadPvh(mem, img, { cmdline: "", e820: [], lowRamEnd: 16 * MIB });
          } catch (e) {
            if (!(e instanceof KernelImageError) && !(e instanceof RangeError)) throw e;
          }
        },
      ),
      { numRuns: 2000 },
    );
  } finally {
    mem.close();
  }
});
