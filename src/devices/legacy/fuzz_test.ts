// Property-based fuzzing of every legacy device, directly and through a port bus: random
// (offset, size, value) sequences from a hostile guest must never throw, every read must
// leave a buffer of the size asked for, and the serial interrupt line must only ever be
// driven on real changes.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { Bus } from "../bus/bus.js";
import type { BusDevice, IrqLine } from "../device.js";
import { I8042 } from "./i8042.js";
import { Rtc } from "./rtc.js";
import { Serial } from "./serial.js";

interface Op {
  offset: number;
  size: number;
  value: number;
  write: boolean;
  input: number[];
}

const op: fc.Arbitrary<Op> = fc.record({
  offset: fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0, max: 8 }) },
    { weight: 1, arbitrary: fc.integer({ min: -4, max: 0x1_0000 }) },
    { weight: 1, arbitrary: fc.double() },
  ),
  size: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(1, 2, 4, 8) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 16 }) },
  ),
  value: fc.integer({ min: 0, max: 0xff }),
  write: fc.boolean(),
  input: fc.array(fc.integer({ min: 0, max: 0xff }), { maxLength: 8 }),
});

class CheckedIrq implements IrqLine {
  // Unknown until first driven: a restored UART drives its level once unconditionally.
  level: boolean | undefined;
  constructor(initial?: boolean) {
    this.level = initial;
  }
  set(level: boolean): void {
    assert.equal(typeof level, "boolean");
    assert.notEqual(level, this.level, "irq driven without a change");
    this.level = level;
  }
  pulse(): void {}
}

function run(device: BusDevice, ops: Op[], between?: (o: Op) => void): void {
  for (const o of ops) {
    const data = new Uint8Array(o.size).fill(o.value);
    if (o.write) device.write(o.offset, data);
    else device.read(o.offset, data);
    assert.equal(data.length, o.size);
    between?.(o);
  }
}

const ops = fc.array(op, { maxLength: 300 });

describe("legacy device fuzz", () => {
  it("Serial survives anything, in both IRQ modes", () => {
    fc.assert(
      fc.property(ops, fc.boolean(), fc.integer({ min: 1, max: 16 }), (list, edge, cap) => {
        const irq = new CheckedIrq(false);
        let outBytes = 0;
        const uart = new Serial({
          irq,
          irqMode: edge ? "edge" : "level",
          rxCapacity: cap,
          txBatch: 4,
          out: (b) => {
            assert.ok(b.length > 0 && b.length <= 4);
            outBytes += b.length;
          },
        });
        run(uart, list, (o) => {
          const taken = uart.enqueueInput(Uint8Array.from(o.input));
          assert.ok(taken >= 0 && taken <= o.input.length);
          assert.ok(uart.inputSpace >= 0 && uart.inputSpace <= cap);
        });
        const snap = JSON.parse(JSON.stringify(uart.state()));
        Serial.fromState(snap, { irq: new CheckedIrq(), out: () => {}, rxCapacity: cap });
        assert.ok(outBytes >= 0);
      }),
    );
  });

  it("I8042 survives anything on both ports", () => {
    fc.assert(
      fc.property(ops, (list) => {
        const kbc = new I8042({
          request: (r) => assert.equal(r, "reset"),
        });
        run(
          kbc.commandPort,
          list.filter((_, i) => i % 2 === 0),
        );
        run(
          kbc.dataPort,
          list.filter((_, i) => i % 2 === 1),
        );
      }),
    );
  });

  it("Rtc survives anything, with any clock", () => {
    fc.assert(
      fc.property(
        ops,
        fc.oneof(fc.integer({ min: -1e15, max: 1e15 }), fc.double()),
        (list, now) => {
          const rtc = new Rtc({ clock: () => now, memoryBelow4G: 1 << 30 });
          run(rtc, list);
          Rtc.fromState(JSON.parse(JSON.stringify(rtc.state())), { clock: () => now });
        },
      ),
    );
  });

  it("all of them survive anything through a port bus", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            port: fc.oneof(
              fc.constantFrom(0x60, 0x64, 0x70, 0x71, 0x3f8, 0x3fd, 0x3ff),
              fc.integer({ min: 0, max: 0xffff }),
            ),
            size: fc.integer({ min: 0, max: 9 }),
            value: fc.integer({ min: 0, max: 0xff }),
            write: fc.boolean(),
          }),
          { maxLength: 300 },
        ),
        (list) => {
          const bus = Bus.pio();
          const kbc = new I8042({ request: () => {} });
          bus.insert(0x60, 1, kbc.dataPort);
          bus.insert(0x64, 1, kbc.commandPort);
          bus.insert(0x70, 2, new Rtc());
          bus.insert(0x3f8, 8, new Serial({ irq: new CheckedIrq(false), out: () => {} }));
          for (const o of list) {
            const data = new Uint8Array(o.size).fill(o.value);
            if (o.write) bus.write(o.port, data);
            else bus.read(o.port, data);
            assert.equal(data.length, o.size);
          }
        },
      ),
    );
  });
});
