// virtio-vsock (virtio 1.2 §5.10, device type 19): stream sockets between the guest and
// host programs, with Firecracker's host convention (see uds.ts): host programs connect to
// one Unix socket and ask for a guest port; guest connections to host port P reach the
// Unix socket listening at PATH_P. Queue 0 (rx) holds device-writable buffers the device
// fills with packets for the guest, queue 1 (tx) the guest's packets, queue 2 (event)
// buffers for device events (only transport reset, sent after a restore).
//
// The guest is hostile. Every tx packet's header is checked (packet.ts) before it is
// routed; a packet for someone else is dropped, a malformed one answered with RST; a packet
// that breaks the connection's protocol (data before the handshake, more data than our
// credit) resets that connection. All of it is counted and logged at a bounded rate.
//
// Everything is bounded: connections (1024 by default, counting those being set up and torn
// down), host bytes held per connection before the host socket is paused (256 KiB), guest
// bytes the host socket may still owe (our buf_alloc, 256 KiB: the guest cannot send more
// until the host takes them, so a slow host program stops the guest's sender instead of
// growing a buffer), RST replies not yet delivered (256: past that the tx queue waits for
// the guest to take them), and work per event-loop turn (a queue's worth of packets each
// way, the rest deferred with setImmediate).
//
// Work arrives on the main thread only: queue notifications through ioeventfds and socket
// events from Node's event loop; vCPU threads do none of it.

import type { GuestMemory } from "../../../memory/mod.js";
import {
  type DescriptorChain,
  type QueueHandle,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_VSOCK,
  type VirtioDevice,
  type VirtioDeviceContext,
} from "../../../virtio/device.js";
import { GuestLog } from "../../../virtio/guest_log.js";
import { commonDeviceOptions } from "../../../virtio/options.js";
import type {
  HostConnectRequest,
  HostStreamEvents,
  OutboundStreamEvents,
  VsockBackend,
} from "./backend.js";
import { ChainCursor } from "./chain.js";
import {
  EVENT_QUEUE,
  encodeVsockConfig,
  RX_QUEUE,
  TX_QUEUE,
  VIRTIO_VSOCK_EVENT_TRANSPORT_RESET,
  VIRTIO_VSOCK_F_STREAM,
  VSOCK_CONFIG_SIZE,
  VSOCK_EVENT_SIZE,
  validGuestCid,
} from "./config.js";
import { Connection, connectionKey, NO_OP } from "./connection.js";
import { VsockMetrics, type VsockMetricsSnapshot } from "./metrics.js";
import {
  checkTxHeader,
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_F_SEND,
  VIRTIO_VSOCK_SHUTDOWN_MASK,
  VIRTIO_VSOCK_TYPE_STREAM,
  VSOCK_HDR_SIZE,
  VSOCK_HOST_CID,
  VSOCK_MAX_PAYLOAD,
  VsockHeader,
} from "./packet.js";
import { type VirtioVsockState, validateVsockState } from "./state.js";
import { UnixSocketBackend } from "./uds.js";

export const VSOCK_QUEUE_SIZE = 256;
export const VSOCK_MAX_CONNECTIONS = 1024;
/** The buf_alloc we advertise: guest bytes a host socket may owe per connection. */
export const VSOCK_BUF_ALLOC = 256 * 1024;
/** Host bytes held per connection before its host socket is paused. */
export const VSOCK_MAX_HOST_BUFFERED = 256 * 1024;
/** How long a host program's CONNECT waits for the guest's answer (Firecracker: 2 s). */
export const VSOCK_REQUEST_TIMEOUT_MS = 5000;
/** RST replies to unroutable packets held for the guest before the tx queue waits. */
export const VSOCK_MAX_PENDING_RESETS = 256;
/** First host port given to host-initiated connections: Firecracker's range [2^30, 2^31). */
const EPHEMERAL_BASE = 0x4000_0000;

export interface VirtioVsockOptions {
  /** The guest's context ID: 3 ≤ cid < 0xffffffff. */
  cid: number;
  /** Where host streams come from (UnixSocketBackend in the VMM). */
  backend: VsockBackend;
  /** Name for logs and metrics. Default "virtio-vsock0". */
  name?: string;
  /** Maximum size of each queue (a power of two, 2..32768). Default 256. */
  queueSize?: number;
  /** Where refusals are reported. Default: stderr. */
  log?: (message: string) => void;
  maxConnections?: number;
  bufAlloc?: number;
  maxHostBuffered?: number;
  requestTimeoutMs?: number;
  /** Run leftover work later; default setImmediate. */
  defer?: (fn: () => void) => void;
}

const bit = (n: bigint): bigint => 1n << n;

function cannot(what: string): string {
  return `Cannot create virtio-vsock: ${what}`;
}

function positive(n: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n <= 0 || n > max) {
    throw new RangeError(cannot(`${name} ${String(n)} is not an integer in 1..${max}`));
  }
  return n;
}

export class VirtioVsock implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_VSOCK;
  readonly name: string;
  readonly features =
    bit(VIRTIO_F_VERSION_1) |
    bit(VIRTIO_F_INDIRECT_DESC) |
    bit(VIRTIO_F_EVENT_IDX) |
    bit(VIRTIO_VSOCK_F_STREAM);
  readonly queueSizes: readonly number[];
  readonly cid: number;
  readonly backend: VsockBackend;

  readonly #queueSize: number;
  readonly #maxConnections: number;
  readonly #bufAlloc: number;
  readonly #maxHostBuffered: number;
  readonly #requestTimeoutMs: number;
  readonly #defer: (fn: () => void) => void;
  readonly #guestLog: GuestLog;
  readonly #metrics = new VsockMetrics();
  readonly #config: Uint8Array;

  readonly #conns = new Map<string, Connection>();
  /** Connections that may have a packet for the guest, in round-robin order. */
  readonly #work = new Set<Connection>();
  /** RSTs owed for packets that match no connection: [hostPort, guestPort] pairs. */
  readonly #orphanResets: number[] = [];
  /** Host ports of host-initiated connections. */
  readonly #ephemeralPorts = new Set<number>();
  #lastEphemeral = EPHEMERAL_BASE - 1;

  // Per-packet scratch, made once.
  readonly #hdr = new VsockHeader();
  readonly #hdrBytes = new Uint8Array(VSOCK_HDR_SIZE);
  readonly #hdrView = new DataView(this.#hdrBytes.buffer);
  readonly #cursor = new ChainCursor();
  readonly #event = new Uint8Array(VSOCK_EVENT_SIZE);

  // Live state between activate() and reset().
  #memory: GuestMemory | undefined;
  #rxq: QueueHandle | undefined;
  #txq: QueueHandle | undefined;
  #evq: QueueHandle | undefined;
  #rxScheduled = false;
  #txScheduled = false;
  /** #processTx stopped for want of room for replies. */
  #txBlocked = false;
  #closed = false;

  constructor(options: VirtioVsockOptions) {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(cannot("options must be an object"));
    }
    if (!validGuestCid(options.cid)) {
      throw new RangeError(cannot(`cid ${String(options.cid)} is not in 3..4294967294`));
    }
    const backend = options.backend;
    if (typeof backend !== "object" || backend === null || typeof backend.connect !== "function") {
      throw new TypeError(cannot("options.backend must be a VsockBackend"));
    }
    const { name, queueSize, log } = commonDeviceOptions(
      options,
      { name: "virtio-vsock0", queueSize: VSOCK_QUEUE_SIZE },
      cannot,
    );
    this.name = name;
    this.cid = options.cid;
    this.backend = backend;
    this.queueSizes = [queueSize, queueSize, queueSize];
    this.#queueSize = queueSize;
    this.#maxConnections = positive(
      options.maxConnections ?? VSOCK_MAX_CONNECTIONS,
      "maxConnections",
      EPHEMERAL_BASE,
    );
    this.#bufAlloc = positive(options.bufAlloc ?? VSOCK_BUF_ALLOC, "bufAlloc", 0xffff_ffff);
    this.#maxHostBuffered = positive(
      options.maxHostBuffered ?? VSOCK_MAX_HOST_BUFFERED,
      "maxHostBuffered",
    );
    this.#requestTimeoutMs = positive(
      options.requestTimeoutMs ?? VSOCK_REQUEST_TIMEOUT_MS,
      "requestTimeoutMs",
    );
    this.#defer = options.defer ?? ((fn) => setImmediate(fn));
    this.#guestLog = new GuestLog(this.name, log);
    this.#config = encodeVsockConfig(this.cid);
    backend.setAcceptor((request) => this.#acceptHost(request));
  }

  /** A device whose host side is a Unix socket listening at `uds` (Firecracker's convention). */
  static async open(
    options: Omit<VirtioVsockOptions, "backend"> & { uds: string },
  ): Promise<VirtioVsock> {
    const { uds, ...rest } = options;
    if (!validGuestCid(rest.cid)) {
      throw new RangeError(cannot(`cid ${String(rest.cid)} is not in 3..4294967294`));
    }
    const backend = await UnixSocketBackend.listen(uds);
    try {
      return new VirtioVsock({ ...rest, backend });
    } catch (e) {
      await backend.close();
      throw e;
    }
  }

  /**
   * Recreate a device from a snapshot's state, listening again at its socket path. It
   * starts with no connections; call transportReset() once the driver is live again.
   */
  static fromState(
    state: unknown,
    extra: Partial<Omit<VirtioVsockOptions, "backend">> = {},
  ): Promise<VirtioVsock> {
    const s = validateVsockState(state);
    return VirtioVsock.open({
      ...extra,
      cid: s.cid,
      uds: s.uds,
      name: s.name,
      queueSize: s.queueSize,
    });
  }

  state(): VirtioVsockState {
    return {
      version: 1,
      name: this.name,
      cid: this.cid,
      uds: this.backend.path,
      queueSize: this.#queueSize,
    };
  }

  /** A copy of the counters. */
  metrics(): VsockMetricsSnapshot {
    return this.#metrics.snapshot();
  }

  /** Connections open or being set up or torn down. */
  get connections(): number {
    return this.#conns.size;
  }

  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    // GUEST-CONTROLLED: offset and length of a config read.
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= VSOCK_CONFIG_SIZE) return;
    data.set(
      this.#config.subarray(offset, offset + Math.min(data.length, VSOCK_CONFIG_SIZE - offset)),
    );
  }

  writeConfig(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: guest_cid is read-only (§5.10.4); the write is ignored.
    this.#metrics.configWrites++;
    this.#warn(`config write of ${data.length} bytes at ${offset} ignored (read-only)`);
  }

  activate(ctx: VirtioDeviceContext): void {
    if (this.#closed) {
      ctx.needsReset(`${this.name} is closed`);
      return;
    }
    const rxq = ctx.queues[RX_QUEUE];
    const txq = ctx.queues[TX_QUEUE];
    const evq = ctx.queues[EVENT_QUEUE];
    if (!rxq || !txq || !evq) {
      this.#warn("activated without its three queues");
      ctx.needsReset(`${this.name} needs rx, tx and event queues`);
      return;
    }
    this.#memory = ctx.memory;
    this.#rxq = rxq;
    this.#txq = txq;
    this.#evq = evq;
    // A driver may have queued packets before DRIVER_OK, when the notify was dropped.
    this.#guestLog.guard(() => this.#processTx());
  }

  queueNotify(index: number): void {
    // GUEST-CONTROLLED: the queue index written to QueueNotify.
    if (!this.#memory) {
      this.#metrics.invalidNotifies++;
      return;
    }
    if (index === RX_QUEUE) this.#guestLog.guard(() => this.#fillRx());
    else if (index === TX_QUEUE) this.#guestLog.guard(() => this.#processTx());
    // New event buffers wait in the ring until there is an event to report.
    else if (index !== EVENT_QUEUE) {
      this.#metrics.invalidNotifies++;
      this.#warn(`notify for queue ${index} ignored`);
    }
  }

  reset(): void {
    // The driver is gone: so are its connections. Host programs see their sockets close.
    for (const conn of [...this.#conns.values()]) this.#remove(conn);
    this.#work.clear();
    this.#orphanResets.length = 0;
    this.#txBlocked = false;
    this.#memory = undefined;
    this.#rxq = this.#txq = this.#evq = undefined;
  }

  /**
   * Drop every connection and tell the driver with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, so
   * the guest resets its sockets and rereads its CID (after a snapshot restore). False when
   * the driver is not live or has posted no event buffer.
   */
  transportReset(): boolean {
    for (const conn of [...this.#conns.values()]) this.#remove(conn);
    this.#orphanResets.length = 0;
    const q = this.#evq;
    const memory = this.#memory;
    if (!q || !memory || q.broken) return false;
    for (let budget = this.#queueSize; budget > 0; budget--) {
      const chain = q.pop();
      if (!chain) return false;
      // GUEST-CONTROLLED: an event buffer must be device-writable and hold the event.
      if (chain.readable.length > 0 || chain.writableLength < VSOCK_EVENT_SIZE) {
        this.#refuse(q, chain, "event chain with readable parts or under 4 bytes");
        continue;
      }
      new DataView(this.#event.buffer).setUint32(0, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, true);
      this.#cursor.reset(memory, chain.writable).write(this.#event);
      q.pushUsed(chain.head, VSOCK_EVENT_SIZE);
      q.notifyIfNeeded();
      return true;
    }
    return false;
  }

  /** Reset, close every host stream and stop listening. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.reset();
    await this.backend.close();
  }

  // ---- guest → host (tx queue) ----

  #processTx(): void {
    const q = this.#txq;
    const memory = this.#memory;
    if (!q || !memory) return;
    let budget = this.#queueSize;
    let used = false;
    let more = false;
    while (!q.broken) {
      if (budget === 0) {
        more = true;
        break;
      }
      // Every packet may need an RST in reply; with too many still undelivered, leave the
      // rest in the ring until the guest takes some (#fillRx restarts us).
      if (this.#pendingResets >= VSOCK_MAX_PENDING_RESETS) {
        this.#txBlocked = true;
        break;
      }
      const chain = q.pop();
      if (!chain) break;
      budget--;
      this.#handleTx(memory, q, chain);
      q.pushUsed(chain.head, 0);
      used = true;
    }
    if (used) q.notifyIfNeeded();
    this.#fillRx();
    if (more) this.#scheduleTx();
  }

  #handleTx(memory: GuestMemory, q: QueueHandle, chain: DescriptorChain): void {
    // GUEST-CONTROLLED: a tx chain is device-readable only and starts with a whole header.
    if (chain.writable.length > 0 || chain.readableLength < VSOCK_HDR_SIZE) {
      this.#metrics.refusedChains++;
      this.#warn(
        `tx chain ${chain.head} on queue ${q.index} refused: ${chain.writable.length > 0 ? "device-writable buffers" : `${chain.readableLength} bytes, under a header`}`,
      );
      return;
    }
    const cursor = this.#cursor.reset(memory, chain.readable);
    cursor.read(this.#hdrBytes);
    const h = this.#hdr.decode(this.#hdrView);
    const refusal = checkTxHeader(h, chain.readableLength - VSOCK_HDR_SIZE, this.cid);
    if (refusal) {
      if (refusal.action === "drop") {
        this.#metrics.misaddressedPackets++;
        this.#warn(`packet dropped: ${refusal.reason}`);
        return;
      }
      this.#metrics.malformedPackets++;
      this.#warn(`packet refused: ${refusal.reason}`);
      if (h.op === VIRTIO_VSOCK_OP_RST) return;
      const conn = this.#conns.get(connectionKey(h.dstPort, h.srcPort));
      if (conn) this.#reset(conn);
      else this.#orphanReset(h.dstPort, h.srcPort);
      return;
    }
    this.#metrics.txPackets++;
    const conn = this.#conns.get(connectionKey(h.dstPort, h.srcPort));
    if (!conn) {
      if (h.op === VIRTIO_VSOCK_OP_REQUEST) this.#guestConnect(h);
      // Late packets of a connection already gone are normal; anything but RST hears RST.
      else if (h.op !== VIRTIO_VSOCK_OP_RST) this.#orphanReset(h.dstPort, h.srcPort);
      return;
    }
    if (conn.state === "reset") {
      // Our RST is on its way; the guest sent this before seeing it.
      if (h.op === VIRTIO_VSOCK_OP_RST) this.#remove(conn);
      return;
    }
    // Every packet carries the guest's receive space for this connection (§5.10.6).
    conn.peerBufAlloc = h.bufAlloc;
    conn.peerFwdCnt = h.fwdCnt;
    conn.creditRequested = false;
    switch (h.op) {
      case VIRTIO_VSOCK_OP_RST:
        this.#metrics.resetsReceived++;
        if (conn.state === "requesting") this.#metrics.connectionsRefused++;
        this.#remove(conn);
        return;
      case VIRTIO_VSOCK_OP_RESPONSE:
        if (conn.state !== "requesting") {
          this.#violation(conn, "RESPONSE out of turn");
          return;
        }
        this.#established(conn);
        break;
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        if (conn.state !== "established" && conn.state !== "closing") {
          this.#violation(conn, `SHUTDOWN while ${conn.state}`);
          return;
        }
        this.#guestShutdown(conn, h.flags);
        break;
      case VIRTIO_VSOCK_OP_RW:
        if (conn.state !== "established" || !conn.guestSending) {
          this.#violation(conn, `data while ${conn.guestSending ? conn.state : "shut down"}`);
          return;
        }
        // GUEST-CONTROLLED: len against the credit we gave (buf_alloc - unforwarded bytes).
        if (conn.unforwarded() + h.len > this.#bufAlloc) {
          this.#metrics.creditViolations++;
          this.#violation(conn, `${h.len} bytes beyond the credit we advertised`);
          return;
        }
        this.#forward(conn, h.len);
        break;
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        conn.creditUpdateForced = true;
        break;
      case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        break; // the header's credit fields were the message
      default:
        // REQUEST on a connection that exists: the guest reused a pair of ports.
        this.#violation(conn, "REQUEST for a connection that exists");
        return;
    }
    this.#wake(conn);
  }

  /** Copy `len` payload bytes (the cursor is past the header) to the host socket. */
  #forward(conn: Connection, len: number): void {
    if (len === 0) return;
    const stream = conn.stream;
    // The stream keeps the bytes until they leave: a copy, not a view of guest RAM.
    const bytes = Buffer.allocUnsafe(len);
    this.#cursor.read(bytes);
    conn.rxCnt = (conn.rxCnt + len) >>> 0;
    this.#metrics.txBytes += len;
    if (!stream) {
      // The host side is gone and an RST is on its way: count the bytes as taken.
      conn.fwdCnt = conn.rxCnt;
      this.#metrics.discardedBytes += len;
      return;
    }
    stream.write(bytes, () =>
      this.#guestLog.guard(() => {
        conn.fwdCnt = (conn.fwdCnt + len) >>> 0;
        if (!conn.removed && conn.creditUpdateDue()) {
          this.#wake(conn);
          this.#scheduleRx();
        }
      }),
    );
  }

  #guestShutdown(conn: Connection, flags: number): void {
    conn.guestShutdown |= flags & VIRTIO_VSOCK_SHUTDOWN_MASK;
    if (!conn.guestReceiving) {
      // Nothing more reaches the guest: drop what waits and keep reading the host socket,
      // discarding, so the host program is not left blocked on a full socket.
      this.#metrics.discardedBytes += conn.discard();
      this.#resume(conn);
      if (conn.hostGone) {
        this.#reset(conn);
        return;
      }
    }
    if (!conn.guestSending && !conn.endedToHost && conn.stream) {
      conn.endedToHost = true;
      conn.stream.end(() =>
        this.#guestLog.guard(() => {
          conn.hostFlushed = true;
          // Both ways done and the guest's last bytes delivered: the connection can go.
          if (!conn.removed && conn.state === "closing") {
            this.#reset(conn);
            this.#scheduleRx();
          }
        }),
      );
    }
    if (conn.guestShutdown === VIRTIO_VSOCK_SHUTDOWN_MASK && conn.state === "established") {
      conn.state = "closing";
      if (conn.hostFlushed || !conn.stream) this.#reset(conn);
    }
  }

  #violation(conn: Connection, why: string): void {
    this.#metrics.malformedPackets++;
    this.#warn(`connection ${conn.key} reset: ${why}`);
    this.#reset(conn);
  }

  // ---- connection set-up and teardown ----

  /** A guest REQUEST to host port h.dstPort: connect to the host service. */
  #guestConnect(h: VsockHeader): void {
    if (this.#conns.size >= this.#maxConnections) {
      this.#metrics.connectionsRefused++;
      this.#warn(`connection to host port ${h.dstPort} refused: ${this.#maxConnections} open`);
      this.#orphanReset(h.dstPort, h.srcPort);
      return;
    }
    const conn = new Connection(h.dstPort, h.srcPort, "connecting", this.#bufAlloc);
    conn.peerBufAlloc = h.bufAlloc;
    conn.peerFwdCnt = h.fwdCnt;
    this.#conns.set(conn.key, conn);
    const events: OutboundStreamEvents = {
      ...this.#streamEvents(conn),
      connected: () =>
        this.#guestLog.guard(() => {
          if (conn.removed || conn.state !== "connecting") return;
          conn.state = "established";
          conn.sendResponse = true;
          this.#metrics.guestConnections++;
          this.#wake(conn);
          this.#scheduleRx();
        }),
    };
    conn.stream = this.backend.connect(h.dstPort, events);
  }

  /** A host program's CONNECT <port>: ask the guest (REQUEST) and wait for its answer. */
  #acceptHost(request: HostConnectRequest): HostStreamEvents | undefined {
    if (!this.#memory || this.#closed || !Number.isSafeInteger(request.guestPort)) {
      return undefined;
    }
    if (this.#conns.size >= this.#maxConnections) {
      this.#metrics.connectionsRefused++;
      return undefined;
    }
    const hostPort = this.#allocatePort(request.guestPort);
    const conn = new Connection(hostPort, request.guestPort, "requesting", this.#bufAlloc);
    conn.stream = request.stream;
    conn.accepted = request.accepted;
    conn.sendRequest = true;
    conn.timer = setTimeout(
      () =>
        this.#guestLog.guard(() => {
          if (conn.removed || conn.state !== "requesting") return;
          this.#metrics.connectionsRefused++;
          this.#warn(`connection ${conn.key}: the guest did not answer in time`);
          this.#reset(conn);
          this.#scheduleRx();
        }),
      this.#requestTimeoutMs,
    );
    conn.timer.unref();
    this.#ephemeralPorts.add(hostPort);
    this.#conns.set(conn.key, conn);
    this.#wake(conn);
    this.#scheduleRx();
    return this.#streamEvents(conn);
  }

  #allocatePort(guestPort: number): number {
    // At most maxConnections ports are taken, far fewer than the 2^30 in the range.
    for (;;) {
      this.#lastEphemeral = (((this.#lastEphemeral + 1) & 0x7fff_ffff) | EPHEMERAL_BASE) >>> 0;
      const port = this.#lastEphemeral;
      if (!this.#ephemeralPorts.has(port) && !this.#conns.has(connectionKey(port, guestPort))) {
        return port;
      }
    }
  }

  #established(conn: Connection): void {
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = undefined;
    conn.state = "established";
    this.#metrics.hostConnections++;
    try {
      conn.accepted?.(conn.hostPort);
    } catch (e) {
      this.#warn(`connection ${conn.key}: telling the host program failed: ${String(e)}`);
    }
  }

  /** How host stream events reach this connection. */
  #streamEvents(conn: Connection): HostStreamEvents {
    // Socket callbacks run on the event loop, outside any notify: nothing may escape them.
    const guard = (fn: () => void) => this.#guestLog.guard(fn);
    return {
      data: (bytes) => guard(() => this.#hostData(conn, bytes)),
      end: () =>
        guard(() => {
          if (conn.removed) return;
          conn.hostEof = true;
          this.#wake(conn);
          this.#scheduleRx();
        }),
      close: () => guard(() => this.#hostClosed(conn)),
    };
  }

  #hostData(conn: Connection, bytes: Uint8Array): void {
    if (conn.removed) return;
    if (!conn.guestReceiving || conn.state === "closing" || conn.state === "reset") {
      this.#metrics.discardedBytes += bytes.length;
      return;
    }
    conn.push(bytes);
    if (conn.buffered >= this.#maxHostBuffered && !conn.paused) {
      conn.paused = true;
      this.#metrics.hostPauses++;
      conn.stream?.pause();
    }
    this.#wake(conn);
    this.#scheduleRx();
  }

  #hostClosed(conn: Connection): void {
    if (conn.removed) return;
    conn.stream = undefined;
    if (conn.state === "connecting") {
      this.#metrics.connectionsRefused++;
      this.#warn(`nothing listening for host port ${conn.hostPort}`);
    }
    // Bytes the host sent before going still reach the guest; then RST.
    if (conn.state === "established" && conn.buffered > 0 && conn.guestReceiving) {
      conn.hostGone = true;
    } else {
      this.#reset(conn);
    }
    this.#scheduleRx();
  }

  /** Owe the guest an RST on this connection and drop the host side now. */
  #reset(conn: Connection): void {
    if (conn.removed || conn.state === "reset") return;
    // A REQUEST the guest never saw needs no RST.
    if (conn.sendRequest) {
      this.#remove(conn);
      return;
    }
    conn.state = "reset";
    conn.sendResponse = false;
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = undefined;
    conn.discard();
    conn.stream?.destroy();
    conn.stream = undefined;
    this.#wake(conn);
  }

  #remove(conn: Connection): void {
    if (conn.removed) return;
    conn.removed = true;
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = undefined;
    conn.stream?.destroy();
    conn.stream = undefined;
    conn.discard();
    this.#conns.delete(conn.key);
    this.#work.delete(conn);
    this.#ephemeralPorts.delete(conn.hostPort);
  }

  #orphanReset(hostPort: number, guestPort: number): void {
    // #processTx stops before this can overflow; the check keeps the bound local.
    if (this.#pendingResets >= VSOCK_MAX_PENDING_RESETS) return;
    this.#orphanResets.push(hostPort, guestPort);
  }

  #resume(conn: Connection): void {
    if (!conn.paused) return;
    conn.paused = false;
    conn.stream?.resume();
  }

  // ---- host → guest (rx queue) ----

  #wake(conn: Connection): void {
    if (!conn.removed) this.#work.add(conn);
  }

  #scheduleRx(): void {
    if (this.#rxScheduled) return;
    this.#rxScheduled = true;
    this.#defer(() => {
      this.#rxScheduled = false;
      this.#guestLog.guard(() => this.#fillRx());
    });
  }

  #scheduleTx(): void {
    if (this.#txScheduled) return;
    this.#txScheduled = true;
    this.#metrics.deferred++;
    this.#defer(() => {
      this.#txScheduled = false;
      this.#guestLog.guard(() => this.#processTx());
    });
  }

  /** The next connection with a packet to send, or undefined; idle ones leave the set. */
  #nextWork(): Connection | undefined {
    for (const conn of this.#work) {
      if (conn.nextOp() !== NO_OP) return conn;
      this.#work.delete(conn);
    }
    return undefined;
  }

  /** Fill rx buffers with owed RSTs and connections' packets, a queue's worth per turn. */
  #fillRx(): void {
    const q = this.#rxq;
    const memory = this.#memory;
    if (!q || !memory) return;
    let budget = this.#queueSize;
    let used = false;
    while (!q.broken) {
      const conn = this.#orphanResets.length > 0 ? undefined : this.#nextWork();
      if (!conn && this.#orphanResets.length === 0) break;
      if (budget === 0) {
        this.#metrics.deferred++;
        this.#scheduleRx();
        break;
      }
      const chain = q.pop();
      if (!chain) {
        this.#metrics.rxNoBuffers++;
        break;
      }
      budget--;
      used = true;
      // GUEST-CONTROLLED: an rx chain is device-writable only and holds a whole header.
      if (chain.readable.length > 0 || chain.writableLength < VSOCK_HDR_SIZE) {
        this.#refuse(q, chain, "rx chain with readable parts or under a header");
        continue;
      }
      const written = conn
        ? this.#produce(memory, chain, conn)
        : this.#produceOrphanReset(memory, chain);
      q.pushUsed(chain.head, written);
      this.#metrics.rxPackets++;
    }
    if (used) q.notifyIfNeeded();
    // Replies drained: tx packets left in the ring for want of room for replies can go on.
    if (this.#txBlocked && this.#pendingResets < VSOCK_MAX_PENDING_RESETS) {
      this.#txBlocked = false;
      this.#scheduleTx();
    }
  }

  get #pendingResets(): number {
    return this.#orphanResets.length >> 1;
  }

  #produceOrphanReset(memory: GuestMemory, chain: DescriptorChain): number {
    const hostPort = this.#orphanResets.shift() as number;
    const guestPort = this.#orphanResets.shift() as number;
    const h = this.#header(hostPort, guestPort, VIRTIO_VSOCK_OP_RST);
    h.bufAlloc = 0;
    h.fwdCnt = 0;
    this.#metrics.resetsSent++;
    return this.#emit(memory, chain);
  }

  /** Write `conn`'s next packet into `chain`; returns the used length. */
  #produce(memory: GuestMemory, chain: DescriptorChain, conn: Connection): number {
    let op = conn.nextOp();
    const room = Math.min(chain.writableLength - VSOCK_HDR_SIZE, VSOCK_MAX_PAYLOAD);
    // A buffer with no room for payload still carries our credit.
    if (op === VIRTIO_VSOCK_OP_RW && room === 0) op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
    const h = this.#header(conn.hostPort, conn.guestPort, op);
    h.fwdCnt = conn.fwdCnt;
    conn.advertisedFwdCnt = conn.fwdCnt;
    conn.creditUpdateForced = false;
    let len = 0;
    switch (op) {
      case VIRTIO_VSOCK_OP_RST:
        this.#metrics.resetsSent++;
        this.#remove(conn);
        break;
      case VIRTIO_VSOCK_OP_REQUEST:
        conn.sendRequest = false;
        break;
      case VIRTIO_VSOCK_OP_RESPONSE:
        conn.sendResponse = false;
        break;
      case VIRTIO_VSOCK_OP_RW:
        // Never more than the guest's credit: Linux drops what exceeds its buf_alloc.
        len = Math.min(conn.buffered, conn.peerCredit(), room);
        h.len = len;
        break;
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        conn.creditRequested = true;
        break;
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        h.flags = VIRTIO_VSOCK_SHUTDOWN_F_SEND;
        conn.eofSent = true;
        break;
    }
    const written = this.#emit(memory, chain);
    if (len > 0) {
      conn.take(len, (piece) => this.#cursor.write(piece));
      conn.txCnt = (conn.txCnt + len) >>> 0;
      this.#metrics.rxBytes += len;
      if (conn.paused && conn.buffered <= this.#maxHostBuffered / 2) this.#resume(conn);
      if (conn.hostGone && conn.buffered === 0) this.#reset(conn);
    }
    // Round robin: a connection with more to say goes to the back.
    this.#work.delete(conn);
    if (!conn.removed && conn.nextOp() !== NO_OP) this.#work.add(conn);
    return written + len;
  }

  /** The scratch header with the fields every device packet shares. */
  #header(hostPort: number, guestPort: number, op: number): VsockHeader {
    const h = this.#hdr;
    h.srcCid = VSOCK_HOST_CID;
    h.dstCid = this.cid;
    h.srcPort = hostPort;
    h.dstPort = guestPort;
    h.len = 0;
    h.type = VIRTIO_VSOCK_TYPE_STREAM;
    h.op = op;
    h.flags = 0;
    h.bufAlloc = this.#bufAlloc;
    h.fwdCnt = 0;
    return h;
  }

  /** Write the scratch header at the start of `chain`, leaving the cursor after it. */
  #emit(memory: GuestMemory, chain: DescriptorChain): number {
    this.#hdr.encode(this.#hdrView);
    this.#cursor.reset(memory, chain.writable).write(this.#hdrBytes);
    return VSOCK_HDR_SIZE;
  }

  #refuse(q: QueueHandle, chain: DescriptorChain, why: string): void {
    this.#metrics.refusedChains++;
    this.#warn(`chain ${chain.head} on queue ${q.index} refused: ${why}`);
    q.pushUsed(chain.head, 0);
  }

  #warn(message: string): void {
    this.#guestLog.warn(message);
  }
}
