// The pieces every Vessel initramfs is made of, shared by the default guest image and the
// lab's L1 image: a Debian kernel package unpacked (bzImage plus module tree), busybox out of
// Debian's busybox-static, and the gzip'd newc archive that puts busybox, its applet links,
// the chosen modules (with a load-order list) and an /init script together.

import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { type CpioEntry, writeNewc } from "./cpio.js";
import { downloadPackage, extractDeb, packageVersion, resolveMetaPackage } from "./debian.js";
import {
  indexModules,
  type KernelModule,
  type ModuleTree,
  moduleBytes,
  type ResolvedModules,
  resolveModules,
} from "./modules.js";

/** The Debian package that provides the static busybox. */
export const BUSYBOX_PACKAGE = "busybox-static";

/** A meta-package resolved to the versioned kernel package apt would install. */
export interface KernelPackageRef {
  meta: string;
  pkg: string;
  version: string;
}

export async function resolveKernelPackage(meta: string): Promise<KernelPackageRef> {
  const pkg = await resolveMetaPackage(meta);
  return { meta, pkg, version: await packageVersion(pkg) };
}

export interface UnpackedKernel {
  /** The bzImage (boot/vmlinuz-*). */
  vmlinuz: string;
  tree: ModuleTree;
}

/** Download and unpack a kernel package into `workDir`. */
export async function fetchKernel(ref: KernelPackageRef, workDir: string): Promise<UnpackedKernel> {
  const deb = await downloadPackage(`${ref.pkg}=${ref.version}`, workDir);
  const root = join(workDir, "kernel");
  await extractDeb(deb, root);
  const boot = join(root, "boot");
  const vmlinuz = readdirSync(boot).find((f) => f.startsWith("vmlinuz-"));
  if (vmlinuz === undefined) throw new Error(`Cannot find boot/vmlinuz-* in ${ref.pkg}`);
  return { vmlinuz: join(boot, vmlinuz), tree: indexModules(root) };
}

/** Download and unpack busybox-static into `workDir`; returns the binary and its version. */
export async function fetchBusybox(workDir: string): Promise<{ path: string; version: string }> {
  const version = await packageVersion(BUSYBOX_PACKAGE);
  const deb = await downloadPackage(BUSYBOX_PACKAGE, workDir);
  const root = join(workDir, "busybox");
  await extractDeb(deb, root);
  return { path: join(root, "bin", "busybox"), version };
}

/** Applet paths busybox installs itself as, e.g. "bin/sh", "usr/bin/base64". */
export function busyboxApplets(busybox: string): string[] {
  const out = execFileSync(busybox, ["--list-full"], { encoding: "utf8" });
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && l !== "bin/busybox");
}

/** Resolve `wanted` and fail loudly on names that are neither modules nor built in. */
export function requireModules(
  tree: ModuleTree,
  wanted: readonly string[],
  optional: readonly string[] = [],
): ResolvedModules {
  const resolved = resolveModules(tree, [...wanted, ...optional]);
  const missing = resolved.missing.filter((m) => !optional.includes(m));
  if (missing.length > 0) {
    throw new Error(
      `Kernel ${tree.release} has neither a module nor a built-in for: ${missing.join(", ")}`,
    );
  }
  return resolved;
}

export interface InitramfsSpec {
  busybox: string;
  release: string;
  modules: readonly KernelModule[];
  /** The /init shell script. */
  init: string;
  /** Extra files, e.g. /etc/acpi/PWRF/00000080; parent directories are added as needed. */
  files?: ReadonlyArray<{ path: string; data: string | Uint8Array; mode?: number }>;
}

/** Path of the module load-order list inside the initramfs (one absolute path a line). */
export const MODULE_LIST_PATH = "/etc/vessel/modules";

/** Build a gzip'd newc initramfs from `spec`. */
export function makeInitramfs(spec: InitramfsSpec): Uint8Array {
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const addDir = (path: string): void => {
    const parts = path.split("/").filter((p) => p !== "");
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!dirs.has(dir)) {
        dirs.add(dir);
        entries.push({ type: "dir", path: dir, mode: dir === "tmp" ? 0o1777 : 0o755 });
      }
    }
  };
  const parentOf = (path: string): string => path.split("/").slice(0, -1).join("/");
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run"]) {
    addDir(d);
  }
  for (const d of ["root", "etc/vessel", "mnt"]) addDir(d);
  entries.push({ type: "chardev", path: "dev/console", major: 5, minor: 1, mode: 0o600 });
  entries.push({ type: "chardev", path: "dev/null", major: 1, minor: 3, mode: 0o666 });
  entries.push({
    type: "file",
    path: "bin/busybox",
    data: readFileSync(spec.busybox),
    mode: 0o755,
  });
  for (const applet of busyboxApplets(spec.busybox)) {
    addDir(parentOf(applet));
    entries.push({ type: "symlink", path: applet, target: "/bin/busybox" });
  }
  const loadList: string[] = [];
  for (const mod of spec.modules) {
    const path = `lib/modules/${spec.release}/${mod.relPath.replace(/\.(xz|zst|gz)$/, "")}`;
    addDir(parentOf(path));
    entries.push({ type: "file", path, data: moduleBytes(mod), mode: 0o644 });
    loadList.push(`/${path}`);
  }
  const encoder = new TextEncoder();
  const files = [
    { path: "init", data: spec.init, mode: 0o755 },
    { path: MODULE_LIST_PATH, data: `${loadList.join("\n")}\n`, mode: 0o644 },
    { path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\n", mode: 0o644 },
    { path: "etc/group", data: "root:x:0:\n", mode: 0o644 },
    ...(spec.files ?? []),
  ];
  for (const f of files) {
    const path = f.path.replace(/^\/+/, "");
    addDir(parentOf(path));
    const data = typeof f.data === "string" ? encoder.encode(f.data) : f.data;
    entries.push({ type: "file", path, data, mode: f.mode ?? 0o644 });
  }
  return gzipSync(writeNewc(entries), { level: 6 });
}
