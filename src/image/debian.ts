// Fetching Debian packages with the host's own apt tools: resolve a meta-package to the
// versioned package it depends on, download a .deb with `apt-get download`, and unpack it
// with `dpkg-deb -x`. Also the atomic-install helpers the image and lab caches share.

import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rename, rm, stat, symlink } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** `${XDG_CACHE_HOME:-$HOME/.cache}/vessel`: the root of every Vessel cache. */
export function vesselCacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  const base = xdg !== undefined && xdg !== "" ? xdg : join(homedir(), ".cache");
  return join(base, "vessel");
}

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, {
      maxBuffer: 64 * 1024 * 1024,
      ...(cwd === undefined ? {} : { cwd }),
      env: { ...process.env, LC_ALL: "C" },
    });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT") {
      throw new Error(`Cannot run ${cmd}: not installed (this needs Debian's apt and dpkg)`);
    }
    const detail = (e.stderr ?? e.message).trim().split("\n").slice(-3).join(" / ");
    throw new Error(`${cmd} ${args.join(" ")} failed: ${detail}`);
  }
}

/** The package a meta-package such as `linux-image-cloud-amd64` depends on. */
export async function resolveMetaPackage(meta: string, prefix = "linux-image-"): Promise<string> {
  const out = await run("apt-cache", ["depends", meta]);
  for (const line of out.split("\n")) {
    const m = /^\s*Depends:\s*(\S+)/.exec(line);
    if (m?.[1]?.startsWith(prefix)) return m[1];
  }
  throw new Error(
    `Cannot resolve ${meta}: apt-cache depends shows no ${prefix}* dependency (run apt-get update?)`,
  );
}

/** The candidate version apt would download for `pkg`. */
export async function packageVersion(pkg: string): Promise<string> {
  const out = await run("apt-cache", ["show", "--no-all-versions", pkg]);
  const m = /^Version:\s*(\S+)/m.exec(out);
  if (m?.[1] === undefined) throw new Error(`Cannot find a version of ${pkg} in apt-cache show`);
  return m[1];
}

/** `apt-get download pkg` into `dir`; returns the .deb path. */
export async function downloadPackage(pkg: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await run("apt-get", ["download", "-q", pkg], dir);
  const name = pkg.replace(/=.*$/, "");
  const debs = (await readdir(dir)).filter((f) => f.startsWith(`${name}_`) && f.endsWith(".deb"));
  const deb = debs[0];
  if (deb === undefined) throw new Error(`apt-get download ${pkg} produced no .deb in ${dir}`);
  return join(dir, deb);
}

/** Unpack a .deb's file system into `dest` (created if needed). */
export async function extractDeb(deb: string, dest: string): Promise<void> {
  await mkdir(dest, { recursive: true });
  await run("dpkg-deb", ["-x", deb, dest]);
}

/** A fresh scratch directory beside `finalPath`, so a rename into place stays atomic. */
export async function scratchDirBeside(finalPath: string): Promise<string> {
  await mkdir(dirname(finalPath), { recursive: true });
  await removeStaleScratch(dirname(finalPath));
  return mkdtemp(join(dirname(finalPath), ".tmp-"));
}

/**
 * Move a fully written directory into place with one rename. An existing directory is moved
 * aside first and removed after, so readers see either the old or the new one, never half.
 * Builds are keyed by content, so when a concurrent build installed the same key first, its
 * result is kept and ours discarded.
 */
export async function installDir(built: string, finalPath: string): Promise<void> {
  if (existsSync(finalPath)) {
    const old = `${finalPath}.old-${process.pid}-${Date.now()}`;
    await rename(finalPath, old);
    await rename(built, finalPath);
    await rm(old, { recursive: true, force: true });
    return;
  }
  try {
    await rename(built, finalPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
    await rm(built, { recursive: true, force: true });
  }
}

/** Remove scratch directories (`.tmp-*`) an interrupted build left over an hour ago. */
export async function removeStaleScratch(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  const cutoff = Date.now() - 3600_000;
  for (const name of names) {
    if (!name.startsWith(".tmp-") && !/\.old-\d+-\d+$/.test(name)) continue;
    try {
      if ((await stat(join(dir, name))).mtimeMs < cutoff) {
        await rm(join(dir, name), { recursive: true, force: true });
      }
    } catch {
      // raced with another cleaner
    }
  }
}

/** Point the symlink `link` at `target` atomically (create beside, rename over). */
export async function replaceSymlink(target: string, link: string): Promise<void> {
  const tmp = `${link}.tmp-${process.pid}-${Date.now()}`;
  await symlink(target, tmp);
  await rename(tmp, link);
}
