// Tests for the 16550A UART: the register sequences Linux's 8250 driver performs at probe
// and startup, interrupt raising and clearing, loopback, the bounded input ring, output
// batching and snapshots.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { IrqLine } from "../device.js";
import { Serial, type SerialOptions } from "./serial.js";
import { FAST_RING_BYTES, FastPathProducer, type SerialFastPath } from "./serial_fast.js";

const THR = 0;
const IER = 1;
const IIR = 2;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

class RecordingIrq implements IrqLine {
  level = false;
  readonly events: string[] = [];
  set(level: boolean): void {
    this.level = level;
    this.events.push(level ? "high" : "low");
  }
  pulse(): void {
    this.events.push("pulse");
  }
}

function setup(extra: Partial<SerialOptions> = {}) {
  const irq = new RecordingIrq();
  const chunks: number[][] = [];
  const uart = new Serial({ irq, out: (b) => chunks.push(Array.from(b)), ...extra });
  const rd = (off: number): number => {
    const d = new Uint8Array(1);
    uart.read(off, d);
    return d[0] ?? -1;
  };
  const wr = (off: number, v: number): void => uart.write(off, Uint8Array.of(v));
  const output = (): string => String.fromCharCode(...chunks.flat());
  return { uart, irq, chunks, rd, wr, output };
}

describe("Serial probe (Linux autoconfig)", () => {
  it("passes the scratch, IER, loopback and FIFO checks as a 16550A", () => {
    const { rd, wr } = setup();
    wr(SCR, 0xa5);
    assert.equal(rd(SCR), 0xa5);
    wr(IER, 0);
    assert.equal(rd(IER), 0);
    wr(IER, 0xff);
    assert.equal(rd(IER), 0x0f); // bits 4-7 read zero: not an XScale/16750
    wr(IER, 0);
    // Loopback check: MCR = LOOP | OUT2 | RTS must read back DCD | CTS.
    wr(MCR, 0x1a);
    assert.equal(rd(MSR) & 0xf0, 0x90);
    wr(MCR, 0);
    // FIFO probe: IIR bits 7:6 both set once FCR enables the FIFO.
    wr(FCR, 0x01);
    assert.equal(rd(IIR) >> 6, 3);
    // 16750 probe: IIR bit 5 stays clear.
    wr(LCR, 0x80);
    wr(FCR, 0x21);
    assert.equal((rd(IIR) >> 5) & 1, 0);
    wr(LCR, 0);
    assert.equal(rd(IIR) & 0x0f, 0x01);
  });
});

describe("Serial init and transmit", () => {
  it("programs the divisor, 8N1 and FIFO, then delivers written bytes", () => {
    const { rd, wr, output, chunks, uart } = setup();
    wr(LCR, 0x80); // DLAB
    wr(THR, 0x01); // DLL: 115200 baud
    wr(IER, 0x00); // DLM
    assert.equal(rd(THR), 0x01);
    assert.equal(rd(IER), 0x00);
    wr(LCR, 0x03); // 8N1, DLAB off
    assert.equal(rd(LCR), 0x03);
    wr(FCR, 0xc7);
    wr(MCR, 0x0b);
    for (const c of "hi\nok") {
      assert.equal(rd(LSR) & 0x60, 0x60);
      wr(THR, c.charCodeAt(0));
    }
    // "hi\n" was flushed by the newline; "ok" waits for the burst to end.
    assert.deepEqual(chunks.length, 1);
    assert.equal(output(), "hi\n");
    uart.flush();
    assert.equal(output(), "hi\nok");
  });

  it("flushes when the guest turns from transmitting to polling", () => {
    const { rd, wr, output } = setup();
    wr(THR, 0x41);
    rd(LSR); // first poll after a write: still a burst
    assert.equal(output(), "");
    rd(LSR); // second poll: the burst is over
    assert.equal(output(), "A");
  });

  it("writes through with txBatch 1", () => {
    const { wr, chunks } = setup({ txBatch: 1 });
    wr(THR, 0x41);
    wr(THR, 0x42);
    assert.deepEqual(chunks, [[0x41], [0x42]]);
  });

  it("splits wide accesses into byte cycles", () => {
    const { uart, output } = setup();
    uart.write(7, Uint8Array.of(0x99)); // SCR
    const d = new Uint8Array(2);
    uart.read(6, d); // MSR, SCR
    assert.equal(d[1], 0x99);
    uart.write(0, Uint8Array.of(0x41, 0x00)); // THR then IER
    assert.equal(output(), "A");
  });
});

describe("Serial interrupts", () => {
  it("raises THRE on ETBEI enable, clears it on IIR read, re-raises after a THR write", () => {
    const { rd, wr, irq } = setup();
    assert.equal(irq.level, false);
    wr(IER, 0x02);
    assert.equal(irq.level, true);
    assert.equal(rd(IIR) & 0x0f, 0x02);
    assert.equal(irq.level, false);
    assert.equal(rd(IIR) & 0x0f, 0x01);
    wr(THR, 0x41);
    assert.equal(irq.level, true);
    assert.equal(rd(IIR) & 0x0f, 0x02);
    wr(IER, 0);
    assert.equal(irq.level, false);
    assert.deepEqual(irq.events, ["high", "low", "high", "low"]);
  });

  it("passes Linux's UART_BUG_THRE test (THRE again after IER off/on)", () => {
    const { rd, wr } = setup();
    wr(IER, 0x02);
    const iir1 = rd(IIR);
    wr(IER, 0);
    wr(IER, 0x02);
    const iir2 = rd(IIR);
    wr(IER, 0);
    assert.equal(iir1 & 0x01, 0);
    assert.equal(iir2 & 0x01, 0);
  });

  it("raises received-data when enabled and clears it when drained", () => {
    let drained = 0;
    const { rd, wr, irq, uart } = setup({ onInputDrained: () => drained++ });
    assert.equal(uart.enqueueInput(Uint8Array.of(0x61, 0x62)), 2);
    assert.equal(irq.level, false); // ERBFI off
    assert.equal(rd(LSR) & 0x01, 0x01);
    wr(IER, 0x01);
    assert.equal(irq.level, true);
    assert.equal(rd(IIR) & 0x0f, 0x04);
    assert.equal(rd(THR), 0x61);
    assert.equal(irq.level, true);
    assert.equal(rd(THR), 0x62);
    assert.equal(irq.level, false);
    assert.equal(drained, 1);
    assert.equal(rd(LSR) & 0x01, 0);
    assert.equal(rd(IIR) & 0x0f, 0x01);
  });

  it("reports RDA ahead of THRE", () => {
    const { rd, wr, uart } = setup();
    wr(IER, 0x03);
    uart.enqueueInput(Uint8Array.of(1));
    assert.equal(rd(IIR) & 0x0f, 0x04);
    rd(THR);
    assert.equal(rd(IIR) & 0x0f, 0x02);
  });

  it("pulses once per rise in edge mode", () => {
    const { wr, rd, irq } = setup({ irqMode: "edge" });
    wr(IER, 0x02);
    rd(IIR);
    wr(THR, 0x41);
    wr(THR, 0x42); // still pending: no second edge
    assert.deepEqual(irq.events, ["pulse", "pulse"]);
  });

  it("raises modem-status on loopback MCR changes when EDSSI is set", () => {
    const { rd, wr, irq } = setup();
    wr(MCR, 0x10); // loop, all outputs off: DCD/DSR/CTS drop
    wr(IER, 0x08);
    assert.equal(irq.level, true);
    assert.equal(rd(IIR) & 0x0f, 0x00);
    assert.equal(rd(MSR), 0x0b); // DDCD | DDSR | DCTS, status all low
    assert.equal(irq.level, false);
  });
});

describe("Serial loopback", () => {
  it("feeds THR to RBR and keeps output from the host", () => {
    const { rd, wr, output, uart } = setup();
    wr(MCR, 0x10);
    wr(THR, 0x55);
    assert.equal(rd(LSR) & 0x01, 1);
    assert.equal(rd(THR), 0x55);
    assert.equal(uart.enqueueInput(Uint8Array.of(1)), 0);
    assert.equal(uart.counters().rxDropped, 1);
    uart.flush();
    assert.equal(output(), "");
  });
});

describe("Serial input ring", () => {
  it("takes what fits and refuses the rest", () => {
    const { rd, uart } = setup({ rxCapacity: 4 });
    assert.equal(uart.enqueueInput(Uint8Array.of(1, 2, 3)), 3);
    assert.equal(uart.enqueueInput(Uint8Array.of(4, 5, 6)), 1);
    assert.equal(uart.inputSpace, 0);
    assert.equal(uart.counters().rxDropped, 2);
    assert.deepEqual([rd(0), rd(0), rd(0), rd(0)], [1, 2, 3, 4]);
    assert.equal(rd(LSR) & 1, 0);
    assert.equal(rd(0), 0); // empty RBR reads zero
  });

  it("is cleared by FCR receiver reset", () => {
    const { rd, wr, uart } = setup();
    uart.enqueueInput(Uint8Array.of(1, 2));
    wr(FCR, 0x03);
    assert.equal(rd(LSR) & 1, 0);
  });
});

describe("Serial snapshots", () => {
  it("round-trips through JSON", () => {
    const a = setup();
    a.wr(LCR, 0x80);
    a.wr(THR, 0x03);
    a.wr(LCR, 0x03);
    a.wr(SCR, 0x42);
    a.wr(IER, 0x01);
    a.uart.enqueueInput(Uint8Array.of(7, 8));
    a.wr(THR, 0x41); // batched; state() must flush it
    const json = JSON.parse(JSON.stringify(a.uart.state()));
    assert.equal(a.output(), "A");
    const irq = new RecordingIrq();
    const b = Serial.fromState(json, { irq, out: () => {} });
    assert.equal(irq.level, true); // RDA pending was re-driven
    assert.deepEqual(b.state(), a.uart.state());
    const d = new Uint8Array(1);
    b.read(0, d);
    assert.equal(d[0], 7);
  });

  it("rejects a corrupt snapshot", () => {
    const { uart } = setup();
    const s = uart.state();
    const opts = { irq: new RecordingIrq(), out: () => {} };
    assert.throws(() => Serial.fromState({ ...s, lcr: 256 }, opts), RangeError);
    assert.throws(() => Serial.fromState({ ...s, rx: [1, -1] }, opts), RangeError);
    assert.throws(
      () => Serial.fromState({ ...s, rx: [1, 2] }, { ...opts, rxCapacity: 1 }),
      RangeError,
    );
  });
});

describe("Serial hostile accesses", () => {
  it("ignores malformed sizes and stray offsets", () => {
    const { uart } = setup();
    const d = new Uint8Array(3);
    uart.read(0, d);
    assert.deepEqual(Array.from(d), [0xff, 0xff, 0xff]);
    uart.write(0, d);
    assert.equal(uart.counters().malformed, 2);
    const one = new Uint8Array(1);
    uart.read(8, one);
    assert.equal(one[0], 0xff);
    uart.read(Number.NaN, one);
    assert.equal(one[0], 0xff);
    uart.write(-1, one);
  });
});

describe("Serial fast path (LSR and THR answered by the vCPU threads)", () => {
  function fast(extra: Partial<SerialOptions> = {}) {
    const s = setup({ fastPath: true, ...extra });
    const producer = new FastPathProducer(s.uart.fastPath as SerialFastPath);
    return { ...s, producer };
  }

  it("queues THR bytes in order with forwarded writes, and hands them out on a drain", () => {
    const { uart, wr, producer, output } = fast();
    for (const c of "ab") assert.equal(producer.writeThr(c.charCodeAt(0)), true);
    assert.equal(output(), "", "queued bytes wait for the main thread");
    // A forwarded write comes after the queued ones, as the guest wrote them.
    wr(THR, "c".charCodeAt(0));
    assert.equal(producer.writeThr("d".charCodeAt(0)), true);
    uart.flush();
    assert.equal(output(), "abcd");
  });

  it("answers LSR as the model does, data-ready included", () => {
    const { uart, rd, producer } = fast();
    assert.equal(producer.readLsr(), rd(LSR));
    assert.equal(producer.readLsr() & 0x60, 0x60);
    uart.enqueueInput(Uint8Array.of(0x41));
    assert.equal(producer.readLsr() & 1, 1);
    assert.equal(rd(THR), 0x41);
    assert.equal(producer.readLsr() & 1, 0);
  });

  it("leaves THR to the model while DLAB, loopback or the THR-empty interrupt is on", () => {
    const { wr, producer, output, irq } = fast();
    wr(LCR, 0x80);
    assert.equal(producer.writeThr(1), false, "DLAB: offset 0 is the divisor latch");
    wr(LCR, 0x03);
    wr(MCR, 0x10);
    assert.equal(producer.writeThr(1), false, "loopback feeds the receiver");
    wr(MCR, 0x0b);
    wr(IER, 0x02);
    assert.equal(producer.writeThr(1), false, "THRE interrupts must follow each write");
    wr(IER, 0);
    assert.equal(producer.writeThr("z".charCodeAt(0)), true);
    wr(SCR, 0);
    assert.equal(output(), "z");
    assert.equal(irq.level, false, "no THRE interrupt with IER 0");
  });

  it("leaves LSR to the model while an error bit is set (reading clears it)", () => {
    const irq = new RecordingIrq();
    const state = new Serial({ irq, out: () => {} }).state();
    const uart = Serial.fromState({ ...state, lsr: 0x02 }, { irq, out: () => {}, fastPath: true });
    const producer = new FastPathProducer(uart.fastPath as SerialFastPath);
    assert.equal(producer.readLsr(), -1);
    const d = new Uint8Array(1);
    uart.read(LSR, d);
    assert.equal((d[0] ?? 0) & 0x02, 0x02);
    assert.equal(producer.readLsr() & 0x02, 0);
  });

  it("refuses a byte when the ring is full (the write then takes the slow path)", () => {
    const { uart, producer, output } = fast({ txBatch: 1 << 16 });
    let taken = 0;
    while (producer.writeThr(0x2e)) taken++;
    assert.equal(taken, FAST_RING_BYTES);
    uart.flush();
    assert.equal(output().length, FAST_RING_BYTES);
    assert.equal(producer.writeThr(0x2e), true, "room again after the drain");
  });

  it("state() includes queued bytes in the output before the snapshot", () => {
    const { uart, producer, output } = fast();
    producer.writeThr(0x51);
    uart.state();
    assert.equal(output(), "Q");
  });

  it("is off unless asked for", () => {
    assert.equal(setup().uart.fastPath, undefined);
  });
});
