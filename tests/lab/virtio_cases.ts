// Lab cases for the paravirtual devices (issue #3): real Linux guests on real KVM using the
// virtio devices through virtio-mmio, checked from inside the guest and on the VMM's host
// (files on disks after power-off, bytes over TAP and vsock with checksums on both sides).

import assert from "node:assert/strict";
import type { LabCase } from "./cases.js";
import { DEFAULT_CMDLINE, vesselRunCommand, vesselRunExec } from "./cases.js";

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
      timeoutSec: 180,
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
      timeoutSec: 180,
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
      timeoutSec: 180,
    },
    check: (r) => {
      assert.match(r.output, /GUEST-RNG virtio_rng/);
      assert.match(r.output, /GUEST-RNG-BYTES 4096/);
      assert.equal(r.exitCode, 0);
    },
  },
];

/** The host side of the TCP test: receive one connection, print its SHA-256. */
const HOST_RECEIVER = `node -e '
const s = require("net").createServer((c) => {
  const h = require("crypto").createHash("sha256"); let n = 0;
  c.on("data", (d) => { h.update(d); n += d.length; });
  c.on("end", () => { console.log("HOST-TCP-SUM " + h.digest("hex") + " " + n); s.close(); });
}).listen(5000, "10.201.0.1");
setTimeout(() => process.exit(3), 200000).unref();
'`;

/**
 * The guest pings the host through a TAP and sends it 2 MB over TCP; the host checks the
 * checksum. With vhost, the frames must have gone through the kernel's worker: the VMM's
 * own frame and ring counters stay at zero while the TAP counted thousands of packets.
 */
function tapCase(vhost: boolean): LabCase {
  const tap = vhost ? "vtap1" : "vtap0";
  return {
    scenario: {
      name: vhost
        ? "virtio-net with vhost=on: ping and a TCP stream through vhost-net, none of it through the VMM"
        : "virtio-net over TAP: the guest pings the host and sends a TCP stream whose checksum matches",
      script: `
${vhost ? 'test -c /dev/vhost-net && echo HOST-VHOST-NET-PRESENT || echo "HOST-VHOST-NET-MISSING $(lsmod | grep -c vhost)"' : ""}
ip link del ${tap} 2>/dev/null
ip tuntap add dev ${tap} mode tap vnet_hdr
ip addr add 10.201.0.1/24 dev ${tap}
ip link set ${tap} up
${HOST_RECEIVER} > /tmp/vessel-tcp.out 2>&1 &
recv=$!
${vesselRunExec(
  `ping -c 3 -W 5 10.201.0.1 | sed 's/^/GUEST-PING /'
head -c 2000000 /dev/urandom > /tmp/f
echo "GUEST-TCP-SUM $(sha256sum /tmp/f | cut -d' ' -f1) $(wc -c < /tmp/f)"
nc 10.201.0.1 5000 < /tmp/f`,
  {
    cpus: 1,
    extra: `--net tap=${tap}${vhost ? ",vhost=on" : ""}`,
    cmdlineAppend: "vessel.ip=10.201.0.2/24",
  },
)}
echo "VESSEL-RC=$?"
wait $recv
cat /tmp/vessel-tcp.out
echo "HOST-TAP-PACKETS rx=$(cat /sys/class/net/${tap}/statistics/rx_packets) tx=$(cat /sys/class/net/${tap}/statistics/tx_packets)"
ip link del ${tap}
`,
      timeoutSec: 180,
    },
    check: (r) => {
      if (vhost) assert.match(r.output, /HOST-VHOST-NET-PRESENT/, "L1 has no /dev/vhost-net");
      assert.match(r.output, /VESSEL-RC=0/);
      assert.match(r.output, /GUEST-PING 3 packets transmitted, 3 packets received/);
      const guest = /GUEST-TCP-SUM (\S+) (\d+)/.exec(r.output);
      const host = /HOST-TCP-SUM (\S+) (\d+)/.exec(r.output);
      assert.ok(guest && host, "missing checksums");
      assert.equal(host[2], guest[2], "byte counts differ");
      assert.equal(host[1], guest[1], "the host received different bytes than the guest sent");
      const stats =
        /virtio-net0: (\S+) path; frames through the VMM: tx (\d+), rx (\d+); chains popped by the VMM: (\d+); vhost interrupts relayed: (\d+)/.exec(
          r.output,
        );
      assert.ok(stats, "vessel --stats printed no virtio-net line");
      const [, backend, tx, rx, popped, interrupts] = stats;
      const packets = /HOST-TAP-PACKETS rx=(\d+) tx=(\d+)/.exec(r.output);
      assert.ok(packets, "missing TAP counters");
      // 2 MB is more than 30 packets even in 64 KiB TSO segments.
      assert.ok(Number(packets[1]) > 30, `the TAP received only ${packets[1]} packets`);
      if (vhost) {
        assert.equal(backend, "vhost");
        assert.equal(Number(tx) + Number(rx) + Number(popped), 0, "frames went through the VMM");
        assert.ok(Number(interrupts) > 0, "no interrupt was relayed from vhost");
      } else {
        assert.equal(backend, "user");
        assert.ok(Number(tx) > 30, `the VMM sent only ${tx} frames`);
      }
    },
  };
}

export const netCases: LabCase[] = [tapCase(false), tapCase(true)];

/** Send one JSON request to a Vessel control socket and print the reply. */
const controlClient = (sock: string, request: object) =>
  `node -e 'const s = require("net").connect(process.argv[1]); s.end(process.argv[2] + "\\n"); s.on("data", (d) => process.stdout.write(d));' ${sock} '${JSON.stringify(request)}'`;

export const balloonCases: LabCase[] = [
  {
    scenario: {
      name: "virtio-balloon: inflating lowers the guest's memory and the VMM's resident memory",
      script: `
sock=/tmp/vessel-balloon.sock
out=$(mktemp)
${vesselRunExec(
  `dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>/dev/null; rm /tmp/fill
echo "GUEST-BEFORE $(awk '/^MemTotal:/{t=$2} /^MemFree:/{f=$2} END{print t, f}' /proc/meminfo)"
echo GUEST-TOUCHED
sleep 35
echo "GUEST-AFTER $(awk '/^MemTotal:/{t=$2} /^MemFree:/{f=$2} END{print t, f}' /proc/meminfo)"`,
  { cpus: 1, memory: "512M", extra: `--balloon --control-socket $sock` },
)} > "$out" 2>&1 &
pid=$!
for i in $(seq 1 240); do grep -q GUEST-TOUCHED "$out" && break; sleep 1; done
echo "HOST-RSS-BEFORE $(awk '/VmRSS/{print $2}' /proc/$pid/status)"
${controlClient("$sock", { op: "balloon", targetBytes: 300 * 1024 * 1024 })} | sed 's/^/CONTROL /'
sleep 15
echo "HOST-RSS-AFTER $(awk '/VmRSS/{print $2}' /proc/$pid/status)"
wait $pid
echo "VESSEL-RC=$?"
cat "$out"
`,
      timeoutSec: 180,
    },
    check: (r) => {
      assert.match(r.output, /VESSEL-RC=0/);
      assert.match(r.output, /CONTROL \{"ok":true/);
      const before = /GUEST-BEFORE (\d+) (\d+)/.exec(r.output);
      const after = /GUEST-AFTER (\d+) (\d+)/.exec(r.output);
      assert.ok(before && after, "the guest did not report its memory");
      // The balloon takes 300 MiB: MemTotal (or, with deflate-on-oom, MemFree) drops by most of it.
      const drop = Number(before[1]) + Number(before[2]) - (Number(after[1]) + Number(after[2]));
      assert.ok(drop > 200 * 1024, `guest memory dropped by only ${drop} KiB`);
      const rssBefore = Number(/HOST-RSS-BEFORE (\d+)/.exec(r.output)?.[1]);
      const rssAfter = Number(/HOST-RSS-AFTER (\d+)/.exec(r.output)?.[1]);
      assert.ok(
        rssBefore - rssAfter > 100 * 1024,
        `VMM RSS went from ${rssBefore} to ${rssAfter} KiB`,
      );
    },
  },
];

export const consoleCases: LabCase[] = [
  {
    scenario: {
      name: "virtio-console: hvc0 carries output to the terminal and terminal input to the guest",
      // /dev/console only reaches hvc0 once init has loaded virtio_console, so the guest
      // writes to /dev/hvc0 itself; the host's input waits in the device until then.
      script: `(sleep 10; echo typed-on-the-host) | ${vesselRunCommand({
        cmdline: `${DEFAULT_CMDLINE.replace("console=ttyS0", "console=hvc0")} vessel.exec=${Buffer.from(
          // One open of hvc0 for the whole script: a tty's last close discards unread input.
          'exec 3<>/dev/hvc0\necho "GUEST-CONSOLE $(cat /sys/class/tty/console/active)" >&3\ntimeout 40 head -n1 <&3 | sed "s/^/GUEST-GOT /" >&3',
        ).toString("base64")}`,
        extra: "--console virtio",
      })}`,
      timeoutSec: 180,
    },
    check: (r) => {
      assert.equal(r.exitCode, 0);
      assert.match(r.output, /GUEST-CONSOLE hvc0/);
      assert.match(r.output, /GUEST-GOT typed-on-the-host/);
    },
  },
];

/**
 * A host service at `${uds}_5000` (what a guest connection to host port 5000 reaches): it
 * reads to EOF, prints the checksum of what it got, answers with its own bytes and closes.
 */
const VSOCK_HOST_SERVICE = `node -e '
const net = require("net"), crypto = require("crypto");
const reply = crypto.randomBytes(700000);
const sum = (b) => crypto.createHash("sha256").update(b).digest("hex");
const srv = net.createServer({ allowHalfOpen: true }, (c) => {
  const got = [];
  c.on("data", (d) => got.push(d));
  c.on("end", () => {
    const all = Buffer.concat(got);
    console.log("HOST-SERVICE-GOT " + sum(all) + " " + all.length);
    console.log("HOST-SERVICE-SENT " + sum(reply) + " " + reply.length);
    c.end(reply);
    srv.close();
  });
}).listen(process.argv[1]);
setTimeout(() => process.exit(3), 300000).unref();
'`;

/**
 * A host program in Firecracker's convention: CONNECT <port> on the VMM's socket, read the
 * OK line, send its bytes, half-close, and read the guest's bytes to EOF.
 */
const VSOCK_HOST_CLIENT = `node -e '
const net = require("net"), crypto = require("crypto");
const [path, port] = process.argv.slice(1);
const payload = crypto.randomBytes(800000);
const sum = (b) => crypto.createHash("sha256").update(b).digest("hex");
const s = net.connect({ path, allowHalfOpen: true });
let head = Buffer.alloc(0), ok = null;
const got = [];
s.on("connect", () => s.write("CONNECT " + port + "\\n"));
s.on("data", (d) => {
  if (ok !== null) return void got.push(d);
  head = Buffer.concat([head, d]);
  const nl = head.indexOf(10);
  if (nl < 0) return;
  ok = head.subarray(0, nl).toString();
  console.log("HOST-CLIENT-REPLY " + ok);
  got.push(head.subarray(nl + 1));
  console.log("HOST-CLIENT-SENT " + sum(payload) + " " + payload.length);
  s.end(payload);
});
// EOF before an OK line is the refusal (a half-open socket may never emit close).
s.on("end", () => {
  const all = Buffer.concat(got);
  if (ok === null) console.log("HOST-CLIENT-REFUSED port " + port);
  else console.log("HOST-CLIENT-GOT " + sum(all) + " " + all.length);
});
s.on("error", (e) => console.log("HOST-CLIENT-ERROR " + e.code));
'`;

// The guest: a connection to host port 5000 carrying about 1 MB each way, one to host port
// 5001 where nothing listens, then a listener on port 6000 for the host program. Each step
// has its own time limit, so a stall names itself instead of using up the scenario's.
const VSOCK_GUEST = `command -v vsock-cat > /dev/null || echo "GUEST-NO-VSOCK-CAT: this image predates it"
head -c 1000000 /dev/urandom > /tmp/up
echo "GUEST-UP $(sha256sum < /tmp/up | cut -c1-64) $(wc -c < /tmp/up)"
timeout 90 vsock-cat connect 2 5000 < /tmp/up > /tmp/back || echo "GUEST-CONNECT-FAILED rc=$?"
echo "GUEST-BACK $(sha256sum < /tmp/back | cut -c1-64) $(wc -c < /tmp/back)"
timeout 30 vsock-cat connect 2 5001 < /dev/null 2>&1 | sed 's/^/GUEST-REFUSED /'
head -c 900000 /dev/urandom > /tmp/down
echo "GUEST-DOWN $(sha256sum < /tmp/down | cut -c1-64) $(wc -c < /tmp/down)"
timeout 90 vsock-cat listen 6000 < /tmp/down > /tmp/got || echo "GUEST-LISTEN-FAILED rc=$?"
echo "GUEST-GOT $(sha256sum < /tmp/got | cut -c1-64) $(wc -c < /tmp/got)"`;

/**
 * The vsock scenario, plain or jailed. Jailed, the VMM runs as an unprivileged user in an
 * empty network namespace and sees the uds's directory only (it holds nothing but sockets),
 * so the host service's socket is made writable for that user, as its docs ask.
 */
function vsockCase(jail: boolean): LabCase {
  return {
    scenario: {
      name: `virtio-vsock${jail ? " under --jail" : ""}: bytes cross both ways in Firecracker's convention, checksums match`,
      // Everything prints as it happens (the VMM through tee), so a run cut off at its time
      // limit still shows how far it got.
      script: `
dir=/tmp/vessel-vsock${jail ? "-jail" : ""}
rm -rf "$dir" && mkdir -p "$dir"
sock="$dir/v.sock"
work=$(mktemp -d)
${VSOCK_HOST_SERVICE} "\${sock}_5000" &
svc=$!
for i in $(seq 1 100); do [ -S "\${sock}_5000" ] && break; sleep 0.1; done
${jail ? 'chmod 666 "$sock"_5000' : ""}
{ ${vesselRunExec(VSOCK_GUEST, { cpus: 1, extra: `${jail ? "--jail " : ""}--vsock cid=3,uds="$sock"` })}; echo "VESSEL-RC=$?"; } 2>&1 | tee "$work/vmm.out" &
vmm=$!
for i in $(seq 1 240); do grep -qE "listening on port 6000|GUEST-NO-VSOCK-CAT|VESSEL-RC" "$work/vmm.out" && break; sleep 1; done
${VSOCK_HOST_CLIENT} "$sock" 6001
${VSOCK_HOST_CLIENT} "$sock" 6000
wait $vmm
wait $svc
[ -e "$sock" ] || echo VSOCK-SOCKET-REMOVED
`,
      timeoutSec: 300,
    },
    check: (r) => {
      assert.match(r.output, /VESSEL-RC=0/);
      const line = (tag: string) => {
        const m = new RegExp(`^${tag} ([0-9a-f]{64}) (\\d+)`, "m").exec(r.output);
        assert.ok(m, `no ${tag} line`);
        return `${m[1]} ${m[2]}`;
      };
      assert.equal(line("HOST-SERVICE-GOT"), line("GUEST-UP"), "guest → host (guest connected)");
      assert.equal(line("GUEST-BACK"), line("HOST-SERVICE-SENT"), "host → guest (guest connected)");
      assert.match(r.output, /^HOST-CLIENT-REPLY OK \d+$/m);
      assert.equal(line("GUEST-GOT"), line("HOST-CLIENT-SENT"), "host → guest (host connected)");
      assert.equal(line("HOST-CLIENT-GOT"), line("GUEST-DOWN"), "guest → host (host connected)");
      assert.match(r.output, /GUEST-REFUSED vsock-cat: connect: Connection reset by peer/);
      assert.match(r.output, /HOST-CLIENT-REFUSED port 6001/);
      assert.doesNotMatch(r.output, /vsock connections to host ports are off/);
      // The jailed VMM sees its directory read-only: its socket stays for the supervisor.
      if (!jail) assert.match(r.output, /VSOCK-SOCKET-REMOVED/);
    },
  };
}

export const vsockCases: LabCase[] = [vsockCase(false), vsockCase(true)];
