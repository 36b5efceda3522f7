// Counters for one virtio-vsock device: packets and bytes each way, connections made and
// refused, and what the guest sent that was refused. Ring-level problems (malformed chains,
// broken rings) are counted by the queue and the transport.

export interface VsockMetricsSnapshot {
  /** Packets placed in the guest's rx buffers, and their payload bytes. */
  rxPackets: number;
  rxBytes: number;
  /** Packets the guest sent that passed the header checks, and RW payload bytes forwarded. */
  txPackets: number;
  txBytes: number;
  /** Connections established: the host program asked (CONNECT) / the guest asked (REQUEST). */
  hostConnections: number;
  guestConnections: number;
  /**
   * Connection attempts that failed: nothing listening at PATH_<port>, the connection limit,
   * no answer from the guest in time, or the guest refusing with RST.
   */
  connectionsRefused: number;
  /** RST packets sent to the guest / received from it. */
  resetsSent: number;
  resetsReceived: number;
  /** Guest packets refused with RST: bad type, op, len or flags, or wrong for the state. */
  malformedPackets: number;
  /** Guest packets dropped because src_cid was not the guest's or dst_cid not the host. */
  misaddressedPackets: number;
  /** RW packets beyond the credit we advertised (the connection is reset). */
  creditViolations: number;
  /** Chains refused whole: rx chains with readable parts or too short for a header; tx chains with writable parts or shorter than a header. */
  refusedChains: number;
  /** Times a packet was ready but the guest had posted no rx buffer. */
  rxNoBuffers: number;
  /** Times a connection stopped reading its host socket because the guest was not taking data. */
  hostPauses: number;
  /** Host bytes thrown away because the guest had shut down receiving. */
  discardedBytes: number;
  /** Notifications for a queue that does not exist or before activation. */
  invalidNotifies: number;
  /** Config-space writes (guest_cid is read-only). */
  configWrites: number;
  /** Times work was left for a later event-loop turn (the per-turn bound was reached). */
  deferred: number;
}

export class VsockMetrics implements VsockMetricsSnapshot {
  rxPackets = 0;
  rxBytes = 0;
  txPackets = 0;
  txBytes = 0;
  hostConnections = 0;
  guestConnections = 0;
  connectionsRefused = 0;
  resetsSent = 0;
  resetsReceived = 0;
  malformedPackets = 0;
  misaddressedPackets = 0;
  creditViolations = 0;
  refusedChains = 0;
  rxNoBuffers = 0;
  hostPauses = 0;
  discardedBytes = 0;
  invalidNotifies = 0;
  configWrites = 0;
  deferred = 0;

  snapshot(): VsockMetricsSnapshot {
    return { ...this };
  }
}
