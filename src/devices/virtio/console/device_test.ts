// virtio-console end to end through the driver double and the virtio-mmio transport: the
// guest transmits and the sink sees the bytes; host input lands in the guest's receive
// buffers with the right used lengths, waits when there are none, and is bounded; chains
// in the wrong direction are refused and counted; resize raises a config interrupt.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { IrqLine } from "../../../devices/device.js";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import { VIRTIO_F_VERSION_1, VIRTIO_ID_CONSOLE } from "../../../virtio/device.js";
import {
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VirtioMmioTransport,
} from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_F_SIZE,
  VirtioConsole,
  type VirtioConsoleOptions,
} from "./mod.js";

const memory = new GuestMemory(ramRegions(16 * MIB));
after(() => memory.close());

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function setup(options: Partial<VirtioConsoleOptions> = {}) {
  const irq = {
    pulses: 0,
    set() {},
    pulse() {
      this.pulses++;
    },
  } satisfies IrqLine & { pulses: number };
  const chunks: Uint8Array[] = [];
  const logs: string[] = [];
  const dev = new VirtioConsole({
    // The sink must copy: the view is guest RAM, valid only during the call.
    out: (b) => chunks.push(b.slice()),
    log: (m) => logs.push(m),
    ...options,
  });
  const transport = new VirtioMmioTransport({ device: dev, memory, irq });
  const driver = new VirtioMmioDriver({ memory, transport });
  driver.init();
  const output = () => dec(Buffer.concat(chunks));
  return { irq, dev, transport, driver, rx: driver.queue(0), tx: driver.queue(1), output, logs };
}

describe("virtio-console", () => {
  it("identifies as device 3 with two queues, size and emergency write, no multiport", () => {
    const { driver, dev } = setup({ cols: 132, rows: 43 });
    assert.equal(driver.probe().deviceId, VIRTIO_ID_CONSOLE);
    assert.ok(driver.features & (1n << VIRTIO_F_VERSION_1));
    assert.ok(driver.features & (1n << VIRTIO_CONSOLE_F_SIZE));
    assert.ok(driver.features & (1n << VIRTIO_CONSOLE_F_EMERG_WRITE));
    assert.equal(driver.features & (1n << VIRTIO_CONSOLE_F_MULTIPORT), 0n);
    assert.deepEqual(dev.queueSizes, [256, 256]);
    const cfg = new DataView(driver.readConfig(0, 12).buffer);
    assert.equal(cfg.getUint16(0, true), 132);
    assert.equal(cfg.getUint16(2, true), 43);
    assert.equal(cfg.getUint32(4, true), 0, "max_nr_ports: no multiport");
  });

  it("hands transmitted bytes to the sink, direct and indirect, and returns the buffers", () => {
    const { tx, output, dev, irq, driver } = setup();
    const a = tx.add([{ length: 6, data: enc("hello ") }]);
    const b = tx.add(
      [
        { length: 3, data: enc("wor") },
        { length: 3, data: enc("ld\n") },
      ],
      { indirect: true },
    );
    tx.kick();
    assert.equal(output(), "hello world\n");
    assert.deepEqual(tx.takeUsed(), [
      { id: a.head, len: 0 },
      { id: b.head, len: 0 },
    ]);
    assert.equal(irq.pulses, 1);
    assert.equal(driver.ackInterrupts(), VIRTIO_MMIO_INT_VRING);
    assert.equal(dev.metrics().bytesOut, 12);
  });

  it("delivers host input into receive buffers with the right used length", () => {
    const { rx, dev } = setup();
    const r = rx.add([{ length: 64, writable: true }]);
    rx.kick();
    assert.equal(dev.enqueueInput(enc("ls -l\n")), 6);
    assert.deepEqual(rx.takeUsed(), [{ id: r.head, len: 6 }]);
    assert.equal(dec(memory.slice(r.buffers[0]?.address ?? 0, 6)), "ls -l\n");
    assert.equal(dev.metrics().bytesIn, 6);
    assert.equal(dev.pendingInput, 0);
  });

  it("holds input until the guest posts buffers, then splits it across them", () => {
    const { rx, dev } = setup();
    assert.equal(dev.enqueueInput(enc("0123456789")), 10);
    assert.deepEqual(rx.takeUsed(), [], "no buffers yet: nothing delivered");
    assert.equal(dev.pendingInput, 10);
    const a = rx.add([
      { length: 2, writable: true },
      { length: 2, writable: true },
    ]);
    rx.kick();
    const b = rx.add([{ length: 4, writable: true }]);
    rx.kick();
    assert.deepEqual(rx.takeUsed(), [
      { id: a.head, len: 4 },
      { id: b.head, len: 4 },
    ]);
    assert.equal(dev.pendingInput, 2);
    const c = rx.add([{ length: 100, writable: true }]);
    rx.kick();
    assert.deepEqual(rx.takeUsed(), [{ id: c.head, len: 2 }]);
    const read = (b: { address: number }, n: number) => dec(memory.slice(b.address, n));
    const [a0, a1] = a.buffers;
    const [b0] = b.buffers;
    const [c0] = c.buffers;
    assert.ok(a0 && a1 && b0 && c0);
    const got = read(a0, 2) + read(a1, 2) + read(b0, 4) + read(c0, 2);
    assert.equal(got, "0123456789");
  });

  it("finds receive buffers posted before DRIVER_OK (Linux kicks too early)", () => {
    const irq = { set() {}, pulse() {} };
    const dev = new VirtioConsole({ out: () => {}, log: () => {} });
    const transport = new VirtioMmioTransport({ device: dev, memory, irq });
    const driver = new VirtioMmioDriver({ memory, transport });
    driver.reset();
    driver.probe();
    driver.addStatus(1);
    driver.addStatus(2);
    driver.negotiate();
    driver.addStatus(8);
    const rx = driver.setupQueue(0);
    driver.setupQueue(1);
    const r = rx.add([{ length: 16, writable: true }]);
    rx.kick(); // dropped by the transport: not DRIVER_OK yet
    driver.addStatus(4);
    dev.enqueueInput(enc("x"));
    assert.deepEqual(rx.takeUsed(), [{ id: r.head, len: 1 }]);
  });

  it("bounds the backlog and counts dropped input", () => {
    const { dev, rx } = setup({ inputBacklog: 8 });
    assert.equal(dev.enqueueInput(enc("abcdef")), 6);
    assert.equal(dev.enqueueInput(enc("ghijkl")), 2);
    assert.equal(dev.enqueueInput(enc("m")), 0);
    assert.equal(dev.metrics().inputDropped, 5);
    // Drain part of the ring so the next input wraps around its end.
    const a = rx.add([{ length: 5, writable: true }]);
    rx.kick();
    assert.equal(dev.enqueueInput(enc("XYZ")), 3);
    const b = rx.add([{ length: 64, writable: true }]);
    rx.kick();
    assert.deepEqual(
      rx.takeUsed().map((u) => u.len),
      [5, 6],
    );
    assert.equal(dec(memory.slice(a.buffers[0]?.address ?? 0, 5)), "abcde");
    assert.equal(dec(memory.slice(b.buffers[0]?.address ?? 0, 6)), "fghXYZ");
  });

  it("refuses readable buffers on the receiveq and writable ones on the transmitq", () => {
    const { rx, tx, dev, output, logs } = setup();
    const bad1 = rx.add([{ length: 8, data: enc("guest!!!") }]);
    const bad2 = rx.add([
      { length: 4, data: enc("abcd") },
      { length: 4, writable: true },
    ]);
    rx.kick();
    assert.deepEqual(rx.takeUsed(), [
      { id: bad1.head, len: 0 },
      { id: bad2.head, len: 0 },
    ]);
    const bad3 = tx.add([{ length: 8, writable: true }]);
    const bad4 = tx.add([
      { length: 2, data: enc("hi") },
      { length: 8, writable: true },
    ]);
    tx.kick();
    assert.deepEqual(tx.takeUsed(), [
      { id: bad3.head, len: 0 },
      { id: bad4.head, len: 0 },
    ]);
    assert.equal(output(), "", "nothing from a refused chain reaches the sink");
    assert.equal(dev.metrics().refusedChains, 4);
    assert.equal(logs.length, 4);
    dev.enqueueInput(enc("q"));
    assert.equal(dev.pendingInput, 1, "refused chains are not used for input");
  });

  it("holds at most a queue's worth of receive buffers (a driver re-posting a head)", () => {
    const { rx, dev } = setup({ queueSize: 4 });
    const r = rx.add([{ length: 1, writable: true }]);
    for (let i = 0; i < 3; i++) rx.publish(r.head);
    rx.kick();
    for (let i = 0; i < 4; i++) rx.publish(r.head);
    rx.kick();
    assert.equal(dev.enqueueInput(enc("0123456789")), 10);
    assert.equal(rx.takeUsed().length, 8, "four held, four more taken from the ring as used");
    assert.equal(dev.pendingInput, 2);
  });

  it("caps transmit work per turn and defers the rest", () => {
    const later: (() => void)[] = [];
    const { tx, dev, output } = setup({ txBytesPerTurn: 4, defer: (fn) => later.push(fn) });
    for (const s of ["ab", "cd", "ef"]) tx.add([{ length: 2, data: enc(s) }]);
    tx.kick();
    assert.equal(output(), "abcd");
    assert.equal(later.length, 1);
    later.shift()?.();
    assert.equal(output(), "abcdef");
    assert.equal(dev.metrics().deferred, 1);
  });

  it("resize bumps the config and raises a config interrupt", () => {
    const { driver, dev } = setup();
    const gen = driver.configGeneration();
    dev.resize(100, 30);
    assert.equal(driver.interruptStatus() & VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_CONFIG);
    assert.notEqual(driver.configGeneration(), gen);
    const cfg = new DataView(driver.readConfig(0, 4).buffer);
    assert.deepEqual([cfg.getUint16(0, true), cfg.getUint16(2, true)], [100, 30]);
    assert.deepEqual(dev.size, { cols: 100, rows: 30 });
    assert.throws(() => dev.resize(70000, 1), RangeError);
    assert.throws(() => dev.resize(-1, 1), RangeError);
  });

  it("emerg_wr goes to the sink; other config writes are refused", () => {
    const { driver, dev, output } = setup();
    driver.writeConfig(8, new Uint8Array([0x41, 0, 0, 0]));
    driver.writeConfig(0, new Uint8Array([1, 2]));
    assert.equal(output(), "A");
    assert.equal(dev.metrics().emergencyBytes, 1);
    assert.equal(dev.metrics().refusedConfigWrites, 1);
    assert.equal(new DataView(driver.readConfig(0, 2).buffer).getUint16(0, true), 80);
  });

  it("survives a throwing sink and log, and stops on reset", () => {
    const { tx, rx, dev, driver, transport } = setup({
      out: () => {
        throw new Error("sink down");
      },
      log: () => {
        throw new Error("log down");
      },
    });
    const t = tx.add([{ length: 2, data: enc("hi") }]);
    tx.kick();
    assert.deepEqual(tx.takeUsed(), [{ id: t.head, len: 0 }]);
    assert.equal(dev.metrics().sinkErrors, 1);
    assert.equal(transport.stats().deviceErrors, 0);
    rx.add([{ length: 8, writable: true }]);
    rx.kick();
    driver.reset();
    dev.enqueueInput(enc("after"));
    dev.queueNotify(0);
    assert.equal(dev.metrics().bytesIn, 0, "no delivery into a reset device's old buffers");
    assert.equal(dev.metrics().invalidNotifies, 1);
  });

  it("rejects bad options", () => {
    assert.throws(() => new VirtioConsole({} as VirtioConsoleOptions), TypeError);
    assert.throws(() => new VirtioConsole({ out: () => {}, queueSize: 3 }), RangeError);
    assert.throws(() => new VirtioConsole({ out: () => {}, inputBacklog: 0 }), RangeError);
    assert.throws(() => new VirtioConsole({ out: () => {}, cols: 1e6 }), RangeError);
  });
});
