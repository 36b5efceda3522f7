// Tests for the 8042 controller: the probe Linux's i8042 driver runs, and the reset paths.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { VmRequest } from "../device.js";
import { I8042 } from "./i8042.js";

const OBF = 0x01;
const AUXDATA = 0x20;

function setup() {
  const requests: Array<[VmRequest, string]> = [];
  const kbc = new I8042({ request: (r, why) => requests.push([r, why]) });
  const one = new Uint8Array(1);
  const status = (): number => {
    kbc.commandPort.read(0, one);
    return one[0] ?? -1;
  };
  const data = (): number => {
    kbc.dataPort.read(0, one);
    return one[0] ?? -1;
  };
  const cmd = (v: number): void => kbc.commandPort.write(0, Uint8Array.of(v));
  const put = (v: number): void => kbc.dataPort.write(0, Uint8Array.of(v));
  /** Send a command the way Linux's __i8042_command does and collect its replies. */
  const command = (c: number, params: number[] = [], replies = 0): number[] => {
    cmd(c);
    for (const p of params) put(p);
    const out: number[] = [];
    for (let i = 0; i < replies; i++) {
      assert.ok(status() & OBF, `reply ${i} to 0x${c.toString(16)} missing`);
      out.push(data());
    }
    return out;
  };
  return { kbc, requests, status, data, cmd, put, command };
}

describe("I8042 Linux probe", () => {
  it("answers flush, self-test, CTR read/write and port tests", () => {
    const { status, command } = setup();
    // i8042_flush: nothing pending, and the keylock bit says "not inhibited".
    assert.equal(status() & OBF, 0);
    assert.ok(status() & 0x10);
    assert.deepEqual(command(0xaa, [], 1), [0x55]);
    const [ctr] = command(0x20, [], 1);
    assert.equal(ctr, 0x45);
    // i8042_controller_init: disable kbd interface and interrupt, write back, read back.
    const next = ((ctr ?? 0) | 0x10) & ~0x01;
    command(0x60, [next]);
    assert.deepEqual(command(0x20, [], 1), [next]);
    assert.deepEqual(command(0xab, [], 1), [0x00]);
    assert.deepEqual(command(0xa9, [], 1), [0x00]);
    command(0xae);
    assert.equal((command(0x20, [], 1)[0] ?? 0) & 0x10, 0);
    command(0xad);
    assert.equal((command(0x20, [], 1)[0] ?? 0) & 0x10, 0x10);
    command(0xa7);
    assert.equal((command(0x20, [], 1)[0] ?? 0) & 0x20, 0x20);
    command(0xa8);
    assert.equal((command(0x20, [], 1)[0] ?? 0) & 0x20, 0);
    assert.equal(status() & OBF, 0);
  });

  it("loops AUX data back with the AUXDATA status bit, keyboard data without it", () => {
    const { status, command } = setup();
    command(0xd3, [0x5a]);
    assert.equal(status() & (OBF | AUXDATA), OBF | AUXDATA);
    assert.deepEqual(command(0x20, [], 0), []); // a new command replaces the reply
    const { status: s2, command: c2, data } = setup();
    c2(0xd2, [0x1c]);
    assert.equal(s2() & (OBF | AUXDATA), OBF);
    assert.equal(data(), 0x1c);
    assert.equal(s2() & OBF, 0);
  });

  it("drops bytes for absent devices and counts them", () => {
    const { kbc, put, command, status } = setup();
    put(0xf2); // atkbd GETID to the keyboard
    command(0xd4, [0xff]); // psmouse reset to the AUX device
    assert.equal(status() & OBF, 0);
    assert.equal(kbc.counters().droppedDeviceBytes, 2);
  });
});

describe("I8042 reset", () => {
  it("turns command 0xFE into a reset request", () => {
    const { requests, cmd } = setup();
    cmd(0xfe);
    assert.deepEqual(requests, [["reset", "i8042 reset"]]);
  });

  it("does not reset on pulses that leave bit 0 alone", () => {
    const { requests, cmd } = setup();
    cmd(0xff);
    cmd(0xfd);
    assert.equal(requests.length, 0);
  });

  it("resets when the output port's reset bit is cleared", () => {
    const { requests, command } = setup();
    assert.deepEqual(command(0xd0, [], 1), [0x03]);
    command(0xd1, [0x02]);
    assert.deepEqual(requests, [["reset", "i8042 output port reset"]]);
  });
});

describe("I8042 hostile accesses", () => {
  it("answers stray offsets, wide and malformed sizes with all-ones and never acts on them", () => {
    const { kbc, requests } = setup();
    const four = new Uint8Array(4);
    kbc.commandPort.read(0, four);
    assert.deepEqual(Array.from(four), [0xff, 0xff, 0xff, 0xff]);
    kbc.commandPort.write(0, Uint8Array.of(0xfe, 0, 0, 0));
    kbc.commandPort.write(3, Uint8Array.of(0xfe));
    const three = new Uint8Array(3);
    kbc.dataPort.read(0, three);
    assert.deepEqual(Array.from(three), [0xff, 0xff, 0xff]);
    assert.equal(requests.length, 0);
    assert.equal(kbc.counters().malformed, 1);
  });
});
