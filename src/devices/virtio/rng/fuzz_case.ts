// The virtio-rng fuzz case, shared by the property test and src/virtio/fuzz.ts: a live
// rng behind the transport; each case writes a hostile ring, kicks, runs the deferred
// turns, and checks that every byte produced went into a validated guest buffer, that each
// used length is what was produced for it, and that nothing touched memory outside RAM.

import assert from "node:assert/strict";
import { VIRTIO_CONFIG_S_NEEDS_RESET, VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  fuzzEnv,
  HEAP,
  hostileRing,
  LOW_END,
  type Rand,
} from "../../../virtio/testing/fuzz_cases.js";
import { VirtioRng } from "./device.js";

const MAX_PER_REQUEST = 4096;
const MAX_PER_TURN = 16 * 1024;

interface RngEnv {
  rng: VirtioRng;
  transport: VirtioMmioTransport;
  driver: VirtioMmioDriver;
  deferred: (() => void)[];
  filled: number;
  base: number;
}

let env: RngEnv | undefined;

function setUp(): RngEnv {
  const { memory } = fuzzEnv();
  const deferred: (() => void)[] = [];
  const e: Partial<RngEnv> & { filled: number } = { filled: 0 };
  const rng = new VirtioRng({
    queueSize: 64,
    maxBytesPerRequest: MAX_PER_REQUEST,
    maxBytesPerTurn: MAX_PER_TURN,
    // Not getrandom: the case checks where bytes go, and a million getrandom calls of
    // up to 16 KiB would measure the kernel, not our parser.
    random: (b) => {
      assert.ok(b.length > 0 && b.length <= MAX_PER_REQUEST);
      e.filled += b.length;
    },
    defer: (fn) => deferred.push(fn),
  });
  const irq = { set() {}, pulse() {} };
  const transport = new VirtioMmioTransport({ device: rng, memory, irq });
  const driver = new VirtioMmioDriver({ memory, transport, heapStart: HEAP, heapEnd: LOW_END });
  driver.init();
  return Object.assign(e, { rng, transport, driver, deferred, base: 0 });
}

export interface RngCaseResult {
  requests: number;
  bytes: number;
  reinit: boolean;
}

export function rngCase(r: Rand): RngCaseResult {
  const { memory, low } = fuzzEnv();
  env ??= setUp();
  let reinit = false;
  if (env.transport.deviceStatus() & VIRTIO_CONFIG_S_NEEDS_RESET) {
    // The driver broke the ring last time: reset and start again on the same memory.
    env.driver = new VirtioMmioDriver({
      memory,
      transport: env.transport,
      heapStart: HEAP,
      heapEnd: LOW_END,
    });
    env.driver.init();
    env.base = 0;
    env.deferred.length = 0;
    reinit = true;
  }
  const q = env.driver.queue(0);
  const before = env.rng.metrics.snapshot();
  const filledBefore = env.filled;
  const outside = memory.outside;
  const usedBefore = q.usedIdx();
  env.base = hostileRing(r, low, { desc: q.desc, avail: q.avail, size: q.size, base: env.base });
  q.kick();
  for (let turns = 0; env.deferred.length > 0; turns++) {
    assert.ok(turns < 64, "deferred work never ends");
    env.deferred.shift()?.();
  }
  const used = q.takeUsed();
  assert.equal(used.length, (q.usedIdx() - usedBefore) & 0xffff);
  let total = 0;
  for (const u of used) {
    assert.ok(u.id < q.size, "used id out of range");
    assert.ok(u.len <= MAX_PER_REQUEST, "used length above the per-request cap");
    total += u.len;
  }
  const after = env.rng.metrics.snapshot();
  assert.equal(total, after.bytes - before.bytes, "used lengths equal bytes produced");
  assert.equal(env.filled - filledBefore, total, "bytes produced equal bytes reported");
  assert.equal(memory.outside, outside, "an access was attempted outside guest RAM");
  return { requests: after.requests - before.requests, bytes: total, reinit };
}
