// The lab harness: run shell scenarios on real KVM inside a QEMU TCG machine with SVM.

export { ensureL1Image, type L1Image, l1ImageCached, labCacheDir } from "./l1image.js";
export {
  type GuestCommandOptions,
  hostKvmCanBootLinux,
  LabError,
  type LabOptions,
  type LabResult,
  type LabRun,
  type LabScenario,
  labAvailable,
  qemuGuestCommand,
  runInLab,
  shQuote,
} from "./lab.js";
