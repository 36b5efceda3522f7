// virtio-balloon end to end through the driver double and the virtio-mmio transport:
// inflated pages read as zeros afterwards (MADV_DONTNEED on real guest RAM), PFNs outside
// RAM are refused, deflate is bookkeeping, statistics make the round trip the spec
// describes, and a new target raises a configuration change interrupt.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { IrqLine } from "../../../devices/device.js";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import { VIRTIO_F_VERSION_1, VIRTIO_ID_BALLOON } from "../../../virtio/device.js";
import { VIRTIO_MMIO_INT_CONFIG, VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_MUST_TELL_HOST,
  VIRTIO_BALLOON_F_STATS_VQ,
  VirtioBalloon,
  type VirtioBalloonOptions,
} from "./mod.js";

const memory = new GuestMemory(ramRegions(16 * MIB));
after(() => memory.close());

/** Pages well above the driver double's heap (1..9 MiB), free for ballooning. */
const FREE_PFN = 0xc00;
const PAGE = 4096;

function setup(options: VirtioBalloonOptions = {}) {
  const irq = {
    pulses: 0,
    set() {},
    pulse() {
      this.pulses++;
    },
  } satisfies IrqLine & { pulses: number };
  const logs: string[] = [];
  const dev = new VirtioBalloon({ log: (m) => logs.push(m), ...options });
  const transport = new VirtioMmioTransport({ device: dev, memory, irq });
  const driver = new VirtioMmioDriver({ memory, transport });
  driver.init();
  return {
    irq,
    dev,
    transport,
    driver,
    logs,
    inflateq: driver.queue(0),
    deflateq: driver.queue(1),
    statsq: driver.queue(2),
  };
}

function pfns(...list: number[]): Uint8Array {
  const b = new Uint8Array(4 * list.length);
  const v = new DataView(b.buffer);
  list.forEach((p, i) => {
    v.setUint32(4 * i, p, true);
  });
  return b;
}

function statsBuffer(entries: [number, bigint][]): Uint8Array {
  const b = new Uint8Array(10 * entries.length);
  const v = new DataView(b.buffer);
  entries.forEach(([tag, value], i) => {
    v.setUint16(10 * i, tag, true);
    v.setBigUint64(10 * i + 2, value, true);
  });
  return b;
}

function fillPages(first: number, count: number, byte: number): void {
  memory.write(first * PAGE, new Uint8Array(count * PAGE).fill(byte));
}

function pageIs(pfn: number, byte: number): boolean {
  return memory.slice(pfn * PAGE, PAGE).every((x) => x === byte);
}

describe("virtio-balloon", () => {
  it("identifies as device 5 with three queues, stats and deflate-on-OOM", () => {
    const { driver, dev } = setup();
    assert.equal(driver.probe().deviceId, VIRTIO_ID_BALLOON);
    assert.ok(driver.features & (1n << VIRTIO_F_VERSION_1));
    assert.ok(driver.features & (1n << VIRTIO_BALLOON_F_STATS_VQ));
    assert.ok(driver.features & (1n << VIRTIO_BALLOON_F_DEFLATE_ON_OOM));
    assert.equal(driver.features & (1n << VIRTIO_BALLOON_F_MUST_TELL_HOST), 0n);
    assert.deepEqual(dev.queueSizes, [256, 256, 256]);
    assert.deepEqual(driver.readConfig(0, 16), new Uint8Array(16));
  });

  it("a new target raises a config interrupt; the driver's actual is read back", () => {
    const { driver, dev } = setup();
    const gen = driver.configGeneration();
    dev.setTarget(1000);
    assert.equal(driver.interruptStatus() & VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_CONFIG);
    assert.notEqual(driver.configGeneration(), gen);
    assert.equal(new DataView(driver.readConfig(0, 4).buffer).getUint32(0, true), 1000);
    driver.ackInterrupts();
    dev.setTarget(1000);
    assert.equal(driver.interruptStatus(), 0, "no change, no interrupt");
    driver.writeConfig(4, pfns(640));
    assert.equal(dev.stats().actualPages, 640);
    assert.equal(dev.stats().targetPages, 1000);
    driver.writeConfig(0, pfns(5));
    driver.writeConfig(6, pfns(5));
    assert.equal(dev.stats().targetPages, 1000, "num_pages is the host's");
    assert.equal(dev.metrics().refusedConfigWrites, 2);
    assert.throws(() => dev.setTarget(-1), RangeError);
    assert.throws(() => dev.setTarget(2 ** 32), RangeError);
    assert.throws(() => dev.setTarget(1.5), RangeError);
  });

  it("inflate discards the pages (they read as zeros), coalescing adjacent PFNs", () => {
    const { dev, inflateq } = setup();
    fillPages(FREE_PFN, 0x20, 0xab);
    const r = inflateq.add([
      { length: 16, data: pfns(FREE_PFN, FREE_PFN + 1, FREE_PFN + 2, FREE_PFN + 0x10) },
    ]);
    inflateq.kick();
    assert.deepEqual(inflateq.takeUsed(), [{ id: r.head, len: 0 }]);
    for (const p of [0, 1, 2, 0x10]) assert.ok(pageIs(FREE_PFN + p, 0), `page +${p} zero`);
    for (const p of [3, 0xf, 0x11]) assert.ok(pageIs(FREE_PFN + p, 0xab), `page +${p} kept`);
    const m = dev.metrics();
    assert.equal(m.discards, 2, "one discard per run of adjacent pages");
    assert.equal(m.pagesInflated, 4);
    assert.equal(dev.stats().inflatedPages, 4);
  });

  it("refuses PFNs outside RAM, page by page, and keeps the rest of the buffer", () => {
    const { dev, inflateq } = setup();
    fillPages(FREE_PFN + 0x30, 1, 0xcd);
    const ramPages = (16 * MIB) / PAGE;
    inflateq.add([{ length: 16, data: pfns(ramPages, 0xffff_ffff, FREE_PFN + 0x30, 0x10_0000) }]);
    inflateq.kick();
    assert.equal(inflateq.takeUsed().length, 1);
    assert.ok(pageIs(FREE_PFN + 0x30, 0));
    assert.equal(dev.metrics().refusedPfns, 3);
    assert.equal(dev.stats().inflatedPages, 1);
  });

  it("counts a page inflated twice once; deflate gives pages back", () => {
    const { dev, inflateq, deflateq } = setup();
    inflateq.add([{ length: 12, data: pfns(FREE_PFN, FREE_PFN + 1, FREE_PFN) }]);
    inflateq.kick();
    assert.equal(dev.stats().inflatedPages, 2);
    assert.equal(dev.metrics().duplicateInflates, 1);
    const d = deflateq.add([
      { length: 16, data: pfns(FREE_PFN, FREE_PFN + 1, FREE_PFN + 0x40, 0xffff_ffff) },
    ]);
    deflateq.kick();
    assert.deepEqual(deflateq.takeUsed(), [{ id: d.head, len: 0 }]);
    const m = dev.metrics();
    assert.equal(dev.stats().inflatedPages, 0);
    assert.equal(m.pagesDeflated, 2);
    assert.equal(m.unknownDeflates, 1);
    assert.equal(m.refusedPfns, 1);
    assert.equal(m.deflateRequests, 1);
    // The guest uses the page again: it is ordinary memory.
    fillPages(FREE_PFN, 1, 0x11);
    assert.ok(pageIs(FREE_PFN, 0x11));
  });

  it("refuses malformed PFN chains whole: writable buffers, partial PFNs, too long", () => {
    const { dev, inflateq, deflateq, logs } = setup();
    fillPages(FREE_PFN + 0x50, 1, 0xee);
    const a = inflateq.add([
      { length: 4, data: pfns(FREE_PFN + 0x50) },
      { length: 4, writable: true },
    ]);
    const b = inflateq.add([{ length: 6, data: pfns(FREE_PFN + 0x50, 0) }]);
    const c = inflateq.add([{ length: 64 * 1024 + 4 }]);
    inflateq.kick();
    assert.deepEqual(inflateq.takeUsed(), [
      { id: a.head, len: 0 },
      { id: b.head, len: 0 },
      { id: c.head, len: 0 },
    ]);
    const d = deflateq.add([{ length: 3, data: pfns(0) }]);
    deflateq.kick();
    assert.deepEqual(deflateq.takeUsed(), [{ id: d.head, len: 0 }]);
    assert.ok(pageIs(FREE_PFN + 0x50, 0xee), "nothing discarded");
    assert.equal(dev.metrics().refusedChains, 4);
    assert.equal(dev.metrics().discards, 0);
    assert.equal(logs.length, 4);
  });

  it("PFNs split across buffers of a chain are read in order", () => {
    const { dev, inflateq } = setup();
    const bytes = pfns(FREE_PFN + 0x60, FREE_PFN + 0x61);
    inflateq.add(
      [
        { length: 3, data: bytes.subarray(0, 3) },
        { length: 5, data: bytes.subarray(3) },
      ],
      { indirect: true },
    );
    inflateq.kick();
    assert.equal(dev.stats().inflatedPages, 2);
    assert.equal(dev.metrics().discards, 1);
  });

  it("statistics: kept by name, the buffer held, returned by requestStats, refreshed", () => {
    const { dev, statsq } = setup();
    assert.equal(dev.requestStats(), false, "no buffer yet");
    const buf = statsq.add([
      {
        length: 40,
        data: statsBuffer([
          [4, 123_456_789n],
          [5, 512n * 1024n * 1024n],
          [99, 7n],
          [6, 200_000_000n],
        ]),
      },
    ]);
    statsq.kick();
    assert.deepEqual(statsq.takeUsed(), [], "the device holds the buffer");
    let s = dev.stats();
    assert.deepEqual(s.guest, {
      free_memory: 123_456_789,
      total_memory: 512 * 1024 * 1024,
      available_memory: 200_000_000,
    });
    assert.equal(s.statsUpdates, 1);
    assert.equal(dev.metrics().unknownStatTags, 1);
    assert.equal(dev.requestStats(), true);
    assert.deepEqual(statsq.takeUsed(), [{ id: buf.head, len: 0 }]);
    assert.equal(dev.stats().statsRequested, true);
    assert.equal(dev.requestStats(), false, "already asked");
    // The driver refills the same buffer and posts it again (stats_handle_request).
    const addr = buf.buffers[0]?.address ?? 0;
    statsq.add([
      {
        address: addr,
        length: 20,
        data: statsBuffer([
          [4, 99n],
          [0, 3n],
        ]),
      },
    ]);
    statsq.kick();
    s = dev.stats();
    assert.equal(s.guest.free_memory, 99);
    assert.equal(s.guest.swap_in, 3);
    assert.equal(s.guest.total_memory, 512 * 1024 * 1024, "values not resent are kept");
    assert.equal(s.statsRequested, false);
    assert.equal(s.statsUpdates, 2);
  });

  it("statistics: a malformed buffer is held without its values, a second one returns the first", () => {
    const { dev, statsq } = setup();
    const a = statsq.add([{ length: 7, data: new Uint8Array(7).fill(1) }]);
    statsq.kick();
    assert.deepEqual(dev.stats().guest, {});
    assert.equal(dev.metrics().refusedChains, 1);
    const b = statsq.add([{ length: 10, data: statsBuffer([[1, 5n]]) }]);
    statsq.kick();
    assert.deepEqual(statsq.takeUsed(), [{ id: a.head, len: 0 }]);
    assert.equal(dev.stats().guest.swap_out, 5);
    const w = statsq.add([{ length: 10, writable: true }]);
    statsq.kick();
    assert.deepEqual(statsq.takeUsed(), [{ id: w.head, len: 0 }]);
    assert.equal(dev.requestStats(), true);
    assert.deepEqual(statsq.takeUsed(), [{ id: b.head, len: 0 }]);
  });

  it("finds the stats buffer posted before DRIVER_OK (Linux kicks too early)", () => {
    const irq = { set() {}, pulse() {} };
    const dev = new VirtioBalloon({ log: () => {} });
    const transport = new VirtioMmioTransport({ device: dev, memory, irq });
    const driver = new VirtioMmioDriver({ memory, transport });
    driver.reset();
    driver.probe();
    driver.addStatus(1);
    driver.addStatus(2);
    driver.negotiate();
    driver.addStatus(8);
    driver.setupQueue(0);
    driver.setupQueue(1);
    const statsq = driver.setupQueue(2);
    statsq.add([{ length: 10, data: statsBuffer([[5, 42n]]) }]);
    statsq.kick(); // dropped by the transport: not DRIVER_OK yet
    driver.addStatus(4);
    assert.equal(dev.stats().guest.total_memory, 42);
  });

  it("works without the stats queue (driver did not negotiate STATS_VQ)", () => {
    const irq = { set() {}, pulse() {} };
    const dev = new VirtioBalloon({ log: () => {} });
    const transport = new VirtioMmioTransport({ device: dev, memory, irq });
    const driver = new VirtioMmioDriver({ memory, transport });
    driver.init({ features: 1n << VIRTIO_F_VERSION_1, queues: 2 });
    assert.equal(dev.requestStats(), false);
    const q = driver.queue(0);
    q.add([{ length: 4, data: pfns(FREE_PFN + 0x70) }]);
    q.kick();
    assert.equal(dev.stats().inflatedPages, 1);
    assert.equal(transport.stats().deviceErrors, 0);
  });

  it("caps PFNs per turn and defers the rest", () => {
    const later: (() => void)[] = [];
    const { dev, inflateq } = setup({ pfnsPerTurn: 2, defer: (fn) => later.push(fn) });
    for (let i = 0; i < 3; i++) inflateq.add([{ length: 4, data: pfns(FREE_PFN + 0x80 + i) }]);
    inflateq.kick();
    assert.equal(inflateq.takeUsed().length, 2);
    assert.equal(later.length, 1);
    later.shift()?.();
    assert.equal(inflateq.takeUsed().length, 1);
    assert.equal(later.length, 0);
    assert.equal(dev.stats().inflatedPages, 3);
    assert.equal(dev.metrics().deferred, 1);
  });

  it("reset empties the balloon and actual, keeps the target, stops serving", () => {
    const { dev, driver, inflateq } = setup();
    dev.setTarget(10);
    driver.writeConfig(4, pfns(1));
    inflateq.add([{ length: 4, data: pfns(FREE_PFN + 0x90) }]);
    inflateq.kick();
    assert.equal(dev.stats().inflatedPages, 1);
    driver.reset();
    const s = dev.stats();
    assert.deepEqual([s.inflatedPages, s.actualPages, s.targetPages], [0, 0, 10]);
    dev.queueNotify(0);
    assert.equal(dev.metrics().invalidNotifies, 1);
    assert.equal(dev.requestStats(), false);
  });

  it("rejects bad options", () => {
    assert.throws(() => new VirtioBalloon({ queueSize: 3 }), RangeError);
    assert.throws(() => new VirtioBalloon({ pfnsPerTurn: 0 }), RangeError);
    assert.throws(() => new VirtioBalloon({ name: "" }), TypeError);
  });
});
