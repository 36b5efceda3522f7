// Property-based fuzzing of the virtqueue and the virtio-mmio transport with fast-check:
// the cases (testing/fuzz_cases.ts) read a random stream that fast-check generates and
// shrinks, so a failure comes back as a short stream to replay. The million-case run is
// src/virtio/fuzz.ts; these keep the suite fast.

import { after, describe, it } from "node:test";
import fc from "fast-check";
import { closeFuzzEnv, queueCase, StreamRand, transportCase } from "./testing/fuzz_cases.js";

after(() => closeFuzzEnv());

const stream = fc.array(fc.integer({ min: 0, max: 0xffff_ffff }), {
  minLength: 16,
  maxLength: 6000,
});

describe("virtio fuzz (fast-check)", () => {
  it("queue: hostile descriptor tables and avail rings never yield a bad chain", () => {
    fc.assert(
      fc.property(stream, (values) => {
        queueCase(new StreamRand(values));
      }),
      { numRuns: 3000 },
    );
  });

  it("transport: random register sequences never throw or break status invariants", () => {
    fc.assert(
      fc.property(stream, (values) => {
        transportCase(new StreamRand(values));
      }),
      { numRuns: 2000 },
    );
  });
});
