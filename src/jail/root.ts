// The jail's root file system: a small tmpfs holding bind mounts of only what the VMM
// still reads once running (the Vessel install its vCPU workers import from, the node
// binary koffi inspects, the outcome file's directory), each at its host path, then
// pivot_root into it and detach the host's tree. Must run in a mount namespace of its own
// (the launcher's unshare --mount), or it would change the host's root.

import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readlinkSync,
  rmdirSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, isAbsolute, join, resolve, sep } from "node:path";
import { sandbox } from "../host/mod.js";

export interface RootPlan {
  /** Host paths (files or directories) visible read-only at the same path. */
  readOnly: readonly string[];
  /** Host directories visible read-write at the same path. */
  writable: readonly string[];
}

const PUT_OLD = ".old-root";
const HARDENING = sandbox.MS_NOSUID | sandbox.MS_NODEV | sandbox.MS_NOEXEC;

/**
 * Make `path` visible under `root` at the same path: each symlink on the way is recreated
 * as a symlink (so Node's realpath gives the same answers inside), and the final target is
 * bind-mounted; its host path is added to `mounts`.
 */
function expose(root: string, path: string, readOnly: boolean, mounts: string[], links = 0): void {
  if (!isAbsolute(path)) throw new RangeError(`jail: ${path} is not an absolute path`);
  // As the kernel's SYMLOOP_MAX: a cycle of links ends here rather than in a stack overflow.
  if (links > 40) throw new RangeError(`jail: too many symbolic links on the way to ${path}`);
  const parts = path.split(sep).filter((p) => p !== "");
  let at = "/";
  for (let i = 0; i < parts.length; i++) {
    const next = join(at, parts[i] as string);
    const st = lstatSync(next);
    if (st.isSymbolicLink()) {
      const target = readlinkSync(next);
      const inJail = join(root, next);
      if (!existsSync(inJail)) {
        mkdirSync(dirname(inJail), { recursive: true });
        symlinkSync(target, inJail);
      }
      const rest = parts.slice(i + 1);
      expose(root, join(resolve(at, target), ...rest), readOnly, mounts, links + 1);
      return;
    }
    at = next;
  }
  const inJail = join(root, at);
  if (mounts.includes(at)) return;
  if (statSync(at).isDirectory()) mkdirSync(inJail, { recursive: true });
  else {
    mkdirSync(dirname(inJail), { recursive: true });
    writeFileSync(inJail, "");
  }
  sandbox.mount(at, inJail, null, sandbox.MS_BIND);
  // A bind mount takes the source's flags; read-only needs a second, remounting call.
  const flags = sandbox.MS_BIND | sandbox.MS_REMOUNT | HARDENING;
  sandbox.mount(null, inJail, null, readOnly ? flags | sandbox.MS_RDONLY : flags);
  mounts.push(at);
}

/**
 * Build the root and switch to it. Afterwards "/" is a read-only tmpfs with the planned
 * paths and nothing else: no /proc, /dev, /etc or /home. Returns the exposed paths.
 */
export function pivotIntoJail(plan: RootPlan): string[] {
  // No mount or unmount below may propagate back to the host's namespace.
  sandbox.mount(null, "/", null, sandbox.MS_REC | sandbox.MS_PRIVATE);
  const root = mkdtempSync(join(tmpdir(), "vessel-jail-"));
  sandbox.mount("tmpfs", root, "tmpfs", HARDENING, "mode=0755,size=64k,nr_inodes=256");
  const mounts: string[] = [];
  for (const p of plan.readOnly) expose(root, p, true, mounts);
  for (const p of plan.writable) expose(root, p, false, mounts);
  mkdirSync(join(root, PUT_OLD));
  sandbox.pivotRoot(root, join(root, PUT_OLD));
  sandbox.chdir("/");
  // The host directory the tmpfs was mounted on is an ordinary empty directory again, seen
  // through the old root; remove it so a jail leaves nothing behind on the host.
  rmdirSync(join("/", PUT_OLD, root));
  sandbox.umount2(`/${PUT_OLD}`, sandbox.MNT_DETACH);
  rmdirSync(`/${PUT_OLD}`);
  sandbox.mount(null, "/", null, sandbox.MS_REMOUNT | sandbox.MS_RDONLY | HARDENING);
  return mounts;
}
