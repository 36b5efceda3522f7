// Tests of the triple-fault register text, on hand-made kvm_regs/kvm_sregs images.

import assert from "node:assert/strict";
import { test } from "node:test";
import { SIZEOF_KVM_REGS, SIZEOF_KVM_SREGS } from "../host/kvm_abi.js";
import { describeFaultState } from "./fault_state.js";

function state(rip: bigint, rsp: bigint, cr0: bigint, cr3: bigint): [DataView, DataView] {
  const regs = new DataView(new ArrayBuffer(SIZEOF_KVM_REGS));
  const sregs = new DataView(new ArrayBuffer(SIZEOF_KVM_SREGS));
  regs.setBigUint64(128, rip, true);
  regs.setBigUint64(48, rsp, true);
  sregs.setBigUint64(224, cr0, true);
  sregs.setBigUint64(232, 0x1234n, true);
  sregs.setBigUint64(240, cr3, true);
  return [regs, sregs];
}

test("a long-mode fault names its registers and nothing more", () => {
  const text = describeFaultState(
    ...state(0xffffffff81000000n, 0xffffc90000003f00n, 0x80050033n, 0x1fe2000n),
  );
  assert.equal(text, "rip=0xffffffff81000000 rsp=0xffffc90000003f00 cr2=0x1234 cr3=0x1fe2000");
});

test("registers already at the reset state say that where the guest was is lost", () => {
  const text = describeFaultState(...state(0xfff0n, 0n, 0x60000010n, 0n));
  assert.match(text, /^rip=0xfff0 rsp=0x0 cr2=0x1234 cr3=0x0 \(the vCPU's reset state: KVM on AMD/);
});

test("a real-mode guest at 0xfff0 with paging state is not taken for a reset", () => {
  const text = describeFaultState(...state(0xfff0n, 0n, 0x60000011n, 0n));
  assert.doesNotMatch(text, /reset state/);
});
