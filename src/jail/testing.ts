// A classic-BPF interpreter for tests: runs an assembled seccomp filter against a system
// call described as struct seccomp_data, so a filter's decisions can be checked without
// installing it. It implements only the subset the assembler emits and throws on anything
// else; it is written from the BPF specification, not from the assembler, so the two check
// each other.

import { type Insn, SECCOMP_DATA_SIZE } from "./bpf.js";

/** struct seccomp_data. */
export interface SeccompData {
  nr: number;
  arch: number;
  instructionPointer?: bigint;
  args?: readonly bigint[];
}

function seccompDataBytes(d: SeccompData): DataView {
  const view = new DataView(new ArrayBuffer(SECCOMP_DATA_SIZE));
  view.setInt32(0, d.nr, true);
  view.setUint32(4, d.arch, true);
  view.setBigUint64(8, d.instructionPointer ?? 0n, true);
  for (let i = 0; i < 6; i++)
    view.setBigUint64(16 + 8 * i, BigInt.asUintN(64, d.args?.[i] ?? 0n), true);
  return view;
}

/** Run `program` on `data`; returns the 32-bit value of the RET it reaches. */
export function runFilter(program: readonly Insn[], data: SeccompData): number {
  const mem = seccompDataBytes(data);
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps <= program.length; steps++) {
    const insn = program[pc];
    if (!insn) throw new RangeError(`BPF interpreter: pc ${pc} ran off the program`);
    pc++;
    const cls = insn.code & 0x07;
    switch (cls) {
      case 0x00: // BPF_LD: only BPF_W | BPF_ABS
        if (insn.code !== 0x20)
          throw new RangeError(`BPF interpreter: load 0x${insn.code.toString(16)}`);
        a = mem.getUint32(insn.k, true);
        break;
      case 0x04: {
        // BPF_ALU with a constant
        const op = insn.code & 0xf0;
        if ((insn.code & 0x08) !== 0) throw new RangeError("BPF interpreter: ALU with X");
        if (op === 0x50) a = (a & insn.k) >>> 0;
        else if (op === 0x40) a = (a | insn.k) >>> 0;
        else if (op === 0x70) a = a >>> insn.k;
        else throw new RangeError(`BPF interpreter: ALU op 0x${op.toString(16)}`);
        break;
      }
      case 0x05: {
        // BPF_JMP with a constant
        const op = insn.code & 0xf0;
        if ((insn.code & 0x08) !== 0) throw new RangeError("BPF interpreter: jump on X");
        if (op === 0x00) {
          pc += insn.k;
          break;
        }
        let taken: boolean;
        if (op === 0x10) taken = a === insn.k;
        else if (op === 0x20) taken = a > insn.k;
        else if (op === 0x30) taken = a >= insn.k;
        else if (op === 0x40) taken = (a & insn.k) !== 0;
        else throw new RangeError(`BPF interpreter: jump op 0x${op.toString(16)}`);
        pc += taken ? insn.jt : insn.jf;
        break;
      }
      case 0x06: // BPF_RET | BPF_K
        if (insn.code !== 0x06) throw new RangeError("BPF interpreter: return of A");
        return insn.k;
      default:
        throw new RangeError(`BPF interpreter: class 0x${cls.toString(16)}`);
    }
  }
  throw new RangeError("BPF interpreter: no return reached");
}
