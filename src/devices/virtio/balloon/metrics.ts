// Counters for one virtio-balloon device: pages given and taken back, and what the guest
// sent that was refused. Ring-level problems are counted by the queue and the transport.

export interface BalloonMetricsSnapshot {
  /** Inflate / deflate requests (descriptor chains) processed. */
  inflateRequests: number;
  deflateRequests: number;
  /** Page frame numbers accepted on the inflateq (each discarded) and on the deflateq. */
  pagesInflated: number;
  pagesDeflated: number;
  /** Inflated PFNs that were already in the balloon, deflated ones that were not. */
  duplicateInflates: number;
  unknownDeflates: number;
  /** PFNs refused because their page is not wholly in guest RAM. */
  refusedPfns: number;
  /** Chains refused whole: writable buffers, a partial PFN, too long, malformed stats. */
  refusedChains: number;
  /** madvise(MADV_DONTNEED) calls (adjacent PFNs coalesced) and those that failed. */
  discards: number;
  discardErrors: number;
  /** Statistics buffers parsed, and entries with a tag this device does not know. */
  statsUpdates: number;
  unknownStatTags: number;
  /** Notifications for a queue that does not exist or before activation. */
  invalidNotifies: number;
  /** Config writes outside `actual` (every other field is read-only). */
  refusedConfigWrites: number;
  /** Times work was left for a later event-loop turn because a turn's budget ran out. */
  deferred: number;
}

export class BalloonMetrics implements BalloonMetricsSnapshot {
  inflateRequests = 0;
  deflateRequests = 0;
  pagesInflated = 0;
  pagesDeflated = 0;
  duplicateInflates = 0;
  unknownDeflates = 0;
  refusedPfns = 0;
  refusedChains = 0;
  discards = 0;
  discardErrors = 0;
  statsUpdates = 0;
  unknownStatTags = 0;
  invalidNotifies = 0;
  refusedConfigWrites = 0;
  deferred = 0;

  /** A copy of every counter. */
  snapshot(): BalloonMetricsSnapshot {
    return { ...this };
  }
}
