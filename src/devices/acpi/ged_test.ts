// Unit tests for the Generic Event Device: a press latches the event and pulses the line,
// the register read that `_EVT` performs returns it once, and hostile accesses are harmless.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { IrqLine } from "../device.js";
import { GED_EVENT_OFFSET, GED_EVENT_POWER_BUTTON, GED_MMIO_SIZE, GedDevice } from "./mod.js";

function setup() {
  const irq = { pulses: 0, levels: [] as boolean[] };
  const line: IrqLine = {
    set: (level) => irq.levels.push(level),
    pulse: () => {
      irq.pulses++;
    },
  };
  return { ged: new GedDevice(line), irq };
}

function readEvent(ged: GedDevice): number {
  const data = new Uint8Array(4);
  ged.read(GED_EVENT_OFFSET, data);
  return new DataView(data.buffer).getUint32(0, true);
}

test("pressing the power button latches the event and pulses the interrupt", () => {
  const { ged, irq } = setup();
  assert.equal(readEvent(ged), 0);
  ged.pressPowerButton();
  assert.equal(irq.pulses, 1);
  assert.equal(ged.pending, GED_EVENT_POWER_BUTTON);
  assert.equal(readEvent(ged), GED_EVENT_POWER_BUTTON);
  // Reading clears, so a second _EVT run (or a spurious one) sees nothing.
  assert.equal(readEvent(ged), 0);
  assert.equal(ged.counters.unknownAccesses, 0);
});

test("presses before the guest reads coalesce into one event", () => {
  const { ged, irq } = setup();
  ged.pressPowerButton();
  ged.pressPowerButton();
  assert.equal(irq.pulses, 2);
  assert.equal(readEvent(ged), GED_EVENT_POWER_BUTTON);
  assert.equal(readEvent(ged), 0);
});

test("a partial read clears only the bytes it returned", () => {
  const { ged } = setup();
  ged.pressPowerButton();
  const high = new Uint8Array(2);
  ged.read(GED_EVENT_OFFSET + 2, high);
  assert.deepEqual([...high], [0, 0]);
  assert.equal(ged.pending, GED_EVENT_POWER_BUTTON);
  const low = new Uint8Array(1);
  ged.read(GED_EVENT_OFFSET, low);
  assert.equal(low[0], GED_EVENT_POWER_BUTTON);
  assert.equal(ged.pending, 0);
});

test("writes are ignored and counted", () => {
  const { ged } = setup();
  ged.pressPowerButton();
  ged.write(GED_EVENT_OFFSET, Uint8Array.of(0, 0, 0, 0));
  assert.equal(ged.pending, GED_EVENT_POWER_BUTTON);
  assert.equal(ged.counters.ignoredWrites, 1);
  ged.write(8, Uint8Array.of(1));
  assert.equal(ged.counters.unknownAccesses, 1);
});

test("unknown offsets read zero, are counted, and hostile accesses never throw", () => {
  const { ged } = setup();
  const offsets = [
    -4,
    -1,
    0,
    1,
    3,
    4,
    5,
    GED_MMIO_SIZE - 1,
    GED_MMIO_SIZE,
    2 ** 32,
    0.5,
    Number.NaN,
  ];
  for (const offset of offsets) {
    for (const size of [0, 1, 2, 4, 8, 16]) {
      const data = new Uint8Array(size).fill(0xaa);
      ged.read(offset, data);
      assert.ok(
        data.every((b) => b === 0),
        `read ${size}@${offset}`,
      );
      ged.write(offset, new Uint8Array(size).fill(0xff));
    }
  }
  assert.ok(ged.counters.unknownAccesses > 0);
  // An 8-byte read at 0 returns the register in its low half and zero above.
  ged.pressPowerButton();
  const wide = new Uint8Array(8).fill(0xaa);
  ged.read(0, wide);
  assert.deepEqual([...wide], [GED_EVENT_POWER_BUTTON, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(ged.pending, 0);
});
