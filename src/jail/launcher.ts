// The jail's launcher. Node is multi-threaded from its first instruction, and the kernel
// refuses unshare(CLONE_NEWNS) to a process whose file-system state other threads share,
// while CLONE_NEWPID only moves children; so the namespaces must exist before Node starts.
// `vessel run --jail` therefore replaces itself (execve, same pid) with util-linux's
// `unshare --mount --pid --fork --kill-child`, which starts the VMM again as pid 1 of a
// new PID namespace in a new mount namespace. unshare stays as the parent: a few hundred
// KiB instead of a second Node; it exits with the VMM's status, re-raising the signal that
// killed it (SIGSYS for a forbidden call), and --kill-child takes the VMM down with it.

import { existsSync, readlinkSync } from "node:fs";
import { delimiter, join } from "node:path";
import { sandbox } from "../host/mod.js";

/** Set for the relaunched VMM: the launcher's mount namespace, which must not be ours. */
export const LAUNCHER_MNTNS_ENV = "VESSEL_JAIL_LAUNCHER_MNTNS";

function findUnshare(): string {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter((d) => d !== "");
  for (const dir of [...dirs, "/usr/bin", "/bin"]) {
    const candidate = join(dir, "unshare");
    if (existsSync(candidate)) return candidate;
  }
  throw new Error("util-linux's unshare(1) is not installed");
}

export function mountNamespace(): string {
  return readlinkSync("/proc/self/ns/mnt");
}

/** True in the VMM the launcher started (the jail is still to be entered). */
export function relaunched(): boolean {
  return process.env[LAUNCHER_MNTNS_ENV] !== undefined;
}

/**
 * Check we really are in namespaces of our own before changing the root: pivot_root in
 * the host's mount namespace would move the whole host's root. An inherited or forged
 * environment variable alone must never get that far.
 */
export function assertOwnNamespaces(): void {
  if (process.pid !== 1) throw new Error("not pid 1 of a PID namespace of its own");
  if (mountNamespace() === process.env[LAUNCHER_MNTNS_ENV]) {
    throw new Error("still in the launcher's mount namespace");
  }
}

/** Re-execute this very command through unshare; does not return. */
export function relaunchInNamespaces(): never {
  if (process.geteuid?.() !== 0) {
    throw new Error("needs root (it builds mount and PID namespaces, then drops to its user)");
  }
  const unshare = findUnshare();
  const script = process.argv[1];
  if (!script) throw new Error("cannot tell which script is running");
  const argv = [
    unshare,
    "--mount",
    "--pid",
    "--fork",
    "--kill-child",
    "--",
    process.execPath,
    ...process.execArgv,
    script,
    ...process.argv.slice(2),
  ];
  const env = Object.entries({ ...process.env, [LAUNCHER_MNTNS_ENV]: mountNamespace() })
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  for (const fd of [0, 1, 2]) sandbox.keepOnExec(fd);
  return sandbox.execve(unshare, argv, env);
}
