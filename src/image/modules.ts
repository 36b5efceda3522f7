// Kernel modules out of an unpacked Debian kernel package. The package ships no
// modules.dep (depmod makes it at install time), so dependencies come from each module's own
// `.modinfo` ELF section (`depends=a,b`). Resolving a list of names yields the modules in a
// load order where every dependency comes first, skipping what modules.builtin says is
// compiled in; compressed modules are decompressed so busybox insmod can load them.

import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { gunzipSync } from "node:zlib";

/** A module file found under lib/modules/<release>/. */
export interface KernelModule {
  /** Canonical name: the file's base name without `.ko*`, with '-' turned into '_'. */
  name: string;
  /** Absolute path of the (possibly compressed) file. */
  path: string;
  /** Path relative to lib/modules/<release>/, e.g. kernel/drivers/virtio/virtio.ko. */
  relPath: string;
}

export interface ModuleTree {
  release: string;
  root: string;
  modules: Map<string, KernelModule>;
  builtin: Set<string>;
}

/** Normalise a module name the way the kernel does ('-' and '_' are the same). */
export function moduleName(nameOrFile: string): string {
  return basename(nameOrFile)
    .replace(/\.ko(\.(xz|zst|gz))?$/, "")
    .replace(/-/g, "_");
}

/** Index `<extracted>/lib/modules/<release>/` of an unpacked kernel package. */
export function indexModules(extractedRoot: string): ModuleTree {
  const base = join(extractedRoot, "lib", "modules");
  const releases = existsSync(base) ? readdirSync(base) : [];
  const release = releases[0];
  if (release === undefined || releases.length !== 1) {
    throw new Error(`Cannot index modules: expected one release under ${base}, found ${releases}`);
  }
  const root = join(base, release);
  const modules = new Map<string, KernelModule>();
  const walk = (dir: string, rel: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const childRel = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) walk(join(dir, entry.name), childRel);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(entry.name)) {
        const name = moduleName(entry.name);
        modules.set(name, { name, path: join(dir, entry.name), relPath: childRel });
      }
    }
  };
  walk(join(root, "kernel"), "kernel");
  const builtin = new Set<string>();
  const builtinFile = join(root, "modules.builtin");
  if (existsSync(builtinFile)) {
    for (const line of readFileSync(builtinFile, "utf8").split("\n")) {
      if (line.trim() !== "") builtin.add(moduleName(line.trim()));
    }
  }
  return { release, root, modules, builtin };
}

/** The uncompressed bytes of a module, whatever compression the package used. */
export function moduleBytes(mod: KernelModule): Buffer {
  if (mod.path.endsWith(".ko")) return readFileSync(mod.path);
  if (mod.path.endsWith(".gz")) return gunzipSync(readFileSync(mod.path));
  const tool = mod.path.endsWith(".xz") ? "xz" : "zstd";
  try {
    return execFileSync(tool, ["-dc", mod.path], { maxBuffer: 256 * 1024 * 1024 });
  } catch (err) {
    throw new Error(`Cannot decompress ${mod.path} with ${tool}: ${(err as Error).message}`);
  }
}

// ELF64 little-endian layout (System V gABI, "ELF Header" and "Sections").
const EI_CLASS_64 = 2;
const E_SHOFF = 0x28;
const E_SHENTSIZE = 0x3a;
const E_SHNUM = 0x3c;
const E_SHSTRNDX = 0x3e;
const SH_NAME = 0x00;
const SH_OFFSET = 0x18;
const SH_SIZE = 0x20;

/** The key=value strings of a module's `.modinfo` section, e.g. depends, vermagic. */
export function readModinfo(elf: Uint8Array): Map<string, string[]> {
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const fail = (why: string): never => {
    throw new TypeError(`Cannot read modinfo: ${why}`);
  };
  if (elf.length < 64 || view.getUint32(0, false) !== 0x7f454c46) fail("not an ELF file");
  if (elf[4] !== EI_CLASS_64) fail("not ELF64");
  const shoff = Number(view.getBigUint64(E_SHOFF, true));
  const shentsize = view.getUint16(E_SHENTSIZE, true);
  const shnum = view.getUint16(E_SHNUM, true);
  const shstrndx = view.getUint16(E_SHSTRNDX, true);
  if (shoff + shnum * shentsize > elf.length || shstrndx >= shnum) fail("bad section table");
  const section = (i: number): { name: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    return {
      name: view.getUint32(at + SH_NAME, true),
      offset: Number(view.getBigUint64(at + SH_OFFSET, true)),
      size: Number(view.getBigUint64(at + SH_SIZE, true)),
    };
  };
  const strtab = section(shstrndx);
  const decoder = new TextDecoder();
  const cString = (at: number): string => {
    let end = at;
    while (end < elf.length && elf[end] !== 0) end++;
    return decoder.decode(elf.subarray(at, end));
  };
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cString(strtab.offset + s.name) !== ".modinfo") continue;
    if (s.offset + s.size > elf.length) fail(".modinfo runs past the end of the file");
    for (const entry of decoder.decode(elf.subarray(s.offset, s.offset + s.size)).split("\0")) {
      const eq = entry.indexOf("=");
      if (eq <= 0) continue;
      const key = entry.slice(0, eq);
      info.set(key, [...(info.get(key) ?? []), entry.slice(eq + 1)]);
    }
    return info;
  }
  return info;
}

/** The result of resolving wanted module names against a tree. */
export interface ResolvedModules {
  /** Modules to insmod, each after everything it depends on. */
  ordered: KernelModule[];
  /** Wanted names that are compiled into the kernel (nothing to load). */
  builtin: string[];
  /** Wanted names found neither as a module nor built in. */
  missing: string[];
}

/** Resolve `wanted` (names, '-' or '_') to a dependency-ordered load list. */
export function resolveModules(tree: ModuleTree, wanted: readonly string[]): ResolvedModules {
  const ordered: KernelModule[] = [];
  const builtin: string[] = [];
  const missing: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const depsCache = new Map<string, string[]>();
  const depsOf = (mod: KernelModule): string[] => {
    let deps = depsCache.get(mod.name);
    if (deps === undefined) {
      const raw = readModinfo(moduleBytes(mod)).get("depends")?.[0] ?? "";
      deps = raw === "" ? [] : raw.split(",").map(moduleName);
      depsCache.set(mod.name, deps);
    }
    return deps;
  };
  const visit = (name: string, requiredBy: string | undefined): void => {
    const st = state.get(name);
    if (st === "done") return;
    if (st === "visiting") throw new Error(`Cannot order modules: dependency cycle at ${name}`);
    const mod = tree.modules.get(name);
    if (mod === undefined) {
      state.set(name, "done");
      if (tree.builtin.has(name)) builtin.push(name);
      else if (requiredBy === undefined) missing.push(name);
      else throw new Error(`Cannot resolve module ${requiredBy}: its dependency ${name} is absent`);
      return;
    }
    state.set(name, "visiting");
    for (const dep of depsOf(mod)) visit(dep, name);
    state.set(name, "done");
    ordered.push(mod);
  };
  for (const name of wanted) visit(moduleName(name), undefined);
  return { ordered, builtin, missing };
}
