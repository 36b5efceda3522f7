// Tests for device flag parsing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { openDevices, parseDisk } from "./devices.js";

test("--disk takes a path with ro and serial options", () => {
  assert.deepEqual(parseDisk("/a.img"), { path: "/a.img", readOnly: false });
  assert.deepEqual(parseDisk("/a.img,ro,serial=abc"), {
    path: "/a.img",
    readOnly: true,
    serial: "abc",
  });
  assert.throws(() => parseDisk("/a.img,fast"), /--disk \/a.img,fast: unknown option "fast"/);
  assert.throws(() => parseDisk(",ro"), /has no path/);
});

test("a disk that cannot be opened is named in one line", async () => {
  await assert.rejects(
    openDevices(["/nonexistent.img"], false),
    /--disk \/nonexistent.img: .*ENOENT|no such file/i,
  );
});
