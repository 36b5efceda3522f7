// The vsock header codec and the tx header check: byte layout against the spec's struct,
// round trips for any field values (fast-check), and checkTxHeader against an oracle written
// out independently from the rules in packet.ts's comments.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  checkTxHeader,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VSOCK_HDR_SIZE,
  VSOCK_MAX_PAYLOAD,
  VsockHeader,
} from "./packet.js";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
// CIDs as the codec keeps them: exact below 2^53.
const cid = fc.oneof(u32, fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));

const header = fc.record({
  srcCid: cid,
  dstCid: cid,
  srcPort: u32,
  dstPort: u32,
  len: u32,
  type: u16,
  op: u16,
  flags: u32,
  bufAlloc: u32,
  fwdCnt: u32,
});

describe("vsock header", () => {
  it("lays out struct virtio_vsock_hdr little-endian in 44 bytes", () => {
    const h = Object.assign(new VsockHeader(), {
      srcCid: 0x0102_0304_0506,
      dstCid: 2,
      srcPort: 0x1122_3344,
      dstPort: 52,
      len: 7,
      type: 1,
      op: 5,
      flags: 3,
      bufAlloc: 0x40000,
      fwdCnt: 0xdead_beef,
    });
    const b = new Uint8Array(VSOCK_HDR_SIZE);
    h.encode(new DataView(b.buffer));
    assert.equal(
      Buffer.from(b).toString("hex"),
      [
        "0605040302010000", // src_cid
        "0200000000000000", // dst_cid
        "44332211", // src_port
        "34000000", // dst_port
        "07000000", // len
        "0100", // type
        "0500", // op
        "03000000", // flags
        "00000400", // buf_alloc
        "efbeadde", // fwd_cnt
      ].join(""),
    );
  });

  it("decodes what it encodes, for any field values", () => {
    fc.assert(
      fc.property(header, (fields) => {
        const b = new Uint8Array(VSOCK_HDR_SIZE + 3);
        const view = new DataView(b.buffer);
        Object.assign(new VsockHeader(), fields).encode(view, 3);
        const back = new VsockHeader().decode(view, 3);
        assert.deepEqual({ ...back }, { ...fields });
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses exactly what the rules say (against an independent oracle)", () => {
    const guestCid = 9;
    const oracle = (h: VsockHeader, avail: number): "drop" | "rst" | undefined => {
      if (h.srcCid !== guestCid || h.dstCid !== 2) return "drop";
      if (h.type !== 1 || h.op < 1 || h.op > 7) return "rst";
      if (h.op === VIRTIO_VSOCK_OP_RW && (h.len > avail || h.len > VSOCK_MAX_PAYLOAD)) return "rst";
      if (h.op !== VIRTIO_VSOCK_OP_RW && h.len !== 0) return "rst";
      if (h.op === VIRTIO_VSOCK_OP_SHUTDOWN ? h.flags > 3 : h.flags !== 0) return "rst";
      return undefined;
    };
    // Mostly plausible values, so every rule is reached and not just the first.
    const plausible = fc.record({
      srcCid: fc.oneof(fc.constant(guestCid), cid),
      dstCid: fc.oneof(fc.constant(2), cid),
      srcPort: u32,
      dstPort: u32,
      len: fc.oneof(fc.integer({ min: 0, max: 70_000 }), fc.constant(0), u32),
      type: fc.oneof(fc.constant(1), u16),
      op: fc.oneof(fc.integer({ min: 0, max: 8 }), u16),
      flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 7 }), u32),
      bufAlloc: u32,
      fwdCnt: u32,
    });
    fc.assert(
      fc.property(plausible, fc.integer({ min: 0, max: 70_000 }), (fields, avail) => {
        const h = Object.assign(new VsockHeader(), fields);
        assert.equal(checkTxHeader(h, avail, guestCid)?.action, oracle(h, avail));
      }),
      { numRuns: 5000 },
    );
  });
});
