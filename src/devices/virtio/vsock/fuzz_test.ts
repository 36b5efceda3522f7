// Property-based fuzzing of virtio-vsock behind the transport: random conversations from a
// fast-check stream (see vsock/fuzz_case.ts for the properties checked).

import { after, it } from "node:test";
import fc from "fast-check";
import { closeFuzzEnv, StreamRand } from "../../../virtio/testing/fuzz_cases.js";
import { vsockCase } from "./fuzz_case.js";

after(() => closeFuzzEnv());

it("virtio-vsock: hostile conversations are served or refused, never mishandled", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 0xffff_ffff }), { maxLength: 2000 }), (v) => {
      vsockCase(new StreamRand(v));
    }),
    { numRuns: 500 },
  );
});
