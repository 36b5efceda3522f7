// VirtioBlock against real temp image files through a fake queue: the data path, flush,
// discard and write-zeroes on the host filesystem, GET_ID, read-only refusals, malformed
// requests, concurrency, host I/O failure, reset with I/O in flight, close and snapshots.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
} from "../../../virtio/device.js";
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
} from "./config.js";
import { VirtioBlock, type VirtioBlockOptions } from "./device.js";
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from "./request.js";
import { encodeSegments, FakeQueue, GuestAllocator, makeChain, requestHeader } from "./testing.js";

const memory = new GuestMemory(ramRegions(16 * MIB));
const alloc = new GuestAllocator(memory);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vessel-blk-"));
after(() => {
  memory.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const IMAGE_SECTORS = 4096; // 2 MiB
let imageCount = 0;

/** A fully allocated image whose sector n is filled with the byte (n & 0xff). */
function makeImage(sectors = IMAGE_SECTORS, where = dir): string {
  const p = path.join(where, `disk${imageCount++}.img`);
  const buf = Buffer.alloc(sectors * 512);
  for (let s = 0; s < sectors; s++) buf.fill(s & 0xff, s * 512, (s + 1) * 512);
  fs.writeFileSync(p, buf);
  return p;
}

interface Rig {
  dev: VirtioBlock;
  q: FakeQueue;
  logs: string[];
  resets: string[];
  image: string;
}

let rigs: Rig[] = [];

function rig(opts: Partial<VirtioBlockOptions> = {}, image = makeImage()): Rig {
  const logs: string[] = [];
  const resets: string[] = [];
  const dev = new VirtioBlock({ path: image, log: (m) => logs.push(m), ...opts });
  const q = new FakeQueue();
  dev.activate({
    memory,
    queues: [q],
    interrupt: { queue() {}, configChanged() {} },
    features: dev.features,
    needsReset: (r) => resets.push(r),
  });
  const r = { dev, q, logs, resets, image };
  rigs.push(r);
  return r;
}

beforeEach(() => alloc.reset());
afterEach(async () => {
  for (const r of rigs) await r.dev.close();
  rigs = [];
});

interface Sent {
  head: number;
  status: number;
  data: number[];
}

/** Lay out a request: header, optional readable body, writable data, status. */
function request(
  head: number,
  type: number,
  sector: number | bigint,
  opts: { out?: Uint8Array; inLength?: number; splitData?: number } = {},
) {
  const bufs = [alloc.readable(requestHeader(type, sector))];
  const data: number[] = [];
  if (opts.out) {
    const cut = opts.splitData ?? opts.out.length;
    bufs.push(alloc.readable(opts.out.subarray(0, cut)));
    if (cut < opts.out.length) bufs.push(alloc.readable(opts.out.subarray(cut)));
  }
  if (opts.inLength !== undefined) {
    const cut = opts.splitData ?? opts.inLength;
    const a = alloc.writable(cut);
    bufs.push(a);
    data.push(a.address);
    if (cut < opts.inLength) {
      const b = alloc.writable(opts.inLength - cut);
      bufs.push(b);
    }
  }
  const st = alloc.writable(1, 0xff);
  bufs.push(st);
  const sent: Sent = { head, status: st.address, data };
  return { chain: makeChain(head, bufs), sent, bufs };
}

async function run(r: Rig, ...chains: ReturnType<typeof makeChain>[]): Promise<void> {
  const before = r.q.used.length;
  r.q.add(...chains);
  r.dev.queueNotify(0);
  await r.q.waitUsed(before + chains.length);
}

function readGuest(address: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  memory.read(address, out);
  return out;
}

const bit = (n: bigint) => 1n << n;

describe("VirtioBlock", () => {
  it("offers its features and config", () => {
    const { dev } = rig({ serial: "abc" });
    assert.equal(dev.deviceType, VIRTIO_ID_BLOCK);
    for (const b of [
      VIRTIO_F_VERSION_1,
      VIRTIO_F_INDIRECT_DESC,
      VIRTIO_F_EVENT_IDX,
      VIRTIO_BLK_F_SEG_MAX,
      VIRTIO_BLK_F_BLK_SIZE,
      VIRTIO_BLK_F_FLUSH,
      VIRTIO_BLK_F_DISCARD,
      VIRTIO_BLK_F_WRITE_ZEROES,
    ]) {
      assert.notEqual(dev.features & bit(b), 0n, `feature ${b}`);
    }
    assert.equal(dev.features & bit(VIRTIO_BLK_F_RO), 0n);
    const cfg = new Uint8Array(60);
    dev.readConfig(0, cfg);
    const v = new DataView(cfg.buffer);
    assert.equal(v.getBigUint64(0, true), BigInt(IMAGE_SECTORS));
    assert.equal(v.getUint32(12, true), 254); // seg_max
    assert.equal(v.getUint32(20, true), 512); // blk_size
    assert.equal(v.getUint32(40, true), dev.config.maxDiscardSeg);
    assert.equal(v.getUint8(56), 1);
    const past = new Uint8Array(4).fill(9);
    dev.readConfig(58, past);
    assert.deepEqual([...past], [0, 0, 0, 0]);
    dev.readConfig(-1, past);
    dev.readConfig(Number.NaN, past);
    assert.deepEqual([...past], [0, 0, 0, 0]);
    dev.writeConfig(0, new Uint8Array(8));
    assert.equal(dev.metrics().configWrites, 1);
    assert.deepEqual([...dev.queueSizes], [256]);
  });

  it("validates its options", () => {
    const image = makeImage(8);
    const bad: [
      unknown,
      ErrorConstructor | RangeErrorConstructor | TypeErrorConstructor,
      RegExp,
    ][] = [
      [{}, TypeError, /options\.path/],
      [{ path: "" }, TypeError, /options\.path/],
      [{ path: image, readOnly: "yes" }, TypeError, /options\.readOnly/],
      [{ path: image, serial: "x".repeat(21) }, RangeError, /options\.serial/],
      [{ path: image, serial: "bad\n" }, RangeError, /options\.serial/],
      [{ path: image, serial: "é" }, RangeError, /options\.serial/],
      [{ path: image, name: "" }, TypeError, /options\.name/],
      [{ path: image, queueSize: 3 }, RangeError, /options\.queueSize/],
      [{ path: image, log: 1 }, TypeError, /options\.log/],
      [{ path: dir, readOnly: true }, TypeError, /not a regular file/],
      [{ path: dir }, Error, /cannot open/],
    ];
    for (const [o, E, re] of bad) {
      assert.throws(
        () => new VirtioBlock(o as VirtioBlockOptions),
        (e: Error) => e instanceof E && re.test(e.message),
      );
    }
    const odd = path.join(dir, "odd.img");
    fs.writeFileSync(odd, Buffer.alloc(1000));
    assert.throws(
      () => new VirtioBlock({ path: odd }),
      /1000 bytes, not a positive multiple of 512/,
    );
    const empty = path.join(dir, "empty.img");
    fs.writeFileSync(empty, "");
    assert.throws(() => new VirtioBlock({ path: empty }), RangeError);
    assert.throws(
      () => new VirtioBlock({ path: path.join(dir, "missing.img") }),
      (e: Error & { code?: string }) => e.code === "ENOENT" && /missing\.img/.test(e.message),
    );
  });

  it("writes and reads back through split buffers", async () => {
    const r = rig();
    const payload = new Uint8Array(3 * 512);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) & 0xff;
    const w = request(1, VIRTIO_BLK_T_OUT, 10, { out: payload, splitData: 700 });
    await run(r, w.chain);
    assert.deepEqual(r.q.used, [{ head: 1, written: 1 }]);
    assert.equal(memory.readU8(w.sent.status), VIRTIO_BLK_S_OK);
    const onDisk = fs.readFileSync(r.image).subarray(10 * 512, 13 * 512);
    assert.deepEqual(new Uint8Array(onDisk), payload);

    const rd = request(2, VIRTIO_BLK_T_IN, 10, { inLength: 3 * 512, splitData: 100 });
    await run(r, rd.chain);
    assert.deepEqual(r.q.used[1], { head: 2, written: 3 * 512 + 1 });
    assert.equal(memory.readU8(rd.sent.status), VIRTIO_BLK_S_OK);
    const a = rd.bufs[1];
    const b = rd.bufs[2];
    assert.ok(a && b);
    const got = new Uint8Array([
      ...readGuest(a.address, a.length),
      ...readGuest(b.address, b.length),
    ]);
    assert.deepEqual(got, payload);
    const m = r.dev.metrics();
    assert.equal(m.readRequests, 1);
    assert.equal(m.writeRequests, 1);
    assert.equal(m.bytesRead, 1536);
    assert.equal(m.bytesWritten, 1536);
    assert.ok(r.q.notifies >= 2);
  });

  it("holds requests back to its rate limits, and lets them through as tokens come", async () => {
    // 10 requests per second with a burst of 1: the first goes at once, then one per 100 ms.
    // GET_ID is answered without host I/O, so only the limiter sets the pace (a flush's
    // fdatasync can take longer than a token period on a loaded machine).
    const r = rig({ limits: { ops: { rate: 10, burst: 1 } } });
    const t0 = performance.now();
    const chains = [1, 2, 3, 4].map(
      (h) => request(h, VIRTIO_BLK_T_GET_ID, 0, { inLength: 20 }).chain,
    );
    r.q.add(...chains);
    r.dev.queueNotify(0);
    await r.q.waitUsed(1);
    assert.ok(performance.now() - t0 < 80, "the first request is not held");
    await r.q.waitUsed(4);
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 280 && elapsed < 1500, `4 requests at 10/s took ${elapsed} ms`);
    const l = r.dev.limits();
    assert.deepEqual(l.ops, { rate: 10, burst: 1 });
    assert.equal(l.throttledRequests, 3);
    assert.ok(l.throttledMs >= 250);
    // Removing the limits at runtime lets everything through at once.
    r.dev.setLimits({});
    const t1 = performance.now();
    await run(
      r,
      ...[5, 6, 7].map((h) => request(h, VIRTIO_BLK_T_GET_ID, 0, { inLength: 20 }).chain),
    );
    assert.ok(performance.now() - t1 < 100);
  });

  it("limits bandwidth by the bytes each request moves", async () => {
    // 64 KiB/s with a 4 KiB burst: 5 reads of 4 KiB need about 4 × 62 ms after the first.
    const r = rig({ limits: { bandwidth: { rate: 64 * 1024, burst: 4096 } } });
    const t0 = performance.now();
    await run(
      r,
      ...[1, 2, 3, 4, 5].map((h) => request(h, VIRTIO_BLK_T_IN, 0, { inLength: 4096 - 17 }).chain),
    );
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 220 && elapsed < 1500, `took ${elapsed} ms`);
  });

  it("refuses limits that are not positive", () => {
    assert.throws(() => rig({ limits: { ops: { rate: 0 } } }), /limits: rate 0/);
  });

  it("flushes", async () => {
    const r = rig();
    const f = request(3, VIRTIO_BLK_T_FLUSH, 0);
    await run(r, f.chain);
    assert.equal(memory.readU8(f.sent.status), VIRTIO_BLK_S_OK);
    assert.equal(r.dev.metrics().flushRequests, 1);
  });

  it("discards by punching a hole", async () => {
    const r = rig();
    const before = fs.statSync(r.image).blocks;
    const seg = encodeSegments([{ sector: 1024n, numSectors: 2048, flags: 0 }]);
    const d = request(4, VIRTIO_BLK_T_DISCARD, 0, { out: seg });
    await run(r, d.chain);
    assert.equal(memory.readU8(d.sent.status), VIRTIO_BLK_S_OK);
    const afterBlocks = fs.statSync(r.image).blocks;
    assert.ok(afterBlocks < before, `blocks ${before} -> ${afterBlocks}`);
    const disk = fs.readFileSync(r.image);
    assert.equal(disk.length, IMAGE_SECTORS * 512);
    assert.ok(disk.subarray(1024 * 512, 3072 * 512).every((x) => x === 0));
    assert.equal(disk[1023 * 512], 1023 & 0xff);
    assert.equal(disk[3072 * 512], 3072 & 0xff);
  });

  it("writes zeroes, with and without unmap", async () => {
    const r = rig();
    const seg = encodeSegments([
      { sector: 5n, numSectors: 3, flags: 0 },
      { sector: 100n, numSectors: 16, flags: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP },
    ]);
    const z = request(5, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: seg });
    await run(r, z.chain);
    assert.equal(memory.readU8(z.sent.status), VIRTIO_BLK_S_OK);
    const disk = fs.readFileSync(r.image);
    assert.ok(disk.subarray(5 * 512, 8 * 512).every((x) => x === 0));
    assert.ok(disk.subarray(100 * 512, 116 * 512).every((x) => x === 0));
    assert.equal(disk[4 * 512], 4);
    assert.equal(disk[8 * 512], 8);
    assert.equal(disk[116 * 512], 116);
    assert.equal(r.dev.metrics().writeZeroesRequests, 1);
  });

  it("answers GET_ID with the NUL-padded serial", async () => {
    const r = rig({ serial: "vessel-0001" });
    const g = request(6, VIRTIO_BLK_T_GET_ID, 0, { inLength: 20 });
    const short = request(7, VIRTIO_BLK_T_GET_ID, 0, { inLength: 19 });
    await run(r, g.chain, short.chain);
    const id = readGuest(g.sent.data[0] as number, 20);
    assert.equal(Buffer.from(id).toString("latin1"), `vessel-0001${"\0".repeat(9)}`);
    assert.deepEqual(r.q.used, [
      { head: 6, written: 21 },
      { head: 7, written: 1 },
    ]);
    assert.equal(memory.readU8(g.sent.status), VIRTIO_BLK_S_OK);
    assert.equal(memory.readU8(short.sent.status), VIRTIO_BLK_S_IOERR);
    const full = rig({ serial: "x".repeat(20) });
    const f = request(8, VIRTIO_BLK_T_GET_ID, 0, { inLength: 20 });
    await run(full, f.chain);
    assert.equal(Buffer.from(readGuest(f.sent.data[0] as number, 20)).toString(), "x".repeat(20));
  });

  it("refuses writes on a read-only disk and still reads and flushes", async () => {
    const r = rig({ readOnly: true });
    assert.notEqual(r.dev.features & bit(VIRTIO_BLK_F_RO), 0n);
    const before = fs.readFileSync(r.image);
    const seg = encodeSegments([{ sector: 0n, numSectors: 8, flags: 0 }]);
    const reqs = [
      request(1, VIRTIO_BLK_T_OUT, 0, { out: new Uint8Array(512).fill(0x55) }),
      request(2, VIRTIO_BLK_T_DISCARD, 0, { out: seg }),
      request(3, VIRTIO_BLK_T_WRITE_ZEROES, 0, { out: seg }),
      request(4, VIRTIO_BLK_T_FLUSH, 0),
      request(5, VIRTIO_BLK_T_IN, 1, { inLength: 512 }),
    ];
    await run(r, ...reqs.map((x) => x.chain));
    const statuses = reqs.map((x) => memory.readU8(x.sent.status));
    assert.deepEqual(
      statuses,
      [1, 1, 1, 0, 0].map((s) => (s ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK)),
    );
    assert.ok(readGuest(reqs[4]?.sent.data[0] as number, 512).every((x) => x === 1));
    assert.deepEqual(fs.readFileSync(r.image), before);
    assert.equal(r.dev.metrics().readOnlyRefusals, 3);
  });

  it("refuses malformed requests, counts and logs them", async () => {
    const r = rig();
    const outOfRange = request(1, VIRTIO_BLK_T_IN, IMAGE_SECTORS, { inLength: 512 });
    const ragged = request(2, VIRTIO_BLK_T_OUT, 0, { out: new Uint8Array(100) });
    const unknown = request(3, 0x4242, 0);
    const shortHdr = makeChain(4, [alloc.readable(new Uint8Array(8)), alloc.writable(1, 0xff)]);
    const noStatus = makeChain(5, [alloc.readable(requestHeader(VIRTIO_BLK_T_FLUSH, 0))]);
    const zeroStatus = makeChain(6, [
      alloc.readable(requestHeader(VIRTIO_BLK_T_FLUSH, 0)),
      alloc.writable(0),
    ]);
    await run(r, outOfRange.chain, ragged.chain, unknown.chain, shortHdr, noStatus, zeroStatus);
    assert.deepEqual(r.q.used, [
      { head: 1, written: 1 },
      { head: 2, written: 1 },
      { head: 3, written: 1 },
      { head: 4, written: 1 },
      { head: 5, written: 0 },
      { head: 6, written: 0 },
    ]);
    assert.equal(memory.readU8(outOfRange.sent.status), VIRTIO_BLK_S_IOERR);
    assert.equal(memory.readU8(ragged.sent.status), VIRTIO_BLK_S_IOERR);
    assert.equal(memory.readU8(unknown.sent.status), VIRTIO_BLK_S_UNSUPP);
    assert.equal(memory.readU8(shortHdr.writable[0]?.address as number), VIRTIO_BLK_S_IOERR);
    const m = r.dev.metrics();
    assert.equal(m.refused, 5);
    assert.equal(m.unsupportedRequests, 1);
    assert.equal(m.readRequests + m.writeRequests + m.ioErrors, 0);
    assert.equal(r.logs.length, 6);
    assert.ok(r.logs.every((l) => l.startsWith("virtio-blk: request")));
    // A notification for a queue that does not exist.
    r.dev.queueNotify(1);
    r.dev.queueNotify(-1);
    assert.equal(r.dev.metrics().invalidNotifies, 2);
  });

  it("survives a throwing log sink and a throwing queue", async () => {
    const r = rig({
      log: () => {
        throw new Error("log sink down");
      },
    });
    const bad = request(1, 0x4242, 0);
    const fails = request(2, VIRTIO_BLK_T_IN, 0, { inLength: 512 });
    fs.truncateSync(r.image, 0);
    r.q.add(bad.chain, fails.chain);
    assert.doesNotThrow(() => r.dev.queueNotify(0));
    await r.q.waitUsed(2);
    assert.equal(memory.readU8(fails.sent.status), VIRTIO_BLK_S_IOERR);
    r.q.pop = () => {
      throw new Error("ring exploded");
    };
    r.dev.queueNotify(0);
    assert.equal(r.resets.length, 1);
  });

  it("keeps many requests in flight and completes each with its own data", async () => {
    // The pool, so the requests really wait for the host together.
    const r = rig({ io: "pool" });
    const reqs = [];
    for (let i = 0; i < 32; i++) {
      // Mix large and small reads so completions can overtake each other.
      const sectors = i % 4 === 0 ? 256 : 1;
      reqs.push(request(i, VIRTIO_BLK_T_IN, i * 100, { inLength: sectors * 512 }));
    }
    await run(r, ...reqs.map((x) => x.chain));
    const order = r.q.used.map((u) => u.head);
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      [...Array(32).keys()],
    );
    for (const [i, x] of reqs.entries()) {
      const first = readGuest(x.sent.data[0] as number, 512);
      assert.ok(
        first.every((b) => b === ((i * 100) & 0xff)),
        `request ${i}`,
      );
      assert.equal(memory.readU8(x.sent.status), VIRTIO_BLK_S_OK);
    }
    const m = r.dev.metrics();
    assert.ok(m.inFlightHighWater > 1, `high water ${m.inFlightHighWater}`);
    assert.equal(m.inFlight, 0);
  });

  it("completes out of order when the host does", async () => {
    // A big read first and a tiny one after: on libuv's pool the small one usually wins;
    // whatever the order, each chain gets its own data and status.
    const r = rig({}, makeImage(32768));
    const big = request(1, VIRTIO_BLK_T_IN, 0, { inLength: 8 * MIB });
    const small = request(2, VIRTIO_BLK_T_IN, 5, { inLength: 512 });
    await run(r, big.chain, small.chain);
    assert.equal(memory.readU8(big.sent.status), VIRTIO_BLK_S_OK);
    assert.equal(memory.readU8(small.sent.status), VIRTIO_BLK_S_OK);
    assert.ok(readGuest(small.sent.data[0] as number, 512).every((b) => b === 5));
    assert.ok(
      readGuest((big.sent.data[0] as number) + 300 * 512, 512).every((b) => b === 300 % 256),
    );
    assert.equal(r.q.used.find((u) => u.head === 1)?.written, 8 * MIB + 1);
  });

  it("completes a read that needs no disk wait within the notify, interrupt included", () => {
    // An image in memory (tmpfs) is read in place: used entry and status are there when
    // queueNotify returns, with no event-loop turn in between.
    const shm = fs.mkdtempSync(path.join("/dev/shm", "vessel-blk-"));
    try {
      const r = rig({}, makeImage(IMAGE_SECTORS, shm));
      const x = request(0, VIRTIO_BLK_T_IN, 3, { inLength: 512 });
      r.q.add(x.chain);
      r.dev.queueNotify(0);
      assert.deepEqual(
        r.q.used.map((u) => u.head),
        [0],
      );
      assert.equal(memory.readU8(x.sent.status), VIRTIO_BLK_S_OK);
      assert.equal(r.q.notifies, 1);
      assert.equal(r.dev.metrics().inFlight, 0);
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
  });

  it("refuses an unknown io engine", () => {
    assert.throws(
      () => new VirtioBlock({ path: makeImage(), io: "uring" as "pool" }),
      /io uring is not "auto" or "pool"/,
    );
  });

  it("bounds requests in flight by the queue size", async () => {
    const r = rig({ queueSize: 4, io: "pool" });
    const reqs = Array.from({ length: 20 }, (_, i) =>
      request(i, VIRTIO_BLK_T_IN, i, { inLength: 512 }),
    );
    r.q.add(...reqs.map((x) => x.chain));
    r.dev.queueNotify(0);
    assert.equal(r.dev.metrics().inFlight, 4);
    assert.equal(r.q.pending, 16);
    await r.q.waitUsed(20);
    assert.equal(r.dev.metrics().inFlightHighWater, 4);
  });

  it("answers IOERR when the host I/O fails", async () => {
    const r = rig();
    fs.truncateSync(r.image, 0); // reads now hit end of file
    const rd = request(1, VIRTIO_BLK_T_IN, 0, { inLength: 512 });
    await run(r, rd.chain);
    assert.equal(memory.readU8(rd.sent.status), VIRTIO_BLK_S_IOERR);
    assert.deepEqual(r.q.used, [{ head: 1, written: 1 }]);
    assert.equal(r.dev.metrics().ioErrors, 1);
    assert.match(r.logs[0] ?? "", /failed on the host/);
  });

  it("drops completions after reset and never touches the ring again", async () => {
    const r = rig({ io: "pool" });
    const reqs = Array.from({ length: 16 }, (_, i) =>
      request(i, VIRTIO_BLK_T_IN, i * 64, { inLength: 64 * 512 }),
    );
    r.q.add(...reqs.map((x) => x.chain));
    r.dev.queueNotify(0);
    const inFlight = r.dev.metrics().inFlight;
    assert.ok(inFlight > 0);
    r.dev.reset();
    r.dev.queueNotify(0); // after reset: not active
    await r.dev.settled();
    await new Promise((res) => setImmediate(res));
    assert.deepEqual(r.q.used, []);
    for (const x of reqs) assert.equal(memory.readU8(x.sent.status), 0xff);
    const m = r.dev.metrics();
    assert.equal(m.droppedAfterReset, inFlight);
    assert.equal(m.inFlight, 0);
    assert.equal(m.invalidNotifies, 1);

    // Re-activated, the device works again on a fresh queue.
    const q2 = new FakeQueue();
    r.dev.activate({
      memory,
      queues: [q2],
      interrupt: { queue() {}, configChanged() {} },
      features: r.dev.features,
      needsReset: () => {},
    });
    const again = request(99, VIRTIO_BLK_T_IN, 7, { inLength: 512 });
    q2.add(again.chain);
    r.dev.queueNotify(0);
    await q2.waitUsed(1);
    assert.equal(memory.readU8(again.sent.status), VIRTIO_BLK_S_OK);
  });

  it("closes after I/O settles and refuses activation afterwards", async () => {
    const r = rig();
    r.q.add(request(1, VIRTIO_BLK_T_IN, 0, { inLength: 4096 }).chain);
    r.dev.queueNotify(0);
    await r.dev.close();
    await r.dev.close();
    assert.equal(r.dev.metrics().inFlight, 0);
    const resets: string[] = [];
    r.dev.activate({
      memory,
      queues: [new FakeQueue()],
      interrupt: { queue() {}, configChanged() {} },
      features: r.dev.features,
      needsReset: (m) => resets.push(m),
    });
    assert.equal(resets.length, 1);
  });

  it("reads into a buffer that crosses a 1 GiB view of guest memory", async () => {
    const big = new GuestMemory(ramRegions(2 * 1024 * MIB));
    try {
      const image = makeImage(16);
      const dev = new VirtioBlock({ path: image, log: () => {} });
      const q = new FakeQueue();
      dev.activate({
        memory: big,
        queues: [q],
        interrupt: { queue() {}, configChanged() {} },
        features: dev.features,
        needsReset: () => {},
      });
      const a = new GuestAllocator(big, 1024 * MIB + 0x1000);
      const hdr = a.readable(requestHeader(VIRTIO_BLK_T_IN, 2));
      const st = a.writable(1, 0xff);
      const data = { address: 1024 * MIB - 1024, length: 2048, writable: true };
      q.add(makeChain(1, [hdr, data, st]));
      dev.queueNotify(0);
      await q.waitUsed(1);
      assert.equal(big.readU8(st.address), VIRTIO_BLK_S_OK);
      const got = new Uint8Array(2048);
      big.read(data.address, got);
      assert.ok(got.subarray(0, 512).every((b) => b === 2));
      assert.ok(got.subarray(1536).every((b) => b === 5));
      await dev.close();
    } finally {
      big.close();
    }
  });

  it("saves and restores its state", async () => {
    const r = rig({ serial: "snap", readOnly: true, name: "virtio-blk3" });
    const state = JSON.parse(JSON.stringify(r.dev.state()));
    assert.deepEqual(state.config, { ...r.dev.config });
    const restored = VirtioBlock.fromState(state, { log: () => {} });
    assert.equal(restored.readOnly, true);
    assert.equal(restored.serial, "snap");
    assert.equal(restored.name, "virtio-blk3");
    assert.equal(restored.features, r.dev.features);
    await restored.close();
    assert.throws(() => VirtioBlock.fromState({ ...state, version: 2 }), TypeError);
    assert.throws(
      () => VirtioBlock.fromState({ ...state, config: { ...state.config, capacity: 1 } }),
      /sectors/,
    );
  });
});
