// Unit tests for the PM register block: the exact writes Linux makes for poweroff and
// reboot reach the VM request sink, and nothing a hostile guest writes throws or misfires.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { VmRequest } from "../device.js";
import {
  ACPI_RESET_VALUE,
  AcpiPmDevice,
  PM_PORT_SIZE,
  PM_RESET_OFFSET,
  PM_SLEEP_CONTROL_OFFSET,
  PM_SLEEP_STATUS_OFFSET,
  SLP_EN,
  SLP_TYP_S5,
  SLP_TYP_SHIFT,
} from "./mod.js";

function setup() {
  const requests: [VmRequest, string][] = [];
  const pm = new AcpiPmDevice((request, reason) => requests.push([request, reason]));
  return { pm, requests };
}

test("Linux's S5 sequence requests poweroff", () => {
  const { pm, requests } = setup();
  // acpi_hw_extended_sleep: clear WAK_STS, then SLP_TYP<<2 | SLP_EN as one byte.
  pm.write(PM_SLEEP_STATUS_OFFSET, Uint8Array.of(0x80));
  assert.deepEqual(requests, []);
  pm.write(PM_SLEEP_CONTROL_OFFSET, Uint8Array.of((SLP_TYP_S5 << SLP_TYP_SHIFT) | SLP_EN));
  assert.equal(requests.length, 1);
  assert.equal(requests[0]?.[0], "poweroff");
  assert.equal(pm.counters.ignoredWrites, 0);
});

test("a write of RESET_VALUE to the reset register requests reset", () => {
  const { pm, requests } = setup();
  pm.write(PM_RESET_OFFSET, Uint8Array.of(ACPI_RESET_VALUE));
  assert.deepEqual(
    requests.map(([r]) => r),
    ["reset"],
  );
});

test("other values are counted and ignored", () => {
  const { pm, requests } = setup();
  pm.write(PM_SLEEP_CONTROL_OFFSET, Uint8Array.of(SLP_TYP_S5 << SLP_TYP_SHIFT)); // no SLP_EN
  pm.write(PM_SLEEP_CONTROL_OFFSET, Uint8Array.of((3 << SLP_TYP_SHIFT) | SLP_EN)); // S3
  pm.write(PM_RESET_OFFSET, Uint8Array.of(ACPI_RESET_VALUE + 1));
  pm.write(PM_SLEEP_STATUS_OFFSET, Uint8Array.of(0x01));
  assert.deepEqual(requests, []);
  assert.equal(pm.counters.ignoredWrites, 4);
});

test("registers read as zero", () => {
  const { pm } = setup();
  const data = Uint8Array.of(0xff, 0xff, 0xff);
  pm.read(0, data);
  assert.deepEqual([...data], [0, 0, 0]);
  assert.equal(pm.counters.unknownAccesses, 0);
});

test("hostile accesses never throw and never misfire", () => {
  const { pm, requests } = setup();
  const offsets = [-8, -1, 0, 1, 2, 3, PM_PORT_SIZE, 7, 0xffff, 2 ** 31, 2 ** 53, 0.5, Number.NaN];
  for (const offset of offsets) {
    for (const size of [0, 1, 2, 4, 8, 16]) {
      const data = new Uint8Array(size).fill(0xff);
      pm.read(offset, data);
      assert.ok(data.every((b) => b === 0));
      pm.write(offset, new Uint8Array(size).fill(0xff));
      pm.write(offset, new Uint8Array(size));
    }
  }
  // 0xff has SLP_EN set but SLP_TYP=7, and is not RESET_VALUE: nothing may fire.
  assert.deepEqual(requests, []);
  assert.ok(pm.counters.unknownAccesses > 0);
});

test("a wide write covering the control register still acts on its byte", () => {
  const { pm, requests } = setup();
  // outl(0x00000034, base): control gets 0x34, status and reset get zero.
  pm.write(0, Uint8Array.of((SLP_TYP_S5 << SLP_TYP_SHIFT) | SLP_EN, 0, 0, 0));
  assert.deepEqual(
    requests.map(([r]) => r),
    ["poweroff"],
  );
});
