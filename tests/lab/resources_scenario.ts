// Resource control on real KVM (issue #5's lab scenario), run inside the lab by
// tests/lab/domain_cases.ts: under `vessel daemon`, a domain whose vCPU spins is capped at
// 50 % of a CPU and must use about half a CPU of host time; its cgroup files show the
// limits; pinned vCPU threads show the pinned CPUs in the kernel's own view; the cap changes
// at runtime; /metrics reports the throttling; a disk limited to 10 MiB/s reads at that
// rate in the guest, and faster once the limit is raised; the cgroup's io.max on a disk's
// host block device holds the guest to it; a network device limited each way likewise. Steps print `CHECK <what> ok|FAILED`.

import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { limitsFor } from "../../src/daemon/domain.js";
import type { DomainSpec } from "../../src/domain/spec.js";
import { defaultImagePaths } from "../../src/image/mod.js";
import {
  ConsoleSession,
  cleanUp,
  type DaemonUnderTest,
  failureReport,
  startDaemon,
  waitFor,
} from "../daemon_harness.js";
import { writeDomainGuest } from "../guests/domain_guest.js";

let failures = 0;
async function check(what: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
    process.stdout.write(`CHECK ${what} ok\n`);
  } catch (e) {
    failures++;
    process.stdout.write(
      `CHECK ${what} FAILED: ${(e instanceof Error ? e.message : String(e)).replaceAll("\n", " ")}\n`,
    );
  }
}

const usageUs = (cg: string) =>
  Number(/^usage_usec (\d+)/m.exec(readFileSync(join(cg, "cpu.stat"), "utf8"))?.[1]);

/** CPUs (as a fraction of one) the cgroup used over `ms`. */
async function cpuShare(cg: string, ms: number): Promise<number> {
  const u0 = usageUs(cg);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return (usageUs(cg) - u0) / 1000 / (performance.now() - t0);
}

const d: DaemonUnderTest = await startDaemon({ slowKvm: false });
try {
  const spin = writeDomainGuest(join(d.dir, "spin.elf"), { powerButton: false, spin: true });
  const idle = writeDomainGuest(join(d.dir, "idle.elf"), { powerButton: false });
  const capped: DomainSpec = {
    name: "capped",
    memory: "64M",
    vcpus: 1,
    kernel: spin,
    cpuCap: 50,
    cpuWeight: 512,
  };
  let cgroup = "";

  await check("cgroup files hold the spec's limits (cpu.max, cpu.weight, memory.max)", async () => {
    const version = (await d.client.version()) as { cgroups: string };
    if (version.cgroups.startsWith("none")) throw new Error(version.cgroups);
    const info = await d.client.create(capped);
    cgroup = info.cgroup ?? "";
    if (!cgroup) throw new Error("no cgroup reported");
    const read = (f: string) => readFileSync(join(cgroup, f), "utf8").trim();
    if (read("cpu.max") !== "50000 100000") throw new Error(`cpu.max ${read("cpu.max")}`);
    if (read("cpu.weight") !== "200") throw new Error(`cpu.weight ${read("cpu.weight")}`);
    const expected = limitsFor(capped).memoryMaxBytes;
    if (read("memory.max") !== String(expected))
      throw new Error(`memory.max ${read("memory.max")}, expected ${expected}`);
    const procs = read("cgroup.procs").split("\n").map(Number);
    if (!procs.includes(info.pid ?? -1)) throw new Error(`VMM ${info.pid} not in ${procs}`);
    process.stdout.write(`RESOURCES memory.max ${expected} for a 64 MiB guest with 1 vCPU\n`);
  });

  await check("a spinning vCPU under a 50 % cap uses about half a CPU", async () => {
    await new Promise((r) => setTimeout(r, 1000));
    const share = await cpuShare(cgroup, 5000);
    process.stdout.write(`RESOURCES cap 50: ${share.toFixed(3)} CPUs\n`);
    if (share > 0.6 || share < 0.3) throw new Error(`used ${share.toFixed(3)} CPUs`);
  });

  await check("the cap changes at runtime (sched): 100 % lets it use about one CPU", async () => {
    await d.client.schedule("capped", { cpuCap: 100 });
    const max = readFileSync(join(cgroup, "cpu.max"), "utf8").trim();
    if (max !== "100000 100000") throw new Error(`cpu.max ${max}`);
    await new Promise((r) => setTimeout(r, 500));
    const share = await cpuShare(cgroup, 4000);
    process.stdout.write(`RESOURCES cap 100: ${share.toFixed(3)} CPUs\n`);
    if (share < 0.7 || share > 1.1) throw new Error(`used ${share.toFixed(3)} CPUs`);
  });

  await check("/metrics reports throttled time and vCPU CPU time", async () => {
    const text = await d.client.metrics();
    const throttled = Number(
      /^vessel_cpu_throttled_seconds_total\{domain="capped"\} (\S+)$/m.exec(text)?.[1],
    );
    const vcpu = Number(
      /^vessel_vcpu_cpu_seconds_total\{domain="capped",vcpu="0"\} (\S+)$/m.exec(text)?.[1],
    );
    process.stdout.write(`RESOURCES throttled ${throttled} s, vCPU 0 ${vcpu} s\n`);
    if (!(throttled > 1)) throw new Error(`throttled ${throttled}`);
    if (!(vcpu > 2)) throw new Error(`vCPU time ${vcpu}`);
  });
  await d.client.destroy("capped");

  // One guest serves both disk checks: vda is limited by the VMM's token bucket, vdb by the
  // kernel's io.max on the loop disk its image lives on (the lab's tmpfs has no disk).
  const sh = (cmd: string) => execFileSync("sh", ["-c", cmd], { stdio: "pipe" }).toString();
  const ioDir = join(d.dir, "iodisk");
  let loop = "";
  let diskConsole: ConsoleSession | undefined;
  let diskCgroup = "";
  /** MiB/s at which the guest reads `mib` MiB of `dev` with direct I/O. */
  const guestRead = async (c: ConsoleSession, tag: string, dev: string, mib: number) => {
    // busybox's dd prints no timing here: the guest's uptime before and after says it.
    c.type(
      `s=$(cut -d' ' -f1 /proc/uptime); dd if=${dev} of=/dev/null bs=1M count=${mib} iflag=direct 2>/dev/null; e=$(cut -d' ' -f1 /proc/uptime); echo ${tag}-$s-$e-T\n`,
    );
    const m = await waitFor(
      `${tag} dd`,
      () => new RegExp(`${tag}-([0-9.]+)-([0-9.]+)-T`).exec(c.output) ?? undefined,
      120_000,
    );
    return mib / (Number(m[2]) - Number(m[1]));
  };

  await check(
    "a disk limited to 10 MiB/s reads at about 10 MiB/s in the guest; 20 MiB/s after vessel limit",
    async () => {
      const image = join(d.dir, "limited.img");
      const { writeFileSync: write, truncateSync } = await import("node:fs");
      write(image, "");
      truncateSync(image, 128 * 2 ** 20);
      // The second disk's image has real blocks on an ext4 on a loop device, and is out of
      // the page cache when the guest reads it, so its reads reach the disk io.max meters.
      sh(`mkdir -p ${ioDir} && truncate -s 160M ${ioDir}.backing`);
      loop = sh(`losetup -f --show ${ioDir}.backing`).trim();
      sh(`mkfs.ext4 -q ${loop} && mount -t ext4 ${loop} ${ioDir}`);
      sh(`dd if=/dev/zero of=${ioDir}/io.img bs=1M count=40 conv=fsync 2>/dev/null`);
      sh("sync && echo 3 > /proc/sys/vm/drop_caches");
      const img = defaultImagePaths();
      const info = await d.client.create({
        name: "disk",
        memory: "256M",
        vcpus: 1,
        kernel: img.kernel,
        initrd: img.initrd,
        cmdline: "console=ttyS0 reboot=k panic=-1 quiet",
        // A 1 MiB burst: with the default (one second's worth) the first 10 MiB would come at
        // once and 48 MiB would average 12.6 MiB/s, which is the bucket working, not the rate.
        disks: [
          { path: image, limits: { bandwidth: 10 * 2 ** 20, bandwidthBurst: 2 ** 20 } },
          { path: join(ioDir, "io.img"), readOnly: true },
        ],
        memoryLimit: "600M",
        memorySoftLimit: "500M",
        ioWeight: 300,
        ioDevices: [{ device: join(ioDir, "io.img"), readBps: 8 * 2 ** 20 }],
      });
      diskCgroup = info.cgroup ?? "";
      const c = await ConsoleSession.connect(info.consoleSocket ?? "");
      diskConsole = c;
      await c.waitFor("vessel:/# ", 240_000);
      // 48 MiB with direct I/O: the first MiB comes from the burst, the rest at the limit.
      const rate = (tag: string) => guestRead(c, tag, "/dev/vda", 48);
      const limited = await rate("LIM10");
      await d.client.setDiskLimits("disk", 0, {
        bandwidth: 20 * 2 ** 20,
        bandwidthBurst: 2 ** 20,
      });
      const raised = await rate("LIM20");
      process.stdout.write(
        `RESOURCES disk read at 10 MiB/s limit: ${limited.toFixed(1)} MiB/s; at 20 MiB/s: ${raised.toFixed(1)} MiB/s\n`,
      );
      if (limited < 8 || limited > 12)
        throw new Error(`${limited.toFixed(1)} MiB/s under a 10 MiB/s limit`);
      if (raised < 15 || raised > 24)
        throw new Error(`${raised.toFixed(1)} MiB/s under a 20 MiB/s limit`);
    },
  );

  await check(
    "cgroup io.max (8 MiB/s on the image's loop disk) holds the guest's reads to it; io.weight, memory.max and memory.high are the spec's",
    async () => {
      try {
        if (!diskConsole || !diskCgroup) throw new Error("the disk domain did not start");
        const read = (f: string) => readFileSync(join(diskCgroup, f), "utf8").trim();
        const majMin = sh(`lsblk -dno MAJ:MIN ${loop}`).trim();
        const ioMax = read("io.max");
        if (ioMax !== `${majMin} rbps=8388608 wbps=max riops=max wiops=max`)
          throw new Error(`io.max "${ioMax}", expected ${majMin} at rbps=8388608`);
        if (!read("io.weight").split("\n").includes("default 300"))
          throw new Error(`io.weight "${read("io.weight")}"`);
        if (read("memory.max") !== String(600 * 2 ** 20))
          throw new Error(`memory.max ${read("memory.max")}`);
        if (read("memory.high") !== String(500 * 2 ** 20))
          throw new Error(`memory.high ${read("memory.high")}`);
        const rate = await guestRead(diskConsole, "IOMAX", "/dev/vdb", 32);
        const rbytes = Number(
          new RegExp(`^${majMin} rbytes=(\\d+)`, "m").exec(read("io.stat"))?.[1],
        );
        process.stdout.write(
          `RESOURCES io.max 8 MiB/s on ${loop} (${majMin}): the guest read vdb at ${rate.toFixed(1)} MiB/s; io.stat rbytes ${rbytes}\n`,
        );
        if (!(rbytes >= 32 * 2 ** 20)) throw new Error(`io.stat counts ${rbytes} bytes read`);
        if (rate < 6 || rate > 10) throw new Error(`${rate.toFixed(1)} MiB/s under 8 MiB/s`);
      } finally {
        diskConsole?.close();
        await d.client.destroy("disk").catch(() => {});
        await waitFor("the disk domain to go", async () =>
          (await d.client.list()).some((x) => x.name === "disk") ? undefined : true,
        ).catch(() => {});
        if (loop) sh(`umount ${ioDir}; losetup -d ${loop}; true`);
      }
    },
  );

  await check(
    "network limits: the guest receives at about 5 MiB/s, then 10 after vessel limit; it sends at about a third, then two thirds, of its unlimited rate",
    async () => {
      const tap = "vlim0";
      sh(`ip link del ${tap} 2>/dev/null; ip tuntap add dev ${tap} mode tap vnet_hdr`);
      sh(`ip addr add 10.203.0.1/24 dev ${tap} && ip link set ${tap} up`);
      // The host end: port 5001 times what the guest sends (first byte to end of stream);
      // port 5002 serves 20 MiB over HTTP, so busybox's wget fetches it and exits at its end
      // (the guest times its receiving).
      const received: number[] = [];
      const sink = createServer((sock) => {
        let t0 = 0;
        let n = 0;
        sock.on("data", (b) => {
          if (n === 0) t0 = performance.now();
          n += b.length;
        });
        sock.on("end", () => received.push(n / 2 ** 20 / ((performance.now() - t0) / 1000)));
      }).listen(5001, "10.203.0.1");
      const source = createServer((sock) => {
        sock.on("error", () => {});
        sock.once("data", () => {
          sock.write("HTTP/1.0 200 OK\r\nContent-Length: 20971520\r\n\r\n");
          sock.end(Buffer.alloc(20 * 2 ** 20));
        });
      }).listen(5002, "10.203.0.1");
      const limit = (mib: number) => ({
        bandwidth: Math.round(mib * 2 ** 20),
        bandwidthBurst: 256 * 1024,
      });
      try {
        const img = defaultImagePaths();
        const info = await d.client.create({
          name: "net",
          memory: "256M",
          vcpus: 1,
          kernel: img.kernel,
          initrd: img.initrd,
          cmdline: "console=ttyS0 reboot=k panic=-1 quiet vessel.ip=10.203.0.2/24",
          nets: [{ tap, limits: { rx: limit(5) } }],
        });
        const c = await ConsoleSession.connect(info.consoleSocket ?? "");
        await c.waitFor("vessel:/# ", 240_000);
        const send = async (tag: string) => {
          const before = received.length;
          c.type(`head -c 8388608 /dev/zero | nc 10.203.0.1 5001; echo ${tag}-SENT\n`);
          await c.waitFor(`${tag}-SENT`, 180_000);
          return waitFor(`${tag} at the host`, () => received[before], 30_000);
        };
        const receive = async (tag: string) => {
          c.type(
            `s=$(cut -d' ' -f1 /proc/uptime); wget -q -O /dev/null http://10.203.0.1:5002/; e=$(cut -d' ' -f1 /proc/uptime); echo ${tag}-$s-$e-R\n`,
          );
          const m = await waitFor(
            `${tag} receive`,
            () => new RegExp(`${tag}-([0-9.]+)-([0-9.]+)-R`).exec(c.output) ?? undefined,
            120_000,
          );
          return 20 / (Number(m[2]) - Number(m[1]));
        };
        // Sending is slow in the lab (the host side runs under emulation): what the guest
        // sends unlimited sets the scale, and the limits are below it, so they are what binds.
        const free = await send("FREE");
        const tx1 = Math.max(0.1, free / 3);
        await d.client.setNetLimits("net", 0, { rx: limit(5), tx: limit(tx1) });
        const at1 = { rx: await receive("R5"), tx: await send("T1") };
        await d.client.setNetLimits("net", 0, { rx: limit(10), tx: limit(2 * tx1) });
        const at2 = { rx: await receive("R10"), tx: await send("T2") };
        c.close();
        process.stdout.write(
          `RESOURCES network: receives ${at1.rx.toFixed(1)} MiB/s at a 5 MiB/s limit, ${at2.rx.toFixed(1)} at 10; sends ${free.toFixed(2)} MiB/s unlimited, ${at1.tx.toFixed(2)} at a ${tx1.toFixed(2)} MiB/s limit, ${at2.tx.toFixed(2)} at ${(2 * tx1).toFixed(2)}\n`,
        );
        for (const [what, got, want] of [
          ["received", at1.rx, 5],
          ["received", at2.rx, 10],
          ["sent", at1.tx, tx1],
          ["sent", at2.tx, 2 * tx1],
        ] as const) {
          if (got < want * 0.8 || got > want * 1.2)
            throw new Error(
              `${what} ${got.toFixed(2)} MiB/s under a ${want.toFixed(2)} MiB/s limit`,
            );
        }
      } finally {
        await d.client.destroy("net").catch(() => {});
        sink.close();
        source.close();
        sh(`ip link del ${tap} 2>/dev/null || true`);
      }
    },
  );

  await check("pinned vCPU threads: the kernel's affinity is the spec's", async () => {
    const info = await d.client.create({
      name: "pinned",
      memory: "32M",
      vcpus: 2,
      kernel: idle,
      vcpuPin: { "0": "1", "1": "2-3" },
      vmmCpus: "0",
    });
    const { vcpus } = await d.client.vcpus("pinned");
    const allowed = (tid: number) =>
      /^Cpus_allowed_list:\s*(\S+)$/m.exec(
        readFileSync(`/proc/${info.pid}/task/${tid}/status`, "utf8"),
      )?.[1];
    const got = vcpus.map((v) => allowed(v.tid));
    if (got.join(" ") !== "1 2-3") throw new Error(`vCPU threads allowed on ${got.join(" ")}`);
    const main = allowed(info.pid ?? 0);
    if (main !== "0") throw new Error(`the VMM's main thread allowed on ${main}`);
    await d.client.pinVcpu("pinned", 0, "3");
    const after = allowed((await d.client.vcpus("pinned")).vcpus[0]?.tid ?? 0);
    if (after !== "3") throw new Error(`after vcpu-pin: ${after}`);
    await d.client.destroy("pinned");
    await waitFor("the pinned domain to go", async () =>
      (await d.client.list()).some((x) => x.name === "pinned") ? undefined : true,
    );
  });
} finally {
  process.stdout.write(`RESOURCES-SCENARIO-DONE failures=${failures}\n`);
  if (failures) process.stdout.write(failureReport(d));
  await cleanUp(d);
}
process.exitCode = failures === 0 ? 0 : 1;
