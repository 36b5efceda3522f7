// Whether this host's /dev/kvm is hardware virtualization that can boot a stock Linux
// kernel, or an interpreter (kvm_pvm) that only runs small purpose-built guests.

import { existsSync, readFileSync } from "node:fs";

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
