// Test helpers for virtio-net: TAP setup and teardown with iproute2, and Ethernet/ARP/IPv4
// frame builders and parsers for the end-to-end tests. Tests only.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { VIRTIO_NET_HDR_SIZE } from "./config.js";

/** Fail (never skip) when this host cannot make TAPs: the tests need them. */
export function requireTun(): void {
  assert.ok(
    existsSync("/dev/net/tun"),
    "/dev/net/tun is missing: virtio-net's tests need TAP support (modprobe tun)",
  );
}

export function ip(...args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

/** Delete a TAP if it exists (ignore "Cannot find device"). */
export function deleteTap(name: string): void {
  try {
    ip("link", "del", name);
  } catch {
    // already gone
  }
}

export function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(":"), (h) => Number.parseInt(h, 16));
}

export function ipv4Bytes(a: string): Uint8Array {
  return Uint8Array.from(a.split("."), Number);
}

/** An Ethernet ARP request "who has `target`? tell `sender`" from `mac`. */
export function arpRequest(mac: Uint8Array, sender: string, target: string): Uint8Array {
  const f = new Uint8Array(42);
  f.fill(0xff, 0, 6);
  f.set(mac, 6);
  f.set([0x08, 0x06], 12);
  f.set([0, 1, 0x08, 0x00, 6, 4, 0, 1], 14);
  f.set(mac, 22);
  f.set(ipv4Bytes(sender), 28);
  f.set(ipv4Bytes(target), 38);
  return f;
}

function checksum(b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += ((b[i] as number) << 8) | (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** An ICMP echo request from (mac, src) to (dstMac, dst) with `payload`. */
export function icmpEcho(
  mac: Uint8Array,
  dstMac: Uint8Array,
  src: string,
  dst: string,
  id: number,
  payload: Uint8Array,
): Uint8Array {
  const icmp = new Uint8Array(8 + payload.length);
  icmp.set([8, 0, 0, 0, id >> 8, id & 0xff, 0, 1]);
  icmp.set(payload, 8);
  const c = checksum(icmp);
  icmp[2] = c >> 8;
  icmp[3] = c & 0xff;
  const iph = new Uint8Array(20);
  const total = 20 + icmp.length;
  iph.set([0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 1, 0, 0]);
  iph.set(ipv4Bytes(src), 12);
  iph.set(ipv4Bytes(dst), 16);
  const ic = checksum(iph);
  iph[10] = ic >> 8;
  iph[11] = ic & 0xff;
  const f = new Uint8Array(14 + total);
  f.set(dstMac, 0);
  f.set(mac, 6);
  f.set([0x08, 0x00], 12);
  f.set(iph, 14);
  f.set(icmp, 34);
  return f;
}

/** A zeroed virtio_net_hdr_v1 followed by `frame`. */
export function withHeader(frame: Uint8Array): Uint8Array {
  const p = new Uint8Array(VIRTIO_NET_HDR_SIZE + frame.length);
  p.set(frame, VIRTIO_NET_HDR_SIZE);
  return p;
}

export function ethertype(frame: Uint8Array): number {
  return ((frame[12] as number) << 8) | (frame[13] as number);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
