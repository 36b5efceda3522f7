// The lab's L1 machine image: Debian's generic kernel (it has 9p, virtio-pci and kvm-amd as
// modules; the cloud kernel lacks 9p) and a busybox initramfs whose /init loads KVM, mounts
// the host's root read-only from 9p at /host with fresh kernel file systems, binds the
// writable share at its host path inside /host, and runs the batch's runner script.
// Cached under `${XDG_CACHE_HOME:-$HOME/.cache}/vessel/lab/`, one directory per kernel build.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, readlinkSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { installDir, replaceSymlink, scratchDirBeside, vesselCacheRoot } from "../image/debian.js";
import {
  fetchBusybox,
  fetchKernel,
  type KernelPackageRef,
  MODULE_LIST_PATH,
  makeInitramfs,
  requireModules,
  resolveKernelPackage,
} from "../image/initramfs.js";

export const L1_KERNEL_META = "linux-image-amd64";

/** What L1 must load: KVM on AMD, and the 9p-over-virtio-pci chain for the shares. */
export const L1_MODULES: readonly string[] = [
  "kvm_amd",
  "virtio_pci",
  "9pnet_virtio",
  "9p",
  "virtio_rng",
];
/**
 * Loaded when present, for scenarios that need them (loop disks, taps, vhost, bridges).
 * 6.1's ext4 asks for crc32c at every mount, and the generic kernel has it as a module.
 */
export const L1_OPTIONAL_MODULES: readonly string[] = [
  "loop",
  "crc32c_generic",
  "ext4",
  "tun",
  "tap",
  "vhost_net",
  "vhost_vsock",
  "veth",
  "bridge",
];

/** The 9p mount tags QEMU gives the two shares. */
export const HOST_TAG = "host";
export const LAB_TAG = "lab";
/** Inside the writable share: the runner's files (scripts, outputs, exit codes). */
export const LAB_CONTROL_DIR = ".vessel-lab";

/** Console markers L1 prints; the host side parses them. */
export const MARK = {
  ready: "VESSEL-LAB-READY",
  begin: "VESSEL-LAB-BEGIN",
  end: "VESSEL-LAB-END",
  warn: "VESSEL-LAB-WARN",
  fatal: "VESSEL-LAB-FATAL",
} as const;

const RECIPE_VERSION = 1;

export const L1_INIT = `#!/bin/sh
# /init of the Vessel lab's L1 machine.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
power_off() {
  sync
  poweroff -f
  sleep 2
  reboot -f
}
fatal() {
  echo "${MARK.fatal}: $*"
  power_off
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# khugepaged has soft-locked an L1 CPU for over a minute (TCG runs its scans of the guests'
# RAM slowly) and wedged the lab; the VMMs' madvised guest RAM still gets huge pages at
# fault time, so the background collapse is put off to once an hour.
echo 3600000 > /sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs 2>/dev/null \\
  || echo "${MARK.warn}: cannot slow khugepaged down"
while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "$mod" 2>/tmp/insmod.err || echo "${MARK.warn}: module \${mod##*/} failed: $(cat /tmp/insmod.err)"
done < ${MODULE_LIST_PATH}
if [ ! -c /dev/kvm ]; then
  echo "${MARK.warn}: /dev/kvm is missing: kvm_amd did not load ($(grep -c -w svm /proc/cpuinfo) CPUs with svm)"
fi
mkdir -p /host /lab
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose ${HOST_TAG} /host \\
  || fatal "cannot mount the host root (9p tag ${HOST_TAG})"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 ${LAB_TAG} /lab \\
  || fatal "cannot mount the lab share (9p tag ${LAB_TAG})"
mount -t proc proc /host/proc || fatal "cannot mount /host/proc"
mount -t sysfs sysfs /host/sys || fatal "cannot mount /host/sys"
mount -t devtmpfs devtmpfs /host/dev || fatal "cannot mount /host/dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o ptmxmode=0666 devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
# Keep the host's /tmp and /run reachable before fresh tmpfs hide them: a checkout that
# lives there (CI clones into temporary directories) is bound back in below.
mkdir -p /orig-tmp /orig-run
mount --bind /host/tmp /orig-tmp
mount --bind /host/run /orig-run
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fatal "cannot mount /host/tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run || fatal "cannot mount /host/run"
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || fatal "cannot mount cgroup2"
for c in cpu memory io cpuset pids; do
  echo "+$c" > /host/sys/fs/cgroup/cgroup.subtree_control || echo "${MARK.warn}: cgroup controller $c unavailable"
done
share=$(cat /lab/${LAB_CONTROL_DIR}/share-path)
mkdir -p "/host$share" && mount --bind /lab "/host$share" || fatal "cannot bind the lab share at $share"
cwd=$(cat /lab/${LAB_CONTROL_DIR}/cwd-path 2>/dev/null)
case "$cwd" in
  /tmp/*) mkdir -p "/host$cwd" && mount --bind "/orig-tmp\${cwd#/tmp}" "/host$cwd" || fatal "cannot bind $cwd" ;;
  /run/*) mkdir -p "/host$cwd" && mount --bind "/orig-run\${cwd#/run}" "/host$cwd" || fatal "cannot bind $cwd" ;;
esac
echo "${MARK.ready} uptime=$(cut -d" " -f1 /proc/uptime)"
sh /lab/${LAB_CONTROL_DIR}/run.sh
power_off
`;

export interface L1Image {
  kernel: string;
  initrd: string;
  manifest: string;
  cached: boolean;
}

/** `<cacheRoot>/lab`. */
export function labCacheDir(cacheDir: string = vesselCacheRoot()): string {
  return join(cacheDir, "lab");
}

function recipeHash(): string {
  return createHash("sha256")
    .update(JSON.stringify([RECIPE_VERSION, L1_INIT, L1_MODULES, L1_OPTIONAL_MODULES]))
    .digest("hex")
    .slice(0, 8);
}

function imageIn(dir: string, cached: boolean): L1Image {
  return {
    kernel: join(dir, "vmlinuz"),
    initrd: join(dir, "initrd.img"),
    manifest: join(dir, "manifest.json"),
    cached,
  };
}

function readlinkOrNull(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

/** True when a usable L1 image is in the cache (so the lab can run without apt). */
export function l1ImageCached(cacheDir?: string): boolean {
  const current = join(labCacheDir(cacheDir), "current");
  const link = readlinkOrNull(current);
  return link?.endsWith(`_${recipeHash()}`) === true && existsSync(join(current, "manifest.json"));
}

/** Build (or reuse) the L1 kernel and initramfs. */
export async function ensureL1Image(
  opts: { cacheDir?: string; force?: boolean; log?: (line: string) => void } = {},
): Promise<L1Image> {
  const dir = labCacheDir(opts.cacheDir);
  let ref: KernelPackageRef;
  try {
    ref = await resolveKernelPackage(L1_KERNEL_META);
  } catch (err) {
    if (!opts.force && l1ImageCached(opts.cacheDir)) return imageIn(join(dir, "current"), true);
    throw new Error(`Cannot build the lab's L1 image: ${(err as Error).message}`);
  }
  const build = `${ref.pkg}_${ref.version}_${recipeHash()}`.replace(/[^A-Za-z0-9._+-]/g, "_");
  const final = join(dir, build);
  if (!opts.force && existsSync(join(final, "manifest.json"))) {
    if (readlinkOrNull(join(dir, "current")) !== build) {
      await replaceSymlink(build, join(dir, "current"));
    }
    return imageIn(final, true);
  }
  opts.log?.(`lab: building the L1 image from ${ref.pkg} ${ref.version}`);
  await mkdir(dir, { recursive: true });
  const work = await scratchDirBeside(final);
  try {
    const kernel = await fetchKernel(ref, join(work, "dl"));
    const busybox = await fetchBusybox(join(work, "dl"));
    const resolved = requireModules(kernel.tree, L1_MODULES, L1_OPTIONAL_MODULES);
    const initrd = makeInitramfs({
      busybox: busybox.path,
      release: kernel.tree.release,
      modules: resolved.ordered,
      init: L1_INIT,
    });
    const out = join(work, "out");
    await mkdir(out);
    await writeFile(join(out, "initrd.img"), initrd);
    await writeFile(join(out, "vmlinuz"), readFileSync(kernel.vmlinuz));
    const manifest = {
      kernelPackage: ref.pkg,
      kernelVersion: ref.version,
      kernelRelease: kernel.tree.release,
      busyboxVersion: busybox.version,
      modules: resolved.ordered.map((m) => m.name),
      builtinModules: resolved.builtin,
      missingOptional: resolved.missing,
      recipe: recipeHash(),
    };
    await writeFile(join(out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await installDir(out, final);
    await replaceSymlink(build, join(dir, "current"));
    return imageIn(final, false);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
