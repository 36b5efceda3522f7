// Import of libvirt domain XML (https://libvirt.org/formatdomain.html) for direct-kernel-boot
// KVM domains into the native spec. Every element read is marked; at the end each element
// nobody read gets one warning naming it, so nothing in the XML is dropped without a word.
// PCI/drive addresses, aliases and per-device boot order are libvirt's own placement
// details and are passed over quietly, as are the descriptive title, description, metadata.

import { XMLParser, XMLValidator } from "fast-xml-parser";
import type { IoLimits, NetLimits } from "../domain/spec.js";
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

interface XNode {
  name: string;
  attrs: Record<string, string>;
  children: XNode[];
  text: string;
  /** Where it is, with indices among same-named siblings: "devices/disk[1]". */
  key: string;
  /** The same without indices, for grouping warnings: "devices/disk". */
  pattern: string;
}

const QUIET = new Set(["address", "alias", "boot", "title", "description", "metadata"]);

/** Elements that repeat in practice: always indexed, so a lone disk is still "disk[0]". */
const INDEXED = new Set(["disk", "interface", "serial", "console", "rng", "vcpupin"]);

// Keys are relative to <domain> ("devices/disk[0]"), the way formatdomain names elements.
function buildTree(raw: unknown[], parentKey: string, parentPattern: string, top = false): XNode[] {
  const items: { name: string; attrs: Record<string, string>; body: Record<string, unknown>[] }[] =
    [];
  for (const item of raw as Record<string, unknown>[]) {
    const name = Object.keys(item).find((k) => k !== ":@" && k !== "#text");
    if (name === undefined) continue;
    const attrs = (item[":@"] as Record<string, string> | undefined) ?? {};
    items.push({ name, attrs, body: (item[name] as Record<string, unknown>[]) ?? [] });
  }
  const total = new Map<string, number>();
  for (const { name } of items) total.set(name, (total.get(name) ?? 0) + 1);
  const seen = new Map<string, number>();
  return items.map(({ name, attrs, body }) => {
    const nth = seen.get(name) ?? 0;
    seen.set(name, nth + 1);
    const indexed = INDEXED.has(name) || (total.get(name) ?? 0) > 1;
    const key = `${parentKey ? `${parentKey}/` : ""}${name}${indexed ? `[${nth}]` : ""}`;
    const pattern = parentPattern ? `${parentPattern}/${name}` : name;
    const children = top ? buildTree(body, "", "") : buildTree(body, key, pattern);
    const text = body
      .map((b) => b["#text"])
      .filter((t) => t !== undefined)
      .join("");
    return { name, attrs, text, key, pattern, children };
  });
}

/** Reads the tree, remembering what was read. */
class Reader {
  readonly used = new Set<XNode>();

  use(node: XNode): XNode {
    this.used.add(node);
    return node;
  }

  all(parent: XNode, name: string): XNode[] {
    return parent.children.filter((n) => n.name === name).map((n) => this.use(n));
  }

  one(parent: XNode, name: string): XNode | undefined {
    const found = parent.children.find((n) => n.name === name);
    return found && this.use(found);
  }

  /** One warning per kind of element nobody read (the top-most one of each unread subtree). */
  reportUnused(c: Conversion, root: XNode): void {
    const counts = new Map<string, number>();
    const walk = (node: XNode) => {
      for (const child of node.children) {
        if (this.used.has(child)) walk(child);
        else if (!QUIET.has(child.name))
          counts.set(child.pattern, (counts.get(child.pattern) ?? 0) + 1);
      }
    };
    walk(root);
    for (const [pattern, n] of counts)
      c.warn(pattern, `not honoured by Vessel${n > 1 ? ` (${n} of them)` : ""}; ignored`);
  }
}

/** libvirt's scaled integers (virScaleInteger): b/bytes, k/KiB, KB, M/MiB, MB, ... E/EiB. */
function scaledBytes(c: Conversion, node: XNode, defaultUnit: string): number {
  const text = node.text.trim();
  if (!/^\d+$/.test(text)) c.fail(node.key, `"${text}" is not a whole number`);
  const unit = node.attrs.unit ?? defaultUnit;
  const m = /^([bkmgtpe])(.*)$/i.exec(unit);
  const rest = m?.[2]?.toLowerCase();
  let scale: number | undefined;
  if (/^(b|bytes)$/i.test(unit)) scale = 1;
  else if (m && (rest === "" || rest === "ib" || rest === "b")) {
    const power = "bkmgtpe".indexOf((m[1] as string).toLowerCase());
    scale = (rest === "b" ? 1000 : 1024) ** power;
  }
  if (scale === undefined)
    c.fail(`${node.key}/@unit`, `"${unit}" is not a unit (KiB, MiB, GiB...)`);
  const bytes = Number(text) * scale;
  if (!Number.isSafeInteger(bytes)) c.fail(node.key, `${text} ${unit} is out of range`);
  // libvirt itself rounds every memory size up to whole KiB.
  return Math.ceil(bytes / 1024) * 1024;
}

const PARSER = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: "",
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: true,
  processEntities: true,
  htmlEntities: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
});

function parseXml(c: Conversion, text: string): XNode {
  // libvirt's XML has no DTD; refusing one keeps entity expansion out of the picture.
  if (/<!DOCTYPE/i.test(text)) c.fail("", "a DOCTYPE is not expected in domain XML");
  const valid = XMLValidator.validate(text);
  if (valid !== true) c.fail("", `not well-formed XML: line ${valid.err.line}: ${valid.err.msg}`);
  let parsed: unknown[];
  try {
    parsed = PARSER.parse(text) as unknown[];
  } catch (e) {
    // The validator passes some texts the parser then throws on (e.g. `<A/`).
    c.fail("", `not well-formed XML: ${e instanceof Error ? e.message.split("\n")[0] : e}`);
  }
  const roots = buildTree(parsed, "", "", true);
  const root = roots[0];
  if (root?.name !== "domain")
    c.fail("", `the root element is <${root?.name ?? "nothing"}>, not <domain>`);
  return root;
}

/** Import libvirt domain XML text. */
export function importLibvirtXml(text: string, opts: ImportOptions = {}): ImportResult {
  const c: Conversion = new Conversion("libvirt", opts);
  const domain = parseXml(c, text);
  const r = new Reader();
  r.use(domain);
  const spec: Record<string, unknown> = {};

  const hv = domain.attrs.type;
  if (hv === undefined) c.fail("domain/@type", "required (kvm)");
  if (hv === "qemu") c.warn("domain/@type", `"qemu" (emulation): Vessel runs the guest on KVM`);
  else if (hv !== "kvm")
    c.fail("domain/@type", `"${hv}" is not supported (Vessel is a KVM hypervisor)`);

  const own = r.one(domain, "name")?.text;
  const name = opts.name ?? own;
  if (name === undefined) c.fail("name", "required");
  spec.name = name;
  c.origin("name", "name");
  const uuid = r.one(domain, "uuid");
  if (uuid) {
    spec.uuid = uuid.text;
    c.origin("uuid", "uuid");
  }

  memory(c, r, domain, spec);
  memtune(c, r, domain, spec);
  vcpus(c, r, domain, spec);
  blkiotune(c, r, domain, spec);
  os(c, r, domain, spec);
  for (const [key, field] of [
    ["on_poweroff", "onPoweroff"],
    ["on_reboot", "onReboot"],
    ["on_crash", "onCrash"],
  ] as const) {
    const action = r.one(domain, key);
    if (action) spec[field] = lifecycleAction(c, key, action.text);
  }
  const devices = r.one(domain, "devices");
  if (devices) {
    disks(c, r, devices, spec);
    interfaces(c, r, devices, spec, name);
    consoles(c, r, devices, spec);
    otherDevices(c, r, devices, spec);
  }
  r.reportUnused(c, domain);
  return c.finish(spec);
}

function memory(c: Conversion, r: Reader, domain: XNode, spec: Record<string, unknown>): void {
  const memory = r.one(domain, "memory");
  if (!memory) c.fail("memory", "required (Vessel does not size memory from NUMA cells)");
  const max = scaledBytes(c, memory, "KiB");
  const current = r.one(domain, "currentMemory");
  const now = current ? scaledBytes(c, current, "KiB") : max;
  if (now > max) c.fail("currentMemory", "is above memory");
  spec.memory = formatSize(now);
  c.origin("memory", current ? "currentMemory" : "memory");
  if (now < max) {
    spec.maxMemory = formatSize(max);
    c.origin("maxMemory", "memory");
  }
}

/** libvirt's "no limit" for memtune values (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, in KiB). */
const MEMTUNE_UNLIMITED = "9007199254740991";

/** <memtune>: hard_limit is memory.max, soft_limit memory.high (libvirt's own cgroup v2 mapping). */
function memtune(c: Conversion, r: Reader, domain: XNode, spec: Record<string, unknown>): void {
  const tune = r.one(domain, "memtune");
  if (!tune) return;
  for (const [name, field] of [
    ["hard_limit", "memoryLimit"],
    ["soft_limit", "memorySoftLimit"],
  ] as const) {
    const el = r.one(tune, name);
    if (!el || el.text.trim() === MEMTUNE_UNLIMITED) continue;
    spec[field] = formatSize(scaledBytes(c, el, "KiB"));
    c.origin(field, el.key);
  }
  const swap = r.one(tune, "swap_hard_limit");
  if (swap && swap.text.trim() !== MEMTUNE_UNLIMITED)
    c.warn(
      swap.key,
      "not honoured: Vessel keeps guest RAM out of swap (memory.swap.max 0); ignored",
    );
  const min = r.one(tune, "min_guarantee");
  if (min) c.warn(min.key, "not honoured (libvirt applies it to VMware only); ignored");
}

/**
 * <blkiotune>: weight is io.weight (libvirt writes it as is, 100..1000, on cgroup v2); each
 * <device> becomes an ioDevices entry for its path: weight and the *_sec throttles (io.max).
 */
function blkiotune(c: Conversion, r: Reader, domain: XNode, spec: Record<string, unknown>): void {
  const tune = r.one(domain, "blkiotune");
  if (!tune) return;
  const weight = r.one(tune, "weight");
  if (weight) {
    spec.ioWeight = ioWeight(c, weight);
    c.origin("ioWeight", weight.key);
  }
  const devices: Record<string, unknown>[] = [];
  for (const dev of r.all(tune, "device")) {
    const path = r.one(dev, "path");
    if (!path?.text) c.fail(`${dev.key}/path`, "required (the host block device)");
    const entry: Record<string, unknown> = { device: c.path(path.text) };
    const w = r.one(dev, "weight");
    if (w) entry.weight = ioWeight(c, w);
    for (const [name, key] of [
      ["read_bytes_sec", "readBps"],
      ["write_bytes_sec", "writeBps"],
      ["read_iops_sec", "readIops"],
      ["write_iops_sec", "writeIops"],
    ] as const) {
      const el = r.one(dev, name);
      // 0 is libvirt's "no limit".
      if (el && count(c, el.key, el.text) > 0) entry[key] = count(c, el.key, el.text);
    }
    c.origin(`ioDevices/${devices.length}`, dev.key);
    if (Object.keys(entry).length > 1) devices.push(entry);
  }
  if (devices.length > 0) spec.ioDevices = devices;
}

function ioWeight(c: Conversion, el: XNode): number {
  const n = count(c, el.key, el.text);
  if (n < 1 || n > 10000) c.fail(el.key, "expected a weight from 1 to 10000 (libvirt's 100..1000)");
  return n;
}

function vcpus(c: Conversion, r: Reader, domain: XNode, spec: Record<string, unknown>): void {
  const vcpu = r.one(domain, "vcpu");
  const max = vcpu ? count(c, "vcpu", vcpu.text) : 1;
  const current =
    vcpu?.attrs.current !== undefined ? count(c, "vcpu/@current", vcpu.attrs.current) : max;
  if (current > max) c.fail("vcpu/@current", "is above the vcpu count");
  spec.vcpus = current;
  c.origin("vcpus", vcpu?.attrs.current !== undefined ? "vcpu/@current" : "vcpu");
  if (current < max) {
    spec.maxVcpus = max;
    c.origin("maxVcpus", "vcpu");
    warnNotEnforced(c, "vcpu", "vCPU hotplug (current below the vcpu count)");
  }
  if (vcpu?.attrs.placement === "auto")
    c.warn("vcpu/@placement", `"auto" (numad placement) is not supported; ignored`);
  else if (vcpu?.attrs.cpuset !== undefined) {
    spec.cpus = hostCpuList(c, "vcpu/@cpuset", vcpu.attrs.cpuset);
    c.origin("cpus", "vcpu/@cpuset");
  }

  const cputune = r.one(domain, "cputune");
  if (!cputune) return;
  const pins: Record<string, string> = {};
  for (const pin of r.all(cputune, "vcpupin")) {
    const id = pin.attrs.vcpu;
    if (id === undefined || !/^\d+$/.test(id)) c.fail(`${pin.key}/@vcpu`, "expected a vCPU number");
    if (pin.attrs.cpuset === undefined) c.fail(`${pin.key}/@cpuset`, "required");
    pins[String(Number(id))] = hostCpuList(c, `${pin.key}/@cpuset`, pin.attrs.cpuset);
    c.origin(`vcpuPin/${Number(id)}`, pin.key);
  }
  if (Object.keys(pins).length > 0) {
    spec.vcpuPin = pins;
  }
  // libvirt's shares default to 1024 where xl's weight (our scale) defaults to 256.
  const shares = r.one(cputune, "shares");
  if (shares) {
    const n = Number(shares.text);
    if (!Number.isInteger(n) || n < 2) c.fail(shares.key, "expected a whole number of shares");
    spec.cpuWeight = Math.min(65535, Math.max(1, Math.round(n / 4)));
    c.origin("cpuWeight", shares.key);
  }
  // period and quota (µs) are what cpu.max takes; as a cap they are quota/period CPUs.
  const quota = r.one(cputune, "quota");
  const periodNode = r.one(cputune, "period");
  if (quota) {
    const q = Number(quota.text);
    const period = periodNode ? Number(periodNode.text) : 100_000;
    if (!Number.isInteger(q)) c.fail(quota.key, "expected microseconds");
    if (!Number.isInteger(period) || period < 1000)
      c.fail(periodNode?.key ?? "cputune/period", "expected microseconds (at least 1000)");
    if (q > 0) {
      // libvirt's quota is per vCPU; the domain's cap is the sum.
      const vcpus = Number(spec.vcpus ?? 1);
      spec.cpuCap = Math.max(1, Math.round(((q * vcpus) / period) * 100));
      c.origin("cpuCap", quota.key);
    }
  }
  const emulator = r.one(cputune, "emulatorpin");
  if (emulator?.attrs.cpuset !== undefined) {
    spec.vmmCpus = hostCpuList(c, `${emulator.key}/@cpuset`, emulator.attrs.cpuset);
    c.origin("vmmCpus", emulator.key);
  }
}

function os(c: Conversion, r: Reader, domain: XNode, spec: Record<string, unknown>): void {
  const os = r.one(domain, "os");
  const type = os && r.one(os, "type");
  if (type && type.text !== "hvm")
    c.fail("os/type", `"${type.text}" is not supported (hvm with a kernel only)`);
  const arch = type?.attrs.arch;
  if (arch !== undefined && arch !== "x86_64")
    c.fail("os/type/@arch", `"${arch}" is not supported (x86_64 only)`);
  const machine = type?.attrs.machine;
  if (machine !== undefined)
    c.warn("os/type/@machine", `"${machine}" is not honoured (Vessel has one machine of its own)`);

  const kernel = os && r.one(os, "kernel");
  if (!kernel?.text) {
    const bootloader = r.one(domain, "bootloader");
    if (bootloader)
      c.fail(
        "bootloader",
        `"${bootloader.text}" is not supported: Vessel boots os/kernel directly`,
      );
    c.fail("os/kernel", "required (Vessel boots a kernel directly, not firmware from a disk)");
  }
  if (os?.attrs.firmware !== undefined)
    c.warn("os/@firmware", `"${os.attrs.firmware}" is not used; Vessel boots os/kernel directly`);
  spec.kernel = c.path(kernel.text);
  c.origin("kernel", "os/kernel");
  const initrd = os && r.one(os, "initrd");
  if (initrd?.text) {
    spec.initrd = c.path(initrd.text);
    c.origin("initrd", "os/initrd");
  }
  const cmdline = os && r.one(os, "cmdline");
  if (cmdline) {
    spec.cmdline = cmdline.text;
    c.origin("cmdline", "os/cmdline");
  }
}

function disks(c: Conversion, r: Reader, devices: XNode, spec: Record<string, unknown>): void {
  const out: Record<string, unknown>[] = [];
  const names: { key: string; guestName: string | undefined; index: number }[] = [];
  for (const disk of r.all(devices, "disk")) {
    const device = disk.attrs.device ?? "disk";
    if (device === "cdrom" || device === "floppy") {
      // A skipped drive's children say nothing more worth a warning.
      for (const child of disk.children) r.use(child);
      c.warn(disk.key, `${device} drives are not supported by Vessel; skipped`);
      continue;
    }
    if (device !== "disk")
      c.fail(`${disk.key}/@device`, `"${device}" is not supported (disk only)`);
    const type = disk.attrs.type ?? "file";
    if (type !== "file" && type !== "block")
      c.fail(`${disk.key}/@type`, `"${type}" is not supported (image files only)`);
    const source = r.one(disk, "source");
    const path = type === "file" ? source?.attrs.file : source?.attrs.dev;
    if (!path) c.fail(`${disk.key}/source`, `required (@${type === "file" ? "file" : "dev"})`);
    const driver = r.one(disk, "driver");
    const format = driver?.attrs.type ?? "raw";
    if (format !== "raw")
      c.fail(`${disk.key}/driver/@type`, `"${format}" is not supported (raw images only)`);
    for (const [attr, value] of Object.entries(driver?.attrs ?? {})) {
      if (attr === "name" || attr === "type" || (attr === "discard" && value === "unmap")) continue;
      c.warn(`${disk.key}/driver/@${attr}`, `"${value}" is not honoured by Vessel; ignored`);
    }
    const target = r.one(disk, "target");
    const serial = r.one(disk, "serial");
    const readOnly = r.one(disk, "readonly") !== undefined;
    // dumpxml writes an empty <backingStore/> for a disk that has none.
    const backing = disk.children.find((n) => n.name === "backingStore");
    if (backing && backing.children.length === 0) r.use(backing);

    const limits = iotune(c, r, disk);
    const resolved = c.path(path);
    if (type === "block") warnIfBlockDevice(c, disk.key, resolved);
    c.origin(`disks/${out.length}`, disk.key);
    if (serial) c.origin(`disks/${out.length}/serial`, `${disk.key}/serial`);
    names.push({ key: disk.key, guestName: target?.attrs.dev, index: out.length });
    out.push({
      path: resolved,
      ...(readOnly ? { readOnly: true } : {}),
      ...(serial ? { serial: serial.text } : {}),
      ...(limits ? { limits } : {}),
    });
  }
  if (out.length > 0) spec.disks = out;
  const renamed = renameGuestDisks(c, "os/cmdline", spec.cmdline as string | undefined, names);
  if (renamed !== undefined) spec.cmdline = renamed;
}

/** A whole number of an element's text or attribute, or a failure naming it. */
function count(c: Conversion, key: string, text: string): number {
  const n = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n))
    c.fail(key, `"${text}" is not a whole number`);
  return n;
}

/**
 * A disk's <iotune> (QEMU's throttling, as libvirt passes it): the total_* limits become
 * Vessel's bucket; *_max is a burst rate held for *_max_length seconds (default 1), so the
 * burst is their product. Vessel has one bucket per disk, so the read and write limits are named.
 */
function iotune(c: Conversion, r: Reader, disk: XNode): IoLimits | undefined {
  const tune = r.one(disk, "iotune");
  if (!tune) return undefined;
  const value = new Map<string, number>();
  for (const child of tune.children) {
    r.use(child);
    const v = count(c, child.key, child.text);
    if (/^(total_bytes_sec|total_iops_sec)(_max(_length)?)?$/.test(child.name))
      value.set(child.name, v);
    else if (v !== 0)
      c.warn(
        child.key,
        `${child.name} is not honoured: Vessel limits a disk's total (total_bytes_sec, total_iops_sec); ignored`,
      );
  }
  const out: IoLimits = {};
  for (const [kind, rate, burst] of [
    ["total_bytes_sec", "bandwidth", "bandwidthBurst"],
    ["total_iops_sec", "ops", "opsBurst"],
  ] as const) {
    const avg = value.get(kind);
    if (!avg) continue;
    out[rate] = avg;
    const max = value.get(`${kind}_max`);
    if (max) out[burst] = max * (value.get(`${kind}_max_length`) || 1);
  }
  return out.bandwidth !== undefined || out.ops !== undefined ? out : undefined;
}

/**
 * An interface's <bandwidth>: inbound is what the domain receives (rx), outbound what it
 * sends (tx); average is KiB/s and burst KiB. peak and floor need a shaper Vessel lacks.
 */
function bandwidth(c: Conversion, r: Reader, nic: XNode): NetLimits | undefined {
  const bw = r.one(nic, "bandwidth");
  if (!bw) return undefined;
  const out: NetLimits = {};
  for (const [name, dir] of [
    ["inbound", "rx"],
    ["outbound", "tx"],
  ] as const) {
    const el = r.one(bw, name);
    if (!el) continue;
    for (const attr of Object.keys(el.attrs))
      if (attr !== "average" && attr !== "burst")
        c.warn(
          `${el.key}/@${attr}`,
          "not honoured (Vessel has a token bucket, no shaper); ignored",
        );
    if (el.attrs.average === undefined) continue;
    const avg = count(c, `${el.key}/@average`, el.attrs.average);
    if (avg === 0) continue;
    const burst = el.attrs.burst;
    out[dir] = {
      bandwidth: avg * 1024,
      ...(burst ? { bandwidthBurst: count(c, `${el.key}/@burst`, burst) * 1024 } : {}),
    };
  }
  return out.rx || out.tx ? out : undefined;
}

function interfaces(
  c: Conversion,
  r: Reader,
  devices: XNode,
  spec: Record<string, unknown>,
  name: string,
): void {
  const out: Record<string, unknown>[] = [];
  for (const [i, nic] of r.all(devices, "interface").entries()) {
    const type = nic.attrs.type ?? "";
    if (type !== "ethernet" && type !== "bridge" && type !== "network")
      c.fail(`${nic.key}/@type`, `"${type}" is not supported (Vessel's NICs are TAP devices)`);
    const source = r.one(nic, "source");
    let tap = r.one(nic, "target")?.attrs.dev;
    if (tap === undefined) {
      tap = generatedTapName(name, i);
      c.warn(nic.key, `no target dev; the TAP is named "${tap}"`);
    }
    if (type === "bridge")
      c.warn(
        nic.key,
        `bridge ${source?.attrs.bridge ?? "?"}: Vessel does not bridge; add TAP "${tap}" to it yourself`,
      );
    if (type === "network")
      c.warn(
        nic.key,
        `network ${source?.attrs.network ?? "?"}: Vessel does not join libvirt networks; add TAP "${tap}" to its bridge yourself`,
      );
    const mac = r.one(nic, "mac")?.attrs.address;
    const model = r.one(nic, "model")?.attrs.type;
    if (model !== undefined && model !== "virtio")
      c.warn(`${nic.key}/model`, `"${model}" is not honoured (Vessel's NIC is virtio-net)`);
    const limits = bandwidth(c, r, nic);
    c.origin(`nets/${out.length}`, nic.key);
    out.push({
      tap,
      ...(mac !== undefined ? { mac: macAddress(c, `${nic.key}/mac`, mac) } : {}),
      ...(limits ? { limits } : {}),
    });
  }
  if (out.length > 0) spec.nets = out;
}

/** The guest console: libvirt's first <console> decides; a pty serial port means COM1. */
function consoles(c: Conversion, r: Reader, devices: XNode, spec: Record<string, unknown>): void {
  const chars = [...r.all(devices, "console"), ...r.all(devices, "serial")];
  for (const char of chars) {
    // dumpxml spells out the target's model (isa-serial); it says nothing Vessel could use.
    const target = r.one(char, "target");
    for (const child of target?.children ?? []) r.use(child);
    r.one(char, "source");
    if ((char.attrs.type ?? "pty") !== "pty")
      c.warn(`${char.key}/@type`, `"${char.attrs.type}": Vessel keeps the console itself; ignored`);
  }
  const first = chars[0];
  if (!first) return;
  const target = first.children.find((n) => n.name === "target")?.attrs.type;
  if (target === "virtio") spec.console = "virtio";
  else if (target === undefined || target === "serial" || target === "isa-serial")
    spec.console = "serial";
  else c.warn(`${first.key}/target/@type`, `"${target}" is not a Vessel console; ignored`);
  if (r.all(devices, "serial").length > 1)
    c.warn("devices/serial", "Vessel has one serial port; the others are ignored");
}

function otherDevices(
  c: Conversion,
  r: Reader,
  devices: XNode,
  spec: Record<string, unknown>,
): void {
  for (const rng of r.all(devices, "rng")) {
    if (!rng.attrs.model?.startsWith("virtio")) {
      c.warn(`${rng.key}/@model`, `"${rng.attrs.model ?? ""}" is not supported; ignored`);
      continue;
    }
    spec.rng = true;
    const backend = r.one(rng, "backend");
    if (backend && backend.attrs.model !== "random" && backend.attrs.model !== "builtin")
      c.warn(
        `${rng.key}/backend`,
        `"${backend.attrs.model}": Vessel feeds the device from getrandom`,
      );
  }
  const balloon = r.one(devices, "memballoon");
  if (balloon) {
    const model = balloon.attrs.model;
    if (model === "none") spec.balloon = false;
    else if (model?.startsWith("virtio")) spec.balloon = true;
    else c.warn("devices/memballoon/@model", `"${model ?? ""}" is not supported; ignored`);
    for (const attr of ["autodeflate", "freePageReporting"])
      if (balloon.attrs[attr] !== undefined)
        c.warn(`devices/memballoon/@${attr}`, `"${balloon.attrs[attr]}" is not honoured; ignored`);
  }
}
