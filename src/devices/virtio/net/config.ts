// The virtio-net feature bits, device configuration space (virtio 1.2 §5.1.3, §5.1.4) and
// the struct virtio_net_hdr constants (§5.1.6), plus MAC address parsing and generation.
// The config bytes are encoded once at construction; every field is read-only to the driver.

import { randomBytes } from "node:crypto";

/** Feature bits (virtio 1.2 §5.1.3). */
export const VIRTIO_NET_F_CSUM = 0n;
export const VIRTIO_NET_F_GUEST_CSUM = 1n;
export const VIRTIO_NET_F_MAC = 5n;
export const VIRTIO_NET_F_GUEST_TSO4 = 7n;
export const VIRTIO_NET_F_GUEST_TSO6 = 8n;
export const VIRTIO_NET_F_GUEST_ECN = 9n;
export const VIRTIO_NET_F_GUEST_UFO = 10n;
export const VIRTIO_NET_F_HOST_TSO4 = 11n;
export const VIRTIO_NET_F_HOST_TSO6 = 12n;
export const VIRTIO_NET_F_HOST_ECN = 13n;
export const VIRTIO_NET_F_HOST_UFO = 14n;
export const VIRTIO_NET_F_MRG_RXBUF = 15n;
export const VIRTIO_NET_F_STATUS = 16n;

/** config.status bits (§5.1.4). */
export const VIRTIO_NET_S_LINK_UP = 1;

/** struct virtio_net_hdr_v1 (§5.1.6): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
export const VIRTIO_NET_HDR_SIZE = 12;
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;
/** Offset of num_buffers in the header. */
export const VIRTIO_NET_HDR_NUM_BUFFERS = 10;

/** Ethernet header; the shortest frame worth sending. */
export const ETH_HLEN = 14;
/** Largest frame without segmentation offload: Ethernet + VLAN tag + 1500 bytes payload. */
export const ETH_MAX_FRAME = 1518;
/**
 * Largest header + frame this device moves (what Linux's virtio_net posts for big packets:
 * 12-byte header + 65550). TX chains longer than this are refused.
 */
export const MAX_PACKET = 65562;

// struct virtio_net_config (§5.1.4).
const OFF_MAC = 0; // u8[6]
const OFF_STATUS = 6; // le16, valid with VIRTIO_NET_F_STATUS
const OFF_MAX_VQ_PAIRS = 8; // le16, valid with VIRTIO_NET_F_MQ (not offered): reported as 1
/** Bytes implemented (mac, status, max_virtqueue_pairs); reads past give zero (mtu etc. not offered). */
export const NET_CONFIG_SIZE = 10;

/** Encode the config space for `mac` with the link up. */
export function encodeNetConfig(mac: Uint8Array, linkUp: boolean): Uint8Array {
  const bytes = new Uint8Array(NET_CONFIG_SIZE);
  const v = new DataView(bytes.buffer);
  bytes.set(mac.subarray(0, 6), OFF_MAC);
  v.setUint16(OFF_STATUS, linkUp ? VIRTIO_NET_S_LINK_UP : 0, true);
  v.setUint16(OFF_MAX_VQ_PAIRS, 1, true);
  return bytes;
}

/** Copy config bytes at `offset` into `data`; out of range reads zero. Never throws. */
export function readConfigBytes(bytes: Uint8Array, offset: number, data: Uint8Array): void {
  data.fill(0);
  // GUEST-CONTROLLED: offset and data.length come from a driver's config read.
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= bytes.length) return;
  const n = Math.min(data.length, bytes.length - offset);
  data.set(bytes.subarray(offset, offset + n));
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/**
 * Parse "52:54:00:12:34:56"; undefined when malformed, multicast (bit 0 of the first octet:
 * a NIC's own address must be unicast) or all zeros.
 */
export function parseMac(text: string): Uint8Array | undefined {
  if (!MAC_RE.test(text)) return undefined;
  const mac = Uint8Array.from(text.split(":"), (h) => Number.parseInt(h, 16));
  if (((mac[0] as number) & 1) !== 0 || mac.every((b) => b === 0)) return undefined;
  return mac;
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** 52:54:00:xx:xx:xx (QEMU's locally administered prefix) with three random octets. */
export function generateMac(): Uint8Array {
  const mac = new Uint8Array([0x52, 0x54, 0x00, 0, 0, 0]);
  mac.set(randomBytes(3), 3);
  return mac;
}
