// `vessel daemon`: the control plane in the foreground (as a service manager runs it). It
// serves the API on its Unix socket (and on TCP with bearer tokens when asked), supervises
// every domain's VMM process, and on SIGTERM/SIGINT stops serving while the guests keep
// running; the next `vessel daemon` finds them again.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createApp, listenTcp, listenUnix } from "../api/server.js";
import { Daemon } from "../daemon/daemon.js";
import { apiSocketPath, defaultPaths } from "../daemon/paths.js";
import { UsageError } from "./args.js";

export interface DaemonFlags {
  stateDir?: string;
  runtimeDir?: string;
  socket?: string;
  listen?: string;
  tokenFile?: string;
  slowKvm?: boolean;
  /** commander's --no-jail: false when given. */
  jail?: boolean;
  /** commander's --no-limits: false when given. */
  limits?: boolean;
}

function readTokens(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(
      `--token-file: cannot read ${path} (${(e as NodeJS.ErrnoException).code})`,
    );
  }
  const tokens = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  if (tokens.length === 0) throw new UsageError(`--token-file: ${path} holds no token`);
  for (const t of tokens)
    if (t.length < 16) throw new UsageError("--token-file: tokens must be at least 16 characters");
  return tokens;
}

function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535)
    throw new UsageError(`--listen: "${text}" is not HOST:PORT (e.g. 127.0.0.1:8740)`);
  return { host: m[1] ?? m[2] ?? "", port };
}

/** Jail every VMM unless told not to; the walls need root (mount namespaces, setuid). */
function jailWanted(flags: DaemonFlags, log: (l: string) => void): boolean {
  if (flags.jail === false) {
    log("VMMs run without the jail (--no-jail)");
    return false;
  }
  if (process.getuid?.() !== 0) {
    log("VMMs run without the jail: it needs root (run the daemon as root, or pass --no-jail)");
    return false;
  }
  return true;
}

export async function daemonCommand(flags: DaemonFlags): Promise<number> {
  const defaults = defaultPaths();
  const paths = {
    stateDir: flags.stateDir ?? defaults.stateDir,
    runtimeDir: flags.runtimeDir ?? defaults.runtimeDir,
  };
  const listen = flags.listen ? parseListen(flags.listen) : undefined;
  if (listen && !flags.tokenFile)
    throw new UsageError("--listen: TCP needs --token-file (requests must carry a bearer token)");
  const tokens = flags.tokenFile ? readTokens(flags.tokenFile) : undefined;
  const bin = fileURLToPath(new URL("../../../bin/vessel.js", import.meta.url));
  const log = (l: string) => process.stderr.write(`vessel daemon: ${l}\n`);
  const daemon = await Daemon.open({
    paths,
    vesselCommand: [process.execPath, bin],
    slowKvm: flags.slowKvm === true,
    jail: jailWanted(flags, log),
    ...(flags.limits === false
      ? { cgroups: { ok: false as const, reason: "turned off with --no-limits" } }
      : {}),
    log,
  });
  const socket = flags.socket ?? apiSocketPath(paths);
  const unixServer = await listenUnix(createApp(daemon), socket);
  const tcpServer =
    listen && tokens
      ? await listenTcp(createApp(daemon, { tokens }), listen.host, listen.port)
      : undefined;
  const running = daemon.list().filter((d) => d.pid !== null).length;
  log(
    `serving ${socket}${listen ? ` and ${listen.host}:${listen.port}` : ""}; state in ${paths.stateDir}; ${daemon.list().length} domains (${running} running)`,
  );
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  log("stopping (domains keep running)");
  daemon.close();
  unixServer.close();
  unixServer.closeAllConnections();
  tcpServer?.close();
  tcpServer?.closeAllConnections();
  return 0;
}
