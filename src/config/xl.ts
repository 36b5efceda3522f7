// Import of Xen xl.cfg(5) domain configurations into the native spec. Vessel boots a kernel
// directly, so PV and PVH guests with kernel= carry over, and HVM ones only when they name a
// kernel too. Keys Vessel has no use for are reported by name (never dropped silently);
// keys that cannot be honoured at all (a qcow2 disk, a bootloader with no kernel) fail.

import {
  Conversion,
  formatSize,
  generatedTapName,
  hostCpuList,
  type ImportOptions,
  type ImportResult,
  lifecycleAction,
  macAddress,
  renameGuestDisks,
  warnIfBlockDevice,
  warnNotEnforced,
} from "./common.js";
import { parseDiskSpec, parseVifSpec } from "./xl_devices.js";
import { parseXlCfg, type XlValue } from "./xl_syntax.js";

/** Keys xl.cfg(5) defines that Vessel does not use (gathered from xl_parse.c). */
const XL_KEYS_IGNORED = new Set(
  (
    "acpi acpi_firmware acpi_laptop_slate acpi_s3 acpi_s4 altp2m altp2m_count altp2mhvm apic " +
    "arm_sci bios bios_path_override boot bootloader_args bootloader_restrict bootloader_user " +
    "channel cpuid cpus_soft device_model device_model_args device_model_override " +
    "device_model_stubdomain_override device_model_stubdomain_seclabel device_model_user " +
    "device_model_version device_tree display dm_restrict driver_domain dtdev e820_host " +
    "extratime firmware_override gfx_passthru gic_version hap hdtype hpet hvm_pirq " +
    "init_seclabel iomem ioports irqs keymap latency llc_colors localtime max_event_channels " +
    "max_grant_frames max_grant_version max_maptrack_frames mca_caps mmio_hole ms_vm_genid " +
    "msr_relaxed nestedhvm nographic nomigrate nr_spis nx on_soft_reset on_watchdog oos opengl " +
    "p9 pae passthrough pci pci_msitranslate pci_permissive pci_power_mgmt pci_seize period " +
    "pool pvcalls pvshim pvshim_cmdline pvshim_extra pvshim_path rdm rdm_mem_boundary " +
    "rtc_timeoffset sdl seclabel shadow_memory slice smbios smbios_firmware soundhw spice " +
    "spice_clipboard_sharing spice_image_compression spice_streaming_video spiceagent_mouse " +
    "spicedisable_ticketing spicehost spicepasswd spiceport spicetls_port spiceusbredirection " +
    "spicevdagent stdvga stubdomain_cmdline stubdomain_kernel stubdomain_memory " +
    "stubdomain_ramdisk sve tee timer_mode trap_unmapped_accesses tsc_mode usb usbctrl usbdev " +
    "usbdevice usbversion vdispl vendor_device vfb vga videoram vif2 viridian virtio vkb " +
    "vkb_device vmtrace_buf_kb vnc vncconsole vncdisplay vnclisten vncpasswd vncunused " +
    "vncviewer vnuma vpmu vpt_align vsnd vtpm vuart xauthority xen_platform_pci " +
    "xen_platform_pci_bar_uc xend_suspend_evtchn_compat xenstore_feature_mask xenstore_quota"
  ).split(" "),
);

/** Keys this importer reads; everything else is reported. */
const XL_KEYS_HANDLED = new Set(
  (
    "name type builder pvh memory maxmem vcpus maxvcpus cpus cpu_weight cap kernel ramdisk " +
    "cmdline root extra bootloader firmware disk vif on_poweroff on_reboot on_crash uuid serial"
  ).split(" "),
);

/** xl's network keys that only configure Xen's backend or hotplug scripts. */
const VIF_KEYS_IGNORED = new Set(
  "ip script backend gatewaydev netdev devid mtu vlan accel forwarddev".split(" "),
);

type Settings = Map<string, XlValue>;

class XlReader {
  constructor(
    private readonly c: Conversion,
    private readonly settings: Settings,
  ) {}

  keys(): IterableIterator<string> {
    return this.settings.keys();
  }

  has(key: string): boolean {
    return this.settings.has(key);
  }

  string(key: string): string | undefined {
    const v = this.settings.get(key);
    if (v === undefined) return undefined;
    if (v.kind === "list") return this.c.fail(key, "expected a single value, not a list");
    return v.text;
  }

  /** A number the way libxlu reads one: C strtol with base 0 (0x hex, leading-0 octal). */
  number(key: string): number | undefined {
    const text = this.string(key);
    if (text === undefined) return undefined;
    const n = xlNumber(text);
    if (n === undefined) this.c.fail(key, `"${text}" is not a number`);
    return n;
  }

  /** A list of strings (disk=, vif=); nested lists are not device strings. */
  strings(key: string): string[] | undefined {
    const v = this.settings.get(key);
    if (v === undefined) return undefined;
    if (v.kind !== "list") return this.c.fail(key, "expected a list: [ '...', ... ]");
    return v.items.map((item, i) => {
      if (item.kind === "list") this.c.fail(`${key}[${i}]`, "expected a string, not a list");
      return item.text;
    });
  }

  raw(key: string): XlValue | undefined {
    return this.settings.get(key);
  }
}

function xlNumber(text: string): number | undefined {
  const m = /^\s*([+-]?)(0[xX][0-9A-Fa-f]+|0[0-7]*|[1-9]\d*)$/.exec(text);
  if (!m) return undefined;
  const digits = m[2] as string;
  const value = /^0[xX]/.test(digits)
    ? Number.parseInt(digits.slice(2), 16)
    : digits.length > 1 && digits.startsWith("0")
      ? Number.parseInt(digits, 8)
      : Number(digits);
  if (!Number.isSafeInteger(value)) return undefined;
  return m[1] === "-" ? -value : value;
}

/** Import an xl.cfg(5) file's text. */
export function importXlCfg(text: string, opts: ImportOptions = {}): ImportResult {
  const c: Conversion = new Conversion("xl.cfg", opts);
  const xl = new XlReader(c, parseXlCfg(text));
  const spec: Record<string, unknown> = {};

  for (const key of xl.keys()) {
    if (XL_KEYS_HANDLED.has(key)) continue;
    if (XL_KEYS_IGNORED.has(key)) c.warn("", `key ${key} is not supported by Vessel; ignored`);
    else c.warn("", `key ${key} is not an xl.cfg(5) key; ignored`);
  }

  const name = opts.name ?? xl.string("name");
  if (name === undefined) c.fail("name", "required");
  spec.name = name;
  c.origin("name", "name");
  const uuid = xl.string("uuid");
  if (uuid !== undefined) {
    spec.uuid = uuid;
    c.origin("uuid", "uuid");
  }

  const type = guestType(c, xl);
  bootSource(c, xl, spec, type);
  memoryAndCpus(c, xl, spec);
  disks(c, xl, spec);
  nets(c, xl, spec, name);

  for (const [key, field] of [
    ["on_poweroff", "onPoweroff"],
    ["on_reboot", "onReboot"],
    ["on_crash", "onCrash"],
  ] as const) {
    const action = xl.string(key);
    if (action !== undefined) spec[field] = lifecycleAction(c, key, action);
  }
  return c.finish(spec);
}

function guestType(c: Conversion, xl: XlReader): "pv" | "pvh" | "hvm" {
  const type = xl.string("type");
  if (type !== undefined) {
    if (type !== "pv" && type !== "pvh" && type !== "hvm")
      c.fail("type", `"${type}" is not a guest type (pv, pvh, hvm)`);
    for (const old of ["builder", "pvh"])
      if (xl.has(old)) c.warn(old, "deprecated and overridden by type; ignored");
    return type;
  }
  const builder = xl.string("builder");
  if (builder !== undefined) {
    if (builder !== "hvm" && builder !== "generic")
      c.fail("builder", `"${builder}" is not a builder (generic, hvm)`);
    c.warn("builder", "deprecated in xl.cfg(5); read as type");
    return builder === "hvm" ? "hvm" : "pv";
  }
  if (xl.has("pvh")) {
    c.warn("pvh", "deprecated in xl.cfg(5); read as type");
    return xl.number("pvh") ? "pvh" : "pv";
  }
  return "pv";
}

function bootSource(
  c: Conversion,
  xl: XlReader,
  spec: Record<string, unknown>,
  type: "pv" | "pvh" | "hvm",
): void {
  const kernel = xl.string("kernel");
  const bootloader = xl.string("bootloader");
  const firmware = xl.string("firmware");
  if (kernel === undefined) {
    if (bootloader !== undefined)
      c.fail("bootloader", `"${bootloader}" is not supported: Vessel boots a kernel= directly`);
    if (firmware !== undefined)
      c.fail("firmware", `"${firmware}" is not supported: Vessel boots a kernel= directly`);
    if (type === "hvm")
      c.fail("type", `"hvm" without kernel= boots firmware from a disk, which Vessel cannot`);
    c.fail("kernel", "required (Vessel boots a kernel directly)");
  }
  for (const [key, value] of [
    ["bootloader", bootloader],
    ["firmware", firmware],
  ] as const) {
    if (value !== undefined) c.warn(key, `"${value}" is not used; Vessel boots kernel= directly`);
  }
  if (type === "hvm")
    c.warn("type", `"hvm": Vessel boots kernel= directly, with virtio devices, not emulated ones`);
  spec.kernel = c.path(kernel);
  c.origin("kernel", "kernel");
  const ramdisk = xl.string("ramdisk");
  if (ramdisk !== undefined) {
    spec.initrd = c.path(ramdisk);
    c.origin("initrd", "ramdisk");
  }

  // xl_parse.c's parse_cmdline: cmdline wins; otherwise "root=<root> <extra>".
  const cmdline = xl.string("cmdline");
  const root = xl.string("root");
  const extra = xl.string("extra");
  let line: string | undefined;
  if (cmdline !== undefined) {
    line = cmdline;
    if (root !== undefined || extra !== undefined)
      c.warn("cmdline", "root= and extra= are ignored in favour of cmdline= (as xl does)");
  } else if (root !== undefined)
    line = extra !== undefined ? `root=${root} ${extra}` : `root=${root}`;
  else line = extra;
  const lineKey = cmdlineKey(xl);
  if (line !== undefined) {
    spec.cmdline = line;
    c.origin("cmdline", lineKey);
  }

  const serial = xl.raw("serial");
  if (serial !== undefined) {
    const values = serial.kind === "list" ? serial.items : [serial];
    if (values.length === 1 && values[0]?.kind === "atom" && values[0].text === "pty")
      spec.console = "serial";
    else c.warn("serial", "only serial='pty' (the console on COM1) carries over; ignored");
  }
  // Linux under Xen PV and PVH defaults its console to hvc0, the Xen console; Vessel's hvc0
  // is virtio-console, so a guest that names hvc0 gets that, and one that names nothing is
  // told where Vessel's serial console is.
  if (/(^|\s)console=hvc0(\s|,|$)/.test(line ?? "")) spec.console = "virtio";
  else if (type !== "hvm" && line !== undefined && !/(^|\s)console=/.test(line))
    c.warn(
      lineKey,
      "the command line names no console=; Xen's PV console (hvc0) is not there under Vessel, add console=ttyS0 or console=hvc0",
    );
}

/** The key the kernel command line came from, for messages about it. */
function cmdlineKey(xl: XlReader): string {
  if (xl.has("cmdline")) return "cmdline";
  return xl.has("root") ? "root" : "extra";
}

function memoryAndCpus(c: Conversion, xl: XlReader, spec: Record<string, unknown>): void {
  const MIB = 2 ** 20;
  const memory = xl.number("memory");
  const maxmem = xl.number("maxmem");
  for (const [key, v] of [
    ["memory", memory],
    ["maxmem", maxmem],
  ] as const)
    if (v !== undefined && v <= 0) c.fail(key, "must be a positive number of MiB");
  if (memory === undefined && maxmem === undefined)
    c.warn("memory", "not given; using xl's default of 32 MiB");
  const mib = memory ?? maxmem ?? 32;
  spec.memory = formatSize(mib * MIB);
  c.origin("memory", memory !== undefined ? "memory" : "maxmem");
  if (maxmem !== undefined && maxmem < mib) c.fail("maxmem", `${maxmem} is below memory (${mib})`);
  if (maxmem !== undefined && maxmem > mib) {
    spec.maxMemory = formatSize(maxmem * MIB);
    c.origin("maxMemory", "maxmem");
  }

  const vcpus = Math.max(xl.number("vcpus") ?? 1, 1);
  spec.vcpus = vcpus;
  c.origin("vcpus", "vcpus");
  const maxvcpus = xl.number("maxvcpus");
  if (maxvcpus !== undefined && maxvcpus < vcpus)
    c.fail("maxvcpus", `${maxvcpus} is below vcpus (${vcpus})`);
  if (maxvcpus !== undefined && maxvcpus > vcpus) {
    spec.maxVcpus = maxvcpus;
    c.origin("maxVcpus", "maxvcpus");
    warnNotEnforced(c, "maxvcpus", "vCPU hotplug");
  }

  pinning(c, xl, spec, maxvcpus ?? vcpus);
  const weight = xl.number("cpu_weight");
  if (weight !== undefined) {
    spec.cpuWeight = weight;
    c.origin("cpuWeight", "cpu_weight");
  }
  const cap = xl.number("cap");
  if (cap !== undefined && cap !== 0) {
    spec.cpuCap = cap;
    c.origin("cpuCap", "cap");
  }
}

/** xl's cpus=: one CPULIST for every vCPU, or a list with one per vCPU. */
function pinning(c: Conversion, xl: XlReader, spec: Record<string, unknown>, max: number): void {
  const cpus = xl.raw("cpus");
  if (cpus === undefined) return;
  // "all" pins nothing; NUMA node lists need the host's topology, which a converter lacks.
  const convert = (key: string, text: string): string | undefined => {
    if (text.trim() === "all") return undefined;
    if (/(^|,)\s*(\^?nodes?:|all)/.test(text)) {
      c.warn(key, `"${text}" names NUMA nodes or "all" with exclusions; not carried over`);
      return undefined;
    }
    return hostCpuList(c, key, text);
  };
  if (cpus.kind === "atom") {
    const list = convert("cpus", cpus.text);
    if (list === undefined) return;
    spec.cpus = list;
    c.origin("cpus", "cpus");
    return;
  }
  const pins: Record<string, string> = {};
  cpus.items.forEach((item, vcpu) => {
    const key = `cpus[${vcpu}]`;
    if (item.kind === "list") c.fail(key, "expected a CPU list string");
    if (vcpu >= max) {
      c.warn(key, `there is no vCPU ${vcpu} (the guest has ${max}); ignored`);
      return;
    }
    const list = convert(key, item.text);
    if (list !== undefined) pins[String(vcpu)] = list;
  });
  if (Object.keys(pins).length === 0) return;
  spec.vcpuPin = pins;
  c.origin("vcpuPin", "cpus");
}

function disks(c: Conversion, xl: XlReader, spec: Record<string, unknown>): void {
  const specs = xl.strings("disk");
  if (specs === undefined) return;
  const out: Record<string, unknown>[] = [];
  const names: { key: string; guestName: string | undefined; index: number }[] = [];
  specs.forEach((text, i) => {
    const key = `disk[${i}]`;
    const d = parseDiskSpec(c, key, text);
    if (d.cdrom || d.format === "empty") {
      c.warn(key, "cdrom drives are not supported by Vessel; skipped");
      return;
    }
    if (d.format !== undefined && d.format !== "raw")
      c.fail(key, `format "${d.format}" is not supported (raw images only)`);
    if (d.script !== undefined)
      c.fail(key, `script=${d.script} targets are not supported (image files only)`);
    if (!d.target) c.fail(key, "has no target (the image path)");
    for (const other of d.others) {
      if (other === "discard") continue;
      const why =
        other === "no-discard"
          ? "Vessel's virtio-blk always offers discard"
          : "a Xen backend setting";
      c.warn(key, `${other} is not honoured (${why}); ignored`);
    }
    const path = c.path(d.target);
    warnIfBlockDevice(c, key, path);
    c.origin(`disks/${out.length}`, key);
    names.push({ key, guestName: d.vdev, index: out.length });
    out.push({ path, ...(d.readOnly ? { readOnly: true } : {}) });
  });
  if (out.length > 0) spec.disks = out;
  const cmdline = spec.cmdline as string | undefined;
  const renamed = renameGuestDisks(c, cmdlineKey(xl), cmdline, names);
  if (renamed !== undefined) spec.cmdline = renamed;
}

/**
 * xl-network-configuration's rate=RATE/s[@INTERVAL]: RATE in bytes (B, KB, MB, GB) or bits
 * (b, Kb, Mb, Gb), decimal as libxl reads them; INTERVAL (us, ms, s; default 50ms) is how
 * often the credit is refilled, so one interval's worth is the burst.
 */
export function vifRate(
  c: Conversion,
  key: string,
  text: string,
): { bandwidth: number; bandwidthBurst: number } {
  const m = /^(\d+)([KMG]?)([Bb])\/s(?:@(\d+)(us|ms|s)?)?$/.exec(text.trim());
  if (!m) c.fail(key, `"${text}" is not a rate like 10MB/s or 100Mb/s@20ms`);
  const scale = { "": 1, K: 1e3, M: 1e6, G: 1e9 }[m[2] as "" | "K" | "M" | "G"];
  const bytes = (Number(m[1]) * scale) / (m[3] === "b" ? 8 : 1);
  const unit = { us: 1e-6, ms: 1e-3, s: 1 }[(m[5] ?? "us") as "us" | "ms" | "s"];
  const interval = m[4] === undefined ? 0.05 : Number(m[4]) * unit;
  if (!(bytes >= 1) || !(interval > 0)) c.fail(key, `"${text}" is not a positive rate`);
  return {
    bandwidth: Math.round(bytes),
    bandwidthBurst: Math.max(1, Math.round(bytes * interval)),
  };
}

function nets(c: Conversion, xl: XlReader, spec: Record<string, unknown>, name: string): void {
  const specs = xl.strings("vif");
  if (specs === undefined) return;
  const out: Record<string, unknown>[] = [];
  specs.forEach((text, i) => {
    const key = `vif[${i}]`;
    let tap: string | undefined;
    let mac: string | undefined;
    let bridge: string | undefined;
    let rate: { bandwidth: number; bandwidthBurst: number } | undefined;
    for (const [k, v] of parseVifSpec(text)) {
      if (k === "vifname" && v) tap = v;
      else if (k === "rate") rate = vifRate(c, `${key}.rate`, v ?? "");
      else if (k === "mac" && v !== undefined) mac = macAddress(c, key, v);
      else if (k === "bridge" && v !== undefined) bridge = v;
      else if (k === "type" && v === "vif") continue;
      else if (k === "type" && v === "ioemu")
        c.warn(key, "type=ioemu: Vessel's NIC is virtio-net, not an emulated one");
      else if (k === "model")
        c.warn(key, `model=${v} is not honoured (Vessel's NIC is virtio-net); ignored`);
      else if (k === "trusted" || k === "untrusted" || k.startsWith("colo_"))
        c.warn(key, `${k} is a Xen backend setting; ignored`);
      else if (VIF_KEYS_IGNORED.has(k))
        c.warn(key, `${k}=${v ?? ""} is not honoured by Vessel; ignored`);
      else c.warn(key, `"${k}" is not an xl network key; ignored`);
    }
    if (tap === undefined) {
      tap = generatedTapName(name, i);
      c.warn(key, `no vifname=; the TAP is named "${tap}"`);
    }
    if (bridge !== undefined)
      c.warn(
        key,
        `bridge=${bridge}: Vessel does not bridge; add TAP "${tap}" to ${bridge} yourself`,
      );
    c.origin(`nets/${out.length}`, key);
    if (rate) c.origin(`nets/${out.length}/limits/tx`, `${key}.rate`);
    out.push({
      tap,
      ...(mac !== undefined ? { mac } : {}),
      // xl's rate limits what the guest sends (netback's transmit credit).
      ...(rate ? { limits: { tx: rate } } : {}),
    });
  });
  if (out.length > 0) spec.nets = out;
}
