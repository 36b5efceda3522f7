// The control plane with real Linux guests (issue #4's lab scenario), run inside the lab by
// tests/lab/domain_cases.ts: a `vessel daemon` defines one domain from each config format
// (native YAML, xl.cfg, libvirt XML, Firecracker JSON) through the CLI, starts them, talks
// to each console (detach and attach again), survives a SIGKILL of itself, sees a killed VMM
// as crashed, reboots one domain and shuts the others down with the power button. Each step
// prints `CHECK <what> ok` or `CHECK <what> FAILED: why`; the test on the host reads those.

import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { defaultImagePaths, INIT_READY_MARKER } from "../../src/image/mod.js";
import {
  ConsoleSession,
  cleanUp,
  type DaemonUnderTest,
  failureReport,
  startDaemon,
  stopDaemon,
  VESSEL_BIN,
  waitFor,
} from "../daemon_harness.js";

const execFileAsync = promisify(execFile);
const CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet";
const img = defaultImagePaths();
let failures = 0;

async function check(what: string, fn: () => Promise<void>): Promise<void> {
  const t0 = Date.now();
  try {
    await fn();
    process.stdout.write(`CHECK ${what} ok (${Date.now() - t0} ms)\n`);
  } catch (e) {
    failures++;
    process.stdout.write(
      `CHECK ${what} FAILED: ${e instanceof Error ? e.message : String(e)}`.replaceAll("\n", " ") +
        "\n",
    );
  }
}

/** Run the `vessel` CLI against the daemon (concurrently with others: L1 is slow to start Node). */
async function vessel(d: DaemonUnderTest, ...args: string[]): Promise<string> {
  const r = await execFileAsync(process.execPath, [VESSEL_BIN, ...args, "--connect", d.socket], {
    encoding: "utf8",
    timeout: 240_000,
  }).catch((e: { code?: number; stderr?: string }) => {
    throw new Error(`vessel ${args.join(" ")}: exit ${e.code}: ${String(e.stderr ?? e).trim()}`);
  });
  return r.stdout + r.stderr;
}

function writeConfigs(dir: string): Record<string, string> {
  const files = {
    nat: join(dir, "nat.yaml"),
    xl: join(dir, "xl.cfg"),
    lv: join(dir, "lv.xml"),
    fc: join(dir, "fc.json"),
  };
  writeFileSync(
    files.nat,
    `# native spec
name: nat
memory: 256M
vcpus: 2
kernel: ${img.kernel}
initrd: ${img.initrd}
cmdline: "${CMDLINE}"
onReboot: restart
balloon: true
`,
  );
  writeFileSync(
    files.xl,
    `# xl.cfg(5)
name = "xl"
type = "pvh"
memory = 256
vcpus = 1
kernel = "${img.kernel}"
ramdisk = "${img.initrd}"
cmdline = "${CMDLINE}"
on_poweroff = "destroy"
on_crash = "preserve"
`,
  );
  writeFileSync(
    files.lv,
    `<domain type='kvm'>
  <name>lv</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='MiB'>256</memory>
  <currentMemory unit='MiB'>256</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>${img.kernel}</kernel>
    <initrd>${img.initrd}</initrd>
    <cmdline>${CMDLINE}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
`,
  );
  writeFileSync(
    files.fc,
    `${JSON.stringify(
      {
        "boot-source": {
          kernel_image_path: img.kernel,
          initrd_path: img.initrd,
          boot_args: CMDLINE,
        },
        drives: [],
        "machine-config": { vcpu_count: 1, mem_size_mib: 256 },
      },
      null,
      2,
    )}\n`,
  );
  return files;
}

const d = await startDaemon({ slowKvm: false });
const names = ["nat", "xl", "lv", "fc"];
let earlierDaemonLogs = "";
try {
  const files = writeConfigs(d.dir);
  // The four domains go through the CLI side by side (each is its own process anyway).
  await Promise.all(
    names.map(async (name) => {
      await check(`define ${name}`, async () => {
        const file = files[name as keyof typeof files] ?? "";
        // Firecracker's file has no name: it comes from the file name.
        await vessel(d, "define", file);
        const info = await d.client.get(name);
        if (info.state !== "shutoff") throw new Error(`state ${info.state}`);
      });
      await check(`start ${name}`, async () => void (await vessel(d, "start", name)));
    }),
  );

  // Each console: the guest's shell answers; detach, attach again, new output arrives.
  await Promise.all(
    names.map((name) =>
      check(`console ${name}`, async () => {
        const info = await d.client.get(name);
        const first = await ConsoleSession.connect(info.consoleSocket ?? "");
        await first.waitFor(INIT_READY_MARKER, 240_000);
        await first.waitFor("vessel:/# ", 60_000);
        first.type(`echo MARK-${name}-$((6*7))\n`);
        await first.waitFor(`MARK-${name}-42`);
        first.close();
        const second = await ConsoleSession.connect(info.consoleSocket ?? "");
        second.type(`echo AGAIN-${name}-$((6*7))\n`);
        await second.waitFor(`AGAIN-${name}-42`);
        second.close();
      }),
    ),
  );

  await check(
    "mem-set nat: the guest's MemTotal minus balloon, its MemFree and the VMM's resident memory go down",
    async () => {
      const info = await d.client.get("nat");
      const c = await ConsoleSession.connect(info.consoleSocket ?? "");
      // Touch memory first, so the pages the balloon takes are ones the host had to back.
      c.type(
        "head -c 150000000 /dev/zero > /tmp/fill; rm /tmp/fill; sed -n 's/^MemFree: *\\([0-9]*\\).*/BEFORE-\\1-KB/p' /proc/meminfo\n",
      );
      const before = Number(
        await waitFor("MemTotal before", () => /BEFORE-(\d+)-KB/.exec(c.output)?.[1], 120_000),
      );
      const rss0 = (await d.client.memory("nat")).vmmResidentBytes ?? 0;
      await vessel(d, "mem-set", "nat", "128M");
      const report = await waitFor(
        "the balloon to reach its target",
        async () => {
          const m = await d.client.memory("nat");
          const actual = ((m.balloon as { actualPages?: number } | null)?.actualPages ?? 0) * 4096;
          return actual >= m.bootBytes - m.targetBytes - 4 * 2 ** 20 ? m : undefined;
        },
        120_000,
      );
      c.type("sed -n 's/^MemFree: *\\([0-9]*\\).*/AFTER-\\1-KB/p' /proc/meminfo\n");
      const after = Number(
        await waitFor("MemTotal after", () => /AFTER-(\d+)-KB/.exec(c.output)?.[1]),
      );
      c.close();
      const rss1 = report.vmmResidentBytes ?? 0;
      const balloonKb =
        (((report.balloon as { actualPages?: number }).actualPages ?? 0) * 4096) / 1024;
      process.stdout.write(
        `MEMSET guest MemFree ${before} -> ${after} kB, balloon ${balloonKb} kB (MemTotal minus balloon lower by that), VMM RSS ${Math.round(rss0 / 2 ** 20)} -> ${Math.round(rss1 / 2 ** 20)} MiB\n`,
      );
      // Our balloon offers DEFLATE_ON_OOM, so Linux keeps MemTotal and counts the balloon
      // as used: the guest's free memory drops by what it gave back.
      if (!(balloonKb > 120_000)) throw new Error(`balloon holds only ${balloonKb} kB`);
      if (!(after < before - 100_000)) throw new Error(`MemFree ${before} -> ${after} kB`);
      if (!(rss1 < rss0 - 50 * 2 ** 20)) throw new Error(`RSS ${rss0} -> ${rss1}`);
    },
  );

  await check("daemon SIGKILL and restart finds every domain", async () => {
    const before = new Map((await d.client.list()).map((x) => [x.name, x.pid]));
    await stopDaemon(d, "SIGKILL");
    earlierDaemonLogs += d.log();
    const again = await startDaemon({ dir: d.dir, slowKvm: false });
    Object.assign(d, again);
    for (const x of await d.client.list()) {
      if (x.state !== "running" || x.pid !== before.get(x.name))
        throw new Error(`${x.name}: ${x.state}, pid ${x.pid} (was ${before.get(x.name)})`);
    }
    const listed = await vessel(d, "list");
    for (const n of names)
      if (!new RegExp(`^${n}\\s+running`, "m").test(listed)) throw new Error(listed);
  });

  await check("kill -9 of a VMM: crashed, on_crash=preserve applied", async () => {
    const pid = (await d.client.get("xl")).pid ?? 0;
    process.kill(pid, "SIGKILL");
    const info = await waitFor("xl to be crashed", async () => {
      const i = await d.client.get("xl");
      return i.state === "crashed" ? i : undefined;
    });
    if (info.reason !== "killed") throw new Error(`reason ${info.reason}`);
    await vessel(d, "destroy", "xl");
    if ((await d.client.get("xl")).state !== "shutoff") throw new Error("not shut off");
  });

  await check("reboot nat through ACPI: it comes back with a new VMM", async () => {
    const pid = (await d.client.get("nat")).pid;
    await vessel(d, "reboot", "nat");
    const info = await waitFor(
      "nat to run again",
      async () => {
        const i = await d.client.get("nat");
        return i.state === "running" && i.pid !== null && i.pid !== pid ? i : undefined;
      },
      180_000,
    );
    if (!info.consoleSocket) throw new Error(`no console socket: ${JSON.stringify(info)}`);
    const c = await ConsoleSession.connect(info.consoleSocket);
    await c.waitFor(INIT_READY_MARKER, 240_000);
    c.close();
  });

  await Promise.all(
    ["nat", "lv", "fc"].map((name) =>
      check(`shutdown --wait ${name} through the power button`, async () => {
        await vessel(d, "shutdown", name, "--wait", "--timeout", "150");
        const i = await d.client.get(name);
        if (i.state !== "shutoff" || i.reason !== "shutdown")
          throw new Error(`${i.state} (${i.reason})`);
      }),
    ),
  );
} finally {
  process.stdout.write(`DOMAIN-SCENARIO-DONE failures=${failures}\n`);
  if (failures) process.stdout.write(failureReport(d, earlierDaemonLogs));
  await cleanUp(d);
}
process.exitCode = failures === 0 ? 0 : 1;
