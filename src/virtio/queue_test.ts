// The split virtqueue against hand-built hostile rings: every rule of §2.7 the device
// relies on is broken once, and each time the chain is refused and counted (or the queue
// stopped), nothing throws, and no access goes outside guest RAM.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { MIB, ramRegions } from "../memory/mod.js";
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC } from "./device.js";
import {
  Queue,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "./queue.js";
import { WatchedMemory } from "./testing/watched_memory.js";

const RAM = 16 * MIB;
const memory = new WatchedMemory(ramRegions(RAM));
after(() => memory.close());

const DESC = 0x1000;
const AVAIL = 0x8000;
const USED = 0x9000;
const BUF = 0x10_0000;

interface Desc {
  addr: number;
  len: number;
  flags?: number;
  next?: number;
}

function writeDesc(table: number, i: number, d: Desc): void {
  memory.writeU32(table + 16 * i, d.addr % 2 ** 32);
  memory.writeU32(table + 16 * i + 4, Math.floor(d.addr / 2 ** 32));
  memory.writeU32(table + 16 * i + 8, d.len);
  memory.writeU16(table + 16 * i + 12, d.flags ?? 0);
  memory.writeU16(table + 16 * i + 14, d.next ?? 0);
}

class Harness {
  readonly queue: Queue;
  readonly logs: string[] = [];
  signals = 0;
  brokenReasons: string[] = [];
  private availIdx = 0;
  constructor(
    readonly size = 8,
    features = (1n << VIRTIO_F_INDIRECT_DESC) | 0n,
  ) {
    memory.write(0, new Uint8Array(0x20_0000));
    this.queue = new Queue({
      index: 0,
      maxSize: 256,
      memory,
      log: (m) => this.logs.push(m),
      signal: () => this.signals++,
      onBroken: (r) => this.brokenReasons.push(r),
    });
    this.queue.size = size;
    this.queue.descTable = DESC;
    this.queue.availRing = AVAIL;
    this.queue.usedRing = USED;
    assert.equal(this.queue.enable(), undefined);
    this.queue.setFeatures(features);
  }
  desc(i: number, d: Desc): this {
    writeDesc(DESC, i, d);
    return this;
  }
  publish(head: number): this {
    memory.writeU16(AVAIL + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    memory.writeU16(AVAIL + 2, this.availIdx);
    return this;
  }
  setAvailIdx(idx: number): void {
    memory.writeU16(AVAIL + 2, idx);
  }
  usedIdx(): number {
    return memory.readU16(USED + 2);
  }
  usedElem(i: number): [number, number] {
    const at = USED + 4 + 8 * (i % this.size);
    return [memory.readU32(at), memory.readU32(at + 4)];
  }
  /** Pop once; assert it was refused as malformed, returned with 0 bytes. */
  expectMalformed(head: number, why: RegExp): void {
    const before = this.queue.stats().malformed;
    const usedBefore = this.usedIdx();
    assert.equal(this.queue.pop(), undefined);
    assert.equal(this.queue.stats().malformed, before + 1);
    assert.equal(this.queue.broken, false);
    assert.equal(this.usedIdx(), (usedBefore + 1) & 0xffff);
    assert.deepEqual(this.usedElem(usedBefore), [head, 0]);
    assert.match(this.logs.at(-1) ?? "", why);
  }
  expectBroken(why: RegExp): void {
    assert.equal(this.queue.pop(), undefined);
    assert.equal(this.queue.broken, true);
    assert.equal(this.queue.stats().broken, 1);
    assert.match(this.brokenReasons[0] ?? "", why);
    assert.equal(this.queue.pop(), undefined, "a broken queue stays stopped");
  }
}

describe("Queue configuration", () => {
  const q = new Queue({ index: 0, maxSize: 256, memory });
  const configure = (size: number, desc: number, avail: number, used: number) => {
    q.size = size;
    q.descTable = desc;
    q.availRing = avail;
    q.usedRing = used;
    return q.validate();
  };
  it("accepts a well-formed layout", () => {
    assert.equal(configure(256, DESC, AVAIL, USED), undefined);
    assert.equal(configure(1, DESC, AVAIL, USED), undefined);
  });
  it("refuses sizes that are 0, not a power of two, or above the maximum", () => {
    for (const size of [0, 3, 100, 512, 65536, -1, 2 ** 32]) {
      assert.match(configure(size, DESC, AVAIL, USED) ?? "", /size/);
    }
  });
  it("refuses misaligned parts (§2.7: 16, 2, 4)", () => {
    assert.match(configure(8, DESC + 8, AVAIL, USED) ?? "", /descriptor table.*aligned/);
    assert.match(configure(8, DESC, AVAIL + 1, USED) ?? "", /available ring.*aligned/);
    assert.match(configure(8, DESC, AVAIL, USED + 2) ?? "", /used ring.*aligned/);
  });
  it("refuses parts not wholly in RAM", () => {
    assert.match(configure(256, RAM - 16, AVAIL, USED) ?? "", /descriptor table.*RAM/);
    assert.match(configure(8, DESC, RAM - 8, USED) ?? "", /available ring.*RAM/);
    assert.match(configure(8, DESC, AVAIL, RAM - 52) ?? "", /used ring.*RAM/);
    assert.match(configure(8, DESC, AVAIL, 2 ** 40) ?? "", /used ring.*RAM/);
    assert.match(configure(8, 2 ** 64, AVAIL, USED) ?? "", /descriptor table/);
  });
  it("does not pop until enabled", () => {
    assert.equal(new Queue({ index: 0, maxSize: 8, memory }).pop(), undefined);
  });
  it("rejects bad constructor arguments", () => {
    assert.throws(() => new Queue({ index: 0, maxSize: 3, memory }), RangeError);
    assert.throws(() => new Queue({ index: 0, maxSize: 65536, memory }), RangeError);
  });
});

describe("Queue.pop on well-formed chains", () => {
  it("returns readable then writable buffers with totals", () => {
    const h = new Harness();
    h.desc(0, { addr: BUF, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 5 })
      .desc(5, { addr: BUF + 16, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 2 })
      .desc(2, { addr: BUF + 32, len: 100, flags: VIRTQ_DESC_F_WRITE })
      .publish(0);
    const chain = h.queue.pop();
    assert.ok(chain);
    assert.equal(chain.head, 0);
    assert.deepEqual(chain.readable, [
      { address: BUF, length: 16, writable: false },
      { address: BUF + 16, length: 4, writable: false },
    ]);
    assert.deepEqual(chain.writable, [{ address: BUF + 32, length: 100, writable: true }]);
    assert.equal(chain.readableLength, 20);
    assert.equal(chain.writableLength, 100);
    assert.equal(h.queue.pop(), undefined);
    h.queue.pushUsed(0, 7);
    assert.equal(h.usedIdx(), 1);
    assert.deepEqual(h.usedElem(0), [0, 7]);
  });

  it("accepts a chain of exactly `size` descriptors", () => {
    const h = new Harness(8);
    for (let i = 0; i < 8; i++) {
      h.desc(i, { addr: BUF, len: 1, flags: i < 7 ? VIRTQ_DESC_F_NEXT : 0, next: i + 1 });
    }
    h.publish(0);
    assert.equal(h.queue.pop()?.readable.length, 8);
  });

  it("follows an indirect table after direct descriptors", () => {
    const h = new Harness();
    const table = 0x4000;
    writeDesc(table, 0, { addr: BUF, len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    writeDesc(table, 1, { addr: BUF + 8, len: 8, flags: VIRTQ_DESC_F_WRITE });
    h.desc(3, { addr: BUF + 64, len: 2, flags: VIRTQ_DESC_F_NEXT, next: 4 })
      .desc(4, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE })
      .publish(3);
    const chain = h.queue.pop();
    assert.ok(chain);
    assert.equal(chain.readable.length, 2);
    assert.equal(chain.writable.length, 1);
    assert.equal(chain.readableLength, 10);
  });

  it("accepts zero-length buffers in RAM and wraps the 16-bit indices", () => {
    const h = new Harness(4);
    h.desc(0, { addr: BUF, len: 0, flags: VIRTQ_DESC_F_WRITE });
    for (let i = 0; i < 70000; i++) {
      h.publish(0);
      const chain = h.queue.pop();
      assert.equal(chain?.writableLength, 0);
      h.queue.pushUsed(0, 0);
    }
    assert.equal(h.usedIdx(), 70000 & 0xffff);
    assert.equal(h.queue.stats().popped, 70000);
  });
});

describe("Queue.pop on hostile chains", () => {
  it("refuses a NEXT index out of range", () => {
    const h = new Harness();
    h.desc(1, { addr: BUF, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 8 }).publish(1);
    h.expectMalformed(1, /index 8/);
    // The queue goes on: a good chain after the bad one is served.
    h.desc(2, { addr: BUF, len: 4 }).publish(2);
    assert.equal(h.queue.pop()?.head, 2);
  });

  it("stops the queue on a head index out of range", () => {
    const h = new Harness();
    h.publish(8);
    h.expectBroken(/head index 8/);
    assert.equal(h.usedIdx(), 0, "no used entry for an invalid head");
  });

  it("stops the queue when avail idx runs more than `size` ahead", () => {
    const h = new Harness();
    h.setAvailIdx(9);
    h.expectBroken(/ahead/);
  });

  it("refuses a loop", () => {
    const h = new Harness();
    h.desc(0, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 })
      .desc(1, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 })
      .publish(0);
    h.expectMalformed(0, /loops/);
    h.desc(2, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 2 }).publish(2);
    h.expectMalformed(2, /loops/);
  });

  it("refuses a loop inside an indirect table", () => {
    const h = new Harness();
    const table = 0x4000;
    writeDesc(table, 0, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    writeDesc(table, 1, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    h.desc(0, { addr: table, len: 4 * 16, flags: VIRTQ_DESC_F_INDIRECT }).publish(0);
    h.expectMalformed(0, /loops/);
  });

  it("refuses a chain longer than the queue size (through an indirect table)", () => {
    const h = new Harness(8);
    const table = 0x4000;
    for (let i = 0; i < 9; i++) {
      writeDesc(table, i, { addr: BUF, len: 1, flags: i < 8 ? VIRTQ_DESC_F_NEXT : 0, next: i + 1 });
    }
    h.desc(0, { addr: table, len: 9 * 16, flags: VIRTQ_DESC_F_INDIRECT }).publish(0);
    h.expectMalformed(0, /more than 8/);
    // Direct descriptors count too: 2 direct + 7 indirect = 9 > 8.
    writeDesc(table, 6, { addr: BUF, len: 1 });
    h.desc(1, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 2 })
      .desc(2, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 3 })
      .desc(3, { addr: table, len: 9 * 16, flags: VIRTQ_DESC_F_INDIRECT })
      .publish(1);
    h.expectMalformed(1, /more than 8/);
  });

  it("refuses INDIRECT without VIRTIO_F_INDIRECT_DESC", () => {
    const h = new Harness(8, 0n);
    writeDesc(0x4000, 0, { addr: BUF, len: 1 });
    h.desc(0, { addr: 0x4000, len: 16, flags: VIRTQ_DESC_F_INDIRECT }).publish(0);
    h.expectMalformed(0, /not negotiated|without VIRTIO_F_INDIRECT_DESC/);
  });

  it("refuses an indirect descriptor inside an indirect table", () => {
    const h = new Harness();
    writeDesc(0x4000, 0, { addr: 0x5000, len: 16, flags: VIRTQ_DESC_F_INDIRECT });
    writeDesc(0x5000, 0, { addr: BUF, len: 1 });
    h.desc(0, { addr: 0x4000, len: 16, flags: VIRTQ_DESC_F_INDIRECT }).publish(0);
    h.expectMalformed(0, /inside an indirect table/);
  });

  it("refuses INDIRECT together with NEXT (so at most one table per chain)", () => {
    const h = new Harness();
    writeDesc(0x4000, 0, { addr: BUF, len: 1 });
    h.desc(0, { addr: 0x4000, len: 16, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 1 })
      .desc(1, { addr: 0x4000, len: 16, flags: VIRTQ_DESC_F_INDIRECT })
      .publish(0);
    h.expectMalformed(0, /with NEXT/);
  });

  it("refuses indirect tables of bad length or outside RAM", () => {
    const h = new Harness();
    for (const [addr, len, why] of [
      [0x4000, 0, /length 0/],
      [0x4000, 24, /length 24/],
      [RAM - 16, 32, /not in RAM/],
      [2 ** 52, 16, /not in RAM/],
    ] as const) {
      h.desc(0, { addr, len, flags: VIRTQ_DESC_F_INDIRECT }).publish(0);
      h.expectMalformed(0, why);
    }
  });

  it("refuses buffers outside RAM", () => {
    const h = new Harness();
    for (const [addr, len] of [
      [RAM, 1],
      [RAM - 4, 8],
      [0, 0xffff_ffff],
      [2 ** 32, 1],
      [2 ** 63, 1],
      [(2 ** 32 - 1) * 2 ** 32, 16],
    ]) {
      h.desc(0, { addr: addr as number, len: len as number, flags: VIRTQ_DESC_F_WRITE }).publish(0);
      h.expectMalformed(0, /not in RAM/);
    }
    assert.equal(memory.outside, 0);
  });

  it("refuses lengths summing to 2^32 or more", () => {
    const h = new Harness(256);
    // 256 in-RAM buffers of 16 MiB each: each is fine, together exactly 2^32.
    for (let i = 0; i < 256; i++) {
      h.desc(i, { addr: 0, len: RAM, flags: i < 255 ? VIRTQ_DESC_F_NEXT : 0, next: i + 1 });
    }
    h.publish(0);
    h.expectMalformed(0, /2\^32/);
  });

  it("refuses a readable descriptor after a writable one (§2.7.4.2)", () => {
    const h = new Harness();
    h.desc(0, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: 1 })
      .desc(1, { addr: BUF, len: 1 })
      .publish(0);
    h.expectMalformed(0, /readable descriptor follows/);
    // Also across the direct/indirect boundary.
    writeDesc(0x4000, 0, { addr: BUF, len: 1 });
    h.desc(2, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: 3 })
      .desc(3, { addr: 0x4000, len: 16, flags: VIRTQ_DESC_F_INDIRECT })
      .publish(2);
    h.expectMalformed(2, /readable descriptor follows/);
  });

  it("signals the driver for refused chains even when no chain is returned", () => {
    const h = new Harness();
    h.desc(0, { addr: RAM, len: 1 }).publish(0);
    assert.equal(h.queue.pop(), undefined);
    assert.equal(h.signals, 1);
  });

  it("never touched memory outside RAM", () => {
    assert.equal(memory.outside, 0);
  });
});

describe("Queue notifications", () => {
  function served(h: Harness, n: number): void {
    for (let i = 0; i < n; i++) {
      h.desc(i, { addr: BUF, len: 1, flags: VIRTQ_DESC_F_WRITE }).publish(i);
      const c = h.queue.pop();
      assert.ok(c);
      h.queue.pushUsed(c.head, 1);
    }
  }

  it("without EVENT_IDX: signals unless VIRTQ_AVAIL_F_NO_INTERRUPT", () => {
    const h = new Harness(8, 0n);
    assert.equal(h.queue.notifyIfNeeded(), false, "nothing used yet");
    served(h, 1);
    assert.equal(h.queue.notifyIfNeeded(), true);
    assert.equal(h.queue.notifyIfNeeded(), false, "nothing new since");
    memory.writeU16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    served(h, 1);
    assert.equal(h.queue.notifyIfNeeded(), false);
    assert.deepEqual([h.signals, h.queue.stats().notified, h.queue.stats().suppressed], [1, 1, 1]);
  });

  it("with EVENT_IDX: signals only when used idx passes used_event (vring_need_event)", () => {
    const h = new Harness(8, 1n << VIRTIO_F_EVENT_IDX);
    const usedEvent = (v: number) => memory.writeU16(AVAIL + 4 + 2 * 8, v);
    usedEvent(2); // interrupt me once entry 2 is used (used idx becomes 3)
    served(h, 2); // used idx 2
    assert.equal(h.queue.notifyIfNeeded(), false);
    served(h, 1); // used idx 3: passed 2
    assert.equal(h.queue.notifyIfNeeded(), true);
    usedEvent(3);
    served(h, 2); // used idx 5, old 3: 3 in [3, 5)
    assert.equal(h.queue.notifyIfNeeded(), true);
    usedEvent(100);
    served(h, 1);
    assert.equal(h.queue.notifyIfNeeded(), false);
    // The ring ignores NO_INTERRUPT when EVENT_IDX is on.
    memory.writeU16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    usedEvent(5);
    served(h, 1); // used idx 7, old 6: need iff (7-5-1) < (7-6) → 1 < 1 false
    assert.equal(h.queue.notifyIfNeeded(), false);
    usedEvent(7); // used idx 8 passes 7
    served(h, 1);
    assert.equal(h.queue.notifyIfNeeded(), true);
  });

  it("with EVENT_IDX: publishes avail_event when the ring runs empty", () => {
    const h = new Harness(8, 1n << VIRTIO_F_EVENT_IDX);
    served(h, 3);
    assert.equal(h.queue.pop(), undefined);
    assert.equal(memory.readU16(USED + 4 + 8 * 8), 3);
  });

  it("pushUsed rejects device bugs with RangeError", () => {
    const h = new Harness();
    assert.throws(() => h.queue.pushUsed(8, 0), RangeError);
    assert.throws(() => h.queue.pushUsed(0, -1), RangeError);
    assert.throws(() => h.queue.pushUsed(0, 2 ** 32), RangeError);
  });

  it("reset returns to the initial state", () => {
    const h = new Harness();
    h.publish(8);
    h.queue.pop();
    assert.equal(h.queue.broken, true);
    h.queue.reset();
    assert.deepEqual(
      [h.queue.ready, h.queue.broken, h.queue.size, h.queue.descTable],
      [false, false, 256, 0],
    );
  });
});
