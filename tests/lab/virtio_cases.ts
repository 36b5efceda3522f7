// Lab cases for the paravirtual devices (issue #3): real Linux guests on real KVM using
// virtio-blk and virtio-rng through virtio-mmio, checked from inside the guest and, for
// disks, on the VMM's host after the guest powered off.

import assert from "node:assert/strict";
import type { LabCase } from "./cases.js";
import { vesselRunExec } from "./cases.js";

// The guest makes an ext4 file system, writes files, prints their checksums and powers
// off; the host then mounts the image and checks the same checksums.
const writeFiles = `
set -e
mkfs.ext4 -q -F /dev/vda
mkdir -p /mnt/d
mount -t ext4 /dev/vda /mnt/d
head -c 3000000 /dev/urandom > /mnt/d/big.bin
echo "hello from the guest" > /mnt/d/small.txt
cd /mnt/d && sha256sum big.bin small.txt | sed 's/^/GUEST-SUM /'
echo "GUEST-SERIAL $(cat /sys/block/vda/serial)"
cd / && umount /mnt/d
`;

const roWrite = `
cat /sys/block/vda/ro | sed 's/^/GUEST-RO /'
if dd if=/dev/zero of=/dev/vda bs=4096 count=4 oflag=direct 2>/dev/null; then echo GUEST-WRITE-OK; else echo GUEST-WRITE-REFUSED; fi
head -c 4096 /dev/vda | sha256sum | sed 's/^/GUEST-READ /'
`;

export const virtioCases: LabCase[] = [
  {
    scenario: {
      name: "virtio-blk: the guest makes ext4 on /dev/vda; the host checks the files after power-off",
      script: `
img=/tmp/vessel-blk-test.img
rm -f "$img"; truncate -s 64M "$img"
${vesselRunExec(writeFiles, { cpus: 2, extra: '--disk "$img",serial=vessel-disk-1' })}
rc=$?
echo "VESSEL-RC=$rc"
# Read the files back with debugfs (e2fsprogs): no loop device or mount needed.
for f in big.bin small.txt; do
  echo "HOST-SUM $(debugfs -R "cat /$f" "$img" 2>/dev/null | sha256sum | cut -d' ' -f1)  $f"
done
`,
      timeoutSec: 300,
    },
    check: (r) => {
      assert.match(r.output, /VESSEL-RC=0/);
      const guest = [...r.output.matchAll(/^GUEST-SUM (\S+)\s+(\S+)/gm)].map(
        (m) => `${m[2]}=${m[1]}`,
      );
      const host = [...r.output.matchAll(/^HOST-SUM (\S+)\s+(\S+)/gm)].map(
        (m) => `${m[2]}=${m[1]}`,
      );
      assert.equal(guest.length, 2, "the guest did not print its checksums");
      assert.deepEqual(host, guest, "files read on the host differ from what the guest wrote");
      assert.match(r.output, /GUEST-SERIAL vessel-disk-1/);
    },
  },
  {
    scenario: {
      name: "virtio-blk: a read-only disk refuses writes and its image is unchanged",
      script: `
img=/tmp/vessel-ro-test.img
rm -f "$img"; head -c 8388608 /dev/urandom > "$img"
before=$(sha256sum "$img" | cut -d' ' -f1)
echo "HOST-FIRST $(head -c 4096 "$img" | sha256sum | cut -d' ' -f1)"
${vesselRunExec(roWrite, { cpus: 1, extra: '--disk "$img",ro' })}
echo "VESSEL-RC=$?"
after=$(sha256sum "$img" | cut -d' ' -f1)
[ "$before" = "$after" ] && echo IMAGE-UNCHANGED
`,
      timeoutSec: 300,
    },
    check: (r) => {
      assert.match(r.output, /VESSEL-RC=0/);
      assert.match(r.output, /GUEST-RO 1/);
      assert.match(r.output, /GUEST-WRITE-REFUSED/);
      assert.match(r.output, /IMAGE-UNCHANGED/);
      const first = /HOST-FIRST (\S+)/.exec(r.output)?.[1];
      const read = /GUEST-READ (\S+)/.exec(r.output)?.[1];
      assert.ok(first && read, "missing checksums");
      assert.equal(read, first, "the guest read different bytes than the image holds");
    },
  },
  {
    scenario: {
      name: "virtio-rng: /dev/hwrng yields bytes",
      script: vesselRunExec(
        'cat /sys/class/misc/hw_random/rng_current | sed "s/^/GUEST-RNG /"; head -c 4096 /dev/hwrng | wc -c | sed "s/^/GUEST-RNG-BYTES /"',
        { cpus: 1, extra: "--rng" },
      ),
      timeoutSec: 300,
    },
    check: (r) => {
      assert.match(r.output, /GUEST-RNG virtio_rng/);
      assert.match(r.output, /GUEST-RNG-BYTES 4096/);
      assert.equal(r.exitCode, 0);
    },
  },
];
