// Tests for the BPF assembler: encodings checked against <linux/filter.h>'s BPF_STMT and
// BPF_JUMP values written out by hand, label resolution, and the refusals the kernel's
// checker would otherwise make as a bare EINVAL.

import assert from "node:assert/strict";
import { test } from "node:test";
import { BpfAssembler, encode } from "./bpf.js";
import { runFilter } from "./testing.js";

test("instructions encode as struct sock_filter (code, jt, jf, k), little-endian", () => {
  const program = new BpfAssembler()
    .loadWord(4) // BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4)
    .jeq(0xc000003e, undefined, "kill") // BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 1)
    .ret(0x7fff0000) // BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
    .label("kill")
    .ret(0x80000000) // BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)
    .assemble();
  assert.deepEqual(program, [
    { code: 0x20, jt: 0, jf: 0, k: 4 },
    { code: 0x15, jt: 0, jf: 1, k: 0xc000003e },
    { code: 0x06, jt: 0, jf: 0, k: 0x7fff0000 },
    { code: 0x06, jt: 0, jf: 0, k: 0x80000000 },
  ]);
  assert.equal(
    Buffer.from(encode(program)).toString("hex"),
    [
      "2000" + "00" + "00" + "04000000",
      "1500" + "00" + "01" + "3e0000c0",
      "0600" + "00" + "00" + "0000ff7f",
      "0600" + "00" + "00" + "00000080",
    ].join(""),
  );
});

test("ALU and the other conditional jumps encode with their opcodes", () => {
  const p = new BpfAssembler()
    .rsh(8)
    .and(0xff)
    .jset(0x10000, "a")
    .jge(5, "a")
    .jgt(5, "a", undefined)
    .jump("a")
    .label("a")
    .ret(0)
    .assemble();
  assert.deepEqual(
    p.map((i) => i.code),
    [0x74, 0x54, 0x45, 0x35, 0x25, 0x05, 0x06],
  );
  assert.deepEqual(
    p.map((i) => [i.jt, i.jf, i.k]),
    [
      [0, 0, 8],
      [0, 0, 0xff],
      [3, 0, 0x10000],
      [2, 0, 5],
      [1, 0, 5],
      [0, 0, 0],
      [0, 0, 0],
    ],
  );
});

test("the interpreter follows jumps, shifts and masks as the kernel does", () => {
  const p = new BpfAssembler()
    .loadWord(24) // low word of args[1]
    .rsh(8)
    .and(0xff)
    .jeq(0xae, "yes")
    .ret(1)
    .label("yes")
    .ret(2)
    .assemble();
  assert.equal(runFilter(p, { nr: 16, arch: 0, args: [0n, 0xae80n] }), 2);
  assert.equal(runFilter(p, { nr: 16, arch: 0, args: [0n, 0x5401n] }), 1);
  // Only the low word is loaded: high bits of a 64-bit argument do not leak in.
  assert.equal(runFilter(p, { nr: 16, arch: 0, args: [0n, 0xffffffff_0000ae00n] }), 2);
});

test("mistakes are refused with a message instead of an EINVAL from seccomp(2)", () => {
  assert.throws(() => new BpfAssembler().jeq(1, "nowhere").ret(0).assemble(), /not defined/);
  assert.throws(
    () => new BpfAssembler().label("x").ret(0).label("x").ret(0).assemble(),
    /defined twice/,
  );
  assert.throws(() => new BpfAssembler().loadWord(0).assemble(), /last instruction/);
  assert.throws(() => new BpfAssembler().assemble(), /1\.\.4096/);
  assert.throws(() => new BpfAssembler().loadWord(64), /outside struct seccomp_data/);
  assert.throws(() => new BpfAssembler().loadWord(2), /multiple of 4/);
  assert.throws(() => new BpfAssembler().ret(-1), /32-bit/);
  assert.throws(() => new BpfAssembler().rsh(32), /0\.\.31/);
  // Classic BPF only jumps forward, and a conditional jump reaches 255 instructions.
  assert.throws(
    () => new BpfAssembler().label("back").loadWord(0).jeq(1, "back").ret(0).assemble(),
    /backwards/,
  );
  const far = new BpfAssembler().jeq(1, "end");
  for (let i = 0; i < 256; i++) far.loadWord(0);
  assert.throws(() => far.label("end").ret(0).assemble(), /256 away \(max 255\)/);
  // An unconditional jump has a 32-bit offset.
  const long = new BpfAssembler().jump("end");
  for (let i = 0; i < 300; i++) long.loadWord(0);
  assert.equal(long.label("end").ret(0).assemble()[0]?.k, 300);
});
