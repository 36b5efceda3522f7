// Dropping from root to the domain's own unprivileged user: no supplementary groups, the
// jail's gid and uid (real, effective and saved, so there is no way back), no capabilities
// in any set, and no_new_privs. The order matters: the bounding set can only be shrunk
// while CAP_SETPCAP is still held, and leaving uid 0 is what empties the permitted and
// effective sets of every thread.

import { readFileSync } from "node:fs";
import { sandbox } from "../host/mod.js";

/** SIGKILL, re-armed as the parent-death signal after the credentials change. */
const SIGKILL = 9;

/** The highest capability number this kernel knows (read before /proc disappears). */
export function lastCapability(): number {
  const n = Number.parseInt(readFileSync("/proc/sys/kernel/cap_last_cap", "utf8"), 10);
  if (!Number.isInteger(n) || n < 0 || n > 63) throw new Error("cannot read cap_last_cap");
  return n;
}

export function dropPrivileges(uid: number, gid: number, lastCap: number): void {
  for (let cap = 0; cap <= lastCap; cap++) sandbox.prctl(sandbox.PR_CAPBSET_DROP, cap);
  sandbox.setgroups([]);
  sandbox.setresgid(gid, gid, gid);
  sandbox.setresuid(uid, uid, uid);
  // Leaving uid 0 cleared permitted and effective; inheritable and ambient are cleared here.
  sandbox.capset(0n, 0n, 0n);
  sandbox.prctl(sandbox.PR_CAP_AMBIENT, sandbox.PR_CAP_AMBIENT_CLEAR_ALL);
  // The kernel already made us non-dumpable on the uid change; keep it so, so the jail's
  // user cannot ptrace us or read our memory through /proc.
  sandbox.prctl(sandbox.PR_SET_DUMPABLE, 0);
  // A credentials change clears the parent-death signal unshare --kill-child set: re-arm
  // it, so killing the launcher (what a supervisor's SIGKILL hits) still kills the VMM.
  sandbox.prctl(sandbox.PR_SET_PDEATHSIG, SIGKILL);
  sandbox.prctl(sandbox.PR_SET_NO_NEW_PRIVS, 1);
}
