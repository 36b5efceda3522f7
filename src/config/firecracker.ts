// Import of Firecracker's --config-file JSON (the VmmConfig of src/vmm/src/resources.rs, with
// the field names of src/firecracker/swagger/firecracker.yaml) into the native spec. The
// boot-source and root drive follow Firecracker's own rules: the root drive becomes the first
// disk and "root=/dev/vda rw" (or root=PARTUUID=...) is appended to the command line, and an
// absent boot_args means Firecracker's default command line. Firecracker configs have no
// domain name, so it comes from the caller or the file name.

import { basename, extname } from "node:path";
import type { IoLimits } from "../domain/spec.js";
import {
  Conversion,
  formatSize,
  type ImportOptions,
  type ImportResult,
  macAddress,
} from "./common.js";

/** Firecracker's DEFAULT_KERNEL_CMDLINE (src/vmm/src/vmm_config/boot_source.rs). */
export const FIRECRACKER_DEFAULT_CMDLINE =
  "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";

type Json = Record<string, unknown>;

/** Typed reads of one JSON object; a mismatch names the key as Firecracker spells it. */
class Obj {
  private readonly read = new Set<string>();

  constructor(
    private readonly c: Conversion,
    readonly key: string,
    private readonly value: Json,
  ) {}

  private get(name: string): unknown {
    this.read.add(name);
    const v = this.value[name];
    // Firecracker's own dumps write null for every absent optional field.
    return v === null ? undefined : v;
  }

  private where(name: string): string {
    return this.key ? `${this.key}.${name}` : name;
  }

  string(name: string): string | undefined {
    const v = this.get(name);
    if (v !== undefined && typeof v !== "string")
      this.c.fail(this.where(name), "expected a string");
    return v;
  }

  integer(name: string): number | undefined {
    const v = this.get(name);
    if (v !== undefined && !(typeof v === "number" && Number.isSafeInteger(v) && v >= 0))
      this.c.fail(this.where(name), "expected a whole number");
    return v;
  }

  boolean(name: string): boolean | undefined {
    const v = this.get(name);
    if (v !== undefined && typeof v !== "boolean")
      this.c.fail(this.where(name), "expected true or false");
    return v;
  }

  object(name: string): Obj | undefined {
    const v = this.get(name);
    if (v === undefined) return undefined;
    if (typeof v !== "object" || Array.isArray(v))
      this.c.fail(this.where(name), "expected an object");
    return new Obj(this.c, this.where(name), v as Json);
  }

  array(name: string): Obj[] {
    const v = this.get(name);
    if (v === undefined) return [];
    if (!Array.isArray(v)) this.c.fail(this.where(name), "expected a list");
    return v.map((item, i) => {
      const key = `${this.where(name)}[${i}]`;
      if (typeof item !== "object" || item === null || Array.isArray(item))
        this.c.fail(key, "expected an object");
      return new Obj(this.c, key, item as Json);
    });
  }

  /** Present (non-null) and not read: named in a warning, never dropped in silence. */
  present(name: string): boolean {
    this.read.add(name);
    const v = this.value[name];
    return v !== undefined && v !== null;
  }

  warnUnread(what: (name: string) => string): void {
    for (const [name, v] of Object.entries(this.value))
      if (!this.read.has(name) && v !== null) this.c.warn(this.where(name), what(name));
  }
}

/** A domain name from a file name: "vm_config.json" → "vm_config", other characters → "-". */
export function nameFromFileName(fileName: string): string | undefined {
  const stem = basename(fileName, extname(fileName))
    .replace(/[^A-Za-z0-9_.-]+/g, "-")
    .replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 64);
  return stem || undefined;
}

/** Import Firecracker's --config-file JSON text. */
export function importFirecrackerJson(text: string, opts: ImportOptions = {}): ImportResult {
  const c: Conversion = new Conversion("firecracker", opts);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    c.fail("", `not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value))
    c.fail("", "expected a JSON object");
  const root = new Obj(c, "", value as Json);
  const spec: Record<string, unknown> = {};

  const name =
    opts.name ?? (opts.fileName !== undefined ? nameFromFileName(opts.fileName) : undefined);
  if (name === undefined)
    c.fail("", "Firecracker configs have no domain name; give one (vessel config convert --name)");
  spec.name = name;

  // Without machine-config Firecracker runs its MachineConfig::default: 1 vCPU, 128 MiB.
  const machine = root.object("machine-config");
  const vcpus = machine ? machine.integer("vcpu_count") : 1;
  const mib = machine ? machine.integer("mem_size_mib") : 128;
  if (vcpus === undefined) c.fail("machine-config.vcpu_count", "required");
  if (mib === undefined) c.fail("machine-config.mem_size_mib", "required");
  spec.vcpus = vcpus;
  c.origin("vcpus", "machine-config.vcpu_count");
  spec.memory = formatSize(mib * 2 ** 20);
  c.origin("memory", "machine-config.mem_size_mib");
  if (machine) machineExtras(c, machine);

  const { rootArgs } = drives(c, root, spec);
  bootSource(c, root, spec, rootArgs);
  nets(c, root, spec);
  devices(c, root, spec);

  for (const key of ["logger", "metrics", "mmds-config", "cpu-config", "memory-hotplug"])
    if (root.present(key)) c.warn(key, "not supported by Vessel; ignored");
  if (root.array("pmem").length > 0)
    c.warn("pmem", "pmem devices are not supported by Vessel; ignored");
  root.warnUnread(() => "not a Firecracker config key; ignored");
  return c.finish(spec);
}

function machineExtras(c: Conversion, machine: Obj): void {
  if (machine.boolean("smt"))
    c.warn("machine-config.smt", "SMT topology is not offered by Vessel; ignored");
  if (machine.boolean("track_dirty_pages"))
    c.warn("machine-config.track_dirty_pages", "Vessel takes no snapshots yet; ignored");
  const hugePages = machine.string("huge_pages");
  if (hugePages !== undefined && hugePages !== "None")
    c.warn("machine-config.huge_pages", `"${hugePages}" is not supported by Vessel; ignored`);
  const template = machine.string("cpu_template");
  if (template !== undefined && template !== "None")
    c.warn("machine-config.cpu_template", `"${template}" is not supported by Vessel; ignored`);
  machine.warnUnread(() => "not a Firecracker machine-config key Vessel knows; ignored");
}

function bootSource(
  c: Conversion,
  root: Obj,
  spec: Record<string, unknown>,
  rootArgs: string | undefined,
): void {
  const boot = root.object("boot-source");
  if (!boot) c.fail("boot-source", "required");
  const kernel = boot.string("kernel_image_path");
  if (kernel === undefined) c.fail("boot-source.kernel_image_path", "required");
  spec.kernel = c.path(kernel);
  c.origin("kernel", "boot-source.kernel_image_path");
  const initrd = boot.string("initrd_path");
  if (initrd !== undefined) {
    spec.initrd = c.path(initrd);
    c.origin("initrd", "boot-source.initrd_path");
  }
  let cmdline = boot.string("boot_args");
  if (cmdline === undefined) {
    cmdline = FIRECRACKER_DEFAULT_CMDLINE;
    c.warn(
      "boot-source.boot_args",
      "absent: Firecracker's default command line is used, which turns the serial console off (8250.nr_uarts=0)",
    );
  }
  spec.cmdline = rootArgs ? `${cmdline} ${rootArgs}` : cmdline;
  c.origin("cmdline", "boot-source.boot_args");
  boot.warnUnread(() => "not a Firecracker boot-source key; ignored");
}

/** Drives in Firecracker's order (the root drive first) and the root= arguments it adds. */
function drives(
  c: Conversion,
  root: Obj,
  spec: Record<string, unknown>,
): { rootArgs: string | undefined } {
  const list = root.array("drives");
  const rootIndex = list.findIndex((d) => d.boolean("is_root_device"));
  if (list.filter((d) => d.boolean("is_root_device")).length > 1)
    c.fail("drives", "more than one drive has is_root_device");
  const order =
    rootIndex > 0 ? [list[rootIndex] as Obj, ...list.filter((_, i) => i !== rootIndex)] : list;
  let rootArgs: string | undefined;
  const out: Record<string, unknown>[] = [];
  for (const d of order) {
    const key = d.key;
    if (d.string("socket") !== undefined)
      c.fail(`${key}.socket`, "vhost-user-block drives are not supported (image files only)");
    const path = d.string("path_on_host");
    if (path === undefined) c.fail(`${key}.path_on_host`, "required");
    d.string("drive_id");
    const readOnly = d.boolean("is_read_only") ?? false;
    const partuuid = d.string("partuuid");
    if (d.boolean("is_root_device"))
      rootArgs = `${partuuid !== undefined ? `root=PARTUUID=${partuuid}` : "root=/dev/vda"} ${readOnly ? "ro" : "rw"}`;
    else if (partuuid !== undefined)
      c.warn(
        `${key}.partuuid`,
        "only means something on the root device (as in Firecracker); ignored",
      );
    const cache = d.string("cache_type");
    if (cache === "Unsafe")
      c.warn(
        `${key}.cache_type`,
        `"Unsafe" is not honoured: Vessel carries out the guest's flushes`,
      );
    const engine = d.string("io_engine");
    if (engine === "Async")
      c.warn(
        `${key}.io_engine`,
        `"Async" (io_uring) is not used; Vessel does block I/O on a thread pool`,
      );
    const limits = rateLimiter(c, d.object("rate_limiter"));
    d.warnUnread(() => "not a Firecracker drive key; ignored");
    c.origin(`disks/${out.length}`, key);
    out.push({
      path: c.path(path),
      ...(readOnly ? { readOnly: true } : {}),
      ...(limits ? { limits } : {}),
    });
  }
  if (out.length > 0) spec.disks = out;
  return { rootArgs };
}

/**
 * Firecracker's rate_limiter: for bandwidth (bytes) and ops, a bucket of `size` that refills
 * fully every `refill_time` ms, that is size/refill_time per millisecond with a burst of size.
 * `one_time_burst` (extra credit at start only) has no counterpart and is named.
 */
function rateLimiter(c: Conversion, limiter: Obj | undefined): IoLimits | undefined {
  if (!limiter) return undefined;
  const out: IoLimits = {};
  for (const [name, rate, burst] of [
    ["bandwidth", "bandwidth", "bandwidthBurst"],
    ["ops", "ops", "opsBurst"],
  ] as const) {
    const bucket = limiter.object(name);
    if (!bucket) continue;
    const size = bucket.integer("size");
    const refill = bucket.integer("refill_time");
    if (size === undefined || size === 0) c.fail(`${bucket.key}.size`, "required (above 0)");
    if (refill === undefined || refill === 0)
      c.fail(`${bucket.key}.refill_time`, "required (milliseconds, above 0)");
    if (bucket.integer("one_time_burst"))
      c.warn(`${bucket.key}.one_time_burst`, "an initial extra credit is not honoured; ignored");
    bucket.warnUnread(() => "not a token bucket key; ignored");
    out[rate] = Math.max(1, Math.round((size * 1000) / refill));
    out[burst] = size;
  }
  limiter.warnUnread(() => "not a rate limiter key; ignored");
  return out.bandwidth !== undefined || out.ops !== undefined ? out : undefined;
}

function nets(c: Conversion, root: Obj, spec: Record<string, unknown>): void {
  const out: Record<string, unknown>[] = [];
  for (const nic of root.array("network-interfaces")) {
    const tap = nic.string("host_dev_name");
    if (tap === undefined) c.fail(`${nic.key}.host_dev_name`, "required");
    nic.string("iface_id");
    const mac = nic.string("guest_mac");
    const rx = rateLimiter(c, nic.object("rx_rate_limiter"));
    const tx = rateLimiter(c, nic.object("tx_rate_limiter"));
    if (nic.present("mtu"))
      c.warn(`${nic.key}.mtu`, "Vessel does not advertise an MTU to the guest; ignored");
    nic.warnUnread(() => "not a Firecracker network-interfaces key; ignored");
    c.origin(`nets/${out.length}`, nic.key);
    out.push({
      tap,
      ...(mac !== undefined ? { mac: macAddress(c, `${nic.key}.guest_mac`, mac) } : {}),
      ...(rx || tx ? { limits: { ...(rx ? { rx } : {}), ...(tx ? { tx } : {}) } } : {}),
    });
  }
  if (out.length > 0) spec.nets = out;
}

function devices(c: Conversion, root: Obj, spec: Record<string, unknown>): void {
  const vsock = root.object("vsock");
  if (vsock) {
    const cid = vsock.integer("guest_cid");
    const uds = vsock.string("uds_path");
    if (cid === undefined) c.fail("vsock.guest_cid", "required");
    if (uds === undefined) c.fail("vsock.uds_path", "required");
    if (vsock.present("vsock_id")) c.warn("vsock.vsock_id", "deprecated in Firecracker; ignored");
    vsock.warnUnread(() => "not a Firecracker vsock key; ignored");
    spec.vsock = { cid, uds: c.path(uds) };
    c.origin("vsock", "vsock");
    // Host programs reach the guest through the socket as with Firecracker. Guest-initiated
    // connections differ from Firecracker's jailer, whose chroot holds <uds>_<port>: Vessel's
    // jail shows the uds's directory only when it holds nothing but sockets.
    c.warn(
      "vsock",
      "under the daemon's jail, guest-to-host connections need uds_path in a directory of its own and <uds>_<port> sockets the domain's user may write",
    );
  }

  const balloon = root.object("balloon");
  if (balloon) {
    spec.balloon = true;
    const amount = balloon.integer("amount_mib");
    if (amount)
      c.warn(
        "balloon.amount_mib",
        `an initial target of ${amount} MiB is not applied; set it on the control socket`,
      );
    if (balloon.boolean("deflate_on_oom"))
      c.warn("balloon.deflate_on_oom", "not supported by Vessel; ignored");
    const poll = balloon.integer("stats_polling_interval_s");
    if (poll)
      c.warn(
        "balloon.stats_polling_interval_s",
        "not honoured: Vessel reads balloon statistics when asked",
      );
    for (const key of ["free_page_hinting", "free_page_reporting"])
      if (balloon.boolean(key)) c.warn(`balloon.${key}`, "not supported by Vessel; ignored");
    balloon.warnUnread(() => "not a Firecracker balloon key; ignored");
  }

  const entropy = root.object("entropy");
  if (entropy) {
    spec.rng = true;
    if (entropy.present("rate_limiter"))
      c.warn("entropy.rate_limiter", "rate limiting is not supported by Vessel yet; ignored");
    entropy.warnUnread(() => "not a Firecracker entropy key; ignored");
  }
}
