// Tests for command-line value parsing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseCount, parseRate, parseSize, UsageError } from "./args.js";

test("sizes take QEMU-style units, plain numbers are MiB", () => {
  assert.equal(parseSize("--memory", "512M"), 512 * 2 ** 20);
  assert.equal(parseSize("--memory", "2G"), 2 * 2 ** 30);
  assert.equal(parseSize("--memory", "2GiB"), 2 * 2 ** 30);
  assert.equal(parseSize("--memory", "256"), 256 * 2 ** 20);
  assert.throws(() => parseSize("--memory", "lots"), /--memory: "lots" is not a size/);
  assert.throws(() => parseSize("--memory", "0"), UsageError);
});

test("counts are bounded", () => {
  assert.equal(parseCount("--cpus", "4", 1, 254), 4);
  assert.throws(() => parseCount("--cpus", "0", 1, 254), /--cpus: 0 is out of range/);
  assert.throws(() => parseCount("--cpus", "two", 1, 254), /not a whole number/);
});

test("parseRate: plain counts, 1024-based suffixes, decimals rounded down; nothing below 1", () => {
  assert.equal(parseRate("--ops", "500"), 500);
  assert.equal(parseRate("--bandwidth", "10M"), 10 * 2 ** 20);
  assert.equal(parseRate("--bandwidth", "1.5k"), 1536);
  assert.equal(parseRate("--ops", "2.9"), 2);
  for (const bad of ["0", "0.5", "-1", "10X", "", "1e3", " 5"]) {
    assert.throws(() => parseRate("--ops", bad), /^UsageError: --ops: ".*" is not a positive rate/);
  }
});
