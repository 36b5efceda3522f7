// virtio-blk end to end through the virtio-mmio transport, driven by the driver-side test
// double the way Linux's virtio_blk would: negotiate, read the config, post requests
// (direct and indirect) on the real split ring, take used elements after the interrupt.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_ID_BLOCK,
} from "../../../virtio/device.js";
import { VirtioMmioTransport } from "../../../virtio/mmio.js";
import { type DriverQueue, VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import { VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH } from "./config.js";
import { VirtioBlock } from "./device.js";
import {
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
} from "./request.js";
import { requestHeader } from "./testing.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vessel-blk-e2e-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

async function waitUsed(q: DriverQueue, n: number) {
  const got: { id: number; len: number }[] = [];
  const deadline = Date.now() + 5000;
  while (got.length < n) {
    got.push(...q.takeUsed());
    if (Date.now() > deadline) throw new Error(`timed out: ${got.length}/${n} used`);
    if (got.length < n) await new Promise((r) => setTimeout(r, 1));
  }
  return got;
}

describe("virtio-blk through virtio-mmio", () => {
  for (const indirect of [false, true]) {
    it(`writes, reads and identifies (${indirect ? "indirect" : "direct"} descriptors)`, async () => {
      const image = path.join(dir, `e2e-${indirect}.img`);
      fs.writeFileSync(image, Buffer.alloc(1 * MIB));
      const memory = new GuestMemory(ramRegions(16 * MIB));
      const dev = new VirtioBlock({ path: image, serial: "e2e", log: () => {} });
      let pulses = 0;
      const transport = new VirtioMmioTransport({
        device: dev,
        memory,
        irq: { set() {}, pulse: () => void pulses++ },
      });
      const driver = new VirtioMmioDriver({ memory, transport });
      try {
        assert.equal(driver.probe().deviceId, VIRTIO_ID_BLOCK);
        const features = driver.init();
        for (const f of [
          VIRTIO_F_INDIRECT_DESC,
          VIRTIO_F_EVENT_IDX,
          VIRTIO_BLK_F_FLUSH,
          VIRTIO_BLK_F_DISCARD,
        ]) {
          assert.notEqual(features & (1n << f), 0n);
        }
        const capacity = new DataView(driver.readConfig(0, 8).buffer).getBigUint64(0, true);
        assert.equal(capacity, 2048n);
        const q = driver.queue(0);

        const payload = new Uint8Array(4096).map((_, i) => (i * 13) & 0xff);
        const w = q.add(
          [
            { length: 16, data: requestHeader(VIRTIO_BLK_T_OUT, 40) },
            { length: 4096, data: payload },
            { length: 1, writable: true },
          ],
          { indirect },
        );
        q.kick();
        const [wu] = await waitUsed(q, 1);
        assert.deepEqual(wu, { id: w.head, len: 1 });
        assert.equal(memory.readU8(w.buffers[2]?.address as number), VIRTIO_BLK_S_OK);
        assert.ok(pulses >= 1);
        driver.ackInterrupts();

        const r = q.add(
          [
            { length: 16, data: requestHeader(VIRTIO_BLK_T_IN, 40) },
            { length: 1024, writable: true },
            { length: 3072, writable: true },
            { length: 1, writable: true },
          ],
          { indirect },
        );
        const g = q.add(
          [
            { length: 16, data: requestHeader(VIRTIO_BLK_T_GET_ID, 0) },
            { length: 20, writable: true },
            { length: 1, writable: true },
          ],
          { indirect },
        );
        const u = q.add(
          [
            { length: 16, data: requestHeader(77, 0) },
            { length: 1, writable: true },
          ],
          {
            indirect,
          },
        );
        q.kick();
        const used = await waitUsed(q, 3);
        const len = new Map(used.map((e) => [e.id, e.len]));
        assert.equal(len.get(r.head), 4097);
        assert.equal(len.get(g.head), 21);
        assert.equal(len.get(u.head), 1);
        const back = new Uint8Array(4096);
        memory.read(r.buffers[1]?.address as number, back.subarray(0, 1024));
        memory.read(r.buffers[2]?.address as number, back.subarray(1024));
        assert.deepEqual(back, payload);
        const id = new Uint8Array(20);
        memory.read(g.buffers[1]?.address as number, id);
        assert.equal(Buffer.from(id).toString("latin1"), `e2e${"\0".repeat(17)}`);
        assert.equal(memory.readU8(u.buffers[1]?.address as number), VIRTIO_BLK_S_UNSUPP);
        assert.equal(
          new Uint8Array(fs.readFileSync(image).subarray(40 * 512, 48 * 512)).join(),
          payload.join(),
        );
        const m = dev.metrics();
        assert.equal(m.writeRequests, 1);
        assert.equal(m.readRequests, 1);
        assert.equal(m.getIdRequests, 1);
        assert.equal(m.unsupportedRequests, 1);
        driver.reset();
      } finally {
        await dev.close();
        memory.close();
      }
    });
  }
});
