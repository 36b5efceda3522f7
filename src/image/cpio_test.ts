// Round trips through the newc writer and parser, and the checks that reject bad input.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseNewc, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, writeNewc } from "./cpio.js";

describe("newc cpio", () => {
  it("round-trips files, directories, symlinks and device nodes", () => {
    const sizes = [0, 1, 2, 3, 4, 5, 511, 4096];
    const archive = writeNewc([
      { type: "dir", path: "etc" },
      ...sizes.map((n) => ({
        type: "file" as const,
        path: `etc/f${"x".repeat(n % 7)}${n}`,
        data: new Uint8Array(n).map((_, i) => i & 0xff),
        mode: 0o600,
      })),
      { type: "symlink", path: "etc/link", target: "/bin/busybox" },
      { type: "chardev", path: "etc/console", major: 5, minor: 1 },
    ]);
    assert.equal(archive.length % 4, 0);
    const entries = parseNewc(archive);
    assert.equal(entries.length, sizes.length + 3);
    assert.equal(entries[0]?.path, "etc");
    assert.equal((entries[0]?.mode ?? 0) & S_IFMT, S_IFDIR);
    for (const [i, n] of sizes.entries()) {
      const e = entries[i + 1];
      assert.equal(e?.mode, S_IFREG | 0o600);
      assert.equal(e?.data.length, n);
      assert.ok(e?.data.every((b, j) => b === (j & 0xff)));
    }
    const link = entries.at(-2);
    assert.equal((link?.mode ?? 0) & S_IFMT, S_IFLNK);
    assert.equal(new TextDecoder().decode(link?.data), "/bin/busybox");
    const dev = entries.at(-1);
    assert.equal((dev?.mode ?? 0) & S_IFMT, S_IFCHR);
    assert.deepEqual([dev?.rdevMajor, dev?.rdevMinor], [5, 1]);
  });

  it("is reproducible", () => {
    const make = () => writeNewc([{ type: "file", path: "a", data: new Uint8Array([1, 2, 3]) }]);
    assert.deepEqual(make(), make());
  });

  it("rejects duplicate and escaping paths", () => {
    assert.throws(
      () =>
        writeNewc([
          { type: "dir", path: "a" },
          { type: "dir", path: "/a" },
        ]),
      /duplicate/,
    );
    assert.throws(() => writeNewc([{ type: "dir", path: "a/../../b" }]), /bad path/);
  });

  it("rejects truncated and corrupt archives", () => {
    const archive = writeNewc([{ type: "file", path: "a", data: new Uint8Array(100) }]);
    assert.throws(() => parseNewc(archive.subarray(0, 150)), /past the end|truncated/);
    const bad = archive.slice();
    bad[0] = 0x41;
    assert.throws(() => parseNewc(bad), /bad magic/);
  });
});
