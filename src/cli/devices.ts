// Device flags of `vessel run`: `--disk PATH[,ro][,serial=S]` and `--net tap=NAME[,mac=MAC]
// [,vhost=on|off]` (repeatable), `--vsock cid=N,uds=PATH`, `--rng`, `--balloon` and the
// virtio console. Each value is checked here and turned into a device model; a mistake names
// the flag.

import { VirtioBalloon } from "../devices/virtio/balloon/mod.js";
import { VirtioBlock } from "../devices/virtio/block/mod.js";
import { VirtioConsole } from "../devices/virtio/console/mod.js";
import { type NetLimits, VirtioNet } from "../devices/virtio/net/mod.js";
import type { LimitConfig } from "../devices/virtio/rate_limiter.js";
import { VirtioRng } from "../devices/virtio/rng/mod.js";
import { VirtioVsock, validGuestCid } from "../devices/virtio/vsock/mod.js";
import { type FdWatcher, HostError, VHOST_NET_PATH, VhostNet } from "../host/mod.js";
import { MAX_UNIX_PATH, unixPathFits } from "../host/unix_socket.js";
import type { VirtioDevice } from "../virtio/device.js";
import { parseRate, UsageError } from "./args.js";

export interface DiskSpec {
  path: string;
  readOnly: boolean;
  serial?: string;
  limits?: LimitConfig;
  /** io=pool: every transfer on the thread pool (as QEMU's aio=threads); default auto. */
  io?: "auto" | "pool";
}

/**
 * One limit option (`bw=`, `bw_burst=`, and `iops=`/`pps=` with their `_burst`) into
 * `limits`; false when `key` is not one. `ops` names the operations key: iops for disks,
 * pps (frames) for networks.
 */
function limitOption(
  flag: string,
  limits: LimitConfig,
  ops: "iops" | "pps",
  key: string,
  value: string,
): boolean {
  if (key !== "bw" && key !== "bw_burst" && key !== ops && key !== `${ops}_burst`) return false;
  const n = parseRate(`${flag}: ${key}`, value);
  if (key === "bw") limits.bandwidth = { ...limits.bandwidth, rate: n };
  else if (key === ops) limits.ops = { ...limits.ops, rate: n };
  else if (key === "bw_burst") limits.bandwidth = { rate: limits.bandwidth?.rate ?? 0, burst: n };
  else limits.ops = { rate: limits.ops?.rate ?? 0, burst: n };
  return true;
}

/** A burst without its rate is a mistake: name the rate that is missing. */
function checkBursts(flag: string, limits: LimitConfig | undefined, prefix: string, ops: string) {
  if (limits?.bandwidth && !(limits.bandwidth.rate > 0))
    throw new UsageError(`${flag}: a burst needs ${prefix}bw= as well`);
  if (limits?.ops && !(limits.ops.rate > 0))
    throw new UsageError(`${flag}: a burst needs ${prefix}${ops}= as well`);
}

/** Parse one --disk value. */
export function parseDisk(text: string): DiskSpec {
  const [path, ...opts] = text.split(",");
  if (!path) throw new UsageError(`--disk: "${text}" has no path`);
  const spec: DiskSpec = { path, readOnly: false };
  const flag = `--disk ${text}`;
  const limits: LimitConfig = {};
  for (const opt of opts) {
    const [key = "", value = ""] = opt.split("=", 2);
    if (opt === "ro") spec.readOnly = true;
    else if (opt === "rw") spec.readOnly = false;
    else if (opt.startsWith("serial=")) spec.serial = opt.slice("serial=".length);
    else if (key === "io") {
      if (value !== "auto" && value !== "pool")
        throw new UsageError(`${flag}: io must be auto or pool, not "${value}"`);
      spec.io = value;
    } else if (!limitOption(flag, limits, "iops", key, value))
      throw new UsageError(
        `${flag}: unknown option "${opt}" (known: ro, rw, serial=S, io=auto|pool, bw=RATE, iops=N, bw_burst=, iops_burst=)`,
      );
  }
  if (Object.keys(limits).length > 0) spec.limits = limits;
  checkBursts(flag, spec.limits, "", "iops");
  return spec;
}

export interface NetSpec {
  tap: string;
  mac?: string;
  /** Let the kernel's vhost-net worker carry the frames (vhost=on). */
  vhost: boolean;
  /** What the guest receives (rx) and sends (tx), as Firecracker's rx/tx rate limiters. */
  limits?: NetLimits;
}

/**
 * Parse one --net value: tap=NAME[,mac=MAC][,vhost=on|off] and limits each way:
 * rx_bw=, rx_pps=, tx_bw=, tx_pps= (with _burst forms).
 */
export function parseNet(text: string): NetSpec {
  let tap: string | undefined;
  let mac: string | undefined;
  let vhost = false;
  const flag = `--net ${text}`;
  const limits: { rx: LimitConfig; tx: LimitConfig } = { rx: {}, tx: {} };
  for (const opt of text.split(",")) {
    const [key = "", value = ""] = opt.split("=", 2);
    const dir = /^(rx|tx)_(.*)$/.exec(key);
    if (key === "tap" && value) tap = value;
    else if (key === "mac" && value) mac = value;
    else if (key === "vhost" && (value === "on" || value === "off")) vhost = value === "on";
    else if (!(dir && limitOption(flag, limits[dir[1] as "rx" | "tx"], "pps", dir[2] ?? "", value)))
      throw new UsageError(
        `${flag}: unknown option "${opt}" (known: tap=NAME, mac=MAC, vhost=on|off, rx_bw=RATE, rx_pps=N, tx_bw=RATE, tx_pps=N, and their _burst=)`,
      );
  }
  if (!tap) throw new UsageError(`${flag}: tap=NAME is required`);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tap))
    throw new UsageError(`${flag}: "${tap}" is not a valid interface name`);
  checkBursts(flag, limits.rx, "rx_", "pps");
  checkBursts(flag, limits.tx, "tx_", "pps");
  const net: NetLimits = {};
  if (Object.keys(limits.rx).length) net.rx = limits.rx;
  if (Object.keys(limits.tx).length) net.tx = limits.tx;
  const limited = net.rx !== undefined || net.tx !== undefined;
  if (limited && vhost)
    throw new UsageError(
      `${flag}: rate limits need vhost=off (with vhost-net the kernel moves the frames, past the VMM)`,
    );
  return { tap, vhost, ...(mac !== undefined ? { mac } : {}), ...(limited ? { limits: net } : {}) };
}

export interface VsockSpec {
  cid: number;
  uds: string;
}

/** Parse the --vsock value: cid=N,uds=PATH (Firecracker's guest_cid and uds_path). */
export function parseVsock(text: string): VsockSpec {
  let cid: number | undefined;
  let uds: string | undefined;
  for (const opt of text.split(",")) {
    const eq = opt.indexOf("=");
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? "" : opt.slice(eq + 1);
    if (key === "cid" && /^\d+$/.test(value)) {
      cid = Number(value);
      if (!validGuestCid(cid)) {
        throw new UsageError(`--vsock ${text}: cid ${value} is not in 3..4294967294`);
      }
    } else if (key === "uds" && value !== "") {
      if (!unixPathFits(value)) {
        throw new UsageError(`--vsock ${text}: uds is longer than ${MAX_UNIX_PATH} bytes`);
      }
      uds = value;
    } else {
      throw new UsageError(`--vsock ${text}: unknown option "${opt}" (known: cid=N, uds=PATH)`);
    }
  }
  if (cid === undefined || uds === undefined) {
    throw new UsageError(`--vsock ${text}: cid=N and uds=PATH are both required`);
  }
  return { cid, uds };
}

export interface DeviceFlags {
  disks: readonly string[];
  nets: readonly string[];
  rng: boolean;
  balloon: boolean;
  /** The --vsock value, if given (at most one: Linux drives one vsock device). */
  vsock?: string;
  /** Output sink of a virtio-console (hvc0), when the console is virtio. */
  virtioConsoleOut?: (bytes: Uint8Array) => void;
  /** Where vhost=on opens vhost-net; default /dev/vhost-net (tests point elsewhere). */
  vhostNetPath?: string;
}

/** Open every device; on any failure close those already opened and report which flag. */
export async function openDevices(flags: DeviceFlags, watcher: FdWatcher): Promise<VirtioDevice[]> {
  const { disks, nets, rng } = flags;
  const opened: VirtioDevice[] = [];
  const devices: VirtioDevice[] = [];
  try {
    disks.forEach((text, i) => {
      const spec = parseDisk(text);
      try {
        const disk = new VirtioBlock({
          path: spec.path,
          readOnly: spec.readOnly,
          name: `virtio-blk${i}`,
          ...(spec.serial !== undefined ? { serial: spec.serial } : {}),
          ...(spec.limits ? { limits: spec.limits } : {}),
          ...(spec.io ? { io: spec.io } : {}),
        });
        opened.push(disk);
        devices.push(disk);
      } catch (e) {
        throw new UsageError(`--disk ${text}: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
    nets.forEach((text, i) => {
      const spec = parseNet(text);
      try {
        const net = new VirtioNet({
          tap: spec.tap,
          name: `virtio-net${i}`,
          watch: (fd, onReady) => watcher.addFd(fd, onReady),
          unwatch: (fd) => watcher.removeFd(fd),
          ...(spec.mac !== undefined ? { mac: spec.mac } : {}),
          ...(spec.limits ? { limits: spec.limits } : {}),
          ...(spec.vhost
            ? {
                vhost: openVhostNet(flags.vhostNetPath ?? VHOST_NET_PATH),
                watchEventFd: (fd: number, onReady: () => void) => watcher.addEventFd(fd, onReady),
              }
            : {}),
        });
        opened.push(net);
        devices.push(net);
      } catch (e) {
        throw new UsageError(`--net ${text}: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
    if (flags.vsock !== undefined) {
      const text = flags.vsock;
      const spec = parseVsock(text);
      try {
        const vsock = await VirtioVsock.open({ ...spec, name: "virtio-vsock0" });
        opened.push(vsock);
        devices.push(vsock);
      } catch (e) {
        throw new UsageError(`--vsock ${text}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  } catch (e) {
    await closeDevices(opened);
    throw e;
  }
  if (rng) devices.push(new VirtioRng({ name: "virtio-rng0" }));
  if (flags.balloon) devices.push(new VirtioBalloon({ name: "virtio-balloon0" }));
  if (flags.virtioConsoleOut)
    devices.push(new VirtioConsole({ out: flags.virtioConsoleOut, name: "virtio-console0" }));
  return devices;
}

function openVhostNet(path: string): VhostNet {
  try {
    return VhostNet.open(path);
  } catch (e) {
    if (e instanceof HostError && e.code === "ENOENT") {
      throw new Error(`vhost=on needs ${path}, which this host lacks (modprobe vhost_net)`);
    }
    throw e;
  }
}

export async function closeDevices(devices: readonly VirtioDevice[]): Promise<void> {
  for (const d of devices) {
    if (d instanceof VirtioBlock || d instanceof VirtioVsock) await d.close();
    else if (d instanceof VirtioNet) d.close();
  }
}
