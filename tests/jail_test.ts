// The jail from outside: `vessel run --jail` boots the domain test guest on this host's
// /dev/kvm and the test checks the running VMM process through /proc (its user, its
// capabilities, no_new_privs, seccomp, its namespaces, the files it can see), that the
// control socket and the guest still work, that the outcome file is written through the one
// writable directory, and that a forbidden system call kills it with SIGSYS, which the
// launcher passes on. Also the VMM's I/O paths under its seccomp filter, in a child
// process. These tests need root and /dev/kvm; without them they fail and say so.

import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { jailPlan } from "../src/jail/mod.js";
import { ControlClient } from "../src/vmm/control.js";
import { DOMAIN_GUEST_READY, writeDomainGuest } from "./guests/domain_guest.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const VESSEL = join(ROOT, "bin", "vessel.js");
/** Not the default, to show the flags are obeyed. */
const JAIL_ID = 900_123;
const TAP = "vjail0";

const dir = mkdtempSync(join(tmpdir(), "vessel-jail-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const guest = writeDomainGuest(join(dir, "guest.elf"), { powerButton: false });

function requireRootAndKvm(): void {
  assert.equal(process.getuid?.(), 0, "the jail tests need root (namespaces, mounts, setuid)");
  assert.ok(existsSync("/dev/kvm"), "the jail tests need /dev/kvm");
}

interface Jailed {
  launcher: ChildProcess;
  control: ControlClient;
  /** The VMM's pid on the host (the launcher's child). */
  pid: number;
  outcomeFile: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

async function startJailed(name: string, extra: string[] = []): Promise<Jailed> {
  const run = join(dir, name);
  const out = join(run, "out");
  mkdirSync(out, { recursive: true });
  chownSync(out, JAIL_ID, JAIL_ID); // the one directory the jailed VMM may write
  const socket = join(run, "control.sock");
  const outcomeFile = join(out, "outcome.json");
  const launcher = spawn(
    process.execPath,
    [
      VESSEL,
      "run",
      "--jail",
      "--jail-uid",
      String(JAIL_ID),
      "--jail-gid",
      String(JAIL_ID),
      "--slow-kvm",
      "--kernel",
      guest,
      "--memory",
      "16M",
      "--control-socket",
      socket,
      "--outcome-file",
      outcomeFile,
      ...extra,
    ],
    { env: { ...process.env, VESSEL_TEST_HOOKS: "1" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  launcher.stdout?.on("data", (b: Buffer) => {
    output += b.toString("latin1");
  });
  launcher.stderr?.on("data", (b: Buffer) => {
    output += b.toString("latin1");
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    launcher.on("exit", (code, signal) => resolve({ code, signal })),
  );
  let control: ControlClient | undefined;
  for (let i = 0; i < 200 && !control && launcher.exitCode === null; i++) {
    control = await ControlClient.connect(socket, 1000).catch(() => undefined);
    if (!control) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(control, `the jailed VMM never answered on its control socket: ${output}`);
  // The guest prints once the VMM is running, which is after it entered its jail.
  for (let i = 0; i < 400 && !output.includes(DOMAIN_GUEST_READY); i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(output.includes(DOMAIN_GUEST_READY), `the guest never ran: ${output}`);
  const status = (await control.request("status")) as { pid: number; jailed: boolean };
  assert.equal(status.jailed, true);
  return { launcher, control, pid: status.pid, outcomeFile, exited, output: () => output };
}

function statusFields(path: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) fields.set(line.slice(0, at), line.slice(at + 1).trim());
  }
  return fields;
}

test("a jailed VMM runs as its own user with no capabilities, no_new_privs and seccomp, in namespaces of its own that hold none of the host's files", async () => {
  requireRootAndKvm();
  const tempBefore = readdirSync(tmpdir()).filter((n) => n.startsWith("vessel-jail-"));
  // Every kind of resource opened before the jail: a disk image, a TAP, the rng.
  const image = join(dir, "walls.img");
  writeFileSync(image, "");
  truncateSync(image, 1 << 20);
  const ip = (...args: string[]) => spawnSync("ip", args, { encoding: "utf8" });
  ip("tuntap", "del", "dev", TAP, "mode", "tap");
  const added = ip("tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr");
  assert.equal(added.status, 0, `ip tuntap add: ${added.stderr}`);
  const vm = await startJailed("walls", ["--disk", image, "--net", `tap=${TAP}`, "--rng"]);
  try {
    // The pid the VMM reports is the host's, and it is the launcher's (unshare's) child.
    const launcherPid = vm.launcher.pid as number;
    const children = readFileSync(`/proc/${launcherPid}/task/${launcherPid}/children`, "utf8");
    assert.deepEqual(children.trim().split(" ").map(Number), [vm.pid]);
    assert.match(readFileSync(`/proc/${launcherPid}/cmdline`, "utf8"), /^[^\0]*unshare\0/);

    const s = statusFields(`/proc/${vm.pid}/status`);
    assert.equal(s.get("Uid"), `${JAIL_ID}\t${JAIL_ID}\t${JAIL_ID}\t${JAIL_ID}`);
    assert.equal(s.get("Gid"), `${JAIL_ID}\t${JAIL_ID}\t${JAIL_ID}\t${JAIL_ID}`);
    assert.equal(s.get("Groups"), "");
    assert.equal(s.get("Seccomp"), "2");
    assert.equal(s.get("NoNewPrivs"), "1");
    for (const set of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) {
      assert.equal(s.get(set), "0000000000000000", set);
    }
    assert.equal(s.get("NSpid"), `${vm.pid}\t1`, "pid 1 of its own PID namespace");
    // Every thread (vCPU workers, libuv's pool, V8's) carries the same walls.
    const tasks = readdirSync(`/proc/${vm.pid}/task`);
    assert.ok(tasks.length > 3, `threads: ${tasks.join(" ")}`);
    for (const tid of tasks) {
      const t = statusFields(`/proc/${vm.pid}/task/${tid}/status`);
      assert.equal(t.get("Uid")?.split("\t")[0], String(JAIL_ID), `thread ${tid} uid`);
      assert.equal(t.get("Seccomp"), "2", `thread ${tid} seccomp`);
      assert.equal(t.get("NoNewPrivs"), "1", `thread ${tid} no_new_privs`);
      assert.equal(t.get("CapEff"), "0000000000000000", `thread ${tid} CapEff`);
    }

    for (const ns of ["mnt", "pid", "net"]) {
      assert.notEqual(
        readlinkSync(`/proc/${vm.pid}/ns/${ns}`),
        readlinkSync(`/proc/self/ns/${ns}`),
      );
    }
    // Its mounts are the jail's root and the planned paths, nothing else.
    const plan = jailPlan({
      uid: JAIL_ID,
      gid: JAIL_ID,
      outcomeFile: vm.outcomeFile,
      taps: [TAP],
    });
    assert.ok(plan.readOnly.includes(`/sys/class/net/${TAP}/statistics`));
    // Its network namespace is empty, yet its TAP fd is bound to the host's vjail0: the TAP
    // was opened in the host's namespace (in its own, TUNSETIFF would have made a new one).
    const netDevs = (pid: number | "self") =>
      readFileSync(`/proc/${pid}/net/dev`, "utf8")
        .split("\n")
        .slice(2)
        .map((l) => l.split(":")[0]?.trim())
        .filter(Boolean);
    assert.deepEqual(netDevs(vm.pid), ["lo"]);
    assert.ok(netDevs("self").includes(TAP));
    const tunFds = readdirSync(`/proc/${vm.pid}/fdinfo`).filter((fd) =>
      readFileSync(`/proc/${vm.pid}/fdinfo/${fd}`, "utf8").includes(`iff:\t${TAP}`),
    );
    assert.equal(tunFds.length, 1, "one fd on the TAP");
    const expected = ["/", ...[...plan.readOnly, ...plan.writable].map((p) => realpathSync(p))];
    const mounts = readFileSync(`/proc/${vm.pid}/mountinfo`, "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split(" ")[4] as string);
    assert.deepEqual([...mounts].sort(), [...expected].sort());
    assert.match(readFileSync(`/proc/${vm.pid}/mountinfo`, "utf8"), /^\d+ \d+ \S+ \/ \/ ro,/);
    // At the top, only the first components of those paths (and of the links to them).
    const top = readdirSync(`/proc/${vm.pid}/root`);
    const planned = [...plan.readOnly, ...plan.writable].flatMap((p) => [p, realpathSync(p)]);
    assert.deepEqual(top.sort(), [...new Set(planned.map((p) => p.split("/")[1]))].sort());
    assert.ok(!existsSync(`/proc/${vm.pid}/root/etc/passwd`));
    assert.ok(!existsSync(`/proc/${vm.pid}/root${guest}`), "the kernel image is not in the jail");
    // The temporary mount point was removed once the root was switched.
    const tempAfter = readdirSync(tmpdir()).filter((n) => n.startsWith("vessel-jail-"));
    assert.deepEqual(tempAfter, tempBefore);

    // The VMM still works: the guest ran (its output and exits), the control socket answers.
    const stats = (await vm.control.request("stats")) as { exits: Record<string, number> };
    assert.ok((stats.exits.io ?? 0) > 0, JSON.stringify(stats.exits));
    await vm.control.request("pause");
    assert.equal(((await vm.control.request("status")) as { state: string }).state, "paused");
    await vm.control.request("resume");

    // A clean stop writes the outcome file through the one writable directory.
    await vm.control.request("stop");
    assert.deepEqual(await vm.exited, { code: 6, signal: null });
    const outcome = JSON.parse(readFileSync(vm.outcomeFile, "utf8")) as {
      outcome: { kind: string };
    };
    assert.equal(outcome.outcome.kind, "stopped");
  } finally {
    vm.control.close();
    vm.launcher.kill("SIGKILL");
    ip("tuntap", "del", "dev", TAP, "mode", "tap");
  }
});

test("with vsock, the jail shows the uds's directory when it holds only sockets, and says why not otherwise", async () => {
  requireRootAndKvm();
  const own = join(dir, "vsock-own");
  const shared = join(dir, "vsock-shared");
  mkdirSync(own);
  mkdirSync(shared);
  writeFileSync(join(shared, "notes.txt"), "not a socket");
  const shown = await startJailed("vsock-shown", ["--vsock", `cid=3,uds=${join(own, "v.sock")}`]);
  const hidden = await startJailed("vsock-hidden", [
    "--vsock",
    `cid=4,uds=${join(shared, "v.sock")}`,
  ]);
  try {
    const mounts = (pid: number) =>
      readFileSync(`/proc/${pid}/mountinfo`, "utf8")
        .trim()
        .split("\n")
        .map((l) => l.split(" ")[4] as string);
    assert.ok(mounts(shown.pid).includes(realpathSync(own)), mounts(shown.pid).join(" "));
    // Read-only, like the rest of the jail: host programs make the <uds>_<port> sockets.
    assert.ok(existsSync(`/proc/${shown.pid}/root${own}/v.sock`));
    assert.ok(!mounts(hidden.pid).includes(realpathSync(shared)));
    assert.match(
      hidden.output(),
      /--jail: guest vsock connections to host ports are off: .*vsock-shared holds more than sockets \(notes\.txt\)/,
    );
    assert.doesNotMatch(shown.output(), /vsock connections to host ports are off/);
  } finally {
    for (const vm of [shown, hidden]) {
      vm.control.close();
      vm.launcher.kill("SIGKILL");
    }
  }
});

test("a forbidden system call kills the jailed VMM with SIGSYS, and the launcher exits the same way", async () => {
  requireRootAndKvm();
  const vm = await startJailed("forbidden");
  try {
    const reply = vm.control.request("test-forbidden-syscall").then(
      () => "answered",
      (e: Error) => e.message,
    );
    assert.deepEqual(await vm.exited, { code: null, signal: "SIGSYS" });
    assert.equal(await reply, "the VMM process went away");
    assert.ok(!existsSync(`/proc/${vm.pid}`), "the VMM process is gone");
    assert.ok(!existsSync(vm.outcomeFile), "a killed VMM leaves no outcome");
  } finally {
    vm.control.close();
    vm.launcher.kill("SIGKILL");
  }
});

test("killing the launcher (a supervisor's SIGKILL) takes the jailed VMM with it", async () => {
  requireRootAndKvm();
  const vm = await startJailed("pdeathsig");
  vm.launcher.kill("SIGKILL");
  await vm.exited;
  await vm.control.closed;
  for (let i = 0; i < 100 && existsSync(`/proc/${vm.pid}`); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(!existsSync(`/proc/${vm.pid}`), "the VMM outlived its launcher");
});

function vessel(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [VESSEL, "run", ...args], { encoding: "utf8", env });
}

test("jail flags are checked before anything starts, each mistake in one line", () => {
  const base = ["--slow-kvm", "--kernel", guest, "--memory", "16M"];
  const cases: [string[], RegExp][] = [
    [["--jail", "--jail-uid", "0"], /^vessel: --jail-uid: "0" is not an id in 1\.\.4294967294\n$/],
    [["--jail", "--jail-gid", "x"], /^vessel: --jail-gid: "x" is not an id/],
    [["--jail-uid", "5"], /^vessel: --jail-uid\/--jail-gid: only with --jail\n$/],
    [["--jail", "--memory", "1M"], /^vessel: --memory: too little memory/],
  ];
  for (const [flags, message] of cases) {
    const r = vessel([...base, ...flags]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, message);
  }
});

test("the VMM refuses to build a jail outside namespaces of its own, whatever its environment says", () => {
  requireRootAndKvm();
  const r = vessel(["--jail", "--slow-kvm", "--kernel", guest, "--memory", "16M"], {
    ...process.env,
    VESSEL_JAIL_LAUNCHER_MNTNS: "mnt:[1]",
  });
  assert.equal(r.status, 1);
  assert.equal(r.stderr, "vessel: --jail: not pid 1 of a PID namespace of its own\n");
});

test("an outcome directory the jail's user cannot write is refused before the guest runs", () => {
  requireRootAndKvm();
  const out = join(dir, "root-only");
  mkdirSync(out, { mode: 0o700 });
  const r = vessel([
    "--jail",
    "--slow-kvm",
    "--kernel",
    guest,
    "--memory",
    "16M",
    "--outcome-file",
    join(out, "outcome.json"),
  ]);
  assert.equal(r.status, 1);
  assert.equal(
    r.stderr,
    `vessel: --jail: ${out} is not writable by uid 900000 (the outcome file goes there)\n`,
  );
});

test("virtio-blk I/O, getrandom and a worker loading koffi all run under the VMM's filter", () => {
  const image = join(dir, "disk.img");
  writeFileSync(image, "");
  truncateSync(image, 1 << 20);
  const child = fileURLToPath(new URL("./jail_filtered_io.js", import.meta.url));
  const r = spawnSync(process.execPath, [child, image], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(
    r.stdout,
    `io ok ${JSON.stringify({ writes: 2, reads: 1, flushes: 1, discards: 1, writeZeroes: 1 })}\n`,
  );
});
