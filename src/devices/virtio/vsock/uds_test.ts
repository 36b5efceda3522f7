// virtio-vsock with its real host side: Unix sockets in a temporary directory, host programs
// played by net sockets, the guest by the driver double. Firecracker's convention end to end:
// CONNECT <port> / OK <port> with bytes both ways and half-close, guest connections reaching
// PATH_<port>, RST when nothing listens there, and the listener's own rules.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { GuestMemory, MIB, ramRegions } from "../../../memory/mod.js";
import { VirtioMmioTransport } from "../../../virtio/mmio.js";
import { VirtioMmioDriver } from "../../../virtio/testing/driver.js";
import {
  parseConnectLine,
  UnixSocketBackend,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_F_SEND,
  VirtioVsock,
} from "./mod.js";
import { GuestVsock, type Packet } from "./testing.js";

const memory = new GuestMemory(ramRegions(64 * MIB));
const dir = mkdtempSync(join(tmpdir(), "vessel-vsock-"));
after(() => {
  memory.close();
  rmSync(dir, { recursive: true, force: true });
});

const CID = 3;
let n = 0;

async function setup() {
  const uds = join(dir, `v${n++}.sock`);
  const dev = await VirtioVsock.open({ cid: CID, uds, log: () => {} });
  const transport = new VirtioMmioTransport({ device: dev, memory, irq: { set() {}, pulse() {} } });
  const driver = new VirtioMmioDriver({ memory, transport, heapEnd: 60 * MIB });
  driver.init();
  const guest = new GuestVsock(driver, CID);
  const packets: Packet[] = [];
  /** Wait until `cond` holds, collecting the guest's packets and reposting its buffers. */
  const until = async (what: string, cond: () => boolean) => {
    for (let i = 0; i < 2000; i++) {
      packets.push(...guest.received());
      guest.postRx(32);
      if (cond()) return;
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.fail(`timed out waiting for ${what}`);
  };
  return { uds, dev, driver, guest, packets, until };
}

/** Everything a socket sends until it ends. */
function collect(s: Socket): { bytes: () => Buffer; ended: () => boolean; closed: () => boolean } {
  const chunks: Buffer[] = [];
  let ended = false;
  let closed = false;
  s.on("data", (b: Buffer) => chunks.push(b));
  s.on("end", () => {
    ended = true;
  });
  s.on("close", () => {
    closed = true;
  });
  s.on("error", () => {});
  return { bytes: () => Buffer.concat(chunks), ended: () => ended, closed: () => closed };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const rwBytes = (ps: Packet[], guestPort: number) =>
  Buffer.concat(
    ps
      .filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW && p.hdr.dstPort === guestPort)
      .map((p) => p.payload),
  );

describe("virtio-vsock over Unix sockets", () => {
  it("CONNECT <port>: the guest accepts, OK <port> comes back, bytes flow both ways", async () => {
    const env = await setup();
    const { guest, packets, until, dev } = env;
    const host = connect({ path: env.uds, allowHalfOpen: true });
    const got = collect(host);
    const toGuest = randomBytes(300_000);
    // The line and the first bytes in one write: what follows the newline is data.
    host.write(Buffer.concat([Buffer.from("connect 5000\n"), toGuest.subarray(0, 1000)]));
    await until("the REQUEST", () => packets.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_REQUEST));
    const req = packets.find((p) => p.hdr.op === VIRTIO_VSOCK_OP_REQUEST);
    assert.ok(req);
    assert.equal(req.hdr.dstPort, 5000);
    const hostPort = req.hdr.srcPort;
    const fields = { srcPort: 5000, dstPort: hostPort, bufAlloc: 64 * 1024 };
    guest.send({ op: VIRTIO_VSOCK_OP_RESPONSE, ...fields });
    await until("OK", () => got.bytes().includes(0x0a));
    assert.equal(got.bytes().toString(), `OK ${hostPort}\n`);
    host.end(toGuest.subarray(1000));
    // The guest reads, granting credit as it consumes (as Linux does).
    await until("all host bytes", () => {
      const have = rwBytes(packets, 5000).length;
      guest.send({ op: VIRTIO_VSOCK_OP_CREDIT_UPDATE, ...fields, fwdCnt: have });
      return have === toGuest.length;
    });
    assert.equal(sha(rwBytes(packets, 5000)), sha(toGuest));
    await until("SHUTDOWN(SEND) after the last byte", () =>
      packets.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_SHUTDOWN),
    );
    const shut = packets.find((p) => p.hdr.op === VIRTIO_VSOCK_OP_SHUTDOWN);
    assert.equal(shut?.hdr.flags, VIRTIO_VSOCK_SHUTDOWN_F_SEND);
    // The host half-closed but still reads: the guest answers, then closes its side.
    const toHost = randomBytes(100_000);
    for (let off = 0; off < toHost.length; off += 4096) {
      guest.send(
        { op: VIRTIO_VSOCK_OP_RW, ...fields, fwdCnt: toGuest.length },
        toHost.subarray(off, off + 4096),
      );
      await until("credit", () => true);
    }
    guest.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, ...fields, flags: 3 });
    await until("the host's EOF", () => got.ended());
    assert.equal(sha(got.bytes().subarray(`OK ${hostPort}\n`.length)), sha(toHost));
    await until("RST and the connection gone", () => dev.connections === 0);
    assert.equal(packets.at(-1)?.hdr.op, VIRTIO_VSOCK_OP_RST);
    host.destroy();
    await dev.close();
  });

  it("a guest connection to host port P reaches PATH_P; nothing there means RST", async () => {
    const env = await setup();
    const { guest, packets, until, dev } = env;
    const received: Buffer[] = [];
    let peer: Socket | undefined;
    const server: Server = createServer((s) => {
      peer = s;
      s.on("data", (b: Buffer) => received.push(b));
    });
    await new Promise<void>((r) => server.listen(`${env.uds}_52`, r));
    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 777, dstPort: 52 });
    await until("RESPONSE", () => packets.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_RESPONSE));
    guest.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 777, dstPort: 52 }, Buffer.from("from guest"));
    await until("the host service's bytes", () => Buffer.concat(received).length === 10);
    assert.equal(Buffer.concat(received).toString(), "from guest");
    peer?.write("from host");
    await until("the guest's bytes", () => rwBytes(packets, 777).length === 9);
    assert.equal(rwBytes(packets, 777).toString(), "from host");
    // The host service closes: the guest reads EOF (SHUTDOWN with SEND), closes its socket
    // in turn (both flags), and the device ends the connection with RST.
    peer?.destroy();
    await until("SHUTDOWN", () => packets.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_SHUTDOWN));
    guest.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, srcPort: 777, dstPort: 52, flags: 3 });
    await until("RST", () => packets.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_RST));
    assert.equal(dev.connections, 0);

    guest.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 778, dstPort: 53 });
    await until("RST for port 53", () =>
      packets.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_RST && p.hdr.dstPort === 778),
    );
    assert.equal(dev.metrics().connectionsRefused, 1);
    const backend = dev.backend as UnixSocketBackend;
    await until("every host socket forgotten", () => backend.openSockets === 0);
    await new Promise<void>((r) => server.close(() => r()));
    await dev.close();
  });

  it("closes host sockets that send no valid CONNECT line, or ask for a refusing port", async () => {
    const env = await setup();
    const { guest, packets, until, dev } = env;
    for (const line of ["HELLO 5\n", "CONNECT\n", "CONNECT x\n", `CONNECT ${"1".repeat(40)}\n`]) {
      const s = connect(env.uds);
      const c = collect(s);
      s.write(line);
      await until(`close after ${JSON.stringify(line)}`, c.closed);
      assert.equal(c.bytes().length, 0);
    }
    // A half-open-capable host program sees EOF (its socket may never emit close).
    const s = connect({ path: env.uds, allowHalfOpen: true });
    const c = collect(s);
    s.write("CONNECT 9\n");
    await until("REQUEST", () => packets.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_REQUEST));
    const req = packets.find((p) => p.hdr.op === VIRTIO_VSOCK_OP_REQUEST);
    guest.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 9, dstPort: req?.hdr.srcPort ?? 0 });
    await until("EOF on the host socket", c.ended);
    s.destroy();
    assert.equal(c.bytes().length, 0, "no OK for a refused connection");
    assert.equal(dev.connections, 0);
    const backend = dev.backend as UnixSocketBackend;
    await until("every host socket forgotten", () => backend.openSockets === 0);
    await dev.close();
  });

  it("parses CONNECT lines as Firecracker does", () => {
    assert.equal(parseConnectLine("CONNECT 52"), 52);
    assert.equal(parseConnectLine("connect 4294967295"), 0xffff_ffff);
    assert.equal(parseConnectLine("  Connect   7 "), 7);
    for (const bad of [
      "CONNECT",
      "CONNECT -1",
      "CONNECT 4294967296",
      "CONNECT 1 2",
      "OPEN 1",
      "",
    ]) {
      assert.equal(parseConnectLine(bad), undefined, bad);
    }
  });

  it("replaces a stale socket, refuses other files and paths too long for sun_path", async () => {
    const stale = join(dir, "stale.sock");
    const s = createServer();
    await new Promise<void>((r) => s.listen(stale, r));
    // Close without unlinking, as a killed VMM leaves it.
    (s as unknown as { _handle: { close(): void } })._handle.close();
    const b = await UnixSocketBackend.listen(stale);
    await b.close();
    const file = join(dir, "file");
    writeFileSync(file, "x");
    await assert.rejects(UnixSocketBackend.listen(file), /exists and is not a socket/);
    await assert.rejects(UnixSocketBackend.listen(join(dir, "x".repeat(120))), /longer than 107/);
  });
});
