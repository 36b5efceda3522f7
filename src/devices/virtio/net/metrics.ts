// Counters for one virtio-net device: frames and bytes each way, what the guest sent that
// was refused, what could not be delivered and what failed on the TAP. Ring-level problems
// (malformed chains, broken rings) are counted by the queue and the transport. With vhost
// the frame counters stay at zero (no frame passes through the VMM; the TAP's own
// statistics count them) and the vhost counters say what the VMM still did.

export interface NetMetricsSnapshot {
  /** Frames (without the vnet header) delivered to the guest, and their bytes. */
  rxFrames: number;
  rxBytes: number;
  /** Frames sent by the guest and written to the TAP, and their bytes. */
  txFrames: number;
  txBytes: number;
  /**
   * Times receiving stopped because the guest had posted no (or too few) receive buffers.
   * Frames then wait in the TAP's kernel queue (txqueuelen); the kernel drops beyond it and
   * counts those in the TAP's tx_dropped (see VirtioNet.hostQueueDropped()).
   */
  rxNoBuffers: number;
  /** Frames read from the TAP but dropped: larger than the buffers posted, or shorter than a header. */
  rxDropped: number;
  /** Receive chains refused (device-readable parts, shorter than the header). */
  rxRefused: number;
  /** Transmit chains refused (writable parts, short, oversized, bad header). */
  txRefused: number;
  /** Frames the TAP would not take (writev failed, including EAGAIN: dropped like a full wire). */
  txDropped: number;
  /** Failed TAP calls other than EAGAIN (readv, writev, TUNSETOFFLOAD). */
  tapErrors: number;
  /** Notifications for a queue that does not exist or before activation. */
  invalidNotifies: number;
  /** Config-space writes (every field is read-only). */
  configWrites: number;
  /** Times transmit work was left for a later event-loop turn (per-turn bound reached). */
  txDeferred: number;
  /** Interrupts the vhost worker asked for (its call eventfd), relayed to the driver. */
  vhostInterrupts: number;
  /** Notifications that reached the VMM instead of the worker, passed on to its kick eventfd. */
  vhostKicksRelayed: number;
  /** Ring errors the vhost worker reported, and failed vhost calls. */
  vhostErrors: number;
  /** Activations that handed the rings to vhost. */
  vhostStarts: number;
}

export class NetMetrics implements NetMetricsSnapshot {
  rxFrames = 0;
  rxBytes = 0;
  txFrames = 0;
  txBytes = 0;
  rxNoBuffers = 0;
  rxDropped = 0;
  rxRefused = 0;
  txRefused = 0;
  txDropped = 0;
  tapErrors = 0;
  invalidNotifies = 0;
  configWrites = 0;
  txDeferred = 0;
  vhostInterrupts = 0;
  vhostKicksRelayed = 0;
  vhostErrors = 0;
  vhostStarts = 0;

  snapshot(): NetMetricsSnapshot {
    return { ...this };
  }
}
