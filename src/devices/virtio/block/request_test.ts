// Parsing virtio-blk request chains: the layouts Linux sends, layouts split at odd byte
// boundaries, and every refusal; then a property test over random chains checked by an
// independent oracle (testing.ts checkParse).

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import fc from "fast-check";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import {
  type BlockRequest,
  type ParseRefusal,
  parseRequest,
  type RequestLimits,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from "./request.js";
import {
  buildChain,
  type ChainDesc,
  checkParse,
  encodeSegments,
  GuestAllocator,
  makeChain,
  requestHeader,
} from "./testing.js";

const memory = new GuestMemory(ramRegions(16 * MIB));
after(() => memory.close());
const alloc = new GuestAllocator(memory);

const limits: RequestLimits = {
  capacity: 2048,
  maxDiscardSectors: 1024,
  maxDiscardSeg: 4,
  maxWriteZeroesSectors: 1024,
  maxWriteZeroesSeg: 4,
  flush: true,
  discard: true,
  writeZeroes: true,
};

function ok(chain: ReturnType<typeof makeChain>, l = limits): BlockRequest {
  const r = parseRequest(memory, chain, l);
  if (!r.ok) assert.fail(`refused: ${r.refusal.reason}`);
  return r.request;
}

/** The data ranges as plain spans (they may be the chain's own buffer objects). */
function spans(q: BlockRequest): { address: number; length: number }[] {
  return q.data.map(({ address, length }) => ({ address, length }));
}

function refused(chain: ReturnType<typeof makeChain>, l = limits): ParseRefusal {
  const r = parseRequest(memory, chain, l);
  if (r.ok) assert.fail("accepted");
  return r.refusal;
}

describe("parseRequest", () => {
  it("parses a read as Linux lays it out (header, data, status)", () => {
    const data = alloc.writable(4096);
    const status = alloc.writable(1);
    const chain = makeChain(7, [alloc.readable(requestHeader(VIRTIO_BLK_T_IN, 100)), data, status]);
    const q = ok(chain);
    assert.equal(q.head, 7);
    assert.equal(q.type, VIRTIO_BLK_T_IN);
    assert.equal(q.offset, 100 * 512);
    assert.equal(q.dataLength, 4096);
    assert.deepEqual(spans(q), [{ address: data.address, length: 4096 }]);
    assert.equal(q.statusAddress, status.address);
  });

  it("finds header, data and status across arbitrary framing", () => {
    const hdr = requestHeader(VIRTIO_BLK_T_OUT, 3);
    const payload = new Uint8Array(1024).fill(0xab);
    const b1 = alloc.readable(hdr.subarray(0, 5));
    const b2 = alloc.readable(new Uint8Array([...hdr.subarray(5), ...payload.subarray(0, 100)]));
    const b3 = alloc.readable(payload.subarray(100));
    const st = alloc.writable(1);
    const q = ok(makeChain(1, [b1, b2, b3, st]));
    assert.equal(q.offset, 3 * 512);
    assert.equal(q.dataLength, 1024);
    assert.deepEqual(spans(q), [
      { address: b2.address + 11, length: 100 },
      { address: b3.address, length: 924 },
    ]);
    // A read whose status byte shares the last buffer with the data.
    const w = alloc.writable(513);
    const r = ok(makeChain(2, [alloc.readable(requestHeader(VIRTIO_BLK_T_IN, 0)), w]));
    assert.deepEqual(spans(r), [{ address: w.address, length: 512 }]);
    assert.equal(r.statusAddress, w.address + 512);
  });

  it("accepts the last sector and refuses one past it, and a wrapping sector", () => {
    const read = (sector: bigint | number, len: number) =>
      makeChain(0, [
        alloc.readable(requestHeader(VIRTIO_BLK_T_IN, sector)),
        alloc.writable(len),
        alloc.writable(1),
      ]);
    assert.equal(ok(read(2047, 512)).offset, 2047 * 512);
    for (const [s, n] of [
      [2048, 512],
      [2047, 1024],
      [2n ** 64n - 1n, 512],
      [2n ** 55n, 512],
    ] as const) {
      const r = refused(read(s, n));
      assert.equal(r.status, VIRTIO_BLK_S_IOERR);
      assert.match(r.reason, /beyond capacity/);
    }
  });

  it("refuses data that is not a whole number of sectors", () => {
    const r = refused(
      makeChain(0, [
        alloc.readable(requestHeader(VIRTIO_BLK_T_OUT, 0)),
        alloc.readable(new Uint8Array(513)),
        alloc.writable(1),
      ]),
    );
    assert.equal(r.status, VIRTIO_BLK_S_IOERR);
    assert.match(r.reason, /% 512/);
  });

  it("refuses without a status byte when there is no writable byte", () => {
    const hdr = alloc.readable(requestHeader(VIRTIO_BLK_T_FLUSH, 0));
    assert.equal(refused(makeChain(4, [hdr])).statusAddress, undefined);
    assert.equal(refused(makeChain(4, [hdr, alloc.writable(0)])).statusAddress, undefined);
  });

  it("refuses a short header with IOERR in the status byte", () => {
    const st = alloc.writable(1);
    const r = refused(makeChain(0, [alloc.readable(new Uint8Array(15)), st]));
    assert.equal(r.status, VIRTIO_BLK_S_IOERR);
    assert.equal(r.statusAddress, st.address);
    assert.equal(refused(makeChain(0, [st])).status, VIRTIO_BLK_S_IOERR);
  });

  it("answers UNSUPP for unknown types and un-negotiated optional ones", () => {
    for (const t of [2, 3, 10, 14, 0xffff_ffff]) {
      const r = refused(makeChain(0, [alloc.readable(requestHeader(t, 0)), alloc.writable(1)]));
      assert.equal(r.status, VIRTIO_BLK_S_UNSUPP);
      assert.equal(r.unsupported, true);
    }
    const bare = { ...limits, flush: false, discard: false, writeZeroes: false };
    const flush = makeChain(0, [
      alloc.readable(requestHeader(VIRTIO_BLK_T_FLUSH, 0)),
      alloc.writable(1),
    ]);
    assert.equal(refused(flush, bare).status, VIRTIO_BLK_S_UNSUPP);
    const seg = encodeSegments([{ sector: 0n, numSectors: 1, flags: 0 }]);
    for (const t of [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES]) {
      const c = makeChain(0, [
        alloc.readable(requestHeader(t, 0)),
        alloc.readable(seg),
        alloc.writable(1),
      ]);
      assert.equal(refused(c, bare).status, VIRTIO_BLK_S_UNSUPP);
    }
  });

  it("needs a 20-byte GET_ID buffer", () => {
    const get = (n: number) =>
      makeChain(0, [
        alloc.readable(requestHeader(VIRTIO_BLK_T_GET_ID, 0)),
        alloc.writable(n),
        alloc.writable(1),
      ]);
    assert.equal(ok(get(20)).dataLength, 20);
    assert.equal(ok(get(512)).dataLength, 20);
    assert.equal(refused(get(19)).status, VIRTIO_BLK_S_IOERR);
  });

  it("checks discard and write-zeroes segments", () => {
    const req = (t: number, body: Uint8Array) =>
      makeChain(0, [alloc.readable(requestHeader(t, 0)), alloc.readable(body), alloc.writable(1)]);
    const segs = [
      { sector: 0n, numSectors: 8, flags: 0 },
      { sector: 2040n, numSectors: 8, flags: 0 },
    ];
    const d = ok(req(VIRTIO_BLK_T_DISCARD, encodeSegments(segs)));
    assert.deepEqual(d.segments, [
      { offset: 0, length: 4096, unmap: false },
      { offset: 2040 * 512, length: 4096, unmap: false },
    ]);
    const wz = ok(
      req(
        VIRTIO_BLK_T_WRITE_ZEROES,
        encodeSegments([{ sector: 1n, numSectors: 2, flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP }]),
      ),
    );
    assert.deepEqual(wz.segments, [{ offset: 512, length: 1024, unmap: true }]);

    const bad: [number, Uint8Array, number][] = [
      [
        VIRTIO_BLK_T_DISCARD,
        encodeSegments([{ sector: 0n, numSectors: 1, flags: 1 }]),
        VIRTIO_BLK_S_UNSUPP,
      ],
      [
        VIRTIO_BLK_T_WRITE_ZEROES,
        encodeSegments([{ sector: 0n, numSectors: 1, flags: 2 }]),
        VIRTIO_BLK_S_UNSUPP,
      ],
      [
        VIRTIO_BLK_T_DISCARD,
        encodeSegments([{ sector: 2041n, numSectors: 8, flags: 0 }]),
        VIRTIO_BLK_S_IOERR,
      ],
      [
        VIRTIO_BLK_T_DISCARD,
        encodeSegments([{ sector: 2n ** 64n - 1n, numSectors: 1, flags: 0 }]),
        VIRTIO_BLK_S_IOERR,
      ],
      [
        VIRTIO_BLK_T_DISCARD,
        encodeSegments([{ sector: 0n, numSectors: 1025, flags: 0 }]),
        VIRTIO_BLK_S_IOERR,
      ],
      [VIRTIO_BLK_T_DISCARD, encodeSegments(Array(5).fill(segs[0])), VIRTIO_BLK_S_IOERR],
      [VIRTIO_BLK_T_DISCARD, new Uint8Array(17), VIRTIO_BLK_S_IOERR],
      [VIRTIO_BLK_T_WRITE_ZEROES, new Uint8Array(0), VIRTIO_BLK_S_IOERR],
    ];
    for (const [t, body, status] of bad) assert.equal(refused(req(t, body)).status, status);
  });

  it("does not throw when a chain lies about guest memory", () => {
    const chain = makeChain(9, [
      { address: 64 * MIB, length: 16, writable: false },
      { address: 2 ** 60, length: 1, writable: true },
    ]);
    const r = refused(chain);
    assert.equal(r.statusAddress, undefined);
    const nan = makeChain(9, [{ address: 0, length: Number.NaN, writable: true }]);
    assert.equal(refused(nan).statusAddress, undefined);
  });
});

const TYPES = [
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_WRITE_ZEROES,
];
const sectorArb = fc.oneof(
  fc.bigInt({ min: 0n, max: 2100n }),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  fc.constantFrom(2n ** 64n - 1n, 2n ** 53n, 2n ** 55n, 2048n, 2047n),
);
const lengthArb = fc.oneof(
  fc.integer({ min: 0, max: 40 }),
  fc.constantFrom(0, 511, 512, 513, 1024, 4096, 4097),
  fc.integer({ min: 0, max: 20_000 }),
);
const descArb: fc.Arbitrary<ChainDesc> = fc.record({
  head: fc.integer({ min: 0, max: 255 }),
  type: fc.oneof(fc.constantFrom(...TYPES), fc.integer({ min: 0, max: 0xffff_ffff })),
  reserved: fc.integer({ min: 0, max: 0xffff_ffff }),
  sector: sectorArb,
  segments: fc.array(
    fc.record({
      sector: sectorArb,
      numSectors: fc.oneof(
        fc.integer({ min: 0, max: 1100 }),
        fc.integer({ min: 0, max: 0xffff_ffff }),
      ),
      flags: fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 0xffff_ffff })),
    }),
    { maxLength: 6 },
  ),
  bodyLength: fc.oneof(fc.constant(0), lengthArb),
  readableCut: fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 40 })),
  readSplits: fc.array(fc.nat(), { maxLength: 5 }),
  writableLength: lengthArb,
  writeSplits: fc.array(fc.nat(), { maxLength: 5 }),
});

describe("parseRequest property", () => {
  it("never throws and never accepts a request the oracle rejects", () => {
    fc.assert(
      fc.property(descArb, fc.boolean(), (d, negotiated) => {
        alloc.reset();
        const chain = buildChain(alloc, d);
        const l = negotiated
          ? limits
          : { ...limits, flush: false, discard: false, writeZeroes: false };
        const result = parseRequest(memory, chain, l);
        const violation = checkParse(memory, chain, l, result);
        assert.equal(violation, undefined, violation);
      }),
      { numRuns: 3000 },
    );
  });
});
