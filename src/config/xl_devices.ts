// The device strings inside xl.cfg lists: DISKSPEC (xl-disk-configuration(5), read the way
// Xen's scanner tools/libs/util/libxlu_disk_l.l reads it: positional target, format, vdev,
// access; key=value and flag parameters; the deprecated `phy:`/`raw:`/`hdc:cdrom` forms) and
// vifspec (xl-network-configuration(5): comma-separated key=value, as xl_parse.c splits it).
// These parse only; xl.ts decides what Vessel makes of each part.

import type { Conversion } from "./common.js";

export interface XlDisk {
  target?: string;
  /** raw, qcow, qcow2, vhd, qed, or empty (a cdrom drive with no medium). */
  format?: string;
  vdev?: string;
  readOnly?: boolean;
  cdrom: boolean;
  script?: string;
  /** Every other parameter or flag given, as written ("backendtype=phy", "no-discard"). */
  others: string[];
}

const DISK_VALUE_KEYS = new Set([
  "format",
  "access",
  "backend",
  "backendtype",
  "specification",
  "vdev",
  "script",
  "devtype",
  "colo-host",
  "colo-port",
  "colo-export",
  "active-disk",
  "hidden-disk",
  "grant_usage",
]);
const DISK_FLAGS = new Set([
  "cdrom",
  "direct-io-safe",
  "discard",
  "no-discard",
  "colo",
  "no-colo",
  "trusted",
  "untrusted",
]);
const FORMATS = new Set(["raw", "qcow", "qcow2", "vhd", "empty", "qed"]);
const BACKEND_TYPES = new Set(["phy", "tap", "qdisk", "standalone"]);

/** One DISKSPEC string; `key` names it in errors ("disk[0]"). */
export function parseDiskSpec(c: Conversion, key: string, spec: string): XlDisk {
  const disk: XlDisk = { cdrom: false, others: [] };
  let hadPrefix = false;
  let accessSet = false;
  const once = (name: string, current: unknown) => {
    if (current !== undefined) c.fail(key, `${name} is given twice`);
  };
  const setFormat = (text: string) => {
    once("format", disk.format);
    if (text !== "" && !FORMATS.has(text)) c.fail(key, `unknown format "${text}"`);
    disk.format = text === "" ? "raw" : text;
  };
  const setAccess = (text: string) => {
    if (text === "r" || text === "ro") disk.readOnly = true;
    else if (text === "w" || text === "rw") disk.readOnly = false;
    else if (text !== "") c.fail(key, `unknown access "${text}" (r, ro, w, rw)`);
    accessSet = true;
  };
  // The deprecated "vdev:devtype" positional; false when `text` has no colon.
  const vdevAndDevtype = (text: string) => {
    const colon = text.lastIndexOf(":");
    if (colon === -1) return false;
    once("vdev", disk.vdev);
    disk.vdev = text.slice(0, colon);
    const devtype = text.slice(colon + 1);
    if (devtype === "cdrom") disk.cdrom = true;
    else if (devtype !== "disk") c.fail(key, `unknown device type "${devtype}" (cdrom, disk)`);
    return true;
  };

  let rest = spec;
  while (rest.length > 0) {
    const ws = /^[ \t\n]+/.exec(rest);
    if (ws) {
      rest = rest.slice(ws[0].length);
      continue;
    }
    // target= takes the rest of the string, commas and all: the way to name odd paths.
    if (rest.startsWith("target=")) {
      const value = rest.slice("target=".length).replace(/,$/, "");
      if (disk.target) c.fail(key, "target is given twice");
      disk.target = value;
      break;
    }
    const kv = /^([a-z][-a-z0-9_]*)=([^,]*),?/.exec(rest);
    if (kv) {
      const [whole, name, value] = kv as unknown as [string, string, string];
      if (!DISK_VALUE_KEYS.has(name)) c.fail(key, `unknown parameter "${name}="`);
      rest = rest.slice(whole.length);
      if (name === "format") setFormat(value);
      else if (name === "access") {
        if (accessSet) c.fail(key, "access is given twice");
        setAccess(value);
      } else if (name === "vdev") {
        once("vdev", disk.vdev);
        disk.vdev = value;
      } else if (name === "devtype") {
        if (value === "cdrom") disk.cdrom = true;
        else if (value !== "disk") c.fail(key, `unknown devtype "${value}" (cdrom, disk)`);
      } else if (name === "script") {
        once("script", disk.script);
        disk.script = value;
      } else {
        if (name === "backendtype" && !BACKEND_TYPES.has(value))
          c.fail(key, `unknown backendtype "${value}" (phy, tap, qdisk, standalone)`);
        disk.others.push(`${name}=${value}`);
      }
      continue;
    }
    const flag = /^([a-z][-a-z]*)(?:,|$)/.exec(rest);
    if (flag && DISK_FLAGS.has(flag[1] as string)) {
      rest = rest.slice(flag[0].length);
      if (flag[1] === "cdrom") disk.cdrom = true;
      else disk.others.push(flag[1] as string);
      continue;
    }
    // Known prefixes apply whatever follows them; any other word-and-colon is an error
    // only when it cannot be the start of a path or a "vdev:devtype".
    const prefix =
      /^(raw|qcow2?|vhd|iscsi|e?nbd|drbd|tapdisk|tap2?|aio|ioemu|file|phy):/.exec(rest) ??
      /^([a-z][a-z0-9]*):(?![a-z0-9])/.exec(rest);
    if (prefix) {
      const word = prefix[1] as string;
      rest = rest.slice(prefix[0].length);
      hadPrefix = true;
      if (/^(raw|qcow2?|vhd)$/.test(word)) setFormat(word);
      else if (/^(iscsi|e?nbd|drbd)$/.test(word)) {
        once("script", disk.script);
        disk.script = `block-${word}`;
      } else if (!/^(tapdisk|tap2?|aio|ioemu|file|phy)$/.test(word))
        c.fail(key, `unknown deprecated prefix "${word}:"`);
      continue;
    }
    const positional = /^([^=,]*),|^([^=,]+)/.exec(rest);
    if (!positional) c.fail(key, `bad disk syntax at "${rest.slice(0, 30)}"`);
    rest = rest.slice(positional[0].length);
    const text = positional[1] ?? positional[2] ?? "";
    if (disk.target === undefined) disk.target = text;
    else if (!hadPrefix && disk.format === undefined) {
      // The empty-cdrom spelling ",hdc:cdrom,r" puts vdev:devtype where the format goes.
      if (disk.target === "" && vdevAndDevtype(text)) disk.format = "empty";
      else setFormat(text);
    } else if (disk.vdev === undefined) {
      if (!vdevAndDevtype(text)) disk.vdev = text;
    } else if (!accessSet) setAccess(text);
    else c.fail(key, `too many positional parameters at "${text}"`);
  }
  if (disk.readOnly === undefined && disk.cdrom) disk.readOnly = true;
  return disk;
}

/** One vifspec string as key/value pairs in order (flags have an undefined value). */
export function parseVifSpec(spec: string): [string, string | undefined][] {
  const pairs: [string, string | undefined][] = [];
  for (const raw of spec.split(",")) {
    const token = raw.replace(/^ +/, "");
    if (token === "") continue;
    const eq = token.indexOf("=");
    pairs.push(eq === -1 ? [token, undefined] : [token.slice(0, eq), token.slice(eq + 1)]);
  }
  return pairs;
}
