// Tests for the Firecracker importer, on the config files of Firecracker's own test framework
// (testdata/firecracker-*.json) and on the rules of its VmmConfig: the root drive first with
// root= appended, the default command line, and the devices Vessel has or lacks.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { SpecError } from "../domain/spec.js";
import { ImportError } from "./common.js";
import { FIRECRACKER_DEFAULT_CMDLINE, importFirecrackerJson } from "./firecracker.js";
import { assertWarned as has, testdata } from "./testing.js";

const base = {
  "boot-source": { kernel_image_path: "/k", boot_args: "console=ttyS0" },
  "machine-config": { vcpu_count: 1, mem_size_mib: 128 },
};
const convert = (extra: Record<string, unknown>, name = "fc") =>
  importFirecrackerJson(JSON.stringify({ ...base, ...extra }), { name });

test("Firecracker's tests/framework/vm_config.json", () => {
  const { spec, warnings } = importFirecrackerJson(testdata("firecracker-vm_config.json"), {
    fileName: "/srv/fc/vm_config.json",
    baseDir: "/srv/fc",
  });
  assert.deepEqual(spec, {
    name: "vm_config",
    memory: "1G",
    vcpus: 2,
    kernel: "/srv/fc/vmlinux.bin",
    cmdline: "console=ttyS0 reboot=k panic=1 root=/dev/vda rw",
    disks: [{ path: "/srv/fc/bionic.rootfs.ext4" }],
  });
  assert.deepEqual(warnings, [
    `firecracker: drives[0].cache_type: "Unsafe" is not honoured: Vessel carries out the guest's flushes`,
  ]);
});

test("Firecracker's vm_config_network.json and vm_config_with_mmdsv2.json", () => {
  for (const file of [
    "firecracker-vm_config_network.json",
    "firecracker-vm_config_with_mmdsv2.json",
  ]) {
    const { spec } = importFirecrackerJson(testdata(file), { name: "net" });
    assert.deepEqual(spec.nets, [{ tap: "tap0", mac: "06:00:c0:a8:00:02" }], file);
  }
  const { warnings } = importFirecrackerJson(testdata("firecracker-vm_config_with_mmdsv2.json"), {
    name: "net",
  });
  has(warnings, /^firecracker: mmds-config: not supported by Vessel; ignored$/);
});

test("Firecracker's vm_config_missing_vcpu_count.json fails as in Firecracker, naming the key", () => {
  assert.throws(
    () =>
      importFirecrackerJson(testdata("firecracker-vm_config_missing_vcpu_count.json"), {
        name: "x",
      }),
    (e: unknown) =>
      e instanceof ImportError && e.message === "firecracker: machine-config.vcpu_count: required",
  );
});

test("the root drive goes first and adds root= as Firecracker does", () => {
  const { spec } = convert({
    drives: [
      { drive_id: "data", path_on_host: "/data.img", is_root_device: false, is_read_only: false },
      {
        drive_id: "rootfs",
        path_on_host: "/root.img",
        is_root_device: true,
        is_read_only: true,
        partuuid: "0eaa91a0-01",
      },
    ],
  });
  assert.deepEqual(spec.disks, [{ path: "/root.img", readOnly: true }, { path: "/data.img" }]);
  assert.equal(spec.cmdline, "console=ttyS0 root=PARTUUID=0eaa91a0-01 ro");
  assert.throws(
    () =>
      convert({
        drives: [
          { drive_id: "a", path_on_host: "/a", is_root_device: true },
          { drive_id: "b", path_on_host: "/b", is_root_device: true },
        ],
      }),
    /^ImportError: firecracker: drives: more than one drive has is_root_device$/,
  );
  assert.throws(
    () => convert({ drives: [{ drive_id: "v", is_root_device: false, socket: "/run/vu.sock" }] }),
    /^ImportError: firecracker: drives\[0\]\.socket: vhost-user-block drives are not supported/,
  );
});

test("no boot_args means Firecracker's default command line, which silences the serial port", () => {
  const { spec, warnings } = importFirecrackerJson(
    JSON.stringify({ ...base, "boot-source": { kernel_image_path: "/k" } }),
    { name: "fc" },
  );
  assert.equal(spec.cmdline, FIRECRACKER_DEFAULT_CMDLINE);
  has(warnings, /^firecracker: boot-source\.boot_args: absent: .*8250\.nr_uarts=0/);
  // Without machine-config Firecracker runs 1 vCPU and 128 MiB.
  const bare = importFirecrackerJson(JSON.stringify({ "boot-source": base["boot-source"] }), {
    name: "b",
  });
  assert.equal(bare.spec.vcpus, 1);
  assert.equal(bare.spec.memory, "128M");
});

test("vsock, balloon and entropy, with what Vessel does not honour named", () => {
  const { spec, warnings } = convert({
    vsock: { guest_cid: 3, uds_path: "./v.sock", vsock_id: "vsock0" },
    balloon: { amount_mib: 64, deflate_on_oom: true, stats_polling_interval_s: 1 },
    entropy: { rate_limiter: { bandwidth: { size: 1000, refill_time: 100 } } },
    "network-interfaces": [
      {
        iface_id: "eth0",
        host_dev_name: "tap0",
        mtu: 9000,
      },
    ],
    machine: "typo",
  });
  assert.deepEqual(spec.vsock, { cid: 3, uds: "./v.sock" });
  assert.equal(spec.balloon, true);
  assert.equal(spec.rng, true);
  for (const pattern of [
    /^firecracker: vsock: under the daemon's jail, guest-to-host connections need uds_path in a directory of its own/,
    /^firecracker: vsock\.vsock_id: deprecated/,
    /^firecracker: balloon\.amount_mib: an initial target of 64 MiB is not applied/,
    /^firecracker: balloon\.deflate_on_oom: /,
    /^firecracker: balloon\.stats_polling_interval_s: /,
    /^firecracker: entropy\.rate_limiter: rate limiting is not supported/,
    /^firecracker: network-interfaces\[0\]\.mtu: /,
    /^firecracker: machine: not a Firecracker config key; ignored$/,
  ])
    has(warnings, pattern);
  assert.throws(
    () => convert({ vsock: { guest_cid: 2, uds_path: "/v" } }),
    /^ImportError: firecracker: vsock: /,
  );
});

test("rate limiters: size per refill_time becomes a rate with size as its burst", () => {
  const bucket = (size: number, refill: number) => ({ size, refill_time: refill });
  const { spec, warnings } = convert({
    drives: [
      {
        drive_id: "rootfs",
        path_on_host: "/r.img",
        is_root_device: true,
        is_read_only: false,
        rate_limiter: { bandwidth: bucket(10485760, 1000), ops: bucket(100, 100) },
      },
    ],
    "network-interfaces": [
      {
        iface_id: "eth0",
        host_dev_name: "tap0",
        rx_rate_limiter: { bandwidth: { ...bucket(2000000, 500), one_time_burst: 9 } },
        tx_rate_limiter: { ops: bucket(1000, 1000) },
      },
    ],
  });
  assert.deepEqual(spec.disks?.[0]?.limits, {
    bandwidth: 10485760,
    bandwidthBurst: 10485760,
    ops: 1000,
    opsBurst: 100,
  });
  assert.deepEqual(spec.nets?.[0]?.limits, {
    rx: { bandwidth: 4000000, bandwidthBurst: 2000000 },
    tx: { ops: 1000, opsBurst: 1000 },
  });
  has(warnings, /rx_rate_limiter\.bandwidth\.one_time_burst: an initial extra credit/);
  assert.throws(
    () =>
      convert({
        "network-interfaces": [
          { host_dev_name: "t", tx_rate_limiter: { bandwidth: { size: 10, refill_time: 0 } } },
        ],
      }),
    /network-interfaces\[0\]\.tx_rate_limiter\.bandwidth\.refill_time: required/,
  );
});

test("machine-config extras and type errors name Firecracker's keys", () => {
  const { warnings } = convert({
    "machine-config": {
      vcpu_count: 2,
      mem_size_mib: 256,
      smt: true,
      cpu_template: "T2",
      huge_pages: "2M",
    },
  });
  for (const key of ["smt", "cpu_template", "huge_pages"])
    has(warnings, new RegExp(`^firecracker: machine-config\\.${key}: `));
  assert.throws(
    () => convert({ "machine-config": { vcpu_count: "2", mem_size_mib: 128 } }),
    /^ImportError: firecracker: machine-config\.vcpu_count: expected a whole number$/,
  );
  assert.throws(
    () => convert({ "machine-config": { vcpu_count: 1, mem_size_mib: 8 } }),
    /^ImportError: firecracker: machine-config\.mem_size_mib: too little memory/,
  );
  assert.throws(
    () =>
      convert({
        "network-interfaces": [{ iface_id: "e", host_dev_name: "t", guest_mac: "06:00" }],
      }),
    /network-interfaces\[0\]\.guest_mac: "06:00" is not a MAC address/,
  );
  assert.throws(
    () => importFirecrackerJson("{", { name: "x" }),
    /^ImportError: firecracker: not valid JSON: /,
  );
  assert.throws(
    () => importFirecrackerJson(JSON.stringify(base)),
    /^ImportError: firecracker: Firecracker configs have no domain name/,
  );
});

test("property: the Firecracker importer throws nothing but ImportError or SpecError", () => {
  const value = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom("/k", 1, 128, true, null));
  const section = fc.dictionary(
    fc.constantFrom(
      "kernel_image_path",
      "boot_args",
      "vcpu_count",
      "mem_size_mib",
      "path_on_host",
      "is_root_device",
      "host_dev_name",
      "guest_mac",
      "guest_cid",
      "uds_path",
      "amount_mib",
      "x",
    ),
    value,
  );
  const config = fc.dictionary(
    fc.constantFrom(
      "boot-source",
      "machine-config",
      "drives",
      "network-interfaces",
      "vsock",
      "balloon",
      "entropy",
      "logger",
      "pmem",
      "x",
    ),
    fc.oneof(section, fc.array(section, { maxLength: 3 }), value),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        config.map((c) => JSON.stringify(c)),
        fc.string(),
      ),
      (text) => {
        try {
          importFirecrackerJson(text, { name: "p" });
        } catch (e) {
          if (!(e instanceof ImportError || e instanceof SpecError)) throw e;
        }
      },
    ),
    { numRuns: 2000 },
  );
});
