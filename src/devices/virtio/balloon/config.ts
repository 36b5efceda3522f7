// The virtio-balloon configuration space (virtio 1.2 §5.5.4), feature bits (§5.5.3) and
// memory statistics tags (§5.5.6.3). Only num_pages (the host's target) and actual (what
// the driver has given back, written by the driver) are implemented; the free-page-hint
// and page-poison fields read as zero because those features are not offered.

/** Feature bits (virtio 1.2 §5.5.3). */
export const VIRTIO_BALLOON_F_MUST_TELL_HOST = 0n;
export const VIRTIO_BALLOON_F_STATS_VQ = 1n;
export const VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2n;
export const VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3n;
export const VIRTIO_BALLOON_F_PAGE_POISON = 4n;
export const VIRTIO_BALLOON_F_PAGE_REPORTING = 5n;

// Field offsets in struct virtio_balloon_config (§5.5.4).
export const OFF_NUM_PAGES = 0; // le32, host's target
export const OFF_ACTUAL = 4; // le32, written by the driver
/** Bytes of config this device implements; reads beyond give zero. */
export const BALLOON_CONFIG_SIZE = 8;

/** Queue indices (§5.5.2); statsq exists with VIRTIO_BALLOON_F_STATS_VQ. */
export const INFLATEQ = 0;
export const DEFLATEQ = 1;
export const STATSQ = 2;

/** The balloon's page size, whatever the guest's page size (§5.5.6). */
export const BALLOON_PAGE_SIZE = 4096;
export const BALLOON_PFN_SHIFT = 12;

/** One statistic: le16 tag, le64 value, packed (§5.5.6.3). */
export const STAT_ENTRY_BYTES = 10;

/**
 * Statistics tags (§5.5.6.3; tags 10..15 from virtio 1.3 and Linux 6.12), by the names
 * the host reports them under.
 */
export const BALLOON_STAT_NAMES: readonly string[] = [
  "swap_in", // VIRTIO_BALLOON_S_SWAP_IN 0
  "swap_out", // VIRTIO_BALLOON_S_SWAP_OUT 1
  "major_faults", // VIRTIO_BALLOON_S_MAJFLT 2
  "minor_faults", // VIRTIO_BALLOON_S_MINFLT 3
  "free_memory", // VIRTIO_BALLOON_S_MEMFREE 4
  "total_memory", // VIRTIO_BALLOON_S_MEMTOT 5
  "available_memory", // VIRTIO_BALLOON_S_AVAIL 6
  "disk_caches", // VIRTIO_BALLOON_S_CACHES 7
  "hugetlb_allocations", // VIRTIO_BALLOON_S_HTLB_PGALLOC 8
  "hugetlb_failures", // VIRTIO_BALLOON_S_HTLB_PGFAIL 9
  "oom_kills", // VIRTIO_BALLOON_S_OOM_KILL 10
  "alloc_stalls", // VIRTIO_BALLOON_S_ALLOC_STALL 11
  "async_scans", // VIRTIO_BALLOON_S_ASYNC_SCAN 12
  "direct_scans", // VIRTIO_BALLOON_S_DIRECT_SCAN 13
  "async_reclaims", // VIRTIO_BALLOON_S_ASYNC_RECLAIM 14
  "direct_reclaims", // VIRTIO_BALLOON_S_DIRECT_RECLAIM 15
];
