// Tests for the native domain spec: the optional resource-control and vsock fields the
// importers carry over (checked here, applied by the VMM in a later issue).
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseDomainSpec, parseDomainSpecText, SpecError } from "./spec.js";

const base = { name: "d", memory: "64M", vcpus: 2, kernel: "/k" };

test("resource-control fields are accepted and checked", () => {
  const spec = parseDomainSpec({
    ...base,
    maxVcpus: 4,
    cpus: "0-3,8",
    vcpuPin: { "0": "2", "3": "4-5" },
    cpuWeight: 512,
    cpuCap: 150,
    vsock: { cid: 3, uds: "/run/v.sock" },
  });
  assert.equal(spec.vcpuPin?.["3"], "4-5");
  assert.throws(() => parseDomainSpec({ ...base, maxVcpus: 1 }), /^SpecError: maxVcpus: is below/);
  assert.throws(() => parseDomainSpec({ ...base, cpus: "3-1" }), /cpus: "3-1" is not a CPU range/);
  assert.throws(() => parseDomainSpec({ ...base, cpus: "0-9000" }), /cpus: CPU 9000 is above/);
  assert.throws(() => parseDomainSpec({ ...base, cpus: "all" }), /cpus: expected a host CPU list/);
  assert.throws(
    () => parseDomainSpec({ ...base, vcpuPin: { "2": "1" } }),
    /vcpuPin\/2: no such vCPU/,
  );
  assert.throws(
    () => parseDomainSpec({ ...base, vcpuPin: { x: "1" } }),
    /vcpuPin\/x: keys are vCPU numbers/,
  );
  assert.throws(() => parseDomainSpec({ ...base, vsock: { cid: 2, uds: "/s" } }), SpecError);
});

test("a vcpuPin written as YAML keeps its numeric keys as vCPU numbers", () => {
  const spec = parseDomainSpecText(
    "name: d\nmemory: 64M\nvcpus: 2\nkernel: /k\nvcpuPin:\n  0: '1'\n  1: 2-3\n",
  );
  assert.deepEqual(spec.vcpuPin, { "0": "1", "1": "2-3" });
});

test("I/O limits on disks and each way on network devices; a burst needs its rate", () => {
  const spec = parseDomainSpec({
    ...base,
    disks: [{ path: "/d.img", limits: { bandwidth: 1000, bandwidthBurst: 10, ops: 5 } }],
    nets: [{ tap: "t0", limits: { rx: { bandwidth: 100 }, tx: { ops: 10, opsBurst: 2 } } }],
  });
  assert.deepEqual(spec.nets?.[0]?.limits?.tx, { ops: 10, opsBurst: 2 });
  assert.throws(
    () => parseDomainSpec({ ...base, disks: [{ path: "/d", limits: { opsBurst: 3 } }] }),
    /^SpecError: disks\/0\/limits\/opsBurst: needs ops as well/,
  );
  assert.throws(
    () => parseDomainSpec({ ...base, nets: [{ tap: "t", limits: { up: { ops: 1 } } }] }),
    /nets\/0\/limits\/up: unknown key/,
  );
  assert.throws(
    () =>
      parseDomainSpec({ ...base, nets: [{ tap: "t", vhost: true, limits: { rx: { ops: 1 } } }] }),
    /^SpecError: nets\/0\/limits: not with vhost/,
  );
});

test("memory and block-I/O cgroup settings: checked against the guest's RAM and each other", () => {
  const spec = parseDomainSpec({
    ...base,
    memoryLimit: "1G",
    memorySoftLimit: "128M",
    ioWeight: 800,
    ioDevices: [
      { device: "/dev/sda", weight: 1000 },
      { device: "8:16", readBps: 10_000 },
    ],
  });
  assert.equal(spec.ioDevices?.length, 2);
  assert.throws(
    () => parseDomainSpec({ ...base, maxMemory: "128M", memoryLimit: "100M" }),
    /^SpecError: memoryLimit: is below the guest's RAM \(134217728 bytes\)/,
  );
  assert.throws(
    () => parseDomainSpec({ ...base, memoryLimit: "1G", memorySoftLimit: "2G" }),
    /^SpecError: memorySoftLimit: is above memoryLimit/,
  );
  assert.throws(
    () => parseDomainSpec({ ...base, memorySoftLimit: "lots" }),
    /^SpecError: memorySoftLimit: expected bytes or a size like 512M/,
  );
  assert.throws(() => parseDomainSpec({ ...base, ioWeight: 0 }), /^SpecError: ioWeight: /);
  assert.throws(
    () => parseDomainSpec({ ...base, ioDevices: [{ device: "/dev/sda" }] }),
    /^SpecError: ioDevices\/0: sets nothing/,
  );
  assert.throws(
    () =>
      parseDomainSpec({
        ...base,
        ioDevices: [
          { device: "/dev/sda", weight: 1 },
          { device: "/dev/sda", readIops: 1 },
        ],
      }),
    /^SpecError: ioDevices\/1\/device: same as ioDevices\/0/,
  );
  assert.throws(
    () => parseDomainSpec({ ...base, ioDevices: [{ device: "/d", readbps: 1 }] }),
    /^SpecError: ioDevices\/0\/readbps: unknown key/,
  );
});
