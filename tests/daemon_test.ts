// The control plane on this host's /dev/kvm: a real `vessel daemon` process supervising
// VMM processes that run the small domain guest (tests/guests/domain_guest.ts). Every API
// answer is checked against docs/openapi.json. Booting Linux under the daemon, the power
// button and the foreign config formats are in the lab batch (tests/lab/domain_cases.ts).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { DomainEvent, DomainInfo } from "../src/api/schemas.js";
import { VesselClient } from "../src/client/client.js";
import type { DomainSpec } from "../src/domain/spec.js";
import {
  cleanUp,
  type DaemonUnderTest,
  startDaemon,
  stopDaemon,
  VESSEL_BIN,
  waitFor,
} from "./daemon_harness.js";
import { DOMAIN_GUEST_READY, writeDomainGuest } from "./guests/domain_guest.js";

let d: DaemonUnderTest;
let kernel: string;

function spec(name: string, extra: Partial<DomainSpec> = {}): DomainSpec {
  return { name, memory: "16M", vcpus: 1, kernel, ...extra };
}

async function info(name: string): Promise<DomainInfo> {
  const r = await d.call("GET", "/v1/domains/{name}", `/v1/domains/${name}`);
  assert.equal(r.status, 200);
  return r.json as DomainInfo;
}

const info_ = (name: string) => info(name);

async function act(name: string, action: string, body?: unknown) {
  const r = await d.call(
    "POST",
    `/v1/domains/{name}/${action}`,
    `/v1/domains/${name}/${action}`,
    body,
  );
  return r;
}

before(async () => {
  assert.ok(existsSync("/dev/kvm"), "these tests need /dev/kvm");
  // The test hook lets a test make a jailed VMM do a forbidden system call; every daemon
  // this file starts (restarts included) inherits it.
  process.env.VESSEL_TEST_HOOKS = "1";
  d = await startDaemon();
  kernel = writeDomainGuest(join(d.dir, "guest.elf"), { powerButton: false });
});

after(async () => {
  if (d) await cleanUp(d);
});

test("OpenAPI: the committed document is the one generated from the schemas, and is served", async () => {
  const { openApiDocument } = await import("../src/api/openapi.js");
  const committed = JSON.parse(
    readFileSync(new URL("../../docs/openapi.json", import.meta.url), "utf8"),
  ) as unknown;
  assert.deepEqual(
    committed,
    JSON.parse(JSON.stringify(openApiDocument())),
    "docs/openapi.json is stale: node dist/src/api/openapi.js > docs/openapi.json",
  );
  const served = await d.call("GET", "/v1/openapi.json", "/v1/openapi.json");
  assert.deepEqual(served.json, committed);
  const v = await d.call("GET", "/v1/version", "/v1/version");
  assert.equal((v.json as { api: string }).api, "v1");
});

test("define, start, pause, resume, destroy, undefine: states, reasons and events in order", async () => {
  const events: DomainEvent[] = [];
  const abort = new AbortController();
  const collecting = (async () => {
    for await (const e of d.client.events(abort.signal)) if (e.domain === "life") events.push(e);
  })();
  await new Promise((r) => setTimeout(r, 200));

  const def = await d.call("POST", "/v1/domains", "/v1/domains", spec("life"));
  assert.equal(def.status, 201);
  assert.equal((def.json as DomainInfo).state, "shutoff");
  assert.equal((await act("life", "start")).status, 200);
  let i = await info("life");
  assert.deepEqual([i.state, i.reason], ["running", "booted"]);
  assert.ok(i.pid !== null && existsSync(`/proc/${i.pid}`));
  // The console socket replays what the guest printed before anyone attached.
  const console = await readConsole(i.consoleSocket ?? "", DOMAIN_GUEST_READY);
  assert.match(console, new RegExp(DOMAIN_GUEST_READY));

  assert.equal((await act("life", "pause")).status, 200);
  assert.deepEqual([(await info("life")).state, (await info("life")).reason], ["paused", "user"]);
  const again = await act("life", "pause");
  assert.equal(again.status, 409);
  assert.equal((await act("life", "resume")).status, 200);
  i = await info("life");
  assert.deepEqual([i.state, i.reason], ["running", "unpaused"]);
  const stats = await d.call("GET", "/v1/domains/{name}/stats", "/v1/domains/life/stats");
  assert.equal(stats.status, 200);
  assert.ok(((stats.json as { exits: Record<string, number> }).exits.io ?? 0) > 0);

  const pid = i.pid ?? 0;
  assert.equal((await act("life", "destroy")).status, 200);
  i = await info("life");
  assert.deepEqual([i.state, i.reason, i.pid], ["shutoff", "destroyed", null]);
  assert.ok(
    !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z"),
  );

  const del = await d.call("DELETE", "/v1/domains/{name}", "/v1/domains/life");
  assert.equal(del.status, 204);
  assert.equal((await d.call("GET", "/v1/domains/{name}", "/v1/domains/life")).status, 404);
  await waitFor("the undefined event", () =>
    events.some((e) => e.type === "undefined") ? true : undefined,
  );
  abort.abort();
  await collecting;
  assert.deepEqual(
    events.map((e) => `${e.type}/${e.reason}`),
    [
      "defined/added",
      "started/booted",
      "suspended/paused",
      "resumed/unpaused",
      "stopped/destroyed",
      "undefined/removed",
    ],
  );
  assert.ok(events.every((e, k) => k === 0 || e.seq > (events[k - 1]?.seq ?? 0)));
});

test("bad requests: a bad spec names the field, nothing is defined; unknown domains are 404", async () => {
  const bad = await d.call("POST", "/v1/domains", "/v1/domains", {
    ...spec("badone"),
    vcpus: 0,
  });
  assert.equal(bad.status, 400);
  assert.match((bad.json as { error: { message: string } }).error.message, /^vcpus: /);
  const extra = await d.call("POST", "/v1/domains", "/v1/domains", {
    ...spec("badtwo"),
    cpuz: 2,
  });
  assert.equal(extra.status, 400);
  assert.match((extra.json as { error: { message: string } }).error.message, /^cpuz: unknown key/);
  const notJson = await d.client.raw("POST", "/v1/domains", undefined);
  assert.equal(notJson.status, 400);
  const list = await d.call("GET", "/v1/domains", "/v1/domains");
  assert.deepEqual(
    (list.json as { domains: DomainInfo[] }).domains.filter((x) => x.name.startsWith("bad")),
    [],
  );
  assert.equal((await act("nosuch", "start")).status, 404);
  assert.equal(
    (await d.call("POST", "/v1/domains/{name}/shutdown", "/v1/domains/x/shutdown", { wait: "yes" }))
      .status,
    404,
  );
});

test("a VMM that fails to start: the error says why, the domain stays shut off", async () => {
  await d.call("POST", "/v1/domains", "/v1/domains", spec("nokernel", { kernel: "/nonexistent" }));
  const r = await act("nokernel", "start");
  assert.equal(r.status, 500);
  assert.match((r.json as { error: { message: string } }).error.message, /--kernel: cannot read/);
  const i = await info("nokernel");
  assert.deepEqual([i.state, i.reason], ["shutoff", "failed"]);
});

test("two operations on one domain at once: one runs, the other is refused (409)", async () => {
  await d.call("POST", "/v1/domains", "/v1/domains", spec("twice"));
  const [a, b] = await Promise.all([act("twice", "start"), act("twice", "start")]);
  assert.deepEqual([a.status, b.status].sort(), [200, 409]);
  const refused = (a.status === 409 ? a : b).json as { error: { message: string } };
  assert.match(refused.error.message, /start is in progress|already running/);
  await act("twice", "destroy");
});

test("shutdown --wait that times out is an error, and the domain is still running", async () => {
  // This guest ignores the power button (kvm_pvm cannot deliver it the interrupt).
  await d.call("POST", "/v1/domains", "/v1/domains", spec("stubborn"));
  await act("stubborn", "start");
  const r = await act("stubborn", "shutdown", { wait: true, timeoutSeconds: 1 });
  assert.equal(r.status, 504);
  assert.match((r.json as { error: { message: string } }).error.message, /still running/);
  assert.equal((await info("stubborn")).state, "running");
  await act("stubborn", "destroy");
});

test("kill -9 of a VMM: crashed, then on_crash (preserve keeps it, restart starts it again, destroy shuts it off)", async () => {
  for (const [name, onCrash] of [
    ["keep", "preserve"],
    ["again", "restart"],
    ["gone", "destroy"],
  ] as const) {
    await d.call("POST", "/v1/domains", "/v1/domains", spec(name, { onCrash }));
    await act(name, "start");
    const pid = (await info(name)).pid ?? 0;
    process.kill(pid, "SIGKILL");
    const after = await waitFor(`${name} to react to the kill`, async () => {
      const i = await info(name);
      return i.pid !== pid && i.operation === null && i.state !== "running"
        ? i
        : i.pid !== null && i.pid !== pid
          ? i
          : undefined;
    });
    if (onCrash === "preserve")
      assert.deepEqual([after.state, after.reason], ["crashed", "killed"]);
    if (onCrash === "restart") {
      assert.deepEqual([after.state, after.reason], ["running", "restarted"]);
      assert.notEqual(after.pid, pid);
    }
    if (onCrash === "destroy")
      assert.deepEqual([after.state, after.reason], ["shutoff", "crashed"]);
    if (after.state !== "shutoff") await act(name, "destroy");
    assert.equal((await info(name)).state, "shutoff");
  }
});

test("the daemon is SIGKILLed and restarted: it finds running and paused domains, transient ones too, and still controls them", async () => {
  await d.call("POST", "/v1/domains", "/v1/domains", spec("stay1"));
  await act("stay1", "start");
  await d.call("POST", "/v1/domains", "/v1/domains?transient=true", spec("stay2"));
  await act("stay2", "pause");
  await d.call("POST", "/v1/domains", "/v1/domains", spec("auto", { autostart: true }));
  const before = new Map((await d.client.list()).map((x) => [x.name, x]));
  await stopDaemon(d, "SIGKILL");
  for (const n of ["stay1", "stay2"]) {
    const pid = before.get(n)?.pid ?? 0;
    assert.ok(existsSync(`/proc/${pid}`), `${n}'s VMM survived the daemon`);
  }
  d = await startDaemon({ dir: d.dir });
  const found = new Map((await d.client.list()).map((x) => [x.name, x]));
  assert.deepEqual(
    [found.get("stay1")?.state, found.get("stay1")?.pid],
    ["running", before.get("stay1")?.pid],
  );
  assert.deepEqual(
    [found.get("stay2")?.state, found.get("stay2")?.persistent, found.get("stay2")?.pid],
    ["paused", false, before.get("stay2")?.pid],
  );
  // Autostart: defined with autostart, started when the daemon started.
  const auto = await waitFor("autostart", async () => {
    const i = await info("auto");
    return i.state === "running" ? i : undefined;
  });
  assert.equal(auto.reason, "booted");
  assert.equal((await act("stay2", "resume")).status, 200);
  for (const n of ["stay1", "stay2", "auto"]) assert.equal((await act(n, "destroy")).status, 200);
  // Or the next daemon start (in the tests below) would start it again, as it should.
  assert.equal((await d.call("DELETE", "/v1/domains/{name}", "/v1/domains/auto")).status, 204);
  // A transient domain is forgotten once it is off.
  assert.equal((await d.call("GET", "/v1/domains/{name}", "/v1/domains/stay2")).status, 404);
});

test("the daemon is SIGKILLed while writing definitions: none lost, none torn", async () => {
  const acknowledged = new Set<string>();
  let stop = false;
  const writer = async (w: number) => {
    for (let k = 0; !stop; k++) {
      const name = `w${w}-${k}`;
      try {
        // Large-ish definitions make a torn write more likely, were writes not atomic.
        const r = await d.client.raw("POST", "/v1/domains", {
          ...spec(name),
          cmdline: "x".repeat(3000 + k),
        });
        if (r.status === 201) acknowledged.add(name);
      } catch {
        return;
      }
    }
  };
  const writers = [0, 1, 2, 3].map(writer);
  await new Promise((r) => setTimeout(r, 700));
  await stopDaemon(d, "SIGKILL");
  stop = true;
  await Promise.all(writers);
  assert.ok(acknowledged.size > 10, `only ${acknowledged.size} definitions were written`);
  d = await startDaemon({ dir: d.dir });
  assert.doesNotMatch(d.log(), /definition not loaded/);
  const names = new Set((await d.client.list()).map((x) => x.name));
  for (const n of acknowledged) assert.ok(names.has(n), `definition ${n} was lost`);
  for (const f of readdirSync(join(d.stateDir, "domains"))) {
    assert.ok(!f.startsWith(".tmp-"), `temporary file ${f} left behind`);
    JSON.parse(readFileSync(join(d.stateDir, "domains", f), "utf8"));
  }
});

test("TCP needs a bearer token: without one, 401 and nothing is done", async () => {
  const tokenFile = join(d.dir, "tokens");
  const token = "0123456789abcdef0123456789abcdef";
  writeFileSync(tokenFile, `# API tokens\n${token}\n`);
  const port = 20000 + Math.floor(Math.random() * 20000);
  await stopDaemon(d);
  d = await startDaemon({
    dir: d.dir,
    args: ["--listen", `127.0.0.1:${port}`, "--token-file", tokenFile],
  });
  const url = `http://127.0.0.1:${port}`;
  for (const c of [
    new VesselClient({ url }),
    new VesselClient({ url, token: "wrong-token-wrong-token" }),
  ]) {
    const r = await c.raw("POST", "/v1/domains", spec("viatcp"));
    assert.equal(r.status, 401);
    const { checkAgainstOpenApi } = await import("./daemon_harness.js");
    checkAgainstOpenApi("POST", "/v1/domains", r.status, r.body);
  }
  assert.equal((await d.call("GET", "/v1/domains/{name}", "/v1/domains/viatcp")).status, 404);
  const good = new VesselClient({ url, token });
  assert.equal((await good.define(spec("viatcp"))).name, "viatcp");
  assert.equal((await d.client.get("viatcp")).state, "shutoff");
});

test("mem-set: the balloon target follows, within 64 MiB .. maxMemory; no balloon, no mem-set", async () => {
  await d.call(
    "POST",
    "/v1/domains",
    "/v1/domains",
    spec("bal", { memory: "64M", maxMemory: "96M", balloon: true }),
  );
  await act("bal", "start");
  const mem = () => d.call("GET", "/v1/domains/{name}/memory", "/v1/domains/bal/memory");
  const first = (await mem()).json as {
    bootBytes: number;
    targetBytes: number;
    balloon: { targetPages: number };
  };
  assert.equal(first.bootBytes, 96 * 2 ** 20, "booted with maxMemory");
  assert.equal(first.targetBytes, 64 * 2 ** 20);
  assert.equal(first.balloon.targetPages, (32 * 2 ** 20) / 4096, "the balloon holds back the rest");
  const set = await d.call("PUT", "/v1/domains/{name}/memory", "/v1/domains/bal/memory", {
    size: "80M",
  });
  assert.equal(set.status, 200);
  assert.equal((set.json as { balloon: { targetPages: number } }).balloon.targetPages, 4096);
  for (const size of ["200M", "16M", "lots"]) {
    const r = await d.call("PUT", "/v1/domains/{name}/memory", "/v1/domains/bal/memory", { size });
    assert.equal(r.status, 400, size);
  }
  await d.call("POST", "/v1/domains", "/v1/domains", spec("noballoon"));
  await act("noballoon", "start");
  const r = await d.call("PUT", "/v1/domains/{name}/memory", "/v1/domains/noballoon/memory", {
    size: "64M",
  });
  assert.equal(r.status, 409);
  await act("bal", "destroy");
  await act("noballoon", "destroy");
});

test("vCPU pinning at start (cpus, vcpuPin) and at runtime, seen by sched_getaffinity; metrics; top", async () => {
  const { libc } = await import("../src/host/mod.js");
  await d.call(
    "POST",
    "/v1/domains",
    "/v1/domains",
    spec("pinned", { vcpus: 2, cpus: "0", vcpuPin: { "1": "1" } }),
  );
  await act("pinned", "start");
  const list = async () =>
    (
      (await d.call("GET", "/v1/domains/{name}/vcpus", "/v1/domains/pinned/vcpus")).json as {
        vcpus: { vcpu: number; tid: number; cpus: number[] }[];
      }
    ).vcpus;
  let vcpus = await list();
  assert.deepEqual(
    vcpus.map((v) => v.cpus),
    [[0], [1]],
  );
  for (const v of vcpus) assert.deepEqual(libc.getAffinity(v.tid), v.cpus, "the kernel agrees");
  const pin = await d.call(
    "PUT",
    "/v1/domains/{name}/vcpus/{vcpu}/pin",
    "/v1/domains/pinned/vcpus/0/pin",
    { cpus: "0-1" },
  );
  assert.equal(pin.status, 200);
  vcpus = await list();
  assert.deepEqual(libc.getAffinity(vcpus[0]?.tid ?? 0), [0, 1]);
  const badPin = await d.call(
    "PUT",
    "/v1/domains/{name}/vcpus/{vcpu}/pin",
    "/v1/domains/pinned/vcpus/7/pin",
    { cpus: "0" },
  );
  assert.equal(badPin.status, 400);

  const metrics = await d.client.metrics();
  assert.match(metrics, /^vessel_domain_running\{domain="pinned"\} 1$/m);
  assert.match(metrics, /^vessel_vcpu_cpu_seconds_total\{domain="pinned",vcpu="1"\} /m);
  assert.match(metrics, /^vessel_vm_exits_total\{domain="pinned",reason="io"\} \d+$/m);
  assert.match(metrics, /^vessel_vmm_resident_bytes\{domain="pinned"\} \d+$/m);
  assert.match(metrics, /^# TYPE vessel_cpu_throttled_seconds_total counter$/m);

  const top = await cli(d.socket, ["top", "--json", "--iterations", "2", "--interval", "0.3"]);
  assert.equal(top.code, 0, top.stderr);
  const frames = top.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { domains: { domain: string; cpuPercent: number | null }[] });
  assert.equal(frames.length, 2);
  assert.ok(frames[1]?.domains.some((x) => x.domain === "pinned" && x.cpuPercent !== null));

  // This host has cgroup v1 only: a share cannot be changed, and the daemon says why.
  const version = (await d.client.version()) as { cgroups: string };
  if (version.cgroups.startsWith("none")) {
    const r = await d.call("PUT", "/v1/domains/{name}/schedule", "/v1/domains/pinned/schedule", {
      cpuCap: 50,
    });
    assert.equal(r.status, 409);
    assert.match((r.json as { error: { message: string } }).error.message, /cgroup/);
  }
  await act("pinned", "destroy");
});

test("every VMM is jailed: not root, no capabilities, no_new_privs, seccomp, own mount namespace with none of the host's files; a forbidden call is reported as a crash", async () => {
  await d.call("POST", "/v1/domains", "/v1/domains", spec("walled", { onCrash: "preserve" }));
  const info = (await act("walled", "start")).json as DomainInfo;
  assert.equal(info.jailed, true);
  const pid = info.pid ?? 0;
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, "m").exec(status)?.[1] ?? "";
  assert.notEqual(field("Uid").split(/\s+/)[0], "0");
  assert.equal(field("Seccomp"), "2");
  assert.equal(field("NoNewPrivs"), "1");
  assert.equal(field("CapEff"), "0000000000000000");
  const { readlinkSync } = await import("node:fs");
  assert.notEqual(readlinkSync(`/proc/${pid}/ns/mnt`), readlinkSync("/proc/self/ns/mnt"));
  assert.notEqual(readlinkSync(`/proc/${pid}/ns/pid`), readlinkSync("/proc/self/ns/pid"));
  const root = readdirSync(`/proc/${pid}/root`);
  for (const hostDir of ["etc", "home", "root", "var", "dev", "proc"])
    assert.ok(!root.includes(hostDir), `/${hostDir} is visible in the jail (${root.join(" ")})`);
  // Still a working VMM: the API reaches it through its control socket.
  assert.equal(
    (await d.call("GET", "/v1/domains/{name}/stats", "/v1/domains/walled/stats")).status,
    200,
  );

  const { ControlClient } = await import("../src/vmm/control.js");
  const control = await ControlClient.connect(
    join(d.runtimeDir, "domains", "walled", "control.sock"),
  );
  control.request("test-forbidden-syscall").catch(() => {});
  const crashed = await waitFor("walled to crash", async () => {
    const i = await info_("walled");
    return i.state === "crashed" ? i : undefined;
  });
  control.close();
  assert.equal(crashed.reason, "seccomp", "the daemon names the seccomp filter");
  await act("walled", "destroy");
});

test("the CLI: tables for people, --json for programs, one-line errors with exit 1", async () => {
  const file = join(d.dir, "cli.yaml");
  writeFileSync(file, `name: clidom\nmemory: 16M\nvcpus: 1\nkernel: ${kernel}\n`);
  const run = (...args: string[]) => cli(d.socket, args);
  assert.equal((await run("define", file)).code, 0);
  assert.equal((await run("start", "clidom")).code, 0);
  const table = await run("list");
  assert.match(table.stdout, /^Name\s+State\s+Reason/m);
  assert.match(table.stdout, /^clidom\s+running\s+booted\s+1\s+16 MiB/m);
  const json = JSON.parse((await run("list", "--all", "--json")).stdout) as DomainInfo[];
  assert.equal(json.find((x) => x.name === "clidom")?.state, "running");
  const con = await cli(d.socket, ["console", "clidom"], "\x1d", 1500);
  assert.match(con.stdout, new RegExp(DOMAIN_GUEST_READY));
  assert.match(con.stderr, /detached from clidom/);
  assert.equal((await info("clidom")).state, "running", "detaching left it running");
  const bad = await run("start", "nosuchdomain");
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, 'vessel: no domain named "nosuchdomain"\n');
  writeFileSync(file, "name: clidom\nmemory: lots\nvcpus: 1\nkernel: /k\n");
  const badFile = await run("define", file);
  assert.equal(badFile.code, 1);
  assert.match(badFile.stderr, /^vessel: .*cli\.yaml: memory: expected bytes or a size/);
  assert.equal((await run("destroy", "clidom")).code, 0);
});

function cli(
  socket: string,
  args: string[],
  input?: string,
  inputDelayMs = 0,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [VESSEL_BIN, ...args, "--connect", socket]);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on("data", (b: Buffer) => out.push(b));
    p.stderr.on("data", (b: Buffer) => err.push(b));
    if (input !== undefined) setTimeout(() => p.stdin.write(input), inputDelayMs);
    else p.stdin.end();
    p.on("exit", (code) =>
      resolve({
        code: code ?? -1,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      }),
    );
  });
}

function readConsole(path: string, until: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    let text = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`console: no "${until}" in ${JSON.stringify(text)}`));
    }, 10_000);
    s.on("data", (b: Buffer) => {
      text += b.toString("latin1");
      if (text.includes(until)) {
        clearTimeout(timer);
        s.destroy();
        resolve(text);
      }
    });
    s.on("error", reject);
  });
}
