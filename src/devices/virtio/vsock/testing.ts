// Test doubles for virtio-vsock, tests only: an in-memory backend whose host streams record
// what the device does to them (and can hold write completions, like a slow host program),
// and the guest side of the protocol on top of the driver double, posting rx buffers the way
// Linux 6.1 does (a 44-byte header buffer and a 4 KiB payload buffer) from a reused pool.

import type { GuestMemory } from "../../../memory/mod.js";
import type { DriverQueue, VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import type {
  HostAcceptor,
  HostStream,
  HostStreamEvents,
  OutboundStreamEvents,
  VsockBackend,
} from "./backend.js";
import {
  VIRTIO_VSOCK_TYPE_STREAM,
  VSOCK_HDR_SIZE,
  VSOCK_HOST_CID,
  VSOCK_MAX_PAYLOAD,
  VsockHeader,
} from "./packet.js";

/** A host stream that records what the device does and lets the test play the host. */
export class FakeStream implements HostStream {
  written: Uint8Array[] = [];
  ended = false;
  destroyed = false;
  paused = false;
  /** Hold write completions (a host program not reading) until release(). */
  hold = false;
  readonly #held: (() => void)[] = [];
  events: HostStreamEvents | undefined;
  /** The host port the device announced (host-initiated streams). */
  acceptedPort: number | undefined;

  /** Bytes written while held: what the host socket still owes. */
  heldBytes = 0;

  write(bytes: Uint8Array, done: () => void): void {
    this.written.push(bytes.slice());
    if (!this.hold) {
      done();
      return;
    }
    this.heldBytes += bytes.length;
    this.#held.push(() => {
      this.heldBytes -= bytes.length;
      done();
    });
  }
  end(done: () => void): void {
    this.ended = true;
    done();
  }
  destroy(): void {
    this.destroyed = true;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  /** Complete held writes. */
  release(): void {
    this.hold = false;
    for (const done of this.#held.splice(0)) done();
  }
  text(): string {
    return Buffer.concat(this.written).toString("latin1");
  }
  bytes(): Uint8Array {
    return Buffer.concat(this.written);
  }
}

/**
 * A backend in memory. Ports in `listening` accept guest connections (connected() comes on
 * the next deferred turn, like a real connect); others refuse (close). hostConnect() plays a
 * host program sending CONNECT.
 */
export class MemoryBackend implements VsockBackend {
  readonly path = "/memory/vsock";
  readonly listening = new Set<number>();
  /** Streams the device opened, by host port, newest last. */
  readonly outbound = new Map<number, FakeStream[]>();
  accept: HostAcceptor | undefined;
  closed = false;

  constructor(private readonly defer: (fn: () => void) => void = (fn) => setImmediate(fn)) {}

  setAcceptor(accept: HostAcceptor): void {
    this.accept = accept;
  }

  connect(port: number, events: OutboundStreamEvents): HostStream {
    const stream = new FakeStream();
    stream.events = events;
    const list = this.outbound.get(port) ?? [];
    list.push(stream);
    this.outbound.set(port, list);
    const ok = this.listening.has(port);
    this.defer(() => {
      if (stream.destroyed) return;
      if (ok) events.connected();
      else events.close();
    });
    return stream;
  }

  /** A host program connects and asks for `guestPort`; undefined events mean refused. */
  hostConnect(guestPort: number): FakeStream {
    const stream = new FakeStream();
    const events = this.accept?.({
      guestPort,
      stream,
      accepted: (hostPort) => {
        stream.acceptedPort = hostPort;
      },
    });
    if (!events) stream.destroyed = true;
    stream.events = events;
    return stream;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A packet as the guest sees it. */
export interface Packet {
  hdr: VsockHeader;
  payload: Uint8Array;
  usedLen: number;
}

export type HeaderFields = Partial<Omit<VsockHeader, "decode" | "encode">>;

/** Encode a header (defaults: a STREAM packet from `cid` to the host). */
export function encodeHeader(cid: number, fields: HeaderFields): Uint8Array {
  const h = Object.assign(new VsockHeader(), {
    srcCid: cid,
    dstCid: VSOCK_HOST_CID,
    type: VIRTIO_VSOCK_TYPE_STREAM,
    bufAlloc: 256 * 1024,
    ...fields,
  });
  const bytes = new Uint8Array(VSOCK_HDR_SIZE);
  h.encode(new DataView(bytes.buffer));
  return bytes;
}

/** The guest's vsock driver, enough of it to speak the protocol in tests. */
export class GuestVsock {
  readonly rx: DriverQueue;
  readonly tx: DriverQueue;
  readonly #memory: GuestMemory;
  readonly #rxFree: [number, number][] = [];
  readonly #rxPosted = new Map<number, [number, number]>();
  readonly #txFree: [number, number][] = [];
  readonly #txPosted = new Map<number, [number, number]>();

  constructor(
    driver: VirtioMmioDriver,
    readonly cid: number,
    readonly rxBufferSize = 4096,
  ) {
    this.#memory = driver.memory;
    this.rx = driver.queue(0);
    this.tx = driver.queue(1);
    for (let i = 0; i < 32; i++) {
      this.#rxFree.push([driver.alloc(VSOCK_HDR_SIZE), driver.alloc(rxBufferSize)]);
    }
    for (let i = 0; i < 64; i++) {
      this.#txFree.push([driver.alloc(VSOCK_HDR_SIZE), driver.alloc(VSOCK_MAX_PAYLOAD)]);
    }
  }

  /** Post up to `count` rx buffers and kick. */
  postRx(count = 8): void {
    for (let i = 0; i < count; i++) {
      const pair = this.#rxFree.pop();
      if (!pair) break;
      const { head } = this.rx.add([
        { length: VSOCK_HDR_SIZE, writable: true, address: pair[0] },
        { length: this.rxBufferSize, writable: true, address: pair[1] },
      ]);
      this.#rxPosted.set(head, pair);
    }
    this.rx.kick();
  }

  /** Packets the device has placed in rx buffers since the last call. */
  received(): Packet[] {
    const out: Packet[] = [];
    for (const u of this.rx.takeUsed()) {
      const pair = this.#rxPosted.get(u.id);
      if (!pair) throw new Error(`rx used id ${u.id} was never posted`);
      this.#rxPosted.delete(u.id);
      this.#rxFree.push(pair);
      const hdrBytes = this.#memory.slice(pair[0], VSOCK_HDR_SIZE).slice();
      const hdr = new VsockHeader().decode(new DataView(hdrBytes.buffer));
      const n = Math.max(0, u.len - VSOCK_HDR_SIZE);
      out.push({ hdr, payload: this.#memory.slice(pair[1], n).slice(), usedLen: u.len });
    }
    return out;
  }

  /** Send one packet (header, then the payload in a second buffer) and kick. */
  send(fields: HeaderFields, payload?: Uint8Array): void {
    this.sendRaw(encodeHeader(this.cid, { len: payload?.length ?? 0, ...fields }), payload);
  }

  /** Send header bytes as given (hostile tests) and an optional payload; kick. */
  sendRaw(header: Uint8Array, payload?: Uint8Array): void {
    for (const u of this.tx.takeUsed()) {
      const slot = this.#txPosted.get(u.id);
      if (slot) this.#txFree.push(slot);
      this.#txPosted.delete(u.id);
    }
    const slot = this.#txFree.pop();
    if (!slot) throw new Error("the test's tx slots are all in flight");
    const bufs = [{ length: header.length, data: header, address: slot[0] }];
    if (payload && payload.length > 0) {
      bufs.push({ length: payload.length, data: payload, address: slot[1] });
    }
    const { head } = this.tx.add(bufs);
    this.#txPosted.set(head, slot);
    this.tx.kick();
  }
}
