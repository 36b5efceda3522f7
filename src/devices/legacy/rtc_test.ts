// Tests for the CMOS RTC: time decoding in BCD and binary, 12/24-hour, setting the time,
// UIP timing, NVRAM and the memory-size bytes.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Rtc, type RtcOptions } from "./rtc.js";

const REG_A = 0x0a;
const REG_B = 0x0b;

function setup(ms: number, extra: Omit<RtcOptions, "clock"> = {}) {
  const clock = { now: ms };
  const rtc = new Rtc({ clock: () => clock.now, ...extra });
  const one = new Uint8Array(1);
  const get = (index: number): number => {
    rtc.write(0, Uint8Array.of(index));
    rtc.read(1, one);
    return one[0] ?? -1;
  };
  const set = (index: number, v: number): void => {
    rtc.write(0, Uint8Array.of(index));
    rtc.write(1, Uint8Array.of(v));
  };
  const time = (): number[] => [0, 2, 4, 6, 7, 8, 9, 0x32].map(get);
  return { rtc, clock, get, set, time };
}

// Tuesday 2024-02-27 21:05:09.250 UTC.
const T = Date.UTC(2024, 1, 27, 21, 5, 9, 250);

describe("Rtc time", () => {
  it("reads BCD, 24-hour by default", () => {
    const { time, get } = setup(T);
    // sec, min, hour, weekday (Sunday = 1), day, month, year, century
    assert.deepEqual(time(), [0x09, 0x05, 0x21, 0x03, 0x27, 0x02, 0x24, 0x20]);
    assert.equal(get(0x0d), 0x80);
    assert.equal(get(0x0c), 0);
  });

  it("reads binary when register B's DM bit is set", () => {
    const { time, set } = setup(T);
    set(REG_B, 0x06);
    assert.deepEqual(time(), [9, 5, 21, 3, 27, 2, 24, 20]);
  });

  it("reads 12-hour with the PM bit", () => {
    const { get, set, clock } = setup(T);
    set(REG_B, 0x00); // BCD, 12-hour
    assert.equal(get(4), 0x80 | 0x09);
    clock.now = Date.UTC(2024, 1, 27, 0, 30);
    assert.equal(get(4), 0x12); // 12 AM
    clock.now = Date.UTC(2024, 1, 27, 12, 30);
    assert.equal(get(4), 0x80 | 0x12); // 12 PM
    set(REG_B, 0x04); // binary, 12-hour
    assert.equal(get(4), 0x80 | 12);
  });

  it("follows the host clock", () => {
    const { get, clock } = setup(T);
    clock.now += 60_000;
    assert.equal(get(2), 0x06);
  });

  it("handles leap days and the epoch", () => {
    const a = setup(Date.UTC(2000, 1, 29, 23, 59, 59));
    assert.deepEqual(a.time(), [0x59, 0x59, 0x23, 0x03, 0x29, 0x02, 0x00, 0x20]);
    const b = setup(0);
    assert.deepEqual(b.time(), [0, 0, 0, 0x05, 0x01, 0x01, 0x70, 0x19]);
  });
});

describe("Rtc set time", () => {
  it("holds the clock under SET and runs from the written time after", () => {
    const { get, set, clock, time } = setup(T);
    set(REG_B, 0x82); // SET, BCD, 24h
    set(0, 0x30);
    set(2, 0x45);
    set(4, 0x10);
    set(7, 0x01);
    set(8, 0x03);
    set(9, 0x25);
    clock.now += 5000; // held: no change while SET
    assert.equal(get(0), 0x30);
    set(REG_B, 0x02);
    assert.deepEqual(time(), [0x30, 0x45, 0x10, 0x07, 0x01, 0x03, 0x25, 0x20]);
    clock.now += 2000;
    assert.equal(get(0), 0x32);
  });

  it("applies single-register writes to the running clock", () => {
    const { get, set } = setup(T);
    set(REG_B, 0x06); // binary
    set(2, 40);
    assert.equal(get(2), 40);
    assert.equal(get(4), 21);
  });

  it("clamps nonsense values", () => {
    const { get, set } = setup(T);
    set(8, 0xff); // month 0xff BCD
    assert.equal(get(8), 0x12);
  });
});

describe("Rtc status and NVRAM", () => {
  it("raises UIP only in the last 2 ms of a second", () => {
    const { get, clock, set } = setup(Date.UTC(2024, 0, 1, 0, 0, 0, 500));
    assert.equal(get(REG_A), 0x26);
    clock.now += 498;
    assert.equal(get(REG_A), 0xa6);
    clock.now += 2;
    assert.equal(get(REG_A), 0x26);
    clock.now += 999;
    set(REG_A, 0x76); // divider reset: no updates, no UIP
    assert.equal(get(REG_A), 0x76);
  });

  it("masks the NMI bit off the index and keeps NVRAM", () => {
    const { rtc, get, set } = setup(T);
    set(0x80 | 0x40, 0x5a);
    assert.equal(get(0x40), 0x5a);
    const one = new Uint8Array(1);
    rtc.read(0, one);
    assert.equal(one[0], 0xff); // index port is write-only
  });

  it("stores the memory size bytes", () => {
    const { get } = setup(T, { memoryBelow4G: 3 * 1024 ** 3, memoryAbove4G: 5 * 1024 ** 3 });
    const w = (lo: number): number => get(lo) | (get(lo + 1) << 8);
    assert.equal(w(0x15), 640);
    assert.equal(w(0x17), 0xffff);
    assert.equal(w(0x34), (3 * 1024 ** 3 - 16 * 1024 ** 2) / 65536);
    assert.equal(w(0x5b) | (get(0x5d) << 16), (5 * 1024 ** 3) / 65536);
  });

  it("round-trips state", () => {
    const a = setup(T);
    a.set(0x50, 7);
    a.set(REG_B, 0x06);
    a.set(2, 1);
    const s = JSON.parse(JSON.stringify(a.rtc.state()));
    const b = Rtc.fromState(s, { clock: () => T });
    assert.deepEqual(b.state(), a.rtc.state());
    assert.throws(() => Rtc.fromState({ ...s, nvram: [1] }), RangeError);
  });
});
