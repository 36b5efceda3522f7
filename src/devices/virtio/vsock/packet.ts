// The virtio-vsock packet header (virtio 1.2 §5.10.6): 44 little-endian bytes in front of
// every packet on the rx and tx queues. This module decodes and encodes it and decides, for
// a packet the guest sent, whether it may go any further: every field is guest-controlled,
// and checkTxHeader() is the one place that says which values this device accepts. It
// knows nothing of connections; the device routes what passes.

/** sizeof(struct virtio_vsock_hdr), §5.10.6. */
export const VSOCK_HDR_SIZE = 44;

// Field offsets in struct virtio_vsock_hdr (§5.10.6); the struct is packed.
const OFF_SRC_CID = 0; // le64
const OFF_DST_CID = 8; // le64
const OFF_SRC_PORT = 16; // le32
const OFF_DST_PORT = 20; // le32
const OFF_LEN = 24; // le32
const OFF_TYPE = 28; // le16
const OFF_OP = 30; // le16
const OFF_FLAGS = 32; // le32
const OFF_BUF_ALLOC = 36; // le32
const OFF_FWD_CNT = 40; // le32

/** Well-known CIDs (§5.10.4: 0, 1, 2 and 0xffffffff are reserved; 2 is the host). */
export const VSOCK_HOST_CID = 2;
/** VMADDR_CID_ANY (-1U); never a valid guest CID. */
export const VSOCK_CID_ANY = 0xffff_ffff;

/** Socket types (§5.10.6). Only STREAM is offered. */
export const VIRTIO_VSOCK_TYPE_STREAM = 1;
export const VIRTIO_VSOCK_TYPE_SEQPACKET = 2;

/** Operations (§5.10.6). */
export const VIRTIO_VSOCK_OP_INVALID = 0;
export const VIRTIO_VSOCK_OP_REQUEST = 1;
export const VIRTIO_VSOCK_OP_RESPONSE = 2;
export const VIRTIO_VSOCK_OP_RST = 3;
export const VIRTIO_VSOCK_OP_SHUTDOWN = 4;
export const VIRTIO_VSOCK_OP_RW = 5;
export const VIRTIO_VSOCK_OP_CREDIT_UPDATE = 6;
export const VIRTIO_VSOCK_OP_CREDIT_REQUEST = 7;

/** SHUTDOWN flags (§5.10.6, stream sockets): the sender will receive / send no more. */
export const VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE = 1;
export const VIRTIO_VSOCK_SHUTDOWN_F_SEND = 2;
export const VIRTIO_VSOCK_SHUTDOWN_MASK = 3;

/**
 * Largest payload one packet may carry: VIRTIO_VSOCK_MAX_PKT_BUF_SIZE in Linux, which never
 * sends more. A tx packet claiming more is refused; rx packets stay below it too.
 */
export const VSOCK_MAX_PAYLOAD = 64 * 1024;

const TWO_32 = 0x1_0000_0000;

/**
 * One decoded header. A device keeps one instance per direction and decodes into it, so
 * packet handling allocates no header objects. CIDs are le64 on the wire: they are kept as
 * numbers, exact below 2^53 and in any case never equal to a 32-bit CID when the high half
 * is non-zero, which is all the checks need.
 */
export class VsockHeader {
  srcCid = 0;
  dstCid = 0;
  srcPort = 0;
  dstPort = 0;
  len = 0;
  type = 0;
  op = 0;
  flags = 0;
  bufAlloc = 0;
  fwdCnt = 0;

  /** Decode the 44 bytes at `offset` of `view`. */
  decode(view: DataView, offset = 0): this {
    this.srcCid = u64(view, offset + OFF_SRC_CID);
    this.dstCid = u64(view, offset + OFF_DST_CID);
    this.srcPort = view.getUint32(offset + OFF_SRC_PORT, true);
    this.dstPort = view.getUint32(offset + OFF_DST_PORT, true);
    this.len = view.getUint32(offset + OFF_LEN, true);
    this.type = view.getUint16(offset + OFF_TYPE, true);
    this.op = view.getUint16(offset + OFF_OP, true);
    this.flags = view.getUint32(offset + OFF_FLAGS, true);
    this.bufAlloc = view.getUint32(offset + OFF_BUF_ALLOC, true);
    this.fwdCnt = view.getUint32(offset + OFF_FWD_CNT, true);
    return this;
  }

  /** Encode into the 44 bytes at `offset` of `view`; every field must fit its width. */
  encode(view: DataView, offset = 0): void {
    setU64(view, offset + OFF_SRC_CID, this.srcCid);
    setU64(view, offset + OFF_DST_CID, this.dstCid);
    view.setUint32(offset + OFF_SRC_PORT, this.srcPort, true);
    view.setUint32(offset + OFF_DST_PORT, this.dstPort, true);
    view.setUint32(offset + OFF_LEN, this.len, true);
    view.setUint16(offset + OFF_TYPE, this.type, true);
    view.setUint16(offset + OFF_OP, this.op, true);
    view.setUint32(offset + OFF_FLAGS, this.flags, true);
    view.setUint32(offset + OFF_BUF_ALLOC, this.bufAlloc, true);
    view.setUint32(offset + OFF_FWD_CNT, this.fwdCnt, true);
  }
}

function u64(view: DataView, at: number): number {
  return view.getUint32(at + 4, true) * TWO_32 + view.getUint32(at, true);
}

function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % TWO_32, true);
  view.setUint32(at + 4, Math.floor(value / TWO_32), true);
}

/** What to do with a tx packet that failed checkTxHeader(). */
export interface TxRefusal {
  /**
   * "drop": misaddressed, so there is nobody to answer (Linux's vhost drops these too).
   * "rst": answer with RST on the packet's ports (the device never answers an RST with
   * one, so two ends cannot reset each other forever).
   */
  action: "drop" | "rst";
  reason: string;
}

/**
 * Check a guest-sent header against the guest's CID and the payload bytes its chain holds
 * after the header. Undefined when the packet may be routed. Order matters: addressing
 * first (a packet for someone else is not ours to answer), then the fields whose meaning
 * depends on the type and op.
 */
export function checkTxHeader(
  h: VsockHeader,
  payloadAvailable: number,
  guestCid: number,
): TxRefusal | undefined {
  // GUEST-CONTROLLED: src_cid must be the guest's own CID; anything else is spoofing.
  if (h.srcCid !== guestCid) {
    return { action: "drop", reason: `src_cid ${h.srcCid} is not the guest's CID ${guestCid}` };
  }
  // GUEST-CONTROLLED: dst_cid; this device only reaches the host (no guest-to-guest).
  if (h.dstCid !== VSOCK_HOST_CID) {
    return { action: "drop", reason: `dst_cid ${h.dstCid} is not the host (2)` };
  }
  // GUEST-CONTROLLED: type; SEQPACKET is not offered (VIRTIO_VSOCK_F_SEQPACKET).
  if (h.type !== VIRTIO_VSOCK_TYPE_STREAM) {
    return { action: "rst", reason: `type ${h.type} is not STREAM (1)` };
  }
  // GUEST-CONTROLLED: op.
  if (h.op < VIRTIO_VSOCK_OP_REQUEST || h.op > VIRTIO_VSOCK_OP_CREDIT_REQUEST) {
    return { action: "rst", reason: `op ${h.op} is unknown` };
  }
  // GUEST-CONTROLLED: len. Only RW carries a payload; it must be in the chain and no
  // larger than any driver sends.
  if (h.op === VIRTIO_VSOCK_OP_RW) {
    if (h.len > VSOCK_MAX_PAYLOAD) {
      return { action: "rst", reason: `len ${h.len} is above ${VSOCK_MAX_PAYLOAD}` };
    }
    if (h.len > payloadAvailable) {
      return {
        action: "rst",
        reason: `len ${h.len} runs past the chain (${payloadAvailable} payload bytes)`,
      };
    }
  } else if (h.len !== 0) {
    return { action: "rst", reason: `len ${h.len} on op ${h.op}, which carries no payload` };
  }
  // GUEST-CONTROLLED: flags. SHUTDOWN's are the two direction bits; stream ops define none.
  const allowed = h.op === VIRTIO_VSOCK_OP_SHUTDOWN ? VIRTIO_VSOCK_SHUTDOWN_MASK : 0;
  if ((h.flags & ~allowed) !== 0) {
    return { action: "rst", reason: `flags 0x${h.flags.toString(16)} on op ${h.op}` };
  }
  // buf_alloc and fwd_cnt are free-running u32 counters; any value is well-formed, and the
  // credit arithmetic that consumes them is modular (see connection.ts).
  return undefined;
}
