// The VMM's jail (`vessel run --jail`): once every resource is open, the VMM process,
// already in mount, PID and network namespaces of its own (launcher.ts), switches to a minimal root
// (root.ts), drops to the domain's unprivileged user with no capabilities and
// no_new_privs (credentials.ts), and installs a seccomp filter on every thread that kills
// it on any call outside the allow-list (filter.ts).

import { accessSync, constants, existsSync, lstatSync, readdirSync, readlinkSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { libc, sandbox } from "../host/mod.js";
import { dropPrivileges, lastCapability } from "./credentials.js";
import { vmmFilterProgram } from "./filter.js";
import { assertOwnNamespaces } from "./launcher.js";
import { pivotIntoJail, type RootPlan } from "./root.js";

export { relaunched, relaunchInNamespaces, withHostNetwork } from "./launcher.js";

/**
 * One uid and gid per domain: the daemon should give each domain its own from this range
 * (far above login and system ids; no /etc/passwd entry needed, since nothing in the jail
 * looks names up); `vessel run --jail` takes the first unless told. A host that hands out
 * subordinate ids (/etc/subuid) must keep them out of this range.
 */
export const JAIL_ID_RANGE = { first: 900_000, count: 65_536 } as const;

export interface JailOptions {
  uid: number;
  gid: number;
  /** The one host directory the VMM may write (for its outcome file), if any. */
  outcomeFile?: string | undefined;
  /** TAP interfaces whose sysfs counters the VMM reads. */
  taps?: readonly string[];
  /** A vsock device's Unix socket: guests connect to `<uds>_<port>` beside it. */
  vsockUds?: string | undefined;
}

/**
 * The vsock socket's directory, if the jail may show it: guests' connections to host port P
 * go to `<uds>_P` there, made by host programs at any time, so the whole directory must be
 * visible. Only a directory holding nothing but sockets is shown (read-only): /tmp or a home
 * directory would hand the VMM everything in it. Otherwise the reason, for a warning.
 */
export function vsockDirectory(uds: string): { dir: string } | { refused: string } {
  const dir = dirname(resolve(uds));
  let others: string[];
  try {
    others = readdirSync(dir).filter((n) => !lstatSync(join(dir, n)).isSocket());
  } catch (e) {
    return { refused: `${dir}: ${(e as NodeJS.ErrnoException).code ?? e}` };
  }
  if (others.length === 0) return { dir };
  return {
    refused: `${dir} holds more than sockets (${others.slice(0, 3).join(", ")}${others.length > 3 ? ", ..." : ""}); give the uds a directory of its own`,
  };
}

/**
 * Our pid as the host sees it (inside the jail's PID namespace it is 1). /proc is still
 * the host's until the root is switched, and /proc/self names us in its namespace.
 */
export function hostPid(): number {
  return Number(readlinkSync("/proc/self"));
}

/** The Vessel install this code runs from: dist/src/jail/mod.js is three levels down. */
const INSTALL = fileURLToPath(new URL("../../../", import.meta.url));
/** What a vCPU worker thread imports after the jail is entered. */
const WORKER = fileURLToPath(new URL("../vmm/vcpu_worker.js", import.meta.url));

/** The node_modules holding our dependencies: the install's own, or a parent's. */
function dependencies(): string {
  for (let dir = INSTALL; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "node_modules", "koffi"))) return join(dir, "node_modules");
    if (dirname(dir) === dir) throw new Error("cannot find the node_modules holding koffi");
  }
}

export function jailPlan(opts: JailOptions): RootPlan {
  const readOnly = [
    join(INSTALL, "package.json"),
    join(INSTALL, "dist", "src"),
    dependencies(),
    // koffi reads the node binary's ELF header to tell glibc from musl when a worker loads it.
    process.execPath,
  ];
  for (const tap of opts.taps ?? []) {
    const stats = `/sys/class/net/${tap}/statistics`;
    if (existsSync(stats)) readOnly.push(stats);
  }
  if (opts.vsockUds !== undefined) {
    const v = vsockDirectory(opts.vsockUds);
    if ("dir" in v) readOnly.push(v.dir);
    else
      process.stderr.write(
        `vessel: --jail: guest vsock connections to host ports are off: ${v.refused}\n`,
      );
  }
  const writable = opts.outcomeFile ? [dirname(resolve(opts.outcomeFile))] : [];
  return { readOnly, writable };
}

/** Validate a --jail-uid or --jail-gid value. */
export function parseJailId(flag: string, text: string | undefined): number {
  if (text === undefined) return JAIL_ID_RANGE.first;
  const n = Number(text);
  // 0 is root; 2^32-1 is "leave unchanged" to setresuid.
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1 || n > 0xfffffffe) {
    throw new RangeError(`${flag}: "${text}" is not an id in 1..4294967294`);
  }
  return n;
}

/**
 * Enter the jail. Everything the VMM needs must already be open: after this, only the
 * planned paths exist and only the allow-listed calls are possible. Returns those paths.
 */
export function enterJail(opts: JailOptions): string[] {
  assertOwnNamespaces();
  const lastCap = lastCapability();
  const plan = jailPlan(opts);
  const paths = pivotIntoJail(plan);
  dropPrivileges(opts.uid, opts.gid, lastCap);
  try {
    accessSync(WORKER, constants.R_OK);
  } catch {
    throw new Error(`the Vessel install at ${INSTALL} is not readable by uid ${opts.uid}`);
  }
  for (const dir of plan.writable) {
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch {
      throw new Error(`${dir} is not writable by uid ${opts.uid} (the outcome file goes there)`);
    }
  }
  // Node sets up its stdout and stderr streams on first use, asking the kernel what they
  // are (getsockname when one is a socket, as a supervisor's pipes are): do it now.
  for (const stream of [process.stdout, process.stderr]) void stream.writable;
  sandbox.seccompSetFilter(
    vmmFilterProgram({ unixConnect: opts.vsockUds !== undefined }),
    sandbox.SECCOMP_FILTER_FLAG_TSYNC,
  );
  return paths;
}

/**
 * TEST HOOK (only reachable when VESSEL_TEST_HOOKS=1 enabled it at start): make a call
 * the filter forbids, socket(AF_INET, SOCK_STREAM). In a jail the process dies of SIGSYS
 * before this returns; outside one it opens and closes a socket and says so.
 */
export function testForbiddenCall(): { socketOpened: boolean } {
  const AF_INET = 2;
  const SOCK_STREAM = 1;
  libc.close(libc.socket(AF_INET, SOCK_STREAM, 0));
  return { socketOpened: true };
}
