// Tests for the cgroup writer on plain directories standing in for cgroupfs and sysfs: what
// each spec setting becomes in the controller files, which disk io.max is keyed by (a
// partition's disk, a file's file system's disk), and what a host without a controller gets.

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseDomainSpec } from "../domain/spec.js";
import { DomainCgroup, memoryMaxFor, wholeDiskOf } from "./cgroup.js";
import { ioLimitsFor, limitsFor } from "./domain.js";

/** A fake sysfs: sda (8:0) with partition sda1 (8:1), and loop0 (7:0). */
function fakeSys(): string {
  const sys = mkdtempSync(join(tmpdir(), "vessel-sys-"));
  const sda = join(sys, "devices/pci0000:00/0000:00:01.1/block/sda");
  mkdirSync(join(sda, "sda1"), { recursive: true });
  writeFileSync(join(sda, "dev"), "8:0\n");
  writeFileSync(join(sda, "sda1/dev"), "8:1\n");
  writeFileSync(join(sda, "sda1/partition"), "1\n");
  const loop = join(sys, "devices/virtual/block/loop0");
  mkdirSync(loop, { recursive: true });
  writeFileSync(join(loop, "dev"), "7:0\n");
  mkdirSync(join(sys, "dev/block"), { recursive: true });
  symlinkSync(sda, join(sys, "dev/block/8:0"));
  symlinkSync(join(sda, "sda1"), join(sys, "dev/block/8:1"));
  symlinkSync(loop, join(sys, "dev/block/7:0"));
  return sys;
}

/** A cgroup directory with the interface files a kernel would show. */
function fakeCgroup(files: string[]): string {
  const root = mkdtempSync(join(tmpdir(), "vessel-cg-"));
  mkdirSync(join(root, "d"));
  for (const f of files) writeFileSync(join(root, "d", f), "");
  return root;
}

test("io.max is keyed by the whole disk: a partition becomes its disk", () => {
  const sys = fakeSys();
  assert.equal(wholeDiskOf("8:1", sys), "8:0");
  assert.equal(wholeDiskOf("8:0", sys), "8:0");
  assert.equal(wholeDiskOf("7:0", sys), "7:0");
  assert.throws(() => wholeDiskOf("0:45", sys), /0:45 is not on a block device/);
});

test("a file means the disk of its file system; one with no disk is refused by name", () => {
  // /proc is never on a disk: its device is anonymous on every Linux.
  assert.throws(() => wholeDiskOf("/proc/self/status"), /not on a block device \(device 0:\d+/);
  assert.throws(() => wholeDiskOf("/no/such/file"), { code: "ENOENT" });
});

test("the spec's I/O settings become io.weight and io.max lines", () => {
  const root = fakeCgroup(["io.weight", "io.max", "cpu.max", "cpu.weight"]);
  const cg = new DomainCgroup({ root, controllers: ["cpu", "io"] }, "d");
  const notes = cg.applyIo({
    weight: 300,
    devices: [
      { disk: "8:0", weight: 50, readBps: 10 * 2 ** 20 },
      { disk: "7:0", writeIops: 100 },
      { disk: "7:1", weight: 20 },
    ],
  });
  assert.deepEqual(notes, []);
  // Each write to a cgroup file is one line for the kernel; the fake keeps the last.
  assert.equal(readFileSync(join(root, "d/io.weight"), "utf8"), "7:1 20");
  assert.equal(
    readFileSync(join(root, "d/io.max"), "utf8"),
    "7:0 rbps=max wbps=max riops=max wiops=100",
  );
});

test("without the io controller, or without weight files, the daemon is told and carries on", () => {
  const none = new DomainCgroup({ root: fakeCgroup([]), controllers: ["cpu"] }, "d");
  assert.match(none.applyIo({ weight: 200, devices: [] }).join(), /io controller is not available/);
  assert.deepEqual(none.applyIo({ devices: [] }), [], "nothing asked, nothing to say");
  const root = fakeCgroup(["io.max"]);
  const noWeights = new DomainCgroup({ root, controllers: ["io"] }, "d");
  const notes = noWeights.applyIo({ weight: 200, devices: [{ disk: "8:0", readIops: 5 }] });
  assert.match(notes.join(), /neither io\.weight nor io\.bfq\.weight/);
  assert.equal(
    readFileSync(join(root, "d/io.max"), "utf8"),
    "8:0 rbps=max wbps=max riops=5 wiops=max",
  );
});

test("memoryLimit replaces the computed memory.max; memorySoftLimit is memory.high", () => {
  const base = { name: "m", memory: "256M", vcpus: 2, kernel: "/k" };
  assert.equal(limitsFor(parseDomainSpec(base)).memoryMaxBytes, memoryMaxFor(256 * 2 ** 20, 2, 1));
  assert.equal(limitsFor(parseDomainSpec(base)).memoryHighBytes, undefined);
  const tuned = limitsFor(parseDomainSpec({ ...base, memoryLimit: "1G", memorySoftLimit: "300M" }));
  assert.equal(tuned.memoryMaxBytes, 2 ** 30);
  assert.equal(tuned.memoryHighBytes, 300 * 2 ** 20);

  const root = fakeCgroup(["memory.max", "memory.high", "memory.swap.max"]);
  const cg = new DomainCgroup({ root, controllers: ["memory"] }, "d");
  cg.apply(tuned);
  assert.equal(readFileSync(join(root, "d/memory.max"), "utf8"), String(2 ** 30));
  assert.equal(readFileSync(join(root, "d/memory.high"), "utf8"), String(300 * 2 ** 20));
  assert.equal(readFileSync(join(root, "d/memory.swap.max"), "utf8"), "0");
  cg.apply({ memoryMaxBytes: 2 ** 30 });
  assert.equal(readFileSync(join(root, "d/memory.high"), "utf8"), "max");
});

test("ioDevices resolve at start, and a device that is no disk names its entry", () => {
  const sys = fakeSys();
  const spec = parseDomainSpec({
    name: "io",
    memory: "64M",
    vcpus: 1,
    kernel: "/k",
    ioWeight: 500,
    ioDevices: [
      { device: "8:1", readBps: 1000 },
      { device: "/proc/self/status", weight: 3 },
    ],
  });
  assert.throws(() => ioLimitsFor(spec, sys), /^Error: ioDevices\/1\/device: .*not on a block/);
  assert.deepEqual(ioLimitsFor({ ...spec, ioDevices: spec.ioDevices?.slice(0, 1) ?? [] }, sys), {
    weight: 500,
    devices: [{ disk: "8:0", readBps: 1000 }],
  });
  assert.throws(
    () => ioLimitsFor({ ...spec, ioDevices: [{ device: "/nowhere/x", weight: 1 }] }, sys),
    /ioDevices\/0\/device: \/nowhere\/x: no such file/,
  );
});
