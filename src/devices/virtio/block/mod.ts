// virtio-blk: a block device backed by a raw image file (virtio 1.2 §5.2).

export type { BlockConfig } from "./config.js";
export {
  BLOCK_CONFIG_SIZE,
  SECTOR_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
} from "./config.js";
export type { VirtioBlockOptions } from "./device.js";
export { DEFAULT_QUEUE_SIZE, VirtioBlock } from "./device.js";
export type { BlockMetricsSnapshot } from "./metrics.js";
export type { VirtioBlockState } from "./state.js";
export { validateBlockState } from "./state.js";
