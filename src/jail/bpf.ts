// A small assembler for classic BPF, the instruction set seccomp filters are written in
// (the subset a seccomp filter may use: 32-bit loads from struct seccomp_data, a few ALU
// operations with a constant, forward jumps, and returns). Jumps name labels; assemble()
// resolves them and refuses what the kernel's checker would refuse (a jump out of range
// or backwards, a load outside seccomp_data, a program not ending in a return), so a
// mistake is caught here with a message instead of as EINVAL from seccomp(2).

// Instruction classes and fields, from <linux/bpf_common.h>.
export const BPF_LD = 0x00;
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_W = 0x00;
export const BPF_ABS = 0x20;
export const BPF_K = 0x00;
export const BPF_AND = 0x50;
export const BPF_RSH = 0x70;
export const BPF_JA = 0x00;
export const BPF_JEQ = 0x10;
export const BPF_JGT = 0x20;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
/** <linux/bpf_common.h> BPF_MAXINSNS: the longest program the kernel accepts. */
export const BPF_MAXINSNS = 4096;
/** sizeof(struct seccomp_data): the only memory a seccomp filter may load from. */
export const SECCOMP_DATA_SIZE = 64;

/** struct sock_filter. */
export interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** A jump target: a label, or undefined for the next instruction. */
export type Target = string | undefined;

type Item =
  | { kind: "insn"; code: number; k: number; jt?: Target; jf?: Target; ja?: string }
  | { kind: "label"; name: string };

function u32(k: number, what: string): number {
  if (!Number.isInteger(k) || k < 0 || k > 0xffffffff) {
    throw new RangeError(`BPF: ${what} ${k} is not a 32-bit unsigned constant`);
  }
  return k;
}

export class BpfAssembler {
  private readonly items: Item[] = [];

  /** A = the 32-bit word at `offset` in struct seccomp_data. */
  loadWord(offset: number): this {
    if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0) {
      throw new RangeError(`BPF: load offset ${offset} is not a multiple of 4`);
    }
    if (offset + 4 > SECCOMP_DATA_SIZE) {
      throw new RangeError(`BPF: load offset ${offset} is outside struct seccomp_data`);
    }
    return this.insn(BPF_LD | BPF_W | BPF_ABS, offset);
  }

  and(k: number): this {
    return this.insn(BPF_ALU | BPF_AND | BPF_K, u32(k, "AND constant"));
  }

  rsh(k: number): this {
    if (!Number.isInteger(k) || k < 0 || k > 31)
      throw new RangeError(`BPF: shift ${k} is not 0..31`);
    return this.insn(BPF_ALU | BPF_RSH | BPF_K, k);
  }

  /** if (A == k) goto jt else goto jf. */
  jeq(k: number, jt: Target, jf?: Target): this {
    return this.cond(BPF_JEQ, k, jt, jf);
  }

  /** if (A & k) goto jt else goto jf. */
  jset(k: number, jt: Target, jf?: Target): this {
    return this.cond(BPF_JSET, k, jt, jf);
  }

  /** if (A >= k) goto jt else goto jf (unsigned). */
  jge(k: number, jt: Target, jf?: Target): this {
    return this.cond(BPF_JGE, k, jt, jf);
  }

  /** if (A > k) goto jt else goto jf (unsigned). */
  jgt(k: number, jt: Target, jf?: Target): this {
    return this.cond(BPF_JGT, k, jt, jf);
  }

  /** goto label (32-bit offset, forward only). */
  jump(label: string): this {
    this.items.push({ kind: "insn", code: BPF_JMP | BPF_JA, k: 0, ja: label });
    return this;
  }

  /** Return `k` (a SECCOMP_RET_* action with its data). */
  ret(k: number): this {
    return this.insn(BPF_RET | BPF_K, u32(k, "return value"));
  }

  label(name: string): this {
    this.items.push({ kind: "label", name });
    return this;
  }

  private insn(code: number, k: number): this {
    this.items.push({ kind: "insn", code, k });
    return this;
  }

  private cond(op: number, k: number, jt: Target, jf: Target): this {
    this.items.push({
      kind: "insn",
      code: BPF_JMP | op | BPF_K,
      k: u32(k, "comparison constant"),
      jt,
      jf,
    });
    return this;
  }

  /** Resolve labels into offsets and check the program as the kernel would. */
  assemble(): Insn[] {
    const at = new Map<string, number>();
    let n = 0;
    for (const item of this.items) {
      if (item.kind === "insn") {
        n++;
        continue;
      }
      if (at.has(item.name)) throw new RangeError(`BPF: label "${item.name}" defined twice`);
      at.set(item.name, n);
    }
    if (n === 0 || n > BPF_MAXINSNS) {
      throw new RangeError(`BPF: a program has 1..${BPF_MAXINSNS} instructions, not ${n}`);
    }
    const out: Insn[] = [];
    for (const item of this.items) {
      if (item.kind === "label") continue;
      const pc = out.length;
      const offset = (target: Target, limit: number): number => {
        if (target === undefined) return 0;
        const to = at.get(target);
        if (to === undefined) throw new RangeError(`BPF: label "${target}" is not defined`);
        const off = to - (pc + 1);
        if (off < 0) throw new RangeError(`BPF: jump to "${target}" goes backwards`);
        if (off > limit)
          throw new RangeError(`BPF: jump to "${target}" is ${off} away (max ${limit})`);
        return off;
      };
      if (item.ja !== undefined) {
        out.push({ code: item.code, jt: 0, jf: 0, k: offset(item.ja, 0xffffffff) });
      } else {
        out.push({
          code: item.code,
          jt: offset(item.jt, 255),
          jf: offset(item.jf, 255),
          k: item.k,
        });
      }
    }
    for (const [name, to] of at) {
      if (to >= out.length)
        throw new RangeError(`BPF: label "${name}" is past the last instruction`);
    }
    const last = out[out.length - 1] as Insn;
    if ((last.code & 0x07) !== BPF_RET) {
      throw new RangeError("BPF: the last instruction must be a return");
    }
    return out;
  }
}

/** The program as the kernel takes it: an array of struct sock_filter, little-endian. */
export function encode(program: readonly Insn[]): Uint8Array {
  const bytes = new Uint8Array(program.length * 8);
  const view = new DataView(bytes.buffer);
  program.forEach((insn, i) => {
    view.setUint16(i * 8, insn.code, true);
    view.setUint8(i * 8 + 2, insn.jt);
    view.setUint8(i * 8 + 3, insn.jf);
    view.setUint32(i * 8 + 4, insn.k, true);
  });
  return bytes;
}
