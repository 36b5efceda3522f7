// The default guest image and the initramfs toolkit the lab reuses.

export {
  type CpioEntry,
  type CpioParsedEntry,
  parseNewc,
  writeNewc,
} from "./cpio.js";
export { vesselCacheRoot } from "./debian.js";
export {
  type BuildImageOptions,
  type BuiltImage,
  buildDefaultImage,
  defaultImageDir,
  defaultImagePaths,
  EXEC_DONE_MARKER,
  execCmdlineArg,
  GUEST_KERNEL_META,
  type ImageManifest,
  type ImagePaths,
  INIT_READY_MARKER,
  imageIsBuilt,
} from "./image.js";
