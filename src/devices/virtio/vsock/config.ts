// The virtio-vsock feature bits (virtio 1.2 §5.10.3), queue layout (§5.10.2), event
// structure and device configuration space (§5.10.4): one le64 guest_cid, read-only to the
// driver. Also the check of a guest CID that the CLI and the device share.

import { VSOCK_CID_ANY, VSOCK_HOST_CID } from "./packet.js";

/** Feature bits (§5.10.3). */
export const VIRTIO_VSOCK_F_STREAM = 0n;
export const VIRTIO_VSOCK_F_SEQPACKET = 1n;

/** Queue indices (§5.10.2). */
export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
export const EVENT_QUEUE = 2;

/** struct virtio_vsock_event: le32 id (§5.10.6, device events). */
export const VSOCK_EVENT_SIZE = 4;
export const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET = 0;

/** struct virtio_vsock_config: le64 guest_cid; the upper 32 bits are reserved and zero. */
export const VSOCK_CONFIG_SIZE = 8;

/** Lowest guest CID: 0 and 1 are reserved and 2 is the host (§5.10.4). */
export const MIN_GUEST_CID = VSOCK_HOST_CID + 1;

/** True for a CID a guest may be given: 3 ≤ cid < 0xffffffff (VMADDR_CID_ANY). */
export function validGuestCid(cid: unknown): cid is number {
  return (
    typeof cid === "number" &&
    Number.isSafeInteger(cid) &&
    cid >= MIN_GUEST_CID &&
    cid < VSOCK_CID_ANY
  );
}

export function encodeVsockConfig(cid: number): Uint8Array {
  const bytes = new Uint8Array(VSOCK_CONFIG_SIZE);
  new DataView(bytes.buffer).setUint32(0, cid, true);
  return bytes;
}
