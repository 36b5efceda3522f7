// The default guest that `vessel image build` makes and `vessel run` boots when given no
// kernel: Debian's cloud kernel with a busybox initramfs whose /init loads the virtio
// modules, reports `VESSEL-INIT-READY`, then either runs the script passed base64-encoded
// as `vessel.exec=` on the kernel command line and powers off, or gives a shell on the
// console. Besides busybox it carries mkfs.ext4 from the host and vsock-cat, compiled here
// from vsock_cat.c (busybox has no AF_VSOCK tool). Builds are cached per kernel package
// version and recipe, and installed with one rename.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readlinkSync, realpathSync, statSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { installDir, replaceSymlink, scratchDirBeside, vesselCacheRoot } from "./debian.js";
import {
  fetchBusybox,
  fetchKernel,
  type KernelPackageRef,
  MODULE_LIST_PATH,
  makeInitramfs,
  requireModules,
  resolveKernelPackage,
} from "./initramfs.js";

/** The meta-package whose dependency is the guest kernel. */
export const GUEST_KERNEL_META = "linux-image-cloud-amd64";

/** Modules the guest needs; their dependencies are added in load order. */
export const GUEST_MODULES: readonly string[] = [
  "virtio_mmio",
  // PCI transport too, so the same image boots under QEMU's pc/q35 for comparison runs.
  "virtio_pci",
  "virtio_blk",
  "virtio_net",
  "virtio_console",
  "virtio_rng",
  "virtio_balloon",
  "vsock",
  "vmw_vsock_virtio_transport",
  "button",
  "evdev",
];
/** Loaded when the kernel has them; their absence is not an error. */
export const GUEST_OPTIONAL_MODULES: readonly string[] = ["rng_core", "ext4"];

/** Bump when the image's layout or /init changes in a way a cached build must not hide. */
const RECIPE_VERSION = 4;

/** Source of the guest's vsock-cat (in the source tree: tsc does not copy C files). */
const VSOCK_CAT_SOURCE = fileURLToPath(new URL("../../../src/image/vsock_cat.c", import.meta.url));
/** Where vsock-cat lands in the guest. */
export const VSOCK_CAT_PATH = "usr/bin/vsock-cat";

/** Printed by /init once modules are loaded; boot-to-init timing looks for it. */
export const INIT_READY_MARKER = "VESSEL-INIT-READY";
/** Printed after a `vessel.exec=` script finishes: `VESSEL-EXEC-DONE rc=<code>`. */
export const EXEC_DONE_MARKER = "VESSEL-EXEC-DONE";

export const GUEST_INIT = `#!/bin/sh
# /init of Vessel's default guest (written by vessel image build).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=linux
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "$mod" 2>/tmp/insmod.err || echo "VESSEL-INIT: module \${mod##*/} failed: $(cat /tmp/insmod.err)"
done < ${MODULE_LIST_PATH}
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# Network: vessel.ip=ADDR/PREFIX (and vessel.gw=ADDR) on the kernel command line configure
# eth0 statically; vessel.ip=dhcp runs busybox udhcpc; without it eth0 is only brought up.
net_ip=; net_gw=
set -f
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vessel.ip=*) net_ip="\${arg#vessel.ip=}" ;;
    vessel.gw=*) net_gw="\${arg#vessel.gw=}" ;;
  esac
done
set +f
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  if [ "$net_ip" = dhcp ]; then udhcpc -q -n -i eth0 >/dev/null 2>&1 || echo "VESSEL-INIT: dhcp on eth0 failed"
  elif [ -n "$net_ip" ]; then ip addr add "$net_ip" dev eth0; fi
  [ -n "$net_gw" ] && ip route add default via "$net_gw"
fi
echo "VESSEL-INIT: cpus=$(nproc) mem=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
echo "${INIT_READY_MARKER}"
power_off() {
  sync
  poweroff -f
  sleep 2
  reboot -f
}
set -f
exec_b64=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vessel.exec=*) exec_b64="\${arg#vessel.exec=}" ;;
  esac
done
set +f
if [ -n "$exec_b64" ]; then
  echo "$exec_b64" | base64 -d > /tmp/vessel-exec.sh
  sh /tmp/vessel-exec.sh
  echo "${EXEC_DONE_MARKER} rc=$?"
  power_off
fi
# acpid exits at once when it cannot open its log (/var/log/acpid.log).
mkdir -p /var/log
acpid || echo "VESSEL-INIT: acpid failed; the power button will not work"
export PS1='vessel:\\w# '
setsid cttyhack sh
power_off
`;

const POWER_BUTTON_SCRIPT = "#!/bin/sh\nsync\npoweroff -f\n";

export interface ImagePaths {
  /** The cache directory of the default image (holds one directory per build). */
  dir: string;
  kernel: string;
  initrd: string;
  manifest: string;
}

export interface ImageManifest {
  kernelPackage: string;
  kernelVersion: string;
  kernelRelease: string;
  busyboxVersion: string;
  modules: string[];
  builtinModules: string[];
  recipe: string;
}

export interface BuiltImage extends ImagePaths {
  manifest: string;
  info: ImageManifest;
  /** True when the cached build was reused and nothing was downloaded. */
  cached: boolean;
}

export interface BuildImageOptions {
  /** The Vessel cache root; default `${XDG_CACHE_HOME:-$HOME/.cache}/vessel`. */
  cacheDir?: string;
  /** Rebuild even if a build for this kernel version exists. */
  force?: boolean;
  progress?: (step: string, done: number, total: number) => void;
}

/** `<cacheRoot>/images/default`. */
export function defaultImageDir(cacheDir: string = vesselCacheRoot()): string {
  return join(cacheDir, "images", "default");
}

/**
 * Paths of the current default image (through the `current` link of the newest build).
 * They exist only after buildDefaultImage(); `imageIsBuilt()` tells.
 */
export function defaultImagePaths(cacheDir?: string): ImagePaths {
  const dir = defaultImageDir(cacheDir);
  const current = join(dir, "current");
  return {
    dir,
    kernel: join(current, "vmlinuz"),
    initrd: join(current, "initrd.img"),
    manifest: join(current, "manifest.json"),
  };
}

export function imageIsBuilt(cacheDir?: string): boolean {
  const p = defaultImagePaths(cacheDir);
  return existsSync(p.kernel) && existsSync(p.initrd) && existsSync(p.manifest);
}

function recipeHash(): string {
  return createHash("sha256")
    .update(JSON.stringify([RECIPE_VERSION, GUEST_INIT, GUEST_MODULES, GUEST_OPTIONAL_MODULES]))
    .update(readFileSync(VSOCK_CAT_SOURCE))
    .digest("hex")
    .slice(0, 8);
}

/** Compile vsock-cat static (the guest has no libc) into `workDir`; returns its bytes. */
function compileVsockCat(workDir: string): Uint8Array {
  const out = join(workDir, "vsock-cat");
  try {
    execFileSync("gcc", ["-static", "-Os", "-s", "-Wall", "-o", out, VSOCK_CAT_SOURCE], {
      stdio: ["ignore", "ignore", "pipe"],
    });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(
      `Cannot build the default guest: compiling vsock-cat failed (apt-get install gcc libc6-dev): ${stderr || (e as Error).message}`,
    );
  }
  return readFileSync(out);
}

function buildName(ref: KernelPackageRef): string {
  return `${ref.pkg}_${ref.version}_${recipeHash()}`.replace(/[^A-Za-z0-9._+-]/g, "_");
}

function pathsIn(dir: string, build: string): ImagePaths {
  return {
    dir,
    kernel: join(dir, build, "vmlinuz"),
    initrd: join(dir, build, "initrd.img"),
    manifest: join(dir, build, "manifest.json"),
  };
}

function readManifest(path: string): ImageManifest {
  return JSON.parse(readFileSync(path, "utf8")) as ImageManifest;
}

/**
 * Host binaries (from Debian's packages installed on this machine) copied into the guest
 * with the shared libraries they load, at the same paths: busybox has no ext4 mkfs, and
 * the guest makes its own file systems. Guest path first, host path second.
 */
const GUEST_HOST_TOOLS: readonly [string, string][] = [
  ["usr/sbin/mkfs.ext4", "/sbin/mke2fs"],
  ["etc/mke2fs.conf", "/etc/mke2fs.conf"],
];

function hostToolFiles(
  tools: readonly [string, string][],
): { path: string; data: Uint8Array; mode: number }[] {
  const files = new Map<string, { path: string; data: Uint8Array; mode: number }>();
  for (const [guestPath, hostPath] of tools) {
    if (!existsSync(hostPath)) {
      throw new Error(
        `Cannot build the default guest: ${hostPath} is missing (apt-get install e2fsprogs)`,
      );
    }
    const executable = (statSync(hostPath).mode & 0o111) !== 0;
    files.set(guestPath, {
      path: guestPath,
      data: readFileSync(hostPath),
      mode: executable ? 0o755 : 0o644,
    });
    if (!executable) continue;
    // ldd lists "name => /path (addr)" and the loader as "/lib64/ld-linux-x86-64.so.2 (addr)".
    const out = execFileSync("ldd", [hostPath], { encoding: "utf8" });
    for (const m of out.matchAll(/(\/\S+\.so[^\s]*) \(0x/g)) {
      const lib = m[1] as string;
      const real = realpathSync(lib);
      files.set(lib.slice(1), { path: lib.slice(1), data: readFileSync(real), mode: 0o755 });
    }
  }
  return [...files.values()];
}

/** Build (or reuse) the default guest image. */
export async function buildDefaultImage(opts: BuildImageOptions = {}): Promise<BuiltImage> {
  const dir = defaultImageDir(opts.cacheDir);
  const steps = [
    "resolve kernel package",
    "download kernel",
    "download busybox",
    "collect modules and tools",
    "write initramfs",
    "install",
  ];
  let done = 0;
  const step = (): void => {
    const name = steps[done] ?? "done";
    opts.progress?.(name, done, steps.length);
    done++;
  };
  step();
  let ref: KernelPackageRef;
  try {
    ref = await resolveKernelPackage(GUEST_KERNEL_META);
  } catch (err) {
    // Offline or no apt lists: an existing build still serves.
    if (!opts.force && imageIsBuilt(opts.cacheDir)) {
      const p = defaultImagePaths(opts.cacheDir);
      opts.progress?.("done", steps.length, steps.length);
      return { ...p, info: readManifest(p.manifest), cached: true };
    }
    throw err;
  }
  const build = buildName(ref);
  const paths = pathsIn(dir, build);
  if (!opts.force && existsSync(paths.manifest)) {
    if (readlinkOrNull(join(dir, "current")) !== build) {
      await replaceSymlink(build, join(dir, "current"));
    }
    opts.progress?.("done", steps.length, steps.length);
    return { ...paths, info: readManifest(paths.manifest), cached: true };
  }
  await mkdir(dir, { recursive: true });
  const work = await scratchDirBeside(join(dir, build));
  try {
    step();
    const kernel = await fetchKernel(ref, join(work, "dl"));
    step();
    const busybox = await fetchBusybox(join(work, "dl"));
    step();
    const resolved = requireModules(kernel.tree, GUEST_MODULES, GUEST_OPTIONAL_MODULES);
    const vsockCat = compileVsockCat(work);
    step();
    const initrd = makeInitramfs({
      busybox: busybox.path,
      release: kernel.tree.release,
      modules: resolved.ordered,
      init: GUEST_INIT,
      files: [
        { path: "etc/acpi/PWRF/00000080", data: POWER_BUTTON_SCRIPT, mode: 0o755 },
        { path: VSOCK_CAT_PATH, data: vsockCat, mode: 0o755 },
        ...hostToolFiles(GUEST_HOST_TOOLS),
      ],
    });
    const out = join(work, "out");
    await mkdir(out);
    await writeFile(join(out, "initrd.img"), initrd);
    await writeFile(join(out, "vmlinuz"), readFileSync(kernel.vmlinuz));
    const info: ImageManifest = {
      kernelPackage: ref.pkg,
      kernelVersion: ref.version,
      kernelRelease: kernel.tree.release,
      busyboxVersion: busybox.version,
      modules: resolved.ordered.map((m) => m.name),
      builtinModules: resolved.builtin,
      recipe: recipeHash(),
    };
    // The manifest is written last: its presence marks a complete build.
    await writeFile(join(out, "manifest.json"), `${JSON.stringify(info, null, 2)}\n`);
    step();
    await installDir(out, join(dir, build));
    await replaceSymlink(build, join(dir, "current"));
    opts.progress?.("done", steps.length, steps.length);
    return { ...paths, info, cached: false };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function readlinkOrNull(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

/** Kernel command line limit on x86 (COMMAND_LINE_SIZE, arch/x86/include/asm/setup.h). */
const COMMAND_LINE_SIZE = 2048;

/** The `vessel.exec=<base64>` argument that makes /init run `script` and power off. */
export function execCmdlineArg(script: string): string {
  const arg = `vessel.exec=${Buffer.from(script, "utf8").toString("base64")}`;
  if (arg.length > COMMAND_LINE_SIZE - 256) {
    throw new RangeError(
      `Cannot pass the script on the kernel command line: ${arg.length} bytes encoded, limit ${COMMAND_LINE_SIZE - 256}`,
    );
  }
  return arg;
}
