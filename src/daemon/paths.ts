// Where the daemon keeps things. Definitions are state (they outlive reboots): under
// $XDG_STATE_HOME/vessel, or /var/lib/vessel for root without XDG variables. Sockets and
// per-run files of live domains are runtime (gone after a reboot, as the domains are): under
// $XDG_RUNTIME_DIR/vessel, or /run/vessel for root. `--state-dir`/`--runtime-dir` override.

import { homedir } from "node:os";
import { join } from "node:path";

export interface DaemonPaths {
  stateDir: string;
  runtimeDir: string;
}

export function defaultPaths(env: NodeJS.ProcessEnv = process.env): DaemonPaths {
  const root = process.getuid?.() === 0;
  const stateDir = env.XDG_STATE_HOME
    ? join(env.XDG_STATE_HOME, "vessel")
    : root
      ? "/var/lib/vessel"
      : join(homedir(), ".local", "state", "vessel");
  const runtimeDir = env.XDG_RUNTIME_DIR
    ? join(env.XDG_RUNTIME_DIR, "vessel")
    : root
      ? "/run/vessel"
      : join("/tmp", `vessel-${process.getuid?.() ?? "user"}`);
  return { stateDir, runtimeDir };
}

/** The API socket the daemon listens on and the CLI connects to by default. */
export function apiSocketPath(paths: DaemonPaths): string {
  return join(paths.runtimeDir, "api.sock");
}

/** Per-domain runtime files of a running domain. */
export function domainRunDir(paths: DaemonPaths, name: string): string {
  return join(paths.runtimeDir, "domains", name);
}

export function domainRunFiles(paths: DaemonPaths, name: string) {
  const dir = domainRunDir(paths, name);
  return {
    dir,
    control: join(dir, "control.sock"),
    console: join(dir, "console.sock"),
    /** Written by the VMM; in its own directory, the only one a jailed VMM may write. */
    outDir: join(dir, "out"),
    outcome: join(dir, "out", "outcome.json"),
    /** What the daemon started: pid, spec, transient flag (for finding it after a restart). */
    record: join(dir, "vmm.json"),
  };
}

/**
 * A domain's VMM log (its stdout and stderr), kept after it stops as libvirt keeps
 * /var/log/libvirt/qemu/NAME.log: why a guest died is read after it is gone.
 */
export function domainLogPath(paths: DaemonPaths, name: string): string {
  return join(paths.stateDir, "logs", `${name}.log`);
}
