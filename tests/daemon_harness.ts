// Test harness for the control plane: runs a real `vessel daemon` process in private state
// and runtime directories (so SIGKILL means what it means in production), a client for it,
// and a checker that validates every API answer against docs/openapi.json with Ajv, an
// implementation independent of the TypeBox schemas the daemon is built from.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv2020 } from "ajv/dist/2020.js";
import { VesselClient } from "../src/client/client.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const VESSEL_BIN = join(ROOT, "bin", "vessel.js");
export const OPENAPI = JSON.parse(readFileSync(join(ROOT, "docs", "openapi.json"), "utf8")) as {
  paths: Record<string, Record<string, { responses: Record<string, OpenApiResponse> }>>;
};

interface OpenApiResponse {
  content?: Record<string, { schema: unknown }>;
}

const ajv = new Ajv2020({ strict: false, allErrors: false });
ajv.addSchema(OPENAPI as object, "openapi");

/** Rewrite the document's local refs so Ajv resolves them inside the registered document. */
function anchored(schema: unknown): unknown {
  return JSON.parse(
    JSON.stringify(schema).replaceAll('"#/components/', '"openapi#/components/'),
  ) as unknown;
}

/** Assert that an answer is one the OpenAPI document allows for this route. */
export function checkAgainstOpenApi(
  method: string,
  route: string,
  status: number,
  body: string,
): void {
  const op = OPENAPI.paths[route]?.[method.toLowerCase()];
  assert.ok(op, `OpenAPI has no ${method} ${route}`);
  const response = op.responses[String(status)];
  assert.ok(response, `OpenAPI allows no ${status} for ${method} ${route} (body ${body})`);
  const schema = response.content?.["application/json"]?.schema;
  if (!schema) return;
  const validate = ajv.compile(anchored(schema) as object);
  const value = JSON.parse(body) as unknown;
  assert.ok(
    validate(value),
    `${method} ${route} ${status}: ${ajv.errorsText(validate.errors)} in ${body.slice(0, 500)}`,
  );
}

/**
 * Multiplies every time limit here: in the lab's L1 (emulated, tests/lab/host_kvm_cases.ts
 * sets it) Node alone takes seconds to start. A wait ends as soon as its condition holds,
 * so a larger limit only bounds a failure.
 */
export const TIME_SCALE = Math.max(1, Number(process.env.VESSEL_TEST_TIME_SCALE ?? 1) || 1);

export interface DaemonUnderTest {
  dir: string;
  stateDir: string;
  runtimeDir: string;
  socket: string;
  client: VesselClient;
  process: ChildProcess;
  log(): string;
  /** Call the API and check the answer against the OpenAPI document. */
  call(
    method: string,
    route: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown }>;
}

/** For a failed lab scenario: the daemon's log and the end of every domain's VMM log. */
export function failureReport(d: DaemonUnderTest, earlierDaemonLogs = ""): string {
  let out = `---- daemon log ----\n${(earlierDaemonLogs + d.log()).slice(-4000)}\n`;
  const logs = join(d.stateDir, "logs");
  for (const file of existsSync(logs) ? readdirSync(logs).sort() : []) {
    out += `---- VMM log ${file} ----\n${readFileSync(join(logs, file), "utf8").slice(-3000)}\n`;
  }
  return out;
}

/** Start `vessel daemon` (again, when `dir` is given) and wait until it answers. */
export async function startDaemon(
  opts: { dir?: string; args?: string[]; slowKvm?: boolean; env?: Record<string, string> } = {},
): Promise<DaemonUnderTest> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "vessel-daemon-test-"));
  const stateDir = join(dir, "state");
  const runtimeDir = join(dir, "run");
  const socket = join(runtimeDir, "api.sock");
  const logs: Buffer[] = [];
  const child = spawn(
    process.execPath,
    [
      VESSEL_BIN,
      "daemon",
      "--state-dir",
      stateDir,
      "--runtime-dir",
      runtimeDir,
      ...(opts.slowKvm === false ? [] : ["--slow-kvm"]),
      ...(opts.args ?? []),
    ],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...opts.env } },
  );
  child.stdout?.on("data", (b: Buffer) => logs.push(b));
  child.stderr?.on("data", (b: Buffer) => logs.push(b));
  const client = new VesselClient({ socketPath: socket });
  const started = Date.now();
  const deadline = started + 20_000 * TIME_SCALE;
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`the daemon exited: ${Buffer.concat(logs).toString()}`);
    if (existsSync(socket)) {
      try {
        await client.version();
        break;
      } catch {
        // not serving yet
      }
    }
    if (Date.now() > deadline) {
      // Left running, its pipes would keep the test process alive after the failure.
      child.kill("SIGKILL");
      throw new Error(
        `the daemon did not start within ${20 * TIME_SCALE} s; its output: ${Buffer.concat(logs).toString().slice(-2000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (process.env.VESSEL_TEST_VERBOSE)
    process.stderr.write(`daemon answered after ${Date.now() - started} ms\n`);
  return {
    dir,
    stateDir,
    runtimeDir,
    socket,
    client,
    process: child,
    log: () => Buffer.concat(logs).toString(),
    call: async (method, route, path, body) => {
      const r = await client.raw(method, path, body);
      checkAgainstOpenApi(method, route, r.status, r.body);
      return { status: r.status, json: r.body ? (JSON.parse(r.body) as unknown) : undefined };
    },
  };
}

export async function stopDaemon(d: DaemonUnderTest, signal: NodeJS.Signals = "SIGTERM") {
  if (d.process.exitCode !== null || d.process.signalCode !== null) return;
  const exited = new Promise((r) => d.process.once("exit", r));
  d.process.kill(signal);
  await exited;
}

/** Kill the daemon and every VMM a test left behind (any process naming its directory). */
export async function cleanUp(d: DaemonUnderTest): Promise<void> {
  await stopDaemon(d, "SIGKILL");
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (cmdline.includes(d.dir)) process.kill(Number(pid), "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  rmSync(d.dir, { recursive: true, force: true });
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs * TIME_SCALE;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A console attached through a domain's console socket, as `vessel console` does it. */
export class ConsoleSession {
  private text = "";
  private constructor(private readonly socket: Socket) {
    socket.on("data", (b: Buffer) => {
      this.text += b.toString("latin1");
    });
    socket.on("error", () => {});
  }

  static connect(path: string): Promise<ConsoleSession> {
    return new Promise((resolve, reject) => {
      const s = createConnection(path);
      s.once("connect", () => resolve(new ConsoleSession(s)));
      s.once("error", reject);
    });
  }

  get output(): string {
    return this.text;
  }

  /** Wait until `marker` appears in what this session has seen. */
  async waitFor(marker: string, timeoutMs = 60_000): Promise<void> {
    await waitFor(
      `"${marker}" on the console (seen: ${JSON.stringify(this.text.slice(-300))})`,
      () => (this.text.includes(marker) ? true : undefined),
      timeoutMs,
    );
  }

  type(text: string): void {
    this.socket.write(text);
  }

  close(): void {
    this.socket.destroy();
  }
}
