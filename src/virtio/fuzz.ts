// The long fuzz run (not part of the test suite): at least a million cases per parser of
// guest data (virtqueue chain parsing, virtio-mmio register sequences, virtio-rng request
// handling, virtio-vsock packet handling), each from its own xorshift seed so a failure
// prints a replayable seed.
//
//   node dist/src/virtio/fuzz.js [cases=1000000] [seed]

import { rngCase } from "../devices/virtio/rng/fuzz_case.js";
import { vsockCase } from "../devices/virtio/vsock/fuzz_case.js";
import {
  closeFuzzEnv,
  queueCase,
  type Rand,
  transportCase,
  XorShift,
} from "./testing/fuzz_cases.js";

const cases = Number(process.argv[2] ?? 1_000_000);
const seed = Number(process.argv[3] ?? 0x5eed) >>> 0;
if (!Number.isSafeInteger(cases) || cases <= 0) {
  process.stderr.write(`fuzz: cases must be a positive integer, not ${process.argv[2]}\n`);
  process.exit(1);
}

function caseSeed(i: number): number {
  // splitmix-style mixing so neighbouring cases get unrelated streams
  let x = (seed ^ Math.imul(i + 1, 0x9e37_79b9)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85eb_ca6b) >>> 0;
  x = Math.imul(x ^ (x >>> 13), 0xc2b2_ae35) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

function run<T>(name: string, fn: (r: Rand) => T, tally: (t: T) => void, summary: () => string) {
  const start = performance.now();
  for (let i = 0; i < cases; i++) {
    const s = caseSeed(i);
    try {
      tally(fn(new XorShift(s)));
    } catch (e) {
      process.stdout.write(`${name}: FAILED at case ${i} (xorshift seed 0x${s.toString(16)})\n`);
      throw e;
    }
  }
  const secs = ((performance.now() - start) / 1000).toFixed(1);
  process.stdout.write(`${name}: ${cases} cases ok in ${secs} s; ${summary()}\n`);
}

process.stdout.write(`virtio fuzz: ${cases} cases per parser, seed 0x${seed.toString(16)}\n`);

const q = { popped: 0, malformed: 0, broken: 0, withChain: 0 };
run(
  "queue chain parsing",
  queueCase,
  (t) => {
    q.popped += t.popped;
    q.malformed += t.malformed;
    q.broken += t.broken ? 1 : 0;
    q.withChain += t.popped > 0 ? 1 : 0;
  },
  () =>
    `${q.popped} chains accepted (in ${q.withChain} cases), ${q.malformed} refused as malformed, ${q.broken} rings stopped as broken`,
);

const tr = { activated: 0, malformed: 0 };
run(
  "transport register sequences",
  transportCase,
  (t) => {
    tr.activated += t.activated ? 1 : 0;
    tr.malformed += t.malformed;
  },
  () => `${tr.activated} sequences reached DRIVER_OK, ${tr.malformed} malformed accesses counted`,
);

const rng = { requests: 0, bytes: 0, reinit: 0 };
run(
  "rng request handling",
  rngCase,
  (t) => {
    rng.requests += t.requests;
    rng.bytes += t.bytes;
    rng.reinit += t.reinit ? 1 : 0;
  },
  () =>
    `${rng.requests} requests served, ${rng.bytes} bytes, ${rng.reinit} driver re-inits after a broken ring`,
);

const vs = { sent: 0, received: 0, refused: 0, connections: 0, bytes: 0 };
run(
  "vsock packet handling",
  vsockCase,
  (t) => {
    vs.sent += t.sent;
    vs.received += t.received;
    vs.refused += t.refused;
    vs.connections += t.connections;
    vs.bytes += t.bytes;
  },
  () =>
    `${vs.sent} guest packets, ${vs.received} packets to the guest, ${vs.refused} packets or chains refused, ${vs.connections} connections, ${vs.bytes} payload bytes`,
);

closeFuzzEnv();
process.stdout.write("virtio fuzz: all properties held\n");
