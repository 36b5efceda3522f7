// Child process for tests/jail_test.ts: opens a virtio-blk device on the image named by
// argv[2] (as `vessel run` does before its jail), installs the VMM's seccomp filter, then
// drives the device's whole I/O path (write, read, flush, discard, write-zeroes), fills a
// buffer from getrandom as virtio-rng does, and starts a worker thread that loads koffi as
// a vCPU worker does. Any call outside the allow-list kills this process with SIGSYS; on
// success it prints "io ok" and the device's counters.

import { randomFillSync } from "node:crypto";
import { Worker } from "node:worker_threads";
import {
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_WRITE_ZEROES,
} from "../src/devices/virtio/block/config.js";
import { VirtioBlock } from "../src/devices/virtio/block/device.js";
import {
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "../src/devices/virtio/block/request.js";
import { encodeSegments, requestHeader } from "../src/devices/virtio/block/testing.js";
import { sandbox } from "../src/host/mod.js";
import { vmmFilterProgram } from "../src/jail/filter.js";
import { GuestMemory, MIB, ramRegions } from "../src/memory/mod.js";
import { VirtioMmioTransport } from "../src/virtio/mmio.js";
import { type DriverQueue, VirtioMmioDriver } from "../src/virtio/testing/driver.js";

const image = process.argv[2];
if (!image) throw new Error("usage: jail_filtered_io.js IMAGE");

const memory = new GuestMemory(ramRegions(16 * MIB));
const dev = new VirtioBlock({ path: image, serial: "jail", log: () => {} });
const transport = new VirtioMmioTransport({ device: dev, memory, irq: { set() {}, pulse() {} } });
const driver = new VirtioMmioDriver({ memory, transport });
const features = driver.init();
if (!(features & (1n << VIRTIO_BLK_F_DISCARD)) || !(features & (1n << VIRTIO_BLK_F_WRITE_ZEROES)))
  throw new Error("the device offers no discard or write-zeroes");
const q = driver.queue(0);

for (const s of [process.stdout, process.stderr]) void s.writable;
sandbox.prctl(sandbox.PR_SET_NO_NEW_PRIVS, 1);
sandbox.seccompSetFilter(vmmFilterProgram(), sandbox.SECCOMP_FILTER_FLAG_TSYNC);

async function request(q: DriverQueue, header: Uint8Array, data: Uint8Array | number | null) {
  const buffers = [{ length: 16, data: header }];
  if (typeof data === "number") buffers.push({ length: data, writable: true } as never);
  else if (data) buffers.push({ length: data.length, data });
  const chain = q.add([...buffers, { length: 1, writable: true }]);
  q.kick();
  for (let i = 0; i < 5000; i++) {
    if (q.takeUsed().length > 0) {
      const status = memory.readU8(chain.buffers[chain.buffers.length - 1]?.address as number);
      if (status !== VIRTIO_BLK_S_OK) throw new Error(`request failed with status ${status}`);
      return chain;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error("request not completed");
}

const payload = new Uint8Array(8192).map((_, i) => (i * 7) & 0xff);
await request(q, requestHeader(VIRTIO_BLK_T_OUT, 8), payload);
await request(q, requestHeader(VIRTIO_BLK_T_OUT, 64), payload.subarray(0, 512)); // pwrite64
const read = await request(q, requestHeader(VIRTIO_BLK_T_IN, 8), payload.length);
const back = new Uint8Array(payload.length);
memory.read(read.buffers[1]?.address as number, back);
if (back.join() !== payload.join()) throw new Error("read back differs");
await request(q, requestHeader(VIRTIO_BLK_T_FLUSH, 0), null);
const segment = encodeSegments([{ sector: 8n, numSectors: 8, flags: 0 }]);
await request(q, requestHeader(VIRTIO_BLK_T_DISCARD, 0), segment);
await request(q, requestHeader(VIRTIO_BLK_T_WRITE_ZEROES, 0), segment);

randomFillSync(new Uint8Array(4096));
const libc = new URL("../src/host/libc.js", import.meta.url).href;
const tid = await new Promise<number>((resolve, reject) => {
  const w = new Worker(
    `const { parentPort } = require("node:worker_threads");
     import(${JSON.stringify(libc)}).then((m) => parentPort.postMessage(m.gettid()));`,
    { eval: true },
  );
  w.on("message", resolve);
  w.on("error", reject);
});
if (!(tid > 0)) throw new Error("the worker did not run");
const m = dev.metrics();
process.stdout.write(
  `io ok ${JSON.stringify({ writes: m.writeRequests, reads: m.readRequests, flushes: m.flushRequests, discards: m.discardRequests, writeZeroes: m.writeZeroesRequests })}\n`,
);
await dev.close();
memory.close();
