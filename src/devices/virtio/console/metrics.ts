// Counters for one virtio-console device: bytes each way, host input that found no room,
// and what the guest sent that was refused. Ring-level problems (malformed chains, broken
// rings) are counted by the queue and the transport.

export interface ConsoleMetricsSnapshot {
  /** Bytes the guest transmitted that reached the output sink. */
  bytesOut: number;
  /** Host input bytes delivered into guest receive buffers. */
  bytesIn: number;
  /** Host input bytes dropped because the backlog was full. */
  inputDropped: number;
  /** Descriptor chains refused (wrong direction, empty) and returned unused. */
  refusedChains: number;
  /** Notifications for a queue that does not exist or before activation. */
  invalidNotifies: number;
  /** Config-space writes other than emerg_wr (every other field is read-only). */
  refusedConfigWrites: number;
  /** Bytes written through emerg_wr (VIRTIO_CONSOLE_F_EMERG_WRITE). */
  emergencyBytes: number;
  /** Times the output sink threw (the bytes are lost; the guest is not told). */
  sinkErrors: number;
  /** Times transmit work was left for a later event-loop turn (budget spent). */
  deferred: number;
  /** Configuration change interrupts raised by resize(). */
  resizes: number;
}

export class ConsoleMetrics implements ConsoleMetricsSnapshot {
  bytesOut = 0;
  bytesIn = 0;
  inputDropped = 0;
  refusedChains = 0;
  invalidNotifies = 0;
  refusedConfigWrites = 0;
  emergencyBytes = 0;
  sinkErrors = 0;
  deferred = 0;
  resizes = 0;

  /** A copy of every counter. */
  snapshot(): ConsoleMetricsSnapshot {
    return { ...this };
  }
}
