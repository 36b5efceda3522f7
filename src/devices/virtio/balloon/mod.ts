// virtio-balloon (virtio 1.2 §5.5): the host asks the guest to give pages back (inflate,
// discarded with MADV_DONTNEED) or take them again (deflate); the guest reports memory
// statistics on request.
export {
  BALLOON_CONFIG_SIZE,
  BALLOON_PAGE_SIZE,
  BALLOON_STAT_NAMES,
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_MUST_TELL_HOST,
  VIRTIO_BALLOON_F_STATS_VQ,
} from "./config.js";
export type { BalloonStats, VirtioBalloonOptions } from "./device.js";
export {
  BALLOON_MAX_CHAIN_BYTES,
  BALLOON_MAX_STATS_BYTES,
  BALLOON_PFNS_PER_TURN,
  BALLOON_QUEUE_SIZE,
  VirtioBalloon,
} from "./device.js";
export type { BalloonMetricsSnapshot } from "./metrics.js";
