// The jail's launcher. Node is multi-threaded from its first instruction, and the kernel
// refuses unshare(CLONE_NEWNS) to a process whose file-system state other threads share,
// while CLONE_NEWPID only moves children; so the namespaces must exist before Node starts.
// `vessel run --jail` therefore replaces itself (execve, same pid) with util-linux's
// `unshare --mount --pid --net --fork --kill-child`, which starts the VMM again as pid 1 of
// a new PID namespace in new mount and network namespaces. The network namespace is empty:
// the VMM opens its TAPs in the host's (withHostNetwork), and once jailed it can reach no
// abstract Unix socket of the host's (those are per network namespace, not per mount). unshare stays as the parent: a few hundred
// KiB instead of a second Node; it exits with the VMM's status, re-raising the signal that
// killed it (SIGSYS for a forbidden call), and --kill-child takes the VMM down with it.

import { closeSync, existsSync, openSync, readdirSync, readlinkSync } from "node:fs";
import { delimiter, join } from "node:path";
import { sandbox } from "../host/mod.js";

/** Set for the relaunched VMM: the launcher's mount namespace, which must not be ours. */
export const LAUNCHER_MNTNS_ENV = "VESSEL_JAIL_LAUNCHER_MNTNS";
/** Set for the relaunched VMM: the launcher's network namespace, which must not be ours. */
export const LAUNCHER_NETNS_ENV = "VESSEL_JAIL_LAUNCHER_NETNS";
/** Set for the relaunched VMM: an fd, open across the execs, on the host's network namespace. */
export const HOST_NETNS_FD_ENV = "VESSEL_JAIL_HOST_NETNS_FD";

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

/** The main thread's network namespace (the one JavaScript runs on). */
function netNamespace(): string {
  return readlinkSync("/proc/self/ns/net");
}

/**
 * Run `open` with the main thread in the host's network namespace, where TAPs must be
 * created and found, then return to the jail's; the fd on the host's is closed after, so
 * nothing leads back. Outside a relaunched VMM it just runs `open`.
 */
export async function withHostNetwork<T>(open: () => Promise<T>): Promise<T> {
  const fdText = process.env[HOST_NETNS_FD_ENV];
  if (fdText === undefined) return open();
  delete process.env[HOST_NETNS_FD_ENV];
  const host = Number(fdText);
  const own = openSync("/proc/thread-self/ns/net", "r");
  try {
    sandbox.setns(host, sandbox.CLONE_NEWNET);
    try {
      return await open();
    } finally {
      sandbox.setns(own, sandbox.CLONE_NEWNET);
    }
  } finally {
    closeSync(own);
    closeSync(host);
  }
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
  if (
    process.env[HOST_NETNS_FD_ENV] !== undefined ||
    netNamespace() === process.env[LAUNCHER_NETNS_ENV]
  ) {
    throw new Error("still holding or in the host's network namespace");
  }
  // setns moves one thread, and a thread started while the main thread was in the host's
  // namespace (libuv's pool, say) would have stayed there: every thread must be in ours.
  const own = netNamespace();
  for (const tid of readdirSync("/proc/self/task")) {
    let ns: string;
    try {
      ns = readlinkSync(`/proc/self/task/${tid}/ns/net`);
    } catch {
      continue; // the thread ended meanwhile
    }
    if (ns !== own) throw new Error(`thread ${tid} is in another network namespace (${ns})`);
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
    "--net",
    "--fork",
    "--kill-child",
    "--",
    process.execPath,
    ...process.execArgv,
    script,
    ...process.argv.slice(2),
  ];
  // Open across both execs (unshare's and Node's): the relaunched VMM's way to its TAPs.
  const hostNetFd = openSync("/proc/self/ns/net", "r");
  sandbox.keepOnExec(hostNetFd);
  const env = Object.entries({
    ...process.env,
    [LAUNCHER_MNTNS_ENV]: mountNamespace(),
    [LAUNCHER_NETNS_ENV]: netNamespace(),
    [HOST_NETNS_FD_ENV]: String(hostNetFd),
  })
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  for (const fd of [0, 1, 2]) sandbox.keepOnExec(fd);
  return sandbox.execve(unshare, argv, env);
}
