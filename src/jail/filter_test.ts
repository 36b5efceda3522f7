// Tests for the VMM's seccomp filter: its decisions through the test interpreter (allowed
// calls, argument checks, the kill default, another ABI), then the real kernel's: a child
// process installs it and a forbidden call kills that child with SIGSYS. Installing a
// filter needs no privilege once no_new_privs is set, so this runs anywhere.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  ALLOWED,
  AUDIT_ARCH_X86_64,
  CLONE_THREAD,
  EXAMPLES_FORBIDDEN,
  REFUSED_ENOSYS,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  TIOCSTI,
  VSOCK_CONNECT,
  vmmFilter,
} from "./filter.js";
import { X86_64 } from "./syscalls.js";
import { runFilter } from "./testing.js";

const program = vmmFilter();
const call = (nr: number, args: bigint[] = [], arch = AUDIT_ARCH_X86_64) =>
  runFilter(program, { nr, arch, args });

test("every allow-listed call is allowed, whatever its arguments", () => {
  for (const group of ALLOWED) {
    for (const name of group.calls) {
      assert.equal(call(X86_64[name]), SECCOMP_RET_ALLOW, name);
      assert.equal(call(X86_64[name], [~0n, ~0n, ~0n]), SECCOMP_RET_ALLOW, name);
    }
  }
});

test("anything else kills the process", () => {
  for (const name of EXAMPLES_FORBIDDEN) {
    assert.equal(call(X86_64[name]), SECCOMP_RET_KILL_PROCESS, name);
  }
  const listed = new Set<number>([
    ...ALLOWED.flatMap((g) => g.calls.map((n) => X86_64[n])),
    ...REFUSED_ENOSYS.map((n) => X86_64[n]),
    X86_64.ioctl,
    X86_64.clone,
    X86_64.prctl,
  ]);
  for (let nr = 0; nr < 500; nr++) {
    if (!listed.has(nr)) assert.equal(call(nr), SECCOMP_RET_KILL_PROCESS, `nr ${nr}`);
  }
  // x32 numbers (bit 30) are not x86-64 numbers, even for an allowed call.
  assert.equal(call(0x40000000 | X86_64.read), SECCOMP_RET_KILL_PROCESS);
});

test("a call through another ABI is killed before its number is looked at", () => {
  const AUDIT_ARCH_I386 = 0x40000003;
  assert.equal(call(X86_64.read, [], AUDIT_ARCH_I386), SECCOMP_RET_KILL_PROCESS);
  assert.equal(call(3 /* i386 read */, [], AUDIT_ARCH_I386), SECCOMP_RET_KILL_PROCESS);
});

test("ioctl: KVM, vhost, terminal and TUN requests pass; others and TIOCSTI do not", () => {
  const ioctl = (req: bigint) => call(X86_64.ioctl, [3n, req]);
  const KVM_RUN = 0xae80n;
  const KVM_CREATE_VM = 0xae01n;
  const TCGETS = 0x5401n;
  const TUNSETIFF = 0x400454can;
  const VHOST_SET_OWNER = 0xaf01n;
  for (const req of [KVM_RUN, KVM_CREATE_VM, TCGETS, TUNSETIFF, VHOST_SET_OWNER]) {
    assert.equal(ioctl(req), SECCOMP_RET_ALLOW, `0x${req.toString(16)}`);
  }
  const SIOCGIFFLAGS = 0x8913n;
  const FS_IOC_GETFLAGS = 0x80086601n;
  for (const req of [SIOCGIFFLAGS, FS_IOC_GETFLAGS, BigInt(TIOCSTI), 0x541cn]) {
    assert.equal(ioctl(req), SECCOMP_RET_KILL_PROCESS, `0x${req.toString(16)}`);
  }
});

test("clone makes threads only; clone3 says ENOSYS so glibc falls back to clone", () => {
  const GLIBC_THREAD_FLAGS = 0x3d0f00n;
  assert.equal(BigInt(CLONE_THREAD) & GLIBC_THREAD_FLAGS, BigInt(CLONE_THREAD));
  assert.equal(call(X86_64.clone, [GLIBC_THREAD_FLAGS]), SECCOMP_RET_ALLOW);
  const SIGCHLD = 17n;
  assert.equal(call(X86_64.clone, [SIGCHLD]), SECCOMP_RET_KILL_PROCESS, "fork");
  const CLONE_NEWNET = 0x40000000n;
  assert.equal(call(X86_64.clone, [GLIBC_THREAD_FLAGS | CLONE_NEWNET]), SECCOMP_RET_KILL_PROCESS);
  assert.equal(call(X86_64.clone3), SECCOMP_RET_ERRNO | 38);
});

test("prctl: naming only", () => {
  assert.equal(call(X86_64.prctl, [15n]), SECCOMP_RET_ALLOW);
  const PR_SET_DUMPABLE = 4n;
  const PR_SET_SECCOMP = 22n;
  assert.equal(call(X86_64.prctl, [PR_SET_DUMPABLE, 1n]), SECCOMP_RET_KILL_PROCESS);
  assert.equal(call(X86_64.prctl, [PR_SET_SECCOMP]), SECCOMP_RET_KILL_PROCESS);
});

test("with a vsock device: Unix sockets may be made and connected, no other family", () => {
  const vsock = vmmFilter({ unixConnect: true });
  const with_ = (nr: number, args: bigint[] = []) =>
    runFilter(vsock, { nr, arch: AUDIT_ARCH_X86_64, args });
  for (const name of VSOCK_CONNECT.calls.filter((n) => n !== "socket")) {
    assert.equal(with_(X86_64[name]), SECCOMP_RET_ALLOW, name);
    assert.equal(call(X86_64[name]), SECCOMP_RET_KILL_PROCESS, `${name} without vsock`);
  }
  // AF_UNIX with SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, as libuv asks.
  assert.equal(with_(X86_64.socket, [1n, 0x80801n]), SECCOMP_RET_ALLOW);
  for (const family of [2n /* INET */, 10n /* INET6 */, 16n /* NETLINK */, 17n /* PACKET */])
    assert.equal(with_(X86_64.socket, [family, 1n]), SECCOMP_RET_KILL_PROCESS, `${family}`);
  // The kernel reads the family as an int: only the low word counts, to it and the filter.
  assert.equal(with_(X86_64.socket, [1n | (1n << 32n), 1n]), SECCOMP_RET_ALLOW);
  assert.equal(call(X86_64.socket, [1n, 1n]), SECCOMP_RET_KILL_PROCESS, "no vsock, no socket");
  for (const name of EXAMPLES_FORBIDDEN.filter((n) => !VSOCK_CONNECT.calls.includes(n)))
    assert.equal(with_(X86_64[name]), SECCOMP_RET_KILL_PROCESS, name);
});

/** Run `body` in a child Node that installs the VMM's filter first (after `before`). */
function underFilter(body: string, opts: { unixConnect?: boolean } = {}, before = "") {
  const sandbox = new URL("../host/sandbox.js", import.meta.url).href;
  const filter = new URL("./filter.js", import.meta.url).href;
  const script = `
    const sandbox = await import(${JSON.stringify(sandbox)});
    const { vmmFilterProgram } = await import(${JSON.stringify(filter)});
    // As enterJail() does: Node asks what a socket is when it first uses it.
    for (const s of [process.stdout, process.stderr]) void s.writable;
    ${before}
    sandbox.prctl(sandbox.PR_SET_NO_NEW_PRIVS, 1);
    sandbox.seccompSetFilter(vmmFilterProgram(${JSON.stringify(opts)}), sandbox.SECCOMP_FILTER_FLAG_TSYNC);
    ${body}
  `;
  return spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    timeout: 20_000,
  });
}

test("in the kernel: allowed calls work, socket(AF_INET) kills the process with SIGSYS", () => {
  const libc = new URL("../host/libc.js", import.meta.url).href;
  const workerSource = `
    const { parentPort } = await import("node:worker_threads");
    parentPort.postMessage((await import(${JSON.stringify(libc)})).gettid());`;
  const r = underFilter(`
    const { randomFillSync } = await import("node:crypto");
    const { Worker } = await import("node:worker_threads");
    randomFillSync(new Uint8Array(16));
    // A worker thread starts (clone after clone3's ENOSYS) and loads koffi under the filter.
    const tid = await new Promise((resolve, reject) => {
      const w = new Worker(${JSON.stringify(workerSource)}, { eval: true });
      w.on("message", resolve);
      w.on("error", reject);
    });
    process.stdout.write("allowed calls ok " + (tid > 0) + "\\n");
    const libc = await import(${JSON.stringify(libc)});
    libc.socket(2, 1, 0);
    process.stdout.write("still alive\\n");
  `);
  assert.equal(`${r.stdout}${r.stderr}`, "allowed calls ok true\n", `signal ${r.signal}`);
  assert.equal(r.signal, "SIGSYS", `status ${r.status}, stderr ${r.stderr}`);
});

test("in the kernel: mount and execve are refused the same way", () => {
  const mount = underFilter(`sandbox.mount("none", "/", null, 0);`);
  assert.equal(mount.signal, "SIGSYS", mount.stderr);
  const exec = underFilter(`sandbox.execve("/bin/true", ["true"], []);`);
  assert.equal(exec.signal, "SIGSYS", exec.stderr);
});

test("in the kernel, with vsock: Node connects to a Unix socket and talks; AF_INET still kills", () => {
  const path = join(mkdtempSync(join(tmpdir(), "vessel-filter-")), "s_5000");
  const r = underFilter(
    `
    const { createConnection } = await import("node:net");
    const reply = await new Promise((resolve, reject) => {
      const c = createConnection({ path: ${JSON.stringify(path)} });
      c.on("error", reject);
      c.on("data", (b) => { resolve(b.toString()); c.destroy(); });
      c.write("ping");
    });
    process.stdout.write("reply " + reply + "\\n");
    const libc = await import(${JSON.stringify(new URL("../host/libc.js", import.meta.url).href)});
    libc.socket(2, 1, 0);
    process.stdout.write("still alive\\n");
    `,
    { unixConnect: true },
    // The host program's listener, made before the filter (bind is never allowed).
    `const { createServer } = await import("node:net");
    const server = createServer((s) => s.on("data", (b) => s.write("pong:" + b)));
    await new Promise((r) => server.listen(${JSON.stringify(path)}, r));
    server.unref();`,
  );
  assert.equal(`${r.stdout}${r.stderr}`, "reply pong:ping\n", `signal ${r.signal}`);
  assert.equal(r.signal, "SIGSYS", `status ${r.status}, stderr ${r.stderr}`);
});
