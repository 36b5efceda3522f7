// Whether this host has a /dev/kvm at all, and whether it is hardware virtualization that
// can boot a stock Linux kernel or an interpreter (kvm_pvm) that only runs small
// purpose-built guests.

import { closeSync, existsSync, openSync, readFileSync } from "node:fs";

/**
 * Whether /dev/kvm opens. A node can exist with no driver behind it (kvm_pvm declines to bind
 * inside a kvm_pvm guest: ENODEV), so existence alone does not say.
 */
export function hostKvmUsable(): { ok: boolean; reason: string } {
  try {
    closeSync(openSync("/dev/kvm", "r+"));
    return { ok: true, reason: "/dev/kvm opens" };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { ok: false, reason: "this machine has no /dev/kvm" };
    return { ok: false, reason: `/dev/kvm does not open (${code ?? String(e)})` };
  }
}

/**
 * Whether the host's own /dev/kvm can boot a Linux guest: false without a vmx/svm CPU flag
 * or when the KVM module is kvm_pvm (which interprets guest kernel code and cannot).
 */
export function hostKvmCanBootLinux(): { ok: boolean; reason: string } {
  if (!existsSync("/dev/kvm")) return { ok: false, reason: "/dev/kvm does not exist" };
  if (existsSync("/sys/module/kvm_pvm")) {
    return { ok: false, reason: "/dev/kvm is kvm_pvm, which cannot boot a stock Linux kernel" };
  }
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch (err) {
    return { ok: false, reason: `cannot read /proc/cpuinfo: ${(err as Error).message}` };
  }
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1]?.split(/\s+/) ?? [];
  if (flags.includes("vmx")) return { ok: true, reason: "the CPU has vmx and /dev/kvm exists" };
  if (flags.includes("svm")) return { ok: true, reason: "the CPU has svm and /dev/kvm exists" };
  return { ok: false, reason: "the CPU has neither vmx nor svm" };
}
