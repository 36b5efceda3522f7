// Tests for libc's asynchronous vectored I/O: more calls at once than koffi's table of
// asynchronous calls holds (256) all complete, in their turn, and none fails.
import assert from "node:assert/strict";
import { mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import koffi from "koffi";
import * as libc from "./libc.js";

test("600 preadv calls at once all complete with their bytes (past koffi's 256)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-libc-"));
  const path = join(dir, "data");
  const data = Buffer.alloc(600 * 512);
  for (let i = 0; i < 600; i++) data.fill(i & 0xff, i * 512, (i + 1) * 512);
  writeFileSync(path, data);
  const fd = openSync(path, "r");
  const buffers: unknown[] = [];
  try {
    const results = await Promise.all(
      Array.from({ length: 600 }, (_, i) => {
        const buf = koffi.alloc("uint8_t", 512);
        buffers.push(buf);
        const iov = new BigUint64Array([BigInt(koffi.address(buf)), 512n]);
        return new Promise<[number, number]>((resolve) =>
          libc.iovAsync("read", fd, iov, 1, i * 512, (n) => {
            const first = new Uint8Array(koffi.view(buf, 512))[0] ?? -1;
            resolve([n, first]);
          }),
        );
      }),
    );
    results.forEach(([n, first], i) => {
      assert.equal(n, 512, `call ${i}`);
      assert.equal(first, i & 0xff, `call ${i} read its own block`);
    });
  } finally {
    for (const b of buffers) koffi.free(b);
    libc.close(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
