// The kernel's vhost ABI (include/uapi/linux/vhost.h, vhost_types.h) for x86-64: ioctl
// request numbers, feature bits that belong to vhost itself, and encoders for the structs
// the ioctls take. Layouts only; which calls to make and in what order is the caller's.

const VHOST_VIRTIO = 0xaf;
const io = (nr: number) => (VHOST_VIRTIO << 8) | nr;
const ior = (nr: number, size: number) =>
  ((2 << 30) | (size << 16) | (VHOST_VIRTIO << 8) | nr) >>> 0;
const iow = (nr: number, size: number) =>
  ((1 << 30) | (size << 16) | (VHOST_VIRTIO << 8) | nr) >>> 0;
const iowr = (nr: number, size: number) =>
  ((3 << 30) | (size << 16) | (VHOST_VIRTIO << 8) | nr) >>> 0;

/** struct vhost_vring_state { unsigned int index; unsigned int num; }. */
export const SIZEOF_VHOST_VRING_STATE = 8;
/** struct vhost_vring_file { unsigned int index; int fd; }. */
export const SIZEOF_VHOST_VRING_FILE = 8;
/** struct vhost_vring_addr { u32 index, flags; u64 desc, used, avail, log }. */
export const SIZEOF_VHOST_VRING_ADDR = 40;
/** struct vhost_memory { u32 nregions; u32 padding; struct vhost_memory_region regions[]; }. */
export const SIZEOF_VHOST_MEMORY = 8;
/** struct vhost_memory_region { u64 guest_phys_addr, memory_size, userspace_addr, flags_padding }. */
export const SIZEOF_VHOST_MEMORY_REGION = 32;

export const VHOST_GET_FEATURES = ior(0x00, 8);
export const VHOST_SET_FEATURES = iow(0x00, 8);
export const VHOST_SET_OWNER = io(0x01);
export const VHOST_RESET_OWNER = io(0x02);
export const VHOST_SET_MEM_TABLE = iow(0x03, SIZEOF_VHOST_MEMORY);
export const VHOST_SET_VRING_NUM = iow(0x10, SIZEOF_VHOST_VRING_STATE);
export const VHOST_SET_VRING_ADDR = iow(0x11, SIZEOF_VHOST_VRING_ADDR);
export const VHOST_SET_VRING_BASE = iow(0x12, SIZEOF_VHOST_VRING_STATE);
export const VHOST_GET_VRING_BASE = iowr(0x12, SIZEOF_VHOST_VRING_STATE);
export const VHOST_SET_VRING_KICK = iow(0x20, SIZEOF_VHOST_VRING_FILE);
export const VHOST_SET_VRING_CALL = iow(0x21, SIZEOF_VHOST_VRING_FILE);
export const VHOST_SET_VRING_ERR = iow(0x22, SIZEOF_VHOST_VRING_FILE);
export const VHOST_NET_SET_BACKEND = iow(0x30, SIZEOF_VHOST_VRING_FILE);

// Feature bits that are vhost's own (vhost.h), beside the virtio ones it passes through.
/** Dirty-page logging for live migration. */
export const VHOST_F_LOG_ALL = 26n;
/** vhost-net adds and strips the vnet header itself (for a backend without one). */
export const VHOST_NET_F_VIRTIO_NET_HDR = 27n;
/** vhost_vring_addr.flags bit: log_guest_addr is valid. */
export const VHOST_VRING_F_LOG = 0;

/** One guest RAM region as vhost sees it: where it is for the guest and in our process. */
export interface VhostMemoryRegion {
  guestPhysAddr: bigint;
  size: bigint;
  userspaceAddr: bigint;
}

/** struct vhost_memory with its regions appended. */
export function encodeMemoryTable(regions: readonly VhostMemoryRegion[]): Uint8Array {
  const buf = new Uint8Array(SIZEOF_VHOST_MEMORY + SIZEOF_VHOST_MEMORY_REGION * regions.length);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    const off = SIZEOF_VHOST_MEMORY + SIZEOF_VHOST_MEMORY_REGION * i;
    dv.setBigUint64(off, r.guestPhysAddr, true);
    dv.setBigUint64(off + 8, r.size, true);
    dv.setBigUint64(off + 16, r.userspaceAddr, true);
  });
  return buf;
}

/** Where one ring's parts are in our address space (vhost reads them as user memory). */
export interface VhostVringAddr {
  index: number;
  flags: number;
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

export function encodeVringAddr(a: VhostVringAddr): Uint8Array {
  const buf = new Uint8Array(SIZEOF_VHOST_VRING_ADDR);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, a.index, true);
  dv.setUint32(4, a.flags, true);
  dv.setBigUint64(8, a.desc, true);
  dv.setBigUint64(16, a.used, true);
  dv.setBigUint64(24, a.avail, true);
  dv.setBigUint64(32, a.log, true);
  return buf;
}

/** struct vhost_vring_state or vhost_vring_file: two 32-bit fields (fd is signed). */
export function encodePair(index: number, value: number): Uint8Array {
  const buf = new Uint8Array(8);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, index, true);
  dv.setInt32(4, value, true);
  return buf;
}
