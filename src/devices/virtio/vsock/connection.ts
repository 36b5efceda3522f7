// One vsock stream connection between a guest port and a host port: its state, the host
// bytes waiting for the guest, and both sides' credit (virtio 1.2 §5.10.6, buffer space
// management). The device routes packets and host events here and asks nextOp() what to
// put in the guest's next rx buffer; this class holds no sockets and touches no memory.
//
// Credit, both ways, with free-running u32 counters compared modulo 2^32 as Linux does:
//  - towards the guest: we may have at most peerBufAlloc - (txCnt - peerFwdCnt) bytes in
//    flight, from the buf_alloc and fwd_cnt of the guest's latest packet on this connection;
//  - from the guest: we advertise `bufAlloc` and a fwd_cnt that counts only bytes the host
//    socket has taken, so a slow host program stops the guest rather than growing a buffer.

import type { HostStream } from "./backend.js";
import {
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE,
  VIRTIO_VSOCK_SHUTDOWN_F_SEND,
} from "./packet.js";

/**
 * connecting: the guest asked (REQUEST) and the host socket is connecting.
 * requesting: a host program asked (CONNECT) and the guest has not answered yet.
 * established: bytes flow.
 * closing: the guest shut down both directions; waiting for its last bytes to reach the host.
 * reset: an RST is owed to the guest; the connection goes once it is sent.
 */
export type ConnState = "connecting" | "requesting" | "established" | "closing" | "reset";

/** nextOp() when there is nothing to send. */
export const NO_OP = 0;

export class Connection {
  readonly key: string;
  state: ConnState;
  stream: HostStream | undefined;
  /** Set when the device dropped the connection: late socket callbacks must do nothing. */
  removed = false;
  timer: NodeJS.Timeout | undefined;
  /** Host-initiated: tell the host program the guest accepted. */
  accepted: ((hostPort: number) => void) | undefined;

  // Host → guest.
  readonly #chunks: Uint8Array[] = [];
  #head = 0;
  #buffered = 0;
  /** We stopped reading the host socket because too much waits for the guest. */
  paused = false;
  /** The host program sent EOF; a SHUTDOWN(SEND) follows the last buffered byte. */
  hostEof = false;
  eofSent = false;
  /** The host socket is gone; an RST follows the last buffered byte. */
  hostGone = false;
  txCnt = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  sendRequest = false;
  sendResponse = false;
  /** A CREDIT_REQUEST went out and no guest packet has answered since. */
  creditRequested = false;

  // Guest → host.
  /** VIRTIO_VSOCK_SHUTDOWN_F_* the guest has sent, accumulated. */
  guestShutdown = 0;
  /** We half-closed the host socket (after the guest's SHUTDOWN(SEND)), and it finished. */
  endedToHost = false;
  hostFlushed = false;
  /** Bytes received from the guest / taken by the host socket / fwd_cnt we last told the guest. */
  rxCnt = 0;
  fwdCnt = 0;
  advertisedFwdCnt = 0;
  /** The guest asked for our credit (CREDIT_REQUEST). */
  creditUpdateForced = false;

  constructor(
    readonly hostPort: number,
    readonly guestPort: number,
    state: ConnState,
    /** The buf_alloc we advertise for this connection. */
    readonly bufAlloc: number,
  ) {
    this.key = connectionKey(hostPort, guestPort);
    this.state = state;
  }

  /** Host bytes waiting for the guest. */
  get buffered(): number {
    return this.#buffered;
  }

  /** The guest still takes bytes here (it has sent no SHUTDOWN with RECEIVE). */
  get guestReceiving(): boolean {
    return (this.guestShutdown & VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE) === 0;
  }

  /** The guest may still send bytes here (it has sent no SHUTDOWN with SEND). */
  get guestSending(): boolean {
    return (this.guestShutdown & VIRTIO_VSOCK_SHUTDOWN_F_SEND) === 0;
  }

  /** Bytes we may send the guest now: its buf_alloc less what it has not yet consumed. */
  peerCredit(): number {
    const inFlight = (this.txCnt - this.peerFwdCnt) >>> 0;
    return inFlight >= this.peerBufAlloc ? 0 : this.peerBufAlloc - inFlight;
  }

  /** Bytes the guest sent that the host socket has not taken yet. */
  unforwarded(): number {
    return (this.rxCnt - this.fwdCnt) >>> 0;
  }

  /**
   * Whether the guest should hear our fwd_cnt: it asked, or the space it believes we have
   * (from the fwd_cnt it last saw) fell below half while we have freed some since.
   * Linux's sender waits for exactly this update when its credit runs out.
   */
  creditUpdateDue(): boolean {
    if (this.creditUpdateForced) return true;
    if (this.fwdCnt === this.advertisedFwdCnt || !this.guestSending) return false;
    const believedUsed = (this.rxCnt - this.advertisedFwdCnt) >>> 0;
    return believedUsed > this.bufAlloc / 2;
  }

  /** The op of the next packet this connection wants to send the guest, or NO_OP. */
  nextOp(): number {
    if (this.state === "reset") return VIRTIO_VSOCK_OP_RST;
    if (this.sendRequest) return VIRTIO_VSOCK_OP_REQUEST;
    if (this.sendResponse) return VIRTIO_VSOCK_OP_RESPONSE;
    if (this.state !== "established") return NO_OP;
    const data = this.#buffered > 0 && this.guestReceiving;
    if (data && this.peerCredit() > 0) return VIRTIO_VSOCK_OP_RW;
    if (this.creditUpdateDue()) return VIRTIO_VSOCK_OP_CREDIT_UPDATE;
    if (data && !this.creditRequested) return VIRTIO_VSOCK_OP_CREDIT_REQUEST;
    if (this.hostEof && !this.eofSent && this.#buffered === 0) return VIRTIO_VSOCK_OP_SHUTDOWN;
    return NO_OP;
  }

  /** Keep host bytes for the guest (the array is kept, not copied). */
  push(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#chunks.push(bytes);
    this.#buffered += bytes.length;
  }

  /** Hand the next `n` buffered bytes to `sink` in one or more pieces, oldest first. */
  take(n: number, sink: (piece: Uint8Array) => void): void {
    let left = Math.min(n, this.#buffered);
    this.#buffered -= left;
    while (left > 0) {
      const chunk = this.#chunks[0] as Uint8Array;
      const k = Math.min(left, chunk.length - this.#head);
      sink(chunk.subarray(this.#head, this.#head + k));
      left -= k;
      this.#head += k;
      if (this.#head === chunk.length) {
        this.#chunks.shift();
        this.#head = 0;
      }
    }
  }

  /** Drop every buffered host byte; returns how many. */
  discard(): number {
    const n = this.#buffered;
    this.#chunks.length = 0;
    this.#head = 0;
    this.#buffered = 0;
    return n;
  }
}

/** The map key of a connection: Firecracker's (local_port, peer_port). */
export function connectionKey(hostPort: number, guestPort: number): string {
  return `${hostPort}:${guestPort}`;
}
