// The virtio-mmio transport driven through its registers: the Linux init sequence (via the
// driver double), refused status transitions, feature and queue refusals, reset,
// interrupts, config space and generation, notifications and ioeventfd wiring.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import type { IrqLine } from "../devices/device.js";
import { GuestMemory, MIB, ramRegions } from "../memory/mod.js";
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from "./device.js";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DRIVER_OK as DOK,
  VIRTIO_CONFIG_S_DRIVER as DRV,
  VIRTIO_CONFIG_S_FAILED as FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK as FOK,
  STATUS_TRANSITIONS,
  VESSEL_VENDOR_ID,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_SHM_LEN_LOW,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VERSION,
  VirtioMmioTransport,
} from "./mmio.js";
import { DriverError, VirtioMmioDriver } from "./testing/driver.js";
import { RecordingDevice } from "./testing/recording_device.js";

const memory = new GuestMemory(ramRegions(16 * MIB));
after(() => memory.close());

class CountingIrq implements IrqLine {
  pulses = 0;
  levels: boolean[] = [];
  set(level: boolean): void {
    this.levels.push(level);
  }
  pulse(): void {
    this.pulses++;
  }
}

function setup(options: { trigger?: "edge" | "level"; device?: RecordingDevice } = {}) {
  const device = options.device ?? new RecordingDevice();
  const irq = new CountingIrq();
  const logs: string[] = [];
  const transport = new VirtioMmioTransport({
    device,
    memory,
    irq,
    base: 0xd000_0000,
    log: (m) => logs.push(m),
    ...(options.trigger ? { trigger: options.trigger } : {}),
  });
  const driver = new VirtioMmioDriver({ memory, transport });
  return { device, irq, transport, driver, logs };
}

/** Bring a device to DRIVER (features not yet negotiated). */
function toDriver(driver: VirtioMmioDriver): void {
  driver.reset();
  driver.addStatus(ACK);
  driver.addStatus(DRV);
}

describe("virtio-mmio: identification and init", () => {
  it("answers the probe: magic, version 2, device and vendor IDs", () => {
    const { driver } = setup();
    assert.equal(driver.readReg(0), VIRTIO_MMIO_MAGIC);
    assert.equal(driver.readReg(VIRTIO_MMIO_VERSION), 2);
    assert.deepEqual(driver.probe(), { deviceId: 42, vendorId: VESSEL_VENDOR_ID });
    assert.equal(driver.readReg(VIRTIO_MMIO_SHM_LEN_LOW), 0xffff_ffff, "no shared memory");
  });

  it("runs the Linux sequence to DRIVER_OK and activates the device once", () => {
    const { device, driver, transport } = setup();
    const features = driver.init();
    assert.equal(driver.status(), ACK | DRV | FOK | DOK);
    assert.equal(device.activations, 1);
    assert.equal(features, device.features);
    assert.equal(device.ctx?.features, device.features);
    assert.equal(device.ctx?.queues.length, 2);
    assert.deepEqual(
      [driver.queue(0).size, driver.queue(1).size],
      [8, 16],
      "queues default to QueueNumMax",
    );
    const s = transport.stats();
    assert.deepEqual(
      [s.refusedStatus, s.badFeatures, s.badQueueConfigs, s.malformedAccesses],
      [0, 0, 0, 0],
    );
  });

  it("offers VERSION_1 even if the device forgot it, and only 64 bits", () => {
    const { driver } = setup({ device: new RecordingDevice({ features: 1n }) });
    toDriver(driver);
    assert.equal(driver.readDeviceFeatures(), 1n | (1n << VIRTIO_F_VERSION_1));
    driver.writeReg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert.equal(driver.readReg(VIRTIO_MMIO_DEVICE_FEATURES), 0);
  });

  it("carries a queue round trip with interrupts (edge: one pulse per signal)", () => {
    const { device, driver, irq } = setup();
    device.echo = true;
    driver.init({ features: (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_INDIRECT_DESC) });
    const q = driver.queue(1);
    const { head } = q.add([{ length: 8, writable: true }]);
    const { head: head2 } = q.add(
      [
        { length: 4, data: new Uint8Array(4) },
        { length: 8, writable: true },
      ],
      { indirect: true },
    );
    q.kick();
    assert.deepEqual(device.notifies, [1]);
    assert.deepEqual(q.takeUsed(), [
      { id: head, len: 0 },
      { id: head2, len: 0 },
    ]);
    assert.equal(irq.pulses, 1);
    assert.equal(driver.interruptStatus(), VIRTIO_MMIO_INT_VRING);
    assert.equal(driver.ackInterrupts(), VIRTIO_MMIO_INT_VRING);
    assert.equal(driver.interruptStatus(), 0);
    assert.equal(q.freeDescriptors, 16);
  });
});

describe("virtio-mmio: device status", () => {
  it("follows the transition table and refuses everything else", () => {
    assert.deepEqual(STATUS_TRANSITIONS[0], [0, ACK]);
    const { driver, transport } = setup();
    const refused = () => transport.stats().refusedStatus;
    driver.reset();
    for (const bad of [DRV, FOK, DOK, ACK | DOK, ACK | DRV | DOK, 0x100 | ACK]) {
      driver.writeReg(VIRTIO_MMIO_STATUS, bad);
      assert.equal(driver.status(), 0, `0x${bad.toString(16)} from 0`);
    }
    assert.equal(refused(), 6);
    driver.addStatus(ACK);
    driver.writeReg(VIRTIO_MMIO_STATUS, ACK | FOK);
    driver.writeReg(VIRTIO_MMIO_STATUS, DRV);
    assert.equal(driver.status(), ACK);
    driver.addStatus(DRV);
    driver.writeReg(VIRTIO_MMIO_STATUS, ACK | DRV | DOK);
    assert.equal(driver.status(), ACK | DRV, "DRIVER_OK before FEATURES_OK refused");
    driver.writeReg(VIRTIO_MMIO_STATUS, ACK);
    assert.equal(driver.status(), ACK | DRV, "bits cannot be cleared except by reset");
    assert.equal(refused(), 10);
    driver.writeReg(VIRTIO_MMIO_STATUS, ACK | DRV);
    assert.equal(refused(), 10, "rewriting the current value is a no-op");
  });

  it("accepts FAILED from any state, then only a reset", () => {
    const { driver, transport, device } = setup();
    driver.reset();
    driver.addStatus(ACK);
    driver.addStatus(FAILED);
    assert.equal(driver.status(), ACK | FAILED);
    driver.addStatus(DRV);
    assert.equal(driver.status(), ACK | FAILED);
    assert.equal(transport.stats().refusedStatus, 1);
    driver.reset();
    driver.init();
    driver.addStatus(FAILED);
    assert.equal(driver.status(), ACK | DRV | FOK | DOK | FAILED);
    assert.equal(device.activations, 1);
  });

  it("ignores NEEDS_RESET written back by the driver", () => {
    const { driver, device } = setup();
    driver.init();
    device.ctx?.needsReset("test");
    assert.equal(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_NEEDS_RESET);
    driver.addStatus(FAILED);
    assert.equal(driver.status(), ACK | DRV | FOK | DOK | FAILED | VIRTIO_CONFIG_S_NEEDS_RESET);
  });
});

describe("virtio-mmio: feature negotiation", () => {
  const version1 = 1n << VIRTIO_F_VERSION_1;

  it("refuses FEATURES_OK for unoffered bits (it stays clear on read-back)", () => {
    const { driver, transport } = setup();
    toDriver(driver);
    driver.readDeviceFeatures();
    driver.writeDriverFeatures(version1 | (1n << 40n));
    driver.addStatus(FOK);
    assert.equal(driver.status() & FOK, 0);
    assert.equal(transport.stats().badFeatures, 1);
  });

  it("refuses FEATURES_OK without VIRTIO_F_VERSION_1", () => {
    const { driver, logs } = setup();
    toDriver(driver);
    driver.writeDriverFeatures(1n << VIRTIO_F_EVENT_IDX);
    driver.addStatus(FOK);
    assert.equal(driver.status() & FOK, 0);
    assert.match(logs.at(-1) ?? "", /VERSION_1/);
  });

  it("refuses a nonzero feature word above bit 63", () => {
    const { driver } = setup();
    toDriver(driver);
    driver.writeDriverFeatures(version1);
    driver.writeReg(0x24, 2);
    driver.writeReg(0x20, 1);
    driver.addStatus(FOK);
    assert.equal(driver.status() & FOK, 0);
  });

  it("ignores DriverFeatures written outside the negotiation window", () => {
    const { driver, transport, device } = setup();
    driver.init({ features: version1 });
    driver.writeDriverFeatures(device.features);
    assert.equal(device.ctx?.features, version1);
    assert.equal(transport.stats().badFeatures, 2, "two words written, two refused");
  });

  it("hands the device only what was accepted", () => {
    const { driver, device } = setup();
    driver.init({ features: version1 | (1n << VIRTIO_F_EVENT_IDX) | (1n << 50n) });
    assert.equal(device.ctx?.features, version1 | (1n << VIRTIO_F_EVENT_IDX));
  });
});

describe("virtio-mmio: queue setup", () => {
  function atFeaturesOk() {
    const s = setup();
    toDriver(s.driver);
    s.driver.negotiate();
    return s;
  }

  it("reports QueueNumMax 0 for a queue that does not exist", () => {
    const { driver } = atFeaturesOk();
    driver.writeReg(VIRTIO_MMIO_QUEUE_SEL, 2);
    assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    driver.writeReg(VIRTIO_MMIO_QUEUE_SEL, 0xffff_ffff);
    assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert.throws(() => driver.setupQueue(2), DriverError);
  });

  it("refuses bad sizes and placements on QueueReady=1 and leaves the queue not ready", () => {
    const { driver, transport, logs } = atFeaturesOk();
    for (const size of [0, 3, 16, 1024]) {
      assert.throws(() => driver.setupQueue(0, size), /refused queue 0/);
      assert.match(logs.at(-1) ?? "", /size/);
    }
    driver.writeReg(VIRTIO_MMIO_QUEUE_SEL, 0);
    driver.writeReg(VIRTIO_MMIO_QUEUE_NUM, 8);
    driver.writeReg(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1008); // not 16-aligned
    driver.writeReg(VIRTIO_MMIO_QUEUE_READY, 1);
    assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_READY), 0);
    driver.writeReg(VIRTIO_MMIO_QUEUE_DESC_LOW, 0xfff_fff0); // outside 16 MiB
    driver.writeReg(VIRTIO_MMIO_QUEUE_READY, 1);
    assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_READY), 0);
    assert.equal(transport.stats().badQueueConfigs, 6);
    driver.writeReg(VIRTIO_MMIO_QUEUE_READY, 2);
    assert.equal(transport.stats().refusedQueueWrites, 1);
  });

  it("refuses queue writes before FEATURES_OK, while ready, and after DRIVER_OK", () => {
    const { driver, transport } = setup();
    toDriver(driver);
    driver.writeReg(VIRTIO_MMIO_QUEUE_NUM, 4);
    assert.equal(transport.stats().refusedQueueWrites, 1);
    driver.negotiate();
    driver.setupQueue(0, 4);
    driver.writeReg(VIRTIO_MMIO_QUEUE_NUM, 8);
    driver.writeReg(VIRTIO_MMIO_QUEUE_DESC_LOW, 0);
    assert.equal(transport.stats().refusedQueueWrites, 3);
    driver.addStatus(DOK);
    driver.writeReg(VIRTIO_MMIO_QUEUE_READY, 0);
    assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_READY), 1, "cannot stop a live queue");
    driver.writeReg(VIRTIO_MMIO_QUEUE_SEL, 1);
    driver.writeReg(VIRTIO_MMIO_QUEUE_READY, 1);
    assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_READY), 0, "cannot start one after DRIVER_OK");
    assert.equal(transport.stats().refusedQueueWrites, 5);
  });

  it("lets the driver un-ready a queue before DRIVER_OK and set it up again", () => {
    const { driver } = atFeaturesOk();
    driver.setupQueue(0, 4);
    driver.writeReg(VIRTIO_MMIO_QUEUE_READY, 0);
    assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_READY), 0);
    assert.equal(driver.setupQueue(0, 8).size, 8);
  });
});

describe("virtio-mmio: reset", () => {
  it("returns every register to its initial value and resets the device", () => {
    const { driver, device, transport } = setup();
    device.echo = true;
    driver.init();
    const ctx = device.ctx;
    assert.ok(ctx);
    const staleQueue = ctx.queues[0];
    assert.ok(staleQueue);
    ctx.interrupt.configChanged();
    assert.notEqual(driver.interruptStatus(), 0);
    driver.reset();
    assert.equal(device.resets, 1);
    assert.equal(driver.status(), 0);
    assert.equal(driver.interruptStatus(), 0);
    for (const i of [0, 1]) {
      driver.writeReg(VIRTIO_MMIO_QUEUE_SEL, i);
      assert.equal(driver.readReg(VIRTIO_MMIO_QUEUE_READY), 0);
    }
    assert.equal(transport.stats().resets, 2, "init's reset and this one");
    // The old activation's handles are inert: a late completion cannot touch new rings.
    driver.init();
    const q = driver.queue(0);
    q.add([{ length: 4, writable: true }]);
    assert.equal(staleQueue.pop(), undefined);
    staleQueue.pushUsed(0, 1);
    ctx.needsReset("late");
    assert.equal(q.usedIdx(), 0);
    assert.equal(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    q.kick();
    assert.equal(q.takeUsed().length, 1, "the new activation works");
  });

  it("does not reset a device that was never activated", () => {
    const { driver, device } = setup();
    driver.reset();
    driver.reset();
    assert.equal(device.resets, 0);
  });
});

describe("virtio-mmio: interrupts and config space", () => {
  it("sets InterruptStatus bits, pulses the line, and clears only acknowledged bits", () => {
    const { driver, device, irq } = setup();
    driver.init();
    device.ctx?.interrupt.configChanged();
    assert.equal(irq.pulses, 1);
    assert.equal(driver.interruptStatus(), VIRTIO_MMIO_INT_CONFIG);
    driver.writeReg(0x64, VIRTIO_MMIO_INT_VRING);
    assert.equal(driver.interruptStatus(), VIRTIO_MMIO_INT_CONFIG);
    driver.writeReg(0x64, VIRTIO_MMIO_INT_CONFIG);
    assert.equal(driver.readReg(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
  });

  it("drives a level-triggered line high until acknowledged", () => {
    const { driver, device, irq } = setup({ trigger: "level" });
    device.echo = true;
    driver.init();
    const q = driver.queue(0);
    q.add([{ length: 4, writable: true }]);
    q.kick();
    device.ctx?.interrupt.configChanged();
    assert.deepEqual(irq.levels, [true]);
    driver.ackInterrupts();
    assert.deepEqual(irq.levels, [true, false]);
    assert.equal(irq.pulses, 0);
  });

  it("keeps InterruptStatus in a shared word another thread may read and clear", () => {
    const cell = new Int32Array(new SharedArrayBuffer(8), 4, 1);
    const device = new RecordingDevice();
    const transport = new VirtioMmioTransport({
      device,
      memory,
      irq: new CountingIrq(),
      base: 0xd000_0000,
      interruptStatus: cell,
    });
    assert.deepEqual(transport.sharedRegisters(), { status: 0xd000_0060, ack: 0xd000_0064 });
    const driver = new VirtioMmioDriver({ memory, transport });
    driver.init();
    device.ctx?.interrupt.configChanged();
    assert.equal(Atomics.load(cell, 0), VIRTIO_MMIO_INT_CONFIG);
    // What a vCPU thread does for an InterruptACK write: the main thread sees it.
    Atomics.and(cell, 0, ~VIRTIO_MMIO_INT_CONFIG);
    assert.equal(driver.interruptStatus(), 0);
    device.ctx?.interrupt.configChanged();
    driver.reset();
    assert.equal(Atomics.load(cell, 0), 0, "a reset drops pending interrupts");
    // Without a shared word, or with a level line (the ACK must lower it), nothing is shared.
    assert.equal(setup().transport.sharedRegisters(), undefined);
    assert.throws(
      () =>
        new VirtioMmioTransport({
          device: new RecordingDevice(),
          memory,
          irq: new CountingIrq(),
          trigger: "level",
          interruptStatus: cell,
        }),
      /edge-triggered/,
    );
  });

  it("bumps ConfigGeneration on config changes and passes config accesses of any width", () => {
    const { driver, device } = setup();
    driver.init();
    const g = driver.configGeneration();
    device.ctx?.interrupt.configChanged();
    assert.equal(driver.configGeneration(), g + 1);
    driver.writeConfig(1, Uint8Array.of(0xaa, 0xbb));
    assert.deepEqual(driver.readConfig(0, 4), Uint8Array.of(0, 0xaa, 0xbb, 0));
    assert.deepEqual(driver.readConfig(6, 8), Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0));
  });

  it("sets NEEDS_RESET with a config interrupt when a queue breaks", () => {
    const { device, driver, transport } = setup();
    device.echo = true;
    driver.init();
    driver.queue(0).publish(200); // head index out of range: the ring is broken
    driver.queue(0).kick();
    assert.equal(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_NEEDS_RESET);
    assert.equal(driver.interruptStatus() & VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_CONFIG);
    assert.equal(transport.stats().needsReset, 1);
    assert.equal(transport.stats().queues[0]?.broken, 1);
    driver.init();
    assert.equal(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0, "a reset clears it");
  });

  it("survives a device that throws: counted, NEEDS_RESET", () => {
    const { driver, device, transport } = setup();
    driver.init();
    device.throwing = true;
    driver.queue(0).kick();
    driver.readConfig(0, 4);
    const s = transport.stats();
    assert.equal(s.deviceErrors, 2);
    assert.equal(driver.status() & VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_CONFIG_S_NEEDS_RESET);
  });
});

describe("virtio-mmio: notifications and malformed accesses", () => {
  it("checks the notified index and refuses notifies before DRIVER_OK", () => {
    const { driver, device, transport } = setup();
    toDriver(driver);
    driver.writeReg(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    driver.init();
    driver.writeReg(VIRTIO_MMIO_QUEUE_NOTIFY, 2);
    driver.writeReg(VIRTIO_MMIO_QUEUE_NOTIFY, 0xffff_ffff);
    driver.writeReg(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    transport.notifyFromEventfd(0);
    transport.notifyFromEventfd(7);
    assert.deepEqual(device.notifies, [1, 0]);
    assert.equal(transport.stats().badNotifications, 4);
    assert.equal(transport.stats().notifications, 2);
  });

  it("describes the ioeventfds to register", () => {
    const { transport } = setup();
    assert.equal(transport.notifyAddress(), 0xd000_0050);
    assert.deepEqual(transport.ioEventFds(), [
      { address: 0xd000_0050, length: 4, datamatch: 0, queue: 0 },
      { address: 0xd000_0050, length: 4, datamatch: 1, queue: 1 },
    ]);
    const noBase = new VirtioMmioTransport({
      device: new RecordingDevice(),
      memory,
      irq: new CountingIrq(),
    });
    assert.throws(() => noBase.notifyAddress(), TypeError);
  });

  it("counts and ignores wrong widths, unaligned and unknown offsets", () => {
    const { transport } = setup();
    const cases: [number, number][] = [
      [0, 1],
      [0, 2],
      [0, 8],
      [2, 4],
      [0x18, 4], // hole
      [0x20, 4], // DriverFeatures is write-only
      [0x38, 4], // QueueNum is write-only
      [0x1000, 4],
      [-4, 4],
      [1.5, 4],
    ];
    for (const [offset, size] of cases) {
      const data = new Uint8Array(size).fill(0xff);
      transport.read(offset, data);
      assert.ok(
        data.every((b) => b === 0),
        `read 0x${offset.toString(16)}/${size} gives 0`,
      );
    }
    for (const offset of [0, 4, 0x10, 0x34, 0x60, 0xfc, 0x18, 0x1000]) {
      transport.write(offset, new Uint8Array(4));
    }
    transport.write(0x70, new Uint8Array(1));
    assert.equal(transport.stats().malformedAccesses, cases.length + 9);
  });
});
