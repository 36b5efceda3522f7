// The vhost ioctl numbers and struct layouts against the values linux/vhost.h produces on
// x86-64 (computed there with _IOR/_IOW/_IOWR and offsetof), so a wrong size or field order
// fails here instead of as EINVAL, or worse, in the lab.

import assert from "node:assert/strict";
import { test } from "node:test";
import * as abi from "./vhost_abi.js";

test("ioctl request numbers match linux/vhost.h", () => {
  assert.equal(abi.VHOST_GET_FEATURES, 0x8008af00);
  assert.equal(abi.VHOST_SET_FEATURES, 0x4008af00);
  assert.equal(abi.VHOST_SET_OWNER, 0xaf01);
  assert.equal(abi.VHOST_RESET_OWNER, 0xaf02);
  assert.equal(abi.VHOST_SET_MEM_TABLE, 0x4008af03);
  assert.equal(abi.VHOST_SET_VRING_NUM, 0x4008af10);
  assert.equal(abi.VHOST_SET_VRING_ADDR, 0x4028af11);
  assert.equal(abi.VHOST_SET_VRING_BASE, 0x4008af12);
  assert.equal(abi.VHOST_GET_VRING_BASE, 0xc008af12);
  assert.equal(abi.VHOST_SET_VRING_KICK, 0x4008af20);
  assert.equal(abi.VHOST_SET_VRING_CALL, 0x4008af21);
  assert.equal(abi.VHOST_SET_VRING_ERR, 0x4008af22);
  assert.equal(abi.VHOST_NET_SET_BACKEND, 0x4008af30);
});

test("struct vhost_memory: nregions, padding, then 32-byte regions", () => {
  const buf = abi.encodeMemoryTable([
    { guestPhysAddr: 0n, size: 0xc000_0000n, userspaceAddr: 0x7f00_0000_0000n },
    { guestPhysAddr: 0x1_0000_0000n, size: 0x4000_0000n, userspaceAddr: 0x7f10_0000_0000n },
  ]);
  assert.equal(buf.length, 8 + 2 * 32);
  const dv = new DataView(buf.buffer);
  assert.equal(dv.getUint32(0, true), 2);
  assert.equal(dv.getUint32(4, true), 0);
  assert.equal(dv.getBigUint64(8 + 32 + 0, true), 0x1_0000_0000n); // guest_phys_addr
  assert.equal(dv.getBigUint64(8 + 32 + 8, true), 0x4000_0000n); // memory_size
  assert.equal(dv.getBigUint64(8 + 32 + 16, true), 0x7f10_0000_0000n); // userspace_addr
  assert.equal(dv.getBigUint64(8 + 32 + 24, true), 0n); // flags_padding
});

test("struct vhost_vring_addr: index, flags, desc, used, avail, log", () => {
  const buf = abi.encodeVringAddr({
    index: 1,
    flags: 0,
    desc: 0x10n,
    used: 0x20n,
    avail: 0x30n,
    log: 0n,
  });
  assert.equal(buf.length, abi.SIZEOF_VHOST_VRING_ADDR);
  const dv = new DataView(buf.buffer);
  assert.deepEqual([dv.getUint32(0, true), dv.getUint32(4, true)], [1, 0]);
  assert.deepEqual(
    [8, 16, 24, 32].map((o) => dv.getBigUint64(o, true)),
    [0x10n, 0x20n, 0x30n, 0n],
  );
});

test("struct vhost_vring_file carries -1 to unbind", () => {
  const dv = new DataView(abi.encodePair(1, -1).buffer);
  assert.equal(dv.getUint32(0, true), 1);
  assert.equal(dv.getInt32(4, true), -1);
  assert.equal(dv.getUint32(4, true), 0xffff_ffff);
});
