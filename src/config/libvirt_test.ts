// Tests for the libvirt importer: the examples of libvirt's formatdomain documentation put
// together as one domain, two real virt-install outputs from virt-manager's test suite,
// and the rules of formatdomain for units, devices and consoles.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { SpecError } from "../domain/spec.js";
import { ImportError } from "./common.js";
import { importLibvirtXml } from "./libvirt.js";
import { assertWarned as has, testdata } from "./testing.js";

/** A direct-kernel-boot domain with `inner` added inside <domain>. */
const domain = (inner: string, type = "kvm") =>
  `<domain type='${type}'><name>d</name><memory unit='MiB'>256</memory>` +
  `<os><type arch='x86_64'>hvm</type><kernel>/k</kernel></os>${inner}</domain>`;

test("formatdomain's examples: direct kernel boot, CPU allocation and tuning, devices", () => {
  const { spec, warnings } = importLibvirtXml(testdata("formatdomain-direct-kernel.xml"));
  assert.deepEqual(spec, {
    name: "MyGuest",
    uuid: "4dea22b3-1d52-d8f3-2516-782e98ab3fa0",
    memory: "512M",
    vcpus: 1,
    kernel: "/root/f8-i386-vmlinuz",
    initrd: "/root/f8-i386-initrd",
    cmdline: "console=ttyS0 ks=http://example.com/f8-i386/os/",
    nets: [{ tap: "MyGuest.0" }, { tap: "mytap1" }],
    console: "virtio",
    rng: true,
    balloon: true,
    onPoweroff: "destroy",
    onReboot: "restart",
    onCrash: "restart",
    maxVcpus: 2,
    cpus: "1-2,4,6",
    vcpuPin: { "0": "1,3-4", "1": "0-1" },
    // shares 2048 on libvirt's 1024 scale; emulatorpin for the VMM's own threads.
    cpuWeight: 512,
    vmmCpus: "1-3",
  });
  for (const element of [
    "genid",
    "os/loader",
    "os/dtb",
    "os/acpi",
    "vcpus",
    "maxMemory",
    "on_lockfailure",
    "devices/interface/script",
    "devices/interface/downscript",
    "devices/rng/rate",
  ])
    has(warnings, new RegExp(`^libvirt: ${element}: not honoured by Vessel; ignored$`));
  assert.ok(!warnings.some((w) => w.includes("vcpu/@cpuset")), "pinning is applied: no warning");
  assert.ok(!warnings.some((w) => /cputune/.test(w)), "cputune is applied: no warning");
  has(warnings, /^libvirt: devices\/interface\[0\]: no target dev; the TAP is named "MyGuest\.0"$/);
  // Title, description and metadata describe; they are not settings to warn about.
  assert.ok(!warnings.some((w) => /title|description|metadata/.test(w)));
});

test("virt-install output: a qcow2 disk is refused, naming the attribute", () => {
  assert.throws(
    () => importLibvirtXml(testdata("virt-install-kvm-fedoralatest-url.xml")),
    (e: unknown) =>
      e instanceof ImportError &&
      e.message ===
        `libvirt: devices/disk[0]/driver/@type: "qcow2" is not supported (raw images only)`,
  );
});

test("virt-install output with its disk made raw converts, every PC device named", () => {
  const xml = testdata("virt-install-kvm-fedoralatest-url.xml").replace(
    `type="qcow2"`,
    `type="raw"`,
  );
  const { spec, warnings } = importLibvirtXml(xml);
  assert.deepEqual(spec, {
    name: "fedora",
    uuid: "00000000-1111-2222-3333-444444444444",
    memory: "64M",
    vcpus: 2,
    kernel: "/VIRTINST-TESTSUITE/vmlinuz",
    initrd: "/VIRTINST-TESTSUITE/initrd.img",
    cmdline: "console=ttyS0",
    disks: [{ path: "/pool-dir/testvol1.img" }],
    nets: [{ tap: "fedora.0", mac: "00:11:22:33:44:55" }],
    rng: true,
    balloon: true,
    onReboot: "destroy",
  });
  has(warnings, /^libvirt: os\/type\/@machine: "q35" is not honoured/);
  has(warnings, /^libvirt: devices\/interface\[0\]: bridge testsuitebr0: Vessel does not bridge/);
  has(warnings, /^libvirt: devices\/controller: not honoured by Vessel \(16 of them\); ignored$/);
  for (const element of ["features", "cpu", "clock", "pm", "devices/emulator"])
    has(warnings, new RegExp(`^libvirt: ${element}: not honoured by Vessel; ignored$`));
  assert.ok(
    !warnings.some((w) => w.includes("metadata")),
    "metadata is description, not a setting",
  );
  for (const element of ["input", "graphics", "video"])
    has(warnings, new RegExp(`^libvirt: devices/${element}: not honoured by Vessel`));
});

test("virt-install output with a cdrom and an e1000 NIC: skipped and warned", () => {
  const { spec, warnings } = importLibvirtXml(testdata("virt-install-location-manual-kernel.xml"));
  assert.equal(spec.disks, undefined);
  assert.equal(spec.console, "serial");
  has(warnings, /^libvirt: devices\/disk\[0\]: cdrom drives are not supported by Vessel; skipped$/);
  has(warnings, /^libvirt: devices\/interface\[0\]\/model: "e1000" is not honoured/);
  has(warnings, /^libvirt: devices\/redirdev: not honoured by Vessel \(2 of them\); ignored$/);
});

test("the interface virsh dumpxml shows for an OpenStack instance (type ethernet, a TAP)", () => {
  const { spec, warnings } = importLibvirtXml(
    domain(`<devices><interface type='ethernet'>
      <mac address='fa:16:3e:60:25:8b'/>
      <target dev='tapc5301737-88'/>
      <model type='virtio'/>
      <driver name='qemu'/>
      <mtu size='1500'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/>
    </interface></devices>`),
  );
  assert.deepEqual(spec.nets, [{ tap: "tapc5301737-88", mac: "fa:16:3e:60:25:8b" }]);
  has(warnings, /^libvirt: devices\/interface\/driver: not honoured/);
  has(warnings, /^libvirt: devices\/interface\/mtu: not honoured/);
  assert.ok(!warnings.some((w) => /alias|address/.test(w)), warnings.join("\n"));
});

test("memory units follow formatdomain (KiB by default; KB is 1000 bytes)", () => {
  const mem = (value: string, unit?: string) =>
    importLibvirtXml(
      `<domain type='kvm'><name>d</name><memory${unit ? ` unit='${unit}'` : ""}>${value}</memory>` +
        "<os><type>hvm</type><kernel>/k</kernel></os></domain>",
    ).spec.memory;
  assert.equal(mem("524288"), "512M");
  assert.equal(mem("524288", "k"), "512M");
  assert.equal(mem("512", "M"), "512M");
  assert.equal(mem("512", "MiB"), "512M");
  assert.equal(mem("2", "G"), "2G");
  assert.equal(mem("2", "gib"), "2G");
  assert.equal(mem("1073741824", "b"), "1G");
  assert.equal(mem("1073741824", "bytes"), "1G");
  // 512 MB is 512,000,000 bytes: 500000 KiB, a multiple of 4 KiB.
  assert.equal(mem("512", "MB"), "500000K");
  assert.throws(
    () => mem("512", "parsecs"),
    /^ImportError: libvirt: memory\/@unit: "parsecs" is not a unit/,
  );
  assert.throws(() => mem("lots"), /^ImportError: libvirt: memory: "lots" is not a whole number/);
  assert.throws(() => mem("8", "M"), /^ImportError: libvirt: memory: too little memory/);
  // libvirt rounds up to KiB; Vessel wants whole pages, and says so naming the element.
  assert.throws(
    () => mem("20481", "KiB"),
    /^ImportError: libvirt: memory: must be a multiple of 4 KiB$/,
  );
});

test("currentMemory below memory leaves room for the balloon", () => {
  const { spec } = importLibvirtXml(domain("<currentMemory unit='MiB'>128</currentMemory>"));
  assert.equal(spec.memory, "128M");
  assert.equal(spec.maxMemory, "256M");
  assert.throws(
    () => importLibvirtXml(domain("<currentMemory unit='GiB'>1</currentMemory>")),
    /^ImportError: libvirt: currentMemory: is above memory$/,
  );
});

test("hypervisor type, OS type and architecture", () => {
  has(
    importLibvirtXml(domain("", "qemu")).warnings,
    /^libvirt: domain\/@type: "qemu" \(emulation\)/,
  );
  assert.throws(
    () => importLibvirtXml(domain("", "xen")),
    /^ImportError: libvirt: domain\/@type: "xen" is not supported/,
  );
  assert.throws(
    () => importLibvirtXml(domain("").replace("x86_64", "aarch64")),
    /^ImportError: libvirt: os\/type\/@arch: "aarch64" is not supported \(x86_64 only\)$/,
  );
  assert.throws(
    () =>
      importLibvirtXml(
        "<domain type='kvm'><name>d</name><memory>262144</memory><os><type>hvm</type><boot dev='hd'/></os></domain>",
      ),
    /^ImportError: libvirt: os\/kernel: required/,
  );
});

test("disks: raw files, read-only, serial, block devices; names follow virtio order", () => {
  const { spec, warnings } = importLibvirtXml(
    domain(`<devices>
      <disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>
        <source file='root.img'/><target dev='sda' bus='sata'/><serial>ROOT-1</serial></disk>
      <disk type='block' device='disk'><source dev='/dev/vg/data'/><target dev='vdb' bus='virtio'/><readonly/></disk>
    </devices>`).replace(
      "<kernel>/k</kernel>",
      "<kernel>/k</kernel><cmdline>root=/dev/sda1 ro</cmdline>",
    ),
    { baseDir: "/var/lib/vm" },
  );
  assert.deepEqual(spec.disks, [
    { path: "/var/lib/vm/root.img", serial: "ROOT-1" },
    { path: "/dev/vg/data", readOnly: true },
  ]);
  assert.equal(spec.cmdline, "root=/dev/vda1 ro");
  has(warnings, /^libvirt: devices\/disk\[0\]\/driver\/@cache: "none" is not honoured/);
  has(warnings, /^libvirt: devices\/disk\[0\]: sda appears in the guest as \/dev\/vda/);
  has(warnings, /^libvirt: os\/cmdline: disk names rewritten for Vessel/);
  has(warnings, /^libvirt: devices\/disk\[1\]: \/dev\/vg\/data is a block device/);
  assert.throws(
    () =>
      importLibvirtXml(
        domain(
          "<devices><disk type='network'><source protocol='rbd' name='p/i'/></disk></devices>",
        ),
      ),
    /^ImportError: libvirt: devices\/disk\[0\]\/@type: "network" is not supported/,
  );
  assert.throws(
    () =>
      importLibvirtXml(
        domain(
          "<devices><disk type='file'><source file='/a'/><serial>ABCDEFGHIJKLMNOPQRSTUVWXYZ</serial></disk></devices>",
        ),
      ),
    /^ImportError: libvirt: devices\/disk\[0\]\/serial: /,
  );
});

test("interfaces: TAP types carry over, the rest is refused", () => {
  const { warnings } = importLibvirtXml(
    domain(
      "<devices><interface type='network'><source network='default'/><target dev='vnet3'/></interface></devices>",
    ),
  );
  has(
    warnings,
    /^libvirt: devices\/interface\[0\]: network default: Vessel does not join libvirt networks; add TAP "vnet3"/,
  );
  assert.throws(
    () => importLibvirtXml(domain("<devices><interface type='user'/></devices>")),
    /^ImportError: libvirt: devices\/interface\[0\]\/@type: "user" is not supported/,
  );
  assert.throws(
    () =>
      importLibvirtXml(
        domain("<devices><interface type='ethernet'><mac address='zz'/></interface></devices>"),
      ),
    /^ImportError: libvirt: devices\/interface\[0\]\/mac: "zz" is not a MAC address/,
  );
});

test("disk <iotune> and interface <bandwidth> become I/O limits; what has no counterpart is named", () => {
  const { spec, warnings } = importLibvirtXml(
    domain(`<devices>
      <disk type='file' device='disk'><source file='/d.img'/><target dev='vda' bus='virtio'/>
        <iotune><total_bytes_sec>10000000</total_bytes_sec><total_iops_sec>400</total_iops_sec>
          <total_iops_sec_max>2000</total_iops_sec_max><total_iops_sec_max_length>3</total_iops_sec_max_length>
          <read_bytes_sec>5000</read_bytes_sec></iotune>
      </disk>
      <interface type='ethernet'><target dev='tap9'/>
        <bandwidth><inbound average='1000' peak='5000' burst='1024'/><outbound average='128'/></bandwidth>
      </interface></devices>`),
  );
  assert.deepEqual(spec.disks?.[0]?.limits, { bandwidth: 10000000, ops: 400, opsBurst: 6000 });
  assert.deepEqual(spec.nets?.[0]?.limits, {
    rx: { bandwidth: 1024000, bandwidthBurst: 1048576 },
    tx: { bandwidth: 131072 },
  });
  has(warnings, /iotune\/read_bytes_sec: read_bytes_sec is not honoured/);
  has(warnings, /bandwidth\/inbound\/@peak: not honoured/);
  assert.throws(
    () =>
      importLibvirtXml(
        domain(
          "<devices><disk type='file'><source file='/d'/><iotune><total_bytes_sec>x</total_bytes_sec></iotune></disk></devices>",
        ),
      ),
    /iotune\/total_bytes_sec: "x" is not a whole number/,
  );
});

test("consoles: the first <console> decides; pty serial is COM1", () => {
  // The pair virsh dumpxml prints for a pty serial console, target models and all.
  const dumped = importLibvirtXml(
    domain(`<devices><serial type='pty'><source path='/dev/pts/3'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target><alias name='serial0'/></serial>
      <console type='pty' tty='/dev/pts/3'><source path='/dev/pts/3'/><target type='serial' port='0'/>
      <alias name='serial0'/></console></devices>`),
  );
  assert.equal(dumped.spec.console, "serial");
  assert.deepEqual(dumped.warnings, []);
  const console = (devices: string) => importLibvirtXml(domain(`<devices>${devices}</devices>`));
  assert.equal(console("<serial type='pty'><target port='0'/></serial>").spec.console, "serial");
  assert.equal(
    console("<serial type='pty'/><console type='pty'><target type='serial' port='0'/></console>")
      .spec.console,
    "serial",
  );
  assert.equal(
    console("<console type='pty'><target type='virtio'/></console>").spec.console,
    "virtio",
  );
  has(
    console("<serial type='file'><source path='/var/log/s.log'/></serial>").warnings,
    /^libvirt: devices\/serial\[0\]\/@type: "file": Vessel keeps the console itself/,
  );
});

test("lifecycle, balloon and rng", () => {
  const { spec, warnings } = importLibvirtXml(
    domain(
      "<on_crash>coredump-restart</on_crash><devices><memballoon model='none'/>" +
        "<rng model='virtio'><backend model='egd' type='udp'/></rng></devices>",
    ),
  );
  assert.equal(spec.onCrash, "restart");
  assert.equal(spec.balloon, false);
  assert.equal(spec.rng, true);
  has(warnings, /^libvirt: on_crash: "coredump-restart" becomes "restart"/);
  has(
    warnings,
    /^libvirt: devices\/rng\[0\]\/backend: "egd": Vessel feeds the device from getrandom$/,
  );
});

test("XML that is not a domain, not well-formed or carries a DTD is refused", () => {
  assert.throws(
    () => importLibvirtXml("<network><name>x</name></network>"),
    /^ImportError: libvirt: the root element is <network>, not <domain>$/,
  );
  assert.throws(
    () => importLibvirtXml("<domain type='kvm'><name>x</domain>"),
    /^ImportError: libvirt: not well-formed XML: line 1: /,
  );
  assert.throws(
    () =>
      importLibvirtXml(
        `<!DOCTYPE d [<!ENTITY e "x">]><domain type='kvm'><name>&e;</name></domain>`,
      ),
    /^ImportError: libvirt: a DOCTYPE is not expected/,
  );
});

test("property: the libvirt importer throws nothing but ImportError or SpecError", () => {
  const element = fc.letrec((tie) => ({
    node: fc.oneof(
      { depthSize: "small" },
      fc.constantFrom(
        "<kernel>/k</kernel>",
        "<memory unit='M'>64</memory>",
        "<vcpu current='1'>2</vcpu>",
        "<disk type='file'><source file='/a'/></disk>",
        "<interface type='ethernet'/>",
        "<console type='pty'/>",
        "text",
        "&amp;",
      ),
      fc
        .tuple(
          fc.constantFrom("os", "devices", "cputune", "disk", "vcpupin", "memballoon", "x"),
          fc.array(tie("node"), { maxLength: 4 }),
        )
        .map(([name, kids]) => `<${name}>${kids.join("")}</${name}>`),
    ),
  }));
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc
          .array(element.node, { maxLength: 6 })
          .map((k) => `<domain type='kvm'><name>d</name>${k.join("")}</domain>`),
      ),
      (xml) => {
        try {
          importLibvirtXml(xml);
        } catch (e) {
          if (!(e instanceof ImportError || e instanceof SpecError)) throw e;
        }
      },
    ),
    // "<A/": the validator passes it, the parser then threw a plain Error (found by a run).
    { numRuns: 2000, examples: [["<A/"], ["<domain/"]] },
  );
});

test("formatdomain's memtune and blkiotune become memory.max/high, io.weight and io.max", () => {
  const { spec, warnings } = importLibvirtXml(
    domain(`<blkiotune>
    <weight>800</weight>
    <device><path>/dev/sda</path><weight>1000</weight></device>
    <device>
      <path>/dev/sdb</path>
      <weight>500</weight>
      <read_bytes_sec>10000</read_bytes_sec>
      <write_bytes_sec>10000</write_bytes_sec>
      <read_iops_sec>20000</read_iops_sec>
      <write_iops_sec>20000</write_iops_sec>
    </device>
    <device><path>/dev/sdc</path><read_iops_sec>0</read_iops_sec></device>
  </blkiotune>
  <memtune>
    <hard_limit unit='G'>1</hard_limit>
    <soft_limit unit='M'>128</soft_limit>
    <swap_hard_limit unit='G'>2</swap_hard_limit>
    <min_guarantee unit='bytes'>67108864</min_guarantee>
  </memtune>`),
  );
  assert.equal(spec.memoryLimit, "1G");
  assert.equal(spec.memorySoftLimit, "128M");
  assert.equal(spec.ioWeight, 800);
  // /dev/sdc's only setting is 0, libvirt's "no limit": nothing to write for it.
  assert.deepEqual(spec.ioDevices, [
    { device: "/dev/sda", weight: 1000 },
    {
      device: "/dev/sdb",
      weight: 500,
      readBps: 10000,
      writeBps: 10000,
      readIops: 20000,
      writeIops: 20000,
    },
  ]);
  has(
    warnings,
    /^libvirt: memtune\/swap_hard_limit: not honoured: Vessel keeps guest RAM out of swap/,
  );
  has(warnings, /^libvirt: memtune\/min_guarantee: not honoured/);
  assert.ok(
    !warnings.some((w) => /blkiotune|memtune\/(hard|soft)_limit/.test(w)),
    warnings.join("\n"),
  );
});

test("memtune's 'unlimited' is no limit; a hard_limit below the RAM or a bad weight fails", () => {
  const unlimited = importLibvirtXml(
    domain("<memtune><hard_limit unit='KiB'>9007199254740991</hard_limit></memtune>"),
  );
  assert.equal(unlimited.spec.memoryLimit, undefined);
  assert.throws(
    () => importLibvirtXml(domain("<memtune><hard_limit unit='M'>100</hard_limit></memtune>")),
    /memtune\/hard_limit: is below the guest.s RAM/,
  );
  assert.throws(
    () => importLibvirtXml(domain("<blkiotune><weight>0</weight></blkiotune>")),
    /blkiotune\/weight: expected a weight from 1 to 10000/,
  );
  assert.throws(
    () => importLibvirtXml(domain("<blkiotune><device><weight>5</weight></device></blkiotune>")),
    /blkiotune\/device\/path: required/,
  );
});
