// Counters for one virtio-blk device, in the spirit of Firecracker's per-device metrics:
// what the guest asked for, what reached the disk, what failed on the host and what was
// refused because the guest sent something malformed. Plain numbers, bumped on the hot path,
// copied out by snapshot() for the metrics endpoint and for tests.

export interface BlockMetricsSnapshot {
  /** Well-formed requests by type. */
  readRequests: number;
  writeRequests: number;
  flushRequests: number;
  getIdRequests: number;
  discardRequests: number;
  writeZeroesRequests: number;
  /** Requests of a type this device does not implement (answered VIRTIO_BLK_S_UNSUPP). */
  unsupportedRequests: number;
  bytesRead: number;
  bytesWritten: number;
  /** Requests that failed on the host (answered VIRTIO_BLK_S_IOERR). */
  ioErrors: number;
  /** Malformed requests refused (bad layout, out of range, over a limit). */
  refused: number;
  /** Writes, discards and write-zeroes refused because the disk is read-only. */
  readOnlyRefusals: number;
  /** Notifications for a queue that does not exist or before activation. */
  invalidNotifies: number;
  /** Config-space writes (every field is read-only). */
  configWrites: number;
  /** Completions dropped because the device was reset while their I/O was in flight. */
  droppedAfterReset: number;
  /** Requests with host I/O outstanding now, and the most ever at once. */
  inFlight: number;
  inFlightHighWater: number;
}

export class BlockMetrics implements BlockMetricsSnapshot {
  readRequests = 0;
  writeRequests = 0;
  flushRequests = 0;
  getIdRequests = 0;
  discardRequests = 0;
  writeZeroesRequests = 0;
  unsupportedRequests = 0;
  bytesRead = 0;
  bytesWritten = 0;
  ioErrors = 0;
  refused = 0;
  readOnlyRefusals = 0;
  invalidNotifies = 0;
  configWrites = 0;
  droppedAfterReset = 0;
  inFlight = 0;
  inFlightHighWater = 0;

  /** A copy of every counter. */
  snapshot(): BlockMetricsSnapshot {
    return { ...this };
  }
}
