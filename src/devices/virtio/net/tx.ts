// Checking a transmit chain before any of it reaches the TAP (virtio 1.2 §5.1.6.2): the
// chain must be driver-readable only, hold a struct virtio_net_hdr_v1 and at least an
// Ethernet header, stay within MAX_PACKET bytes, and carry a header that asks only for the
// offloads the driver negotiated. The header is copied out (into `hdr`) and that checked
// copy is what the TAP sees, so a guest rewriting it after the check changes nothing.
// Pure apart from reading guest memory; the property test fuzzes it.

import type { GuestMemory } from "../../../memory/mod.js";
import type { DescriptorBuffer, DescriptorChain } from "../../../virtio/device.js";
import {
  ETH_HLEN,
  MAX_PACKET,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_NUM_BUFFERS,
  VIRTIO_NET_HDR_SIZE,
} from "./config.js";

const has = (features: bigint, bit: bigint): boolean => (features & (1n << bit)) !== 0n;

/**
 * Check a transmit chain; on success fill `hdr` (12 bytes) with the checked header and
 * return undefined, otherwise return why it was refused. Never throws for any chain.
 */
export function checkTxChain(
  memory: GuestMemory,
  chain: DescriptorChain,
  features: bigint,
  hdr: Uint8Array,
): string | undefined {
  // GUEST-CONTROLLED: the chain's layout and lengths.
  if (chain.writable.length > 0) return "transmit chain has device-writable buffers";
  const total = chain.readableLength;
  if (!Number.isSafeInteger(total) || total < VIRTIO_NET_HDR_SIZE + ETH_HLEN) {
    return `transmit chain of ${total} bytes is shorter than header + Ethernet header`;
  }
  if (total > MAX_PACKET) return `transmit chain of ${total} bytes is over ${MAX_PACKET}`;
  if (!gather(memory, chain.readable, hdr, VIRTIO_NET_HDR_SIZE)) {
    return "transmit header is not readable";
  }
  const frame = total - VIRTIO_NET_HDR_SIZE;
  // GUEST-CONTROLLED: every header field (§5.1.6.2.1).
  const flags = hdr[0] as number;
  const gsoType = hdr[1] as number;
  const hdrLen = u16(hdr, 2);
  const gsoSize = u16(hdr, 4);
  const csumStart = u16(hdr, 6);
  const csumOffset = u16(hdr, 8);
  if ((flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) return `header flags 0x${flags.toString(16)}`;
  if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
    if (!has(features, VIRTIO_NET_F_CSUM)) return "NEEDS_CSUM without VIRTIO_NET_F_CSUM";
    if (csumStart + csumOffset + 2 > frame) {
      return `checksum at ${csumStart}+${csumOffset} is outside the ${frame}-byte frame`;
    }
  }
  if (gsoType !== VIRTIO_NET_HDR_GSO_NONE) {
    // UDP (UFO) and ECN are not offered, so only the two TSO types can be negotiated.
    if (gsoType === VIRTIO_NET_HDR_GSO_TCPV4) {
      if (!has(features, VIRTIO_NET_F_HOST_TSO4)) return "TCPv4 GSO without HOST_TSO4";
    } else if (gsoType === VIRTIO_NET_HDR_GSO_TCPV6) {
      if (!has(features, VIRTIO_NET_F_HOST_TSO6)) return "TCPv6 GSO without HOST_TSO6";
    } else {
      return `gso_type 0x${gsoType.toString(16)} not negotiated`;
    }
    if (!(flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) return "GSO without NEEDS_CSUM";
    if (gsoSize === 0) return "GSO with gso_size 0";
    if (hdrLen > frame) return `hdr_len ${hdrLen} is over the ${frame}-byte frame`;
  }
  // num_buffers is only meaningful on receive; the TAP ignores it, and so do we.
  hdr[VIRTIO_NET_HDR_NUM_BUFFERS] = 0;
  hdr[VIRTIO_NET_HDR_NUM_BUFFERS + 1] = 0;
  return undefined;
}

function u16(b: Uint8Array, at: number): number {
  return (b[at] as number) | ((b[at + 1] as number) << 8);
}

/** Copy the first `n` bytes of a list of guest buffers into `out`; false if unreadable. */
export function gather(
  memory: GuestMemory,
  buffers: readonly DescriptorBuffer[],
  out: Uint8Array,
  n: number,
): boolean {
  let done = 0;
  for (const b of buffers) {
    if (done === n) break;
    const k = Math.min(b.length, n - done);
    if (k <= 0) continue;
    try {
      memory.read(b.address, out.subarray(done, done + k));
    } catch {
      return false;
    }
    done += k;
  }
  return done === n;
}
