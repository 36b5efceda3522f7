// Where a vCPU was when it triple-faulted, as the outcome's text: read from kvm_regs and
// kvm_sregs right after KVM_EXIT_SHUTDOWN. On AMD, KVM reinitialises the vCPU at a shutdown
// (the VMCB is undefined after one), so the registers are already the reset state; saying so
// keeps "rip=0xfff0" from being read as where the guest died.

import { REGS_ORDER, SREGS_CR0, SREGS_CR2, SREGS_CR3 } from "../host/kvm_abi.js";

const REGS_RIP = REGS_ORDER.indexOf("rip") * 8;
const REGS_RSP = REGS_ORDER.indexOf("rsp") * 8;
/** The x86 reset vector's offset in CS, and CR0 after reset (ET, CD, NW; PE and PG clear). */
const RESET_RIP = 0xfff0n;
const CR0_PE = 1n;

export function describeFaultState(regs: DataView, sregs: DataView): string {
  const rip = regs.getBigUint64(REGS_RIP, true);
  const cr0 = sregs.getBigUint64(SREGS_CR0, true);
  const cr3 = sregs.getBigUint64(SREGS_CR3, true);
  const hex = (v: bigint) => `0x${v.toString(16)}`;
  const text = `rip=${hex(rip)} rsp=${hex(regs.getBigUint64(REGS_RSP, true))} cr2=${hex(sregs.getBigUint64(SREGS_CR2, true))} cr3=${hex(cr3)}`;
  if (rip === RESET_RIP && (cr0 & CR0_PE) === 0n && cr3 === 0n) {
    return `${text} (the vCPU's reset state: KVM on AMD resets a vCPU at a shutdown, so where the guest was is lost)`;
  }
  return text;
}
