// virtio-rng end to end through the driver double and the virtio-mmio transport: the
// driver posts device-writable buffers, kicks, and gets random bytes, the right used
// lengths and an interrupt; the per-turn budget defers instead of spinning.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { IrqLine } from "../../../devices/device.js";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import { VIRTIO_F_VERSION_1, VIRTIO_ID_RNG } from "../../../virtio/device.js";
import { VIRTIO_MMIO_INT_VRING, VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import { VirtioRng, type VirtioRngOptions } from "./mod.js";

const memory = new GuestMemory(ramRegions(16 * MIB));
after(() => memory.close());

function setup(options: VirtioRngOptions = {}) {
  const irq = {
    pulses: 0,
    set() {},
    pulse() {
      this.pulses++;
    },
  } satisfies IrqLine & { pulses: number };
  const rng = new VirtioRng(options);
  const transport = new VirtioMmioTransport({ device: rng, memory, irq });
  const driver = new VirtioMmioDriver({ memory, transport });
  driver.init();
  return { irq, rng, transport, driver, q: driver.queue(0) };
}

describe("virtio-rng", () => {
  it("identifies as device 4 with one queue", () => {
    const { driver, rng } = setup();
    assert.equal(driver.probe().deviceId, VIRTIO_ID_RNG);
    assert.ok(driver.features & (1n << VIRTIO_F_VERSION_1));
    assert.deepEqual(rng.queueSizes, [256]);
    assert.deepEqual(driver.readConfig(0, 4), new Uint8Array(4), "no config space");
  });

  it("fills writable buffers with random bytes, direct and indirect, and interrupts", () => {
    const { driver, q, irq, rng } = setup();
    const a = q.add([{ length: 64, writable: true }]);
    const b = q.add(
      [
        { length: 10, writable: true },
        { length: 4000, writable: true },
      ],
      { indirect: true },
    );
    q.kick();
    const used = q.takeUsed();
    assert.deepEqual(used, [
      { id: a.head, len: 64 },
      { id: b.head, len: 4010 },
    ]);
    assert.equal(irq.pulses, 1);
    assert.equal(driver.ackInterrupts(), VIRTIO_MMIO_INT_VRING);
    for (const buf of [...a.buffers, ...b.buffers]) {
      const bytes = memory.slice(buf.address, buf.length);
      assert.ok(
        bytes.some((x) => x !== 0),
        "random, not zeros",
      );
    }
    assert.deepEqual(rng.metrics.snapshot(), { requests: 2, bytes: 4074, refused: 0, deferred: 0 });
  });

  it("writes into the guest buffer itself (zero copy) and never past it", () => {
    const seen: Uint8Array[] = [];
    const { q } = setup({
      random: (b) => {
        seen.push(b);
        b.fill(0x5a);
      },
    });
    const addr = q.add([{ length: 16, writable: true }]).buffers[0]?.address ?? 0;
    memory.writeU8(addr + 16, 0x11);
    q.kick();
    assert.equal(seen[0]?.buffer, memory.slice(addr, 1).buffer, "a view of guest RAM");
    assert.equal(memory.readU8(addr + 15), 0x5a);
    assert.equal(memory.readU8(addr + 16), 0x11);
  });

  it("skips zero-length writable buffers (found by the fuzzer)", () => {
    const lengths: number[] = [];
    const { q } = setup({ random: (b) => void lengths.push(b.length) });
    const r = q.add([
      { length: 0, writable: true },
      { length: 5, writable: true },
    ]);
    q.kick();
    assert.deepEqual(q.takeUsed(), [{ id: r.head, len: 5 }]);
    assert.deepEqual(lengths, [5]);
  });

  it("returns chains without writable buffers with 0 bytes, counted as refused", () => {
    const { q, rng } = setup();
    const r = q.add([{ length: 8, data: new Uint8Array(8) }]);
    q.kick();
    assert.deepEqual(q.takeUsed(), [{ id: r.head, len: 0 }]);
    assert.equal(rng.metrics.refused, 1);
  });

  it("caps each request and each turn, deferring the rest instead of spinning", () => {
    const later: (() => void)[] = [];
    const { q, rng } = setup({
      maxBytesPerRequest: 1000,
      maxBytesPerTurn: 2500,
      defer: (fn) => later.push(fn),
    });
    for (let i = 0; i < 4; i++) q.add([{ length: 4096, writable: true }]);
    q.kick();
    assert.deepEqual(
      q.takeUsed().map((u) => u.len),
      [1000, 1000, 500],
    );
    assert.equal(later.length, 1);
    later.shift()?.();
    assert.deepEqual(
      q.takeUsed().map((u) => u.len),
      [1000],
    );
    assert.equal(later.length, 0, "nothing left: no further turn");
    assert.equal(rng.metrics.deferred, 1);
  });

  it("serves at most `queueSize` chains per turn", () => {
    const later: (() => void)[] = [];
    const { q } = setup({ queueSize: 4, defer: (fn) => later.push(fn) });
    const buf = q.add([{ length: 1, writable: true }]).buffers[0]?.address ?? 0;
    q.kick();
    assert.equal(q.takeUsed().length, 1);
    for (let i = 0; i < 4; i++) q.add([{ address: buf, length: 1, writable: true }]);
    q.kick();
    assert.equal(q.takeUsed().length, 4);
    assert.equal(later.length, 1, "a full turn schedules a look for more");
    later.shift()?.();
    assert.equal(later.length, 0);
  });

  it("ignores notifies for other queues, and stops on reset", () => {
    const { driver, transport, rng, q } = setup();
    transport.notifyFromEventfd(0);
    rng.queueNotify(3);
    assert.equal(rng.metrics.refused, 1);
    driver.reset();
    q.publish(0);
    rng.queueNotify(0);
    assert.equal(rng.metrics.requests, 0);
  });
});
