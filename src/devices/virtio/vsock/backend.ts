// The host side of virtio-vsock as the device sees it: byte streams that can be written,
// half-closed, paused and torn down, and a backend that opens them to host services and
// hands over the ones host programs open. uds.ts implements it with Unix sockets in
// Firecracker's convention; tests and the fuzzer implement it in memory. Keeping sockets
// behind this seam is what lets the device's protocol and credit logic run without any.

/** One host-side byte stream (a connected Unix socket). */
export interface HostStream {
  /**
   * Queue `bytes` (the stream keeps them: pass a copy, not a view of guest RAM) and call
   * `done` once they have left the process or the stream has failed.
   */
  write(bytes: Uint8Array, done: () => void): void;
  /** No more bytes towards the host (half-close); `done` once queued bytes have left or failed. */
  end(done: () => void): void;
  /** Tear the stream down now; queued bytes are dropped. No events follow. */
  destroy(): void;
  /** Stop and restart delivering host bytes (backpressure towards the host program). */
  pause(): void;
  resume(): void;
}

/** What a stream reports to the device, always on the main thread. */
export interface HostStreamEvents {
  /** Bytes from the host program; the device may keep the array. */
  data(bytes: Uint8Array): void;
  /** The host program will send nothing more (it half-closed or closed). */
  end(): void;
  /** The stream is gone (closed both ways, failed, or its connect failed). Last event. */
  close(): void;
}

/** Events of a stream the device asked for: `connected` comes first, or only `close`. */
export interface OutboundStreamEvents extends HostStreamEvents {
  connected(): void;
}

/** A host program asking for a connection to a guest port (Firecracker's `CONNECT <port>`). */
export interface HostConnectRequest {
  guestPort: number;
  stream: HostStream;
  /** The guest accepted: tell the host program (`OK <hostPort>`) before any guest data. */
  accepted(hostPort: number): void;
}

/**
 * Take a host program's request: the events to route its stream's bytes to, or undefined
 * when refused (the backend then closes the stream).
 */
export type HostAcceptor = (request: HostConnectRequest) => HostStreamEvents | undefined;

export interface VsockBackend {
  /** Describes where host programs connect (the listening socket path), for logs and state. */
  readonly path: string;
  /** Route host-initiated connections to `accept` from now on. */
  setAcceptor(accept: HostAcceptor): void;
  /** Open a stream to the host service for guest connections to host port `port`. */
  connect(port: number, events: OutboundStreamEvents): HostStream;
  /** Stop listening, close every stream still open and remove the listening socket. */
  close(): Promise<void>;
}
