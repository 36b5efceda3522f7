// Property-based fuzzing of virtio-console behind the transport: hostile rings (from the
// shared generator in virtio/testing/fuzz_cases.ts) on the receive and transmit queues,
// with host input arriving in between. Properties: nothing throws out of the device, no
// access is attempted outside RAM, deferred work ends, every byte counted as transmitted
// reached the sink, and no more input is delivered than was accepted.

import assert from "node:assert/strict";
import { after, it } from "node:test";
import fc from "fast-check";
import { VIRTIO_CONFIG_S_NEEDS_RESET, VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  closeFuzzEnv,
  fuzzEnv,
  HEAP,
  hostileRing,
  LOW_END,
  StreamRand,
} from "../../../virtio/testing/fuzz_cases.js";
import { VirtioConsole } from "./mod.js";

after(() => closeFuzzEnv());

it("virtio-console: hostile rings are served or refused, never mishandled", () => {
  const { memory, low } = fuzzEnv();
  let sunk = 0;
  const deferred: (() => void)[] = [];
  const logs: string[] = [];
  const dev = new VirtioConsole({
    out: (b) => {
      sunk += b.length;
    },
    log: (m) => logs.push(m),
    queueSize: 64,
    inputBacklog: 4096,
    txBytesPerTurn: 64 * 1024,
    defer: (fn) => deferred.push(fn),
  });
  const transport = new VirtioMmioTransport({ device: dev, memory, irq: { set() {}, pulse() {} } });
  const newDriver = () => {
    const d = new VirtioMmioDriver({ memory, transport, heapStart: HEAP, heapEnd: LOW_END });
    d.init();
    return d;
  };
  let driver = newDriver();
  const base = [0, 0];
  let accepted = 0;
  fc.assert(
    fc.property(
      // Long streams: a 64-entry ring needs several hundred values to be more than zeros.
      fc.array(fc.integer({ min: 0, max: 0xffff_ffff }), { maxLength: 1500, size: "max" }),
      fc.integer({ min: 0, max: 3 }),
      fc.integer({ min: 0, max: 6000 }),
      (values, which, input) => {
        if (transport.deviceStatus() & VIRTIO_CONFIG_S_NEEDS_RESET) {
          driver = newDriver();
          base[0] = base[1] = 0;
          deferred.length = 0;
        }
        const r = new StreamRand(values);
        const outside = memory.outside;
        const errors = transport.stats().deviceErrors;
        const before = dev.metrics();
        const sunkBefore = sunk;
        for (const index of which === 3 ? [0, 1] : [which & 1]) {
          const q = driver.queue(index);
          base[index] = hostileRing(r, low, {
            desc: q.desc,
            avail: q.avail,
            size: q.size,
            base: base[index] ?? 0,
          });
          q.kick();
        }
        accepted += dev.enqueueInput(new Uint8Array(input).fill(0x61));
        for (let turns = 0; deferred.length > 0; turns++) {
          assert.ok(turns < 64, "deferred work never ends");
          deferred.shift()?.();
        }
        const after = dev.metrics();
        assert.equal(
          sunk - sunkBefore,
          after.bytesOut - before.bytesOut,
          "bytes out reached the sink",
        );
        assert.ok(after.bytesIn <= accepted, "delivered more input than was accepted");
        assert.equal(memory.outside, outside, "an access was attempted outside guest RAM");
        assert.equal(transport.stats().deviceErrors, errors, "the device threw");
        assert.ok(!logs.some((m) => m.includes("failed:")), "processing failed inside the device");
      },
    ),
    { numRuns: 1000 },
  );
  const m = dev.metrics();
  assert.ok(m.bytesOut > 0 && m.bytesIn > 0 && m.refusedChains > 0, "explored");
});
