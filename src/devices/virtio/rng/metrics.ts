// Counters for one virtio-rng device, read by the VMM's stats and by tests. Ring-level
// problems (malformed chains, broken rings) are counted by the queue and the transport.

export interface RngMetricsSnapshot {
  /** Requests (descriptor chains) answered with random bytes. */
  requests: number;
  /** Random bytes written into guest buffers. */
  bytes: number;
  /** Requests returned with 0 bytes (no device-writable buffer), and notifies refused. */
  refused: number;
  /** Times work was left for a later event-loop turn because a turn's budget ran out. */
  deferred: number;
}

export class RngMetrics implements RngMetricsSnapshot {
  requests = 0;
  bytes = 0;
  refused = 0;
  deferred = 0;

  snapshot(): RngMetricsSnapshot {
    return {
      requests: this.requests,
      bytes: this.bytes,
      refused: this.refused,
      deferred: this.deferred,
    };
  }
}
