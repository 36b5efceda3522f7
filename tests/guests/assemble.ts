// Builds the small purpose-built test guests: GNU as source for 16-bit real mode, linked
// flat at a load address with ld. The tests make their guests themselves, so what each
// guest does is readable next to the assertion that checks it.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const GUEST_LOAD_ADDRESS = 0x1000;

/** Assemble 16-bit real-mode source into a flat binary linked at `address`. */
export function assembleReal(source: string, address = GUEST_LOAD_ADDRESS): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), "vessel-guest-"));
  try {
    writeFileSync(join(dir, "g.S"), `.code16\n.text\n.globl _start\n_start:\n${source}\n`);
    execFileSync("as", ["--32", "-o", join(dir, "g.o"), join(dir, "g.S")]);
    execFileSync("ld", [
      "-m",
      "elf_i386",
      `-Ttext=0x${address.toString(16)}`,
      "--oformat",
      "binary",
      "-o",
      join(dir, "g.bin"),
      join(dir, "g.o"),
    ]);
    return new Uint8Array(readFileSync(join(dir, "g.bin")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Power off through the ACPI sleep control register (SLP_EN | SLP_TYP=5 at port 0x600). */
export const POWEROFF = `
  mov $0x600, %dx
  mov $0x34, %al
  out %al, %dx
1: jmp 1b
`;

/**
 * Assemble 32-bit protected-mode code into an ELF64 x86-64 executable with a PVH entry
 * note (XEN_ELFNOTE_PHYS32_ENTRY), the shape of a vmlinux built with CONFIG_PVH.
 */
export function assemblePvhElf(source: string, address = 0x100000): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), "vessel-guest-"));
  try {
    writeFileSync(
      join(dir, "g.S"),
      `.section .note.Xen, "a", @note
  .align 4
  .long 4, 4, 18
  .asciz "Xen"
  .long _start
.text
.code32
.globl _start
_start:
${source}
`,
    );
    execFileSync("as", ["--64", "-o", join(dir, "g.o"), join(dir, "g.S")]);
    execFileSync("ld", [
      "-m",
      "elf_x86_64",
      `-Ttext=0x${address.toString(16)}`,
      "-o",
      join(dir, "g.elf"),
      join(dir, "g.o"),
    ]);
    return new Uint8Array(readFileSync(join(dir, "g.elf")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
