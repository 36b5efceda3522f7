// Tests for the xl.cfg importer, on Xen's own example files (testdata/xlexample.*) and on the
// examples in xl.cfg(5), xl-disk-configuration(5) and xl-network-configuration(5); and a
// property test that no input makes it throw anything but ImportError or SpecError.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { SpecError } from "../domain/spec.js";
import { ImportError } from "./common.js";
import { assertWarned as has, testdata } from "./testing.js";
import { importXlCfg } from "./xl.js";

/** A minimal PVH guest with the lines given added. */
const pvh = (...lines: string[]) =>
  ['name = "g"', 'type = "pvh"', 'kernel = "/k"', "memory = 256", ...lines].join("\n");

test("Xen's xlexample.pvlinux converts, with its Xen-only parts named", () => {
  const { spec, warnings } = importXlCfg(testdata("xlexample.pvlinux"), { baseDir: "/etc/xen" });
  assert.deepEqual(spec, {
    name: "example.pvlinux",
    memory: "128M",
    vcpus: 2,
    kernel: "/boot/vmlinuz",
    cmdline: "root=/dev/vda1",
    disks: [{ path: "/dev/vg/guest-volume" }],
    nets: [{ tap: "example.pvlin.0" }],
  });
  has(warnings, /^xl\.cfg: disk\[0\]: xvda appears in the guest as \/dev\/vda/);
  has(
    warnings,
    /^xl\.cfg: extra: disk names rewritten for Vessel: "root=\/dev\/xvda1" → "root=\/dev\/vda1"/,
  );
  has(warnings, /^xl\.cfg: disk\[0\]: \/dev\/vg\/guest-volume is a block device/);
  has(warnings, /^xl\.cfg: vif\[0\]: no vifname=; the TAP is named "example\.pvlin\.0"/);
  has(warnings, /^xl\.cfg: extra: the command line names no console=/);
});

test("Xen's xlexample.pvhlinux converts", () => {
  const { spec } = importXlCfg(testdata("xlexample.pvhlinux"));
  assert.equal(spec.name, "example.pvhlinux");
  assert.equal(spec.memory, "512M");
  assert.equal(spec.vcpus, 4);
  assert.deepEqual(spec.disks, [{ path: "/dev/zvol/tank/guest-volume" }]);
});

test("Xen's xlexample.hvm has no kernel, so the error names type", () => {
  assert.throws(
    () => importXlCfg(testdata("xlexample.hvm")),
    (e: unknown) =>
      e instanceof ImportError &&
      e.key === "type" &&
      e.message ===
        `xl.cfg: type: "hvm" without kernel= boots firmware from a disk, which Vessel cannot`,
  );
  const withKernel = importXlCfg(`${testdata("xlexample.hvm")}\nkernel = "/boot/vmlinuz"\n`);
  has(withKernel.warnings, /^xl\.cfg: type: "hvm": Vessel boots kernel= directly/);
  has(withKernel.warnings, /^xl\.cfg: key sdl is not supported by Vessel; ignored$/);
});

test("xl.cfg(5) SYNTAX: semicolons, number bases, lists over lines, comments, +=", () => {
  const { spec } = importXlCfg(
    [
      'name="h0"; type="pvh"',
      'kernel = "/k"',
      "memory = 0x100 # hexadecimal, as xl.cfg(5) allows",
      "vcpus = 04 # octal",
      "disk = [ '/a.img,raw,xvda,rw', # a comment inside the list",
      "         '/b.img,,xvdb,ro', ]",
      "vif = [ 'vifname=tap0' ]",
      "vif += [ 'vifname=tap1' ]",
      "extra = 'console=ttyS0'",
    ].join("\n"),
  );
  assert.equal(spec.name, "h0");
  assert.equal(spec.memory, "256M");
  assert.equal(spec.vcpus, 4);
  assert.deepEqual(spec.disks, [{ path: "/a.img" }, { path: "/b.img", readOnly: true }]);
  assert.deepEqual(spec.nets, [{ tap: "tap0" }, { tap: "tap1" }]);
  // A later assignment replaces an earlier one, as in xl.
  assert.equal(importXlCfg(pvh("vcpus = 1", "vcpus = 3")).spec.vcpus, 3);
  // A number may be given as a string, as libxlu reads it.
  assert.equal(importXlCfg(pvh('vcpus = "2"')).spec.vcpus, 2);
});

test("syntax errors name the line", () => {
  assert.throws(
    () => importXlCfg('Name = "x"'),
    /^ImportError: xl\.cfg: line 1: unexpected "Name" \(keys are lower-case\)$/,
  );
  assert.throws(() => importXlCfg(pvh("memory = 128 + 1")), /xl\.cfg: line 5: unexpected "\+"/);
  assert.throws(() => importXlCfg(pvh("extra = 'open")), /xl\.cfg: line 5: unterminated string/);
  assert.throws(
    () => importXlCfg(pvh("disk = [ 'a' 'b' ]")),
    /xl\.cfg: line 5: expected "," or "\]"/,
  );
  assert.throws(
    () => importXlCfg(pvh("vcpus = 'two'")),
    /^ImportError: xl\.cfg: vcpus: "two" is not a number$/,
  );
  assert.throws(
    () => importXlCfg('type = "pvh"\nkernel = "/k"'),
    /^ImportError: xl\.cfg: name: required$/,
  );
});

test("xl-disk-configuration(5): the four equivalent spellings are one disk", () => {
  for (const text of [
    "/dev/vg/guest-volume,,hda",
    "/dev/vg/guest-volume,raw,hda,rw",
    "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
    "raw:/dev/vg/guest-volume,hda,w",
  ]) {
    const { spec, warnings } = importXlCfg(pvh(`disk = [ '${text}' ]`));
    assert.deepEqual(spec.disks, [{ path: "/dev/vg/guest-volume" }], text);
    has(warnings, /disk\[0\]: hda appears in the guest as \/dev\/vda/);
  }
  // The deprecated prefixes of xend days are stripped; target= takes commas.
  assert.deepEqual(importXlCfg(pvh("disk = [ 'phy:/d/x.img,xvda,r' ]")).spec.disks, [
    { path: "/d/x.img", readOnly: true },
  ]);
  assert.deepEqual(importXlCfg(pvh("disk = [ 'vdev=xvda, target=/odd,name.img' ]")).spec.disks, [
    { path: "/odd,name.img" },
  ]);
});

test("xl-disk-configuration(5): cdroms are skipped, qcow2 and scripts refused", () => {
  for (const text of [
    "/root/image.iso,,hdc,cdrom",
    "/root/image.iso,,hdc,,cdrom",
    "/root/image.iso,raw,hdc,devtype=cdrom",
    "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
    "raw:/root/image.iso,hdc:cdrom,ro",
    ",hdc:cdrom,r",
  ]) {
    const { spec, warnings } = importXlCfg(pvh(`disk = [ '/a.img,,xvda', '${text}' ]`));
    assert.deepEqual(spec.disks, [{ path: "/a.img" }], text);
    has(warnings, /^xl\.cfg: disk\[1\]: cdrom drives are not supported by Vessel; skipped$/);
  }
  assert.throws(
    () => importXlCfg(pvh("disk = [ '/img.qcow2,qcow2,xvda,w' ]")),
    /^ImportError: xl\.cfg: disk\[0\]: format "qcow2" is not supported \(raw images only\)$/,
  );
  assert.throws(
    () => importXlCfg(pvh("disk = [ 'qcow2:/i,xvda,w' ]")),
    /disk\[0\]: format "qcow2"/,
  );
  assert.throws(
    () => importXlCfg(pvh("disk = [ 'iscsi:iqn.x,xvda,w' ]")),
    /disk\[0\]: script=block-iscsi/,
  );
  assert.throws(
    () => importXlCfg(pvh("disk = [ '/i,raw,xvda,rw,bogus=1' ]")),
    /disk\[0\]: unknown parameter "bogus="/,
  );
  assert.throws(
    () => importXlCfg(pvh("disk = [ '/i,raw,xvda,rx' ]")),
    /disk\[0\]: unknown access "rx"/,
  );
  const { warnings } = importXlCfg(pvh("disk = [ '/i,raw,xvda,rw,backendtype=qdisk,no-discard' ]"));
  has(warnings, /disk\[0\]: backendtype=qdisk is not honoured \(a Xen backend setting\)/);
  has(warnings, /disk\[0\]: no-discard is not honoured/);
});

test("xl-network-configuration(5) examples", () => {
  const { spec, warnings } = importXlCfg(
    pvh(
      "vif = [ 'mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0', 'mac=00:16:3E:74:34:32', '' ]",
    ),
  );
  assert.deepEqual(spec.nets, [
    { tap: "g.0", mac: "00:16:3e:74:3d:76" },
    { tap: "g.1", mac: "00:16:3e:74:34:32" },
    { tap: "g.2" },
  ]);
  has(warnings, /^xl\.cfg: vif\[0\]: model=rtl8139 is not honoured/);
  has(
    warnings,
    /^xl\.cfg: vif\[0\]: bridge=xenbr0: Vessel does not bridge; add TAP "g\.0" to xenbr0 yourself$/,
  );
  const named = importXlCfg(
    pvh("vif = [ 'vifname=vm0,ip=10.0.0.2,script=vif-route,rate=10Mb/s' ]"),
  );
  // rate limits what the guest sends; 10 Mbit/s refilled every 50 ms (the default).
  assert.deepEqual(named.spec.nets, [
    { tap: "vm0", limits: { tx: { bandwidth: 1250000, bandwidthBurst: 62500 } } },
  ]);
  for (const key of ["ip", "script"]) has(named.warnings, new RegExp(`vif\\[0\\]: ${key}=`));
  const rated = importXlCfg(
    pvh("vif = [ 'vifname=v1,rate=5MB/s@20ms', 'vifname=v2,rate=100KB/s@1s' ]"),
  );
  assert.deepEqual(
    rated.spec.nets?.map((n) => n.limits?.tx),
    [
      { bandwidth: 5000000, bandwidthBurst: 100000 },
      { bandwidth: 100000, bandwidthBurst: 100000 },
    ],
  );
  assert.throws(
    () => importXlCfg(pvh("vif = [ 'vifname=v1,rate=fast' ]")),
    /^ImportError: xl\.cfg: vif\[0\]\.rate: "fast" is not a rate like 10MB\/s/,
  );
  assert.throws(
    () => importXlCfg(pvh("vif = [ 'mac=00:16:3e' ]")),
    /^ImportError: xl\.cfg: vif\[0\]: "00:16:3e" is not a MAC address/,
  );
  assert.throws(
    () => importXlCfg(pvh("vif = [ 'vifname=a-much-too-long-name' ]")),
    /^ImportError: xl\.cfg: vif\[0\]: /,
  );
});

test("xl.cfg(5) CPU allocation: cpus lists, maxvcpus, weight and cap", () => {
  const one = importXlCfg(pvh("vcpus = 2", 'cpus = "0-3,5,^1"', "cpu_weight = 512", "cap = 150"));
  assert.equal(one.spec.cpus, "0,2-3,5");
  assert.equal(one.spec.cpuWeight, 512);
  assert.equal(one.spec.cpuCap, 150);
  // The daemon applies these (cgroup v2 and thread affinity): no warning.
  assert.deepEqual(
    one.warnings.filter((w) => /cpus|cpu_weight|cap/.test(w)),
    [],
  );

  const per = importXlCfg(pvh("vcpus = 2", "maxvcpus = 3", 'cpus = ["2", "3-8,^5"]'));
  assert.deepEqual(per.spec.vcpuPin, { "0": "2", "1": "3-4,6-8" });
  assert.equal(per.spec.maxVcpus, 3);
  has(per.warnings, /^xl\.cfg: maxvcpus: vCPU hotplug is carried into the spec but not enforced/);

  const nodes = importXlCfg(pvh('cpus = "nodes:0-3,^node:2"'));
  assert.equal(nodes.spec.cpus, undefined);
  has(nodes.warnings, /^xl\.cfg: cpus: "nodes:0-3,\^node:2" names NUMA nodes/);
  assert.equal(importXlCfg(pvh('cpus = "all"')).spec.cpus, undefined);
  assert.throws(
    () => importXlCfg(pvh('cpus = "3-1"')),
    /^ImportError: xl\.cfg: cpus: "3-1" is not a range/,
  );
  assert.throws(() => importXlCfg(pvh("cpu_weight = 0")), /^ImportError: xl\.cfg: cpu_weight: /);
  assert.throws(
    () => importXlCfg(pvh("vcpus = 4", "maxvcpus = 2")),
    /xl\.cfg: maxvcpus: 2 is below vcpus \(4\)/,
  );
});

test("memory and maxmem are MiB; problems name the xl key", () => {
  const { spec } = importXlCfg(pvh("maxmem = 1024"));
  assert.equal(spec.memory, "256M");
  assert.equal(spec.maxMemory, "1G");
  assert.throws(
    () => importXlCfg(pvh("maxmem = 128")),
    /^ImportError: xl\.cfg: maxmem: 128 is below memory \(256\)$/,
  );
  assert.throws(
    () => importXlCfg(pvh("memory = 8")),
    /^ImportError: xl\.cfg: memory: too little memory \(at least 16M\)$/,
  );
  assert.throws(() => importXlCfg(pvh("vcpus = 300")), /^ImportError: xl\.cfg: vcpus: /);
  assert.throws(() => importXlCfg(pvh('uuid = "not-a-uuid"')), /^ImportError: xl\.cfg: uuid: /);
});

test("disks keep their list order; root= follows a disk to its new name", () => {
  const { spec, warnings } = importXlCfg(
    pvh("disk = [ '/data.img,raw,xvdb,w', '/root.img,raw,xvda,w' ]", 'root = "/dev/xvda1"'),
  );
  assert.deepEqual(spec.disks, [{ path: "/data.img" }, { path: "/root.img" }]);
  assert.equal(spec.cmdline, "root=/dev/vdb1");
  has(warnings, /^xl\.cfg: disk\[0\]: xvdb appears in the guest as \/dev\/vda/);
  has(warnings, /^xl\.cfg: disk\[1\]: xvda appears in the guest as \/dev\/vdb/);
  has(
    warnings,
    /^xl\.cfg: root: disk names rewritten for Vessel: "root=\/dev\/xvda1" → "root=\/dev\/vdb1"$/,
  );
});

test("the command line is built the way xl builds it", () => {
  assert.equal(
    importXlCfg(pvh('root = "/dev/xvda1 ro"', 'extra = "console=hvc0"')).spec.cmdline,
    "root=/dev/xvda1 ro console=hvc0",
  );
  const both = importXlCfg(pvh('cmdline = "console=ttyS0"', 'extra = "quiet"'));
  assert.equal(both.spec.cmdline, "console=ttyS0");
  has(both.warnings, /^xl\.cfg: cmdline: root= and extra= are ignored in favour of cmdline=/);
  // The Xen console is hvc0; Vessel's hvc0 is virtio-console.
  assert.equal(importXlCfg(pvh('extra = "console=hvc0"')).spec.console, "virtio");
  assert.equal(importXlCfg(pvh("serial = 'pty'")).spec.console, "serial");
});

test("relative kernel, ramdisk and disk paths resolve against the config's directory", () => {
  const { spec } = importXlCfg(
    'name = "g"\nkernel = "vmlinuz"\nramdisk = "../initrd.img"\ndisk = [ "disk.img,raw,xvda,w" ]',
    { baseDir: "/etc/xen/guests" },
  );
  assert.equal(spec.kernel, "/etc/xen/guests/vmlinuz");
  assert.equal(spec.initrd, "/etc/xen/initrd.img");
  assert.deepEqual(spec.disks, [{ path: "/etc/xen/guests/disk.img" }]);
});

test("lifecycle actions map, with a warning where the meaning narrows", () => {
  const { spec, warnings } = importXlCfg(
    pvh(
      'on_poweroff = "preserve"',
      'on_reboot = "rename-restart"',
      'on_crash = "coredump-destroy"',
    ),
  );
  assert.equal(spec.onPoweroff, "preserve");
  assert.equal(spec.onReboot, "restart");
  assert.equal(spec.onCrash, "destroy");
  has(warnings, /^xl\.cfg: on_reboot: "rename-restart" becomes "restart"/);
  has(warnings, /^xl\.cfg: on_crash: "coredump-destroy" becomes "destroy"/);
  assert.throws(
    () => importXlCfg(pvh('on_crash = "soft-reset"')),
    /^ImportError: xl\.cfg: on_crash: "soft-reset"/,
  );
  assert.throws(
    () => importXlCfg(pvh('on_crash = "explode"')),
    /on_crash: "explode" is not an action/,
  );
});

test("no key is dropped in silence", () => {
  const { warnings } = importXlCfg(
    pvh(
      "vnc = 1",
      'pool = "Pool-0"',
      "memroy = 512",
      'on_watchdog = "destroy"',
      'bootloader = "pygrub"',
    ),
  );
  has(warnings, /^xl\.cfg: key vnc is not supported by Vessel; ignored$/);
  has(warnings, /^xl\.cfg: key pool is not supported by Vessel; ignored$/);
  has(warnings, /^xl\.cfg: key on_watchdog is not supported by Vessel; ignored$/);
  has(warnings, /^xl\.cfg: key memroy is not an xl\.cfg\(5\) key; ignored$/);
  has(warnings, /^xl\.cfg: bootloader: "pygrub" is not used; Vessel boots kernel= directly$/);
  assert.throws(
    () => importXlCfg('name = "g"\nbootloader = "pygrub"'),
    /^ImportError: xl\.cfg: bootloader: "pygrub" is not supported/,
  );
});

// The keys the property generators draw on: the ones the importer reads, and one it ignores.
const KEYS = (
  "name kernel memory maxmem vcpus maxvcpus cpus disk vif type builder on_crash cmdline " +
  "root extra uuid cap cpu_weight serial vnc"
).split(" ");

// xl.cfg-shaped noise: real keys and syntax pieces in random order, and arbitrary text.
const fragment = fc.oneof(
  fc.constantFrom(...KEYS),
  fc.constantFrom(" = ", "+=", "[", "]", ",", ";", "\n", "#", "'", '"', "\\", ":", "=", " "),
  fc.constantFrom(
    "'/a.img,raw,xvda,w'",
    "'phy:/dev/x,xvda,r'",
    "',hdc:cdrom,r'",
    "'target=/x'",
    "'mac=00:16:3e:00:00:01'",
    "'vifname=t0,bridge=br0'",
    "'0-3,^1'",
    "['1','2-3']",
    "0x10",
    "017",
    "'pvh'",
    "'hvm'",
    "'g'",
    "'/k'",
    "'rename-restart'",
    "99999999999999999999",
    "-1",
    "0",
  ),
  fc.string({ maxLength: 8 }),
);

// Whole settings with plausible and implausible values, after a valid base, so the property
// reaches the device and CPU parsers and not only the tokenizer.
const setting = fc
  .tuple(
    fc.constantFrom(...KEYS),
    fc.constantFrom(" = ", " += "),
    fc.oneof(
      fc.constantFrom(
        "256",
        "0x40",
        "017",
        "0",
        "-3",
        "300",
        "'pvh'",
        "'hvm'",
        "'pty'",
        "'all'",
        "'rename-restart'",
        "'0-3,^1'",
        "['1','2-3']",
        "[ '/a.img,raw,xvda,w', ',hdc:cdrom,r' ]",
        "[ 'qcow2:/q,xvdb,w' ]",
        "[ 'mac=00:16:3e:0:0:1,bridge=br0', '' ]",
        "[ 'vifname=a-much-too-long-name' ]",
        "'root=/dev/xvda1'",
      ),
      fc.string({ maxLength: 12 }).map((t) => `'${t.replace(/['\\\n]/g, "")}'`),
      fc
        .array(
          fc.string({ maxLength: 10 }).map((t) => `'${t.replace(/['\\\n]/g, "")}'`),
          { maxLength: 4 },
        )
        .map((a) => `[${a.join(",")}]`),
    ),
  )
  .map((parts) => parts.join(""));
const plausible = fc
  .array(setting, { maxLength: 8 })
  .map((lines) => ["name = 'g'", "kernel = '/k'", ...lines].join("\n"));

test("property: the xl.cfg importer throws nothing but ImportError or SpecError", () => {
  let converted = 0;
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.array(fragment, { maxLength: 40 }).map((a) => a.join("")),
        plausible,
      ),
      (text) => {
        try {
          importXlCfg(text, { baseDir: "/etc/xen" });
          converted++;
        } catch (e) {
          if (!(e instanceof ImportError || e instanceof SpecError)) throw e;
          assert.ok(!e.message.includes("\n"), `a multi-line message: ${e.message}`);
        }
      },
    ),
    { numRuns: 5000 },
  );
  assert.ok(converted > 0, "no generated config converted: the property tested only errors");
});
