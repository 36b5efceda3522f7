// Property-based fuzzing of virtio-rng request handling behind the transport: hostile
// rings from a fast-check stream (see rng/fuzz_case.ts for the properties checked).

import { after, it } from "node:test";
import fc from "fast-check";
import { closeFuzzEnv, StreamRand } from "../../../virtio/testing/fuzz_cases.js";
import { rngCase } from "./fuzz_case.js";

after(() => closeFuzzEnv());

it("virtio-rng: hostile rings are served or refused, never mishandled", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 0xffff_ffff }), { maxLength: 4000 }), (v) => {
      rngCase(new StreamRand(v));
    }),
    { numRuns: 2000 },
  );
});
