// What the three importers share: the error type, the warning list, the path and size rules,
// and the mapping of lifecycle actions, CPU lists and guest disk names. Each importer builds
// a plain object with a `Conversion`, which at the end runs it through `parseDomainSpec` and
// turns a spec problem back into one that names the source format's own key.

import { isAbsolute, resolve } from "node:path";
import {
  DomainSpec,
  type LifecycleAction,
  MAX_HOST_CPU,
  parseDomainSpec,
  SpecError,
} from "../domain/spec.js";

/** How messages name the source format; "config" when the format itself is unknown. */
export type FormatLabel = "xl.cfg" | "libvirt" | "firecracker" | "config";

export interface ImportOptions {
  /** Directory relative paths in the source resolve against (the config file's). */
  baseDir?: string;
  /** The domain name: required for Firecracker (which has none), an override for the others. */
  name?: string;
  /** The source file's name, for Firecracker's name when `name` is not given. */
  fileName?: string;
}

export interface ImportResult {
  spec: DomainSpec;
  warnings: string[];
}

/** Messages are one line whatever the source holds: control characters are escaped. */
function oneLine(text: string): string {
  let out = "";
  for (const ch of text) {
    const code = ch.charCodeAt(0);
    if (code >= 0x20 && code !== 0x7f && code !== 0x2028 && code !== 0x2029) out += ch;
    else out += ch === "\n" ? "\\n" : `\\u${code.toString(16).padStart(4, "0")}`;
  }
  return out;
}

/** A source config Vessel cannot represent; `key` is the source format's own key. */
export class ImportError extends Error {
  readonly code = "IMPORT";
  constructor(
    readonly format: FormatLabel,
    readonly key: string,
    problem: string,
  ) {
    super(oneLine(key ? `${format}: ${key}: ${problem}` : `${format}: ${problem}`));
    this.name = "ImportError";
  }
}

/** One import in progress: warnings, where each spec field came from, path resolution. */
export class Conversion {
  readonly warnings: string[] = [];
  /** Spec field path ("disks/0") → the source key it came from ("disk[0]"). */
  private readonly origins = new Map<string, string>();

  constructor(
    readonly format: FormatLabel,
    readonly opts: ImportOptions,
  ) {}

  warn(key: string, message: string): void {
    this.warnings.push(
      oneLine(key ? `${this.format}: ${key}: ${message}` : `${this.format}: ${message}`),
    );
  }

  fail(key: string, problem: string): never {
    throw new ImportError(this.format, key, problem);
  }

  origin(field: string, sourceKey: string): void {
    this.origins.set(field, sourceKey);
  }

  /** A host path from the source: relative ones resolve against the config's directory. */
  path(value: string): string {
    if (isAbsolute(value) || this.opts.baseDir === undefined) return value;
    return resolve(this.opts.baseDir, value);
  }

  /** Validate the built spec; a problem names the source key when we know it. */
  finish(value: Record<string, unknown>): ImportResult {
    const ordered = canonicalOrder(value);
    try {
      return { spec: parseDomainSpec(ordered), warnings: this.warnings };
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      const source = this.sourceOf(e.field);
      if (source === undefined) throw e;
      const problem = e.message.slice(e.field ? e.field.length + 2 : 0);
      throw new ImportError(this.format, source, problem);
    }
  }

  private sourceOf(field: string): string | undefined {
    for (let f = field; f; f = f.includes("/") ? f.slice(0, f.lastIndexOf("/")) : "") {
      const source = this.origins.get(f);
      if (source !== undefined) return source;
    }
    return undefined;
  }
}

/** Keys in the schema's order, so converted specs read the same whatever the source. */
function canonicalOrder(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(DomainSpec.properties)) {
    if (value[key] !== undefined) out[key] = value[key];
  }
  for (const [key, v] of Object.entries(value)) if (!(key in out) && v !== undefined) out[key] = v;
  return out;
}

const KIB = 1024;
/** Bytes as the shortest exact native size: "2G", "512M", "524292K", or a byte count. */
export function formatSize(bytes: number): number | string {
  for (const [unit, scale] of [
    ["T", KIB ** 4],
    ["G", KIB ** 3],
    ["M", KIB ** 2],
    ["K", KIB],
  ] as const) {
    if (bytes % scale === 0) return `${bytes / scale}${unit}`;
  }
  return bytes;
}

/** Map a lifecycle action shared by xl.cfg and libvirt (their on_poweroff/on_reboot/on_crash). */
export function lifecycleAction(c: Conversion, key: string, value: string): LifecycleAction {
  switch (value) {
    case "destroy":
    case "restart":
    case "preserve":
      return value;
    case "rename-restart":
      c.warn(key, `"rename-restart" becomes "restart" (Vessel does not rename the old domain)`);
      return "restart";
    case "coredump-destroy":
      c.warn(key, `"coredump-destroy" becomes "destroy" (Vessel writes no guest core dumps)`);
      return "destroy";
    case "coredump-restart":
      c.warn(key, `"coredump-restart" becomes "restart" (Vessel writes no guest core dumps)`);
      return "restart";
    case "soft-reset":
      return c.fail(key, `"soft-reset" resets Xen interfaces in place; Vessel has no equivalent`);
    default:
      return c.fail(key, `"${value}" is not an action (destroy, restart, preserve)`);
  }
}

/**
 * A host CPU list as xl.cfg(5) and libvirt write it ("0-3,5,^1": ranges, and carets that
 * take CPUs out again) in the canonical Linux form the spec keeps ("0,2-3,5").
 */
export function hostCpuList(c: Conversion, key: string, text: string): string {
  const cpus = new Set<number>();
  for (const raw of text.split(",")) {
    const item = raw.trim();
    const m = /^(\^?)(\d+)(?:-(\d+))?$/.exec(item);
    if (!m) c.fail(key, `"${item}" is not a CPU, a range or ^CPU`);
    const lo = Number(m[2]);
    const hi = m[3] === undefined ? lo : Number(m[3]);
    if (lo > hi) c.fail(key, `"${item}" is not a range (low-high)`);
    if (hi > MAX_HOST_CPU) c.fail(key, `CPU ${hi} is above ${MAX_HOST_CPU}`);
    for (let cpu = lo; cpu <= hi; cpu++) {
      if (m[1]) cpus.delete(cpu);
      else cpus.add(cpu);
    }
  }
  if (cpus.size === 0) c.fail(key, `"${text}" leaves no CPU`);
  const sorted = [...cpus].sort((a, b) => a - b);
  const ranges: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === (sorted[j] as number) + 1) j++;
    ranges.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return ranges.join(",");
}

/** A MAC address in the spec's form (lower-case, two digits a byte), or an error naming key. */
export function macAddress(c: Conversion, key: string, text: string): string {
  const parts = text.trim().split(":");
  if (parts.length !== 6 || !parts.every((p) => /^[0-9A-Fa-f]{1,2}$/.test(p)))
    c.fail(key, `"${text}" is not a MAC address (six hex bytes separated by colons)`);
  return parts.map((p) => p.padStart(2, "0").toLowerCase()).join(":");
}

/** The name Linux gives the n-th virtio-blk disk: vda..vdz, vdaa, vdab... */
export function virtioDiskName(index: number): string {
  let suffix = "";
  for (let n = index + 1; n > 0; n = Math.floor((n - 1) / 26))
    suffix = String.fromCharCode(97 + ((n - 1) % 26)) + suffix;
  return `vd${suffix}`;
}

/**
 * Guest disk names change under Vessel (every disk is virtio-blk, named in list order), so
 * `/dev/<old>` on the kernel command line is rewritten to the new name, with a warning; the
 * guest's own /etc/fstab is out of our reach, so each renamed disk gets a warning too.
 */
export function renameGuestDisks(
  c: Conversion,
  cmdlineKey: string,
  cmdline: string | undefined,
  disks: { key: string; guestName: string | undefined; index: number }[],
): string | undefined {
  const renames = new Map<string, string>();
  for (const d of disks) {
    const now = virtioDiskName(d.index);
    if (d.guestName === undefined || d.guestName === now) continue;
    renames.set(d.guestName, now);
    c.warn(d.key, `${d.guestName} appears in the guest as /dev/${now} (virtio-blk, in list order)`);
  }
  if (cmdline === undefined || renames.size === 0) return cmdline;
  const names = [...renames.keys()].map((n) => n.replace(/[^A-Za-z0-9]/g, "\\$&"));
  const pattern = new RegExp(`/dev/(${names.join("|")})(?=p?\\d*(?:\\s|$|,))`, "g");
  const rewritten = cmdline.replace(pattern, (_, name: string) => `/dev/${renames.get(name)}`);
  if (rewritten !== cmdline)
    c.warn(cmdlineKey, `disk names rewritten for Vessel: "${cmdline}" → "${rewritten}"`);
  return rewritten;
}

/** A host path that names a block device: Vessel's virtio-blk opens regular files only. */
export function warnIfBlockDevice(c: Conversion, key: string, path: string): void {
  if (path.startsWith("/dev/"))
    c.warn(
      key,
      `${path} is a block device; Vessel's virtio-blk takes regular image files only, so the domain will not start until it is one`,
    );
}

/** A TAP name for a NIC the source leaves unnamed: the domain name and the NIC's index. */
export function generatedTapName(domainName: string, index: number): string {
  const suffix = `.${index}`;
  const base = domainName.replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 15 - suffix.length);
  return `${base || "vessel"}${suffix}`;
}

/** The resource-control fields the VMM does not apply yet: say so once per source key. */
export function warnNotEnforced(c: Conversion, key: string, what: string): void {
  c.warn(key, `${what} is carried into the spec but not enforced by Vessel yet`);
}
