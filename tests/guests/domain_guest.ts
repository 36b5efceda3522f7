// A tiny guest for control-plane tests: it prints a line on COM1, then sleeps in `hlt`.
// With `powerButton`, it sleeps with interrupts on until the ACPI power button's GED
// interrupt (GSI 5) arrives, then powers off through the S5 register as a well-behaved OS
// would; that needs real KVM (this machine's kvm_pvm cannot deliver an interrupt into such a
// guest: it fails as int3 does, see HOST-NOTES). Without it, the guest ignores the button,
// which is what a test of shutdown's timeout needs. Sleeping in hlt costs no host CPU, so
// many of these can run at once (the load script does). With `spin`, it spins with
// interrupts off instead, burning all the CPU it is given (for CPU-cap tests).

import { writeFileSync } from "node:fs";
import { assemblePvhElf, POWEROFF } from "./assemble.js";

const GED_VECTOR = 0x30;

export const DOMAIN_GUEST_READY = "DOMAIN-GUEST-READY";

const source = (powerButton: boolean, spin: boolean) => `
  mov $msg, %esi
  mov $0x3f8, %dx
print:
  lodsb
  test %al, %al
  jz printed
  out %al, %dx
  jmp print
printed:
${spin ? "  cli\n1: jmp 1b\n" : powerButton ? "" : "  cli\n1: hlt\n  jmp 1b\n"}
  # IDT gate for the GED vector, with our own code segment (whatever the VMM chose).
  mov $handler, %eax
  mov $idt + ${GED_VECTOR} * 8, %edi
  mov %ax, (%edi)
  mov %cs, %bx
  mov %bx, 2(%edi)
  movw $0x8e00, 4(%edi)
  shr $16, %eax
  mov %ax, 6(%edi)
  lidt idtr
  # Software-enable the local APIC (spurious vector register, bit 8).
  movl $0x1ff, 0xfee000f0
  # IOAPIC redirection entry for GSI 5: vector ${GED_VECTOR}, fixed, edge, to APIC 0.
  movl $0x1b, 0xfec00000
  movl $0, 0xfec00010
  movl $0x1a, 0xfec00000
  movl $${GED_VECTOR}, 0xfec00010
  sti
sleep:
  hlt
  jmp sleep
handler:
${POWEROFF}
msg: .asciz "${DOMAIN_GUEST_READY}\\n"
.align 8
idt: .fill ${GED_VECTOR + 1}, 8, 0
idtr: .word ${(GED_VECTOR + 1) * 8 - 1}
  .long idt
`;

/** Write the guest as an ELF vmlinux with a PVH note, ready for `vessel run --kernel`. */
export function writeDomainGuest(
  path: string,
  opts: { powerButton: boolean; spin?: boolean },
): string {
  writeFileSync(path, assemblePvhElf(source(opts.powerButton, opts.spin === true)));
  return path;
}
