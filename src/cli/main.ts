// The `vessel` command: subcommands in the manner of xl and virsh. Each one validates its
// flags up front and reports failure as one line on stderr with a non-zero exit.

import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";
import { UsageError } from "./args.js";

// Subcommands are imported when used: a VMM process should not carry the image builder,
// the lab harness or the progress bar in its resident memory.
const runModule = () => import("./run.js");
const imageLabModule = () => import("./image_lab.js");
const domainsModule = () => import("./domains.js");
const configModule = () => import("./config.js");

/** More vCPUs than this start their workers when the VM starts, as any worker can. */
const MAX_PRESTARTED = 16;

const program = new Command();
program
  .name("vessel")
  .description("A virtual machine monitor on Linux KVM and a Xen-style domain toolstack")
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) })
  .showHelpAfterError(false);

let exitCode = 0;
/** Set when vCPU workers were started ahead: exiting before they load aborts node. */
let settleWorkers: (() => Promise<void>) | undefined;
/** Far longer than a worker takes to load, even under emulation. */
const SETTLE_MS = 30_000;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

program
  .command("run")
  .description("boot a kernel on KVM with the serial console on this terminal (Ctrl-] quits)")
  .requiredOption("--kernel <file>", "bzImage or ELF vmlinux (PVH)")
  .option("--initrd <file>", "initial ramdisk")
  .option("--cmdline <text>", "kernel command line")
  .option("--memory <size>", "guest RAM, e.g. 512M or 2G (plain numbers are MiB)", "512M")
  .option("--cpus <n>", "vCPUs", "1")
  .option("--stats", "print exit counters when the VM ends")
  .option("--json", "print the outcome and counters as JSON on stderr")
  .option(
    "--disk <path[,ro][,serial=S]>",
    "a raw disk image as virtio-blk (repeatable)",
    collect,
    [],
  )
  .option(
    "--net <tap=NAME[,mac=MAC]>",
    "a virtio-net device on a TAP interface (repeatable)",
    collect,
    [],
  )
  .option(
    "--vsock <cid=N,uds=PATH>",
    "a virtio-vsock device; host programs reach the guest through the Unix socket PATH",
    collect,
    [],
  )
  .option("--rng", "a virtio-rng device fed from the host's getrandom")
  .option("--balloon", "a virtio-balloon device (target set on the control socket)")
  .option("--console <serial|virtio>", "which device is the terminal: COM1 or hvc0", "serial")
  .option(
    "--control-socket <path>",
    "a Unix socket taking JSON-line requests (power-button, stop, stats, balloon)",
  )
  .option("--console-socket <path>", "serve the console on this Unix socket, not the terminal")
  .option("--outcome-file <path>", "write how the VM ended here as JSON (for a supervisor)")
  .option("--name <name>", "domain name, shown as the process title")
  .option("--slow-kvm", "boot even on a /dev/kvm that interprets guest code (it will be very slow)")
  .option(
    "--jail",
    "run confined: own mount and PID namespaces, a minimal root, an unprivileged user, seccomp",
  )
  .option("--jail-uid <n>", "with --jail: the VMM's uid (default 900000)")
  .option("--jail-gid <n>", "with --jail: the VMM's gid (default 900000)")
  .action(async (opts) => {
    // The vCPU workers start now, so their start-up overlaps the imports below and the VM's
    // set-up (src/vmm/vcpu_spawn.ts). Not under --jail: a worker still loading its modules
    // when the root is switched and seccomp applied could die mid-load; jailed vCPUs start
    // their workers inside the jail, as before. A bad --cpus is left for run.ts to report.
    const cpus = Number(opts.cpus);
    if (!opts.jail && Number.isInteger(cpus) && cpus >= 1 && cpus <= MAX_PRESTARTED) {
      const spawn = await import("../vmm/vcpu_spawn.js");
      spawn.prestartVcpuWorkers(cpus);
      settleWorkers = () => spawn.spareWorkersSettled(SETTLE_MS);
    }
    exitCode = await (await runModule()).runCommand(opts);
  });

const image = program.command("image").description("guest images");
image
  .command("build")
  .description("build the default guest (Debian's cloud kernel + busybox initramfs) if missing")
  .option("--force", "rebuild even when cached")
  .option("--json", "print the result as JSON")
  .action(async (opts) => {
    exitCode = await (await imageLabModule()).imageBuildCommand(opts);
  });

const config = program.command("config").description("domain configurations");
config
  .command("convert")
  .description("print a native domain spec converted from xl.cfg, libvirt XML or Firecracker JSON")
  .argument("<file>", "the configuration file")
  .option("--from <format>", "its format: native, xl, libvirt or firecracker (default: detected)")
  .option("--name <name>", "the domain name (Firecracker configs have none; overrides the others)")
  .option("--json", "print JSON instead of YAML")
  .action(async (file: string, opts) => {
    exitCode = await (await configModule()).configConvertCommand(file, opts);
  });

program
  .command("lab")
  .description("run a command inside the lab (QEMU TCG with SVM, where /dev/kvm is real KVM)")
  .option("--cpus <n>", "lab vCPUs", "4")
  .option("--memory <size>", "lab memory", "6G")
  .option("--timeout <seconds>", "limit for the command", "1800")
  .option(
    "--console",
    "show L1's console on stderr as it runs (the command's output comes at its end)",
  )
  .argument("<command...>", "command to run (after --)")
  .action(async (command: string[], opts) => {
    exitCode = await (await imageLabModule()).labCommand(command, opts);
  });

program
  .command("up")
  .description(
    "build the default guest if missing and boot it to a shell (through the lab where needed)",
  )
  .option("--cpus <n>", "vCPUs", "2")
  .option("--memory <size>", "guest RAM", "512M")
  .action(async (opts) => {
    exitCode = await (await imageLabModule()).upCommand(
      opts,
      fileURLToPath(new URL("../../../bin/vessel.js", import.meta.url)),
    );
  });

program
  .command("daemon")
  .description("the control plane: serve the API and supervise every domain's VMM process")
  .option("--state-dir <dir>", "definitions (default $XDG_STATE_HOME/vessel or /var/lib/vessel)")
  .option(
    "--runtime-dir <dir>",
    "sockets and run files (default $XDG_RUNTIME_DIR/vessel or /run/vessel)",
  )
  .option("--socket <path>", "API socket (default <runtime-dir>/api.sock)")
  .option("--listen <host:port>", "also serve the API on TCP (needs --token-file)")
  .option("--token-file <file>", "bearer tokens accepted on TCP, one per line")
  .option("--slow-kvm", "let VMMs boot on a /dev/kvm that interprets guest code (test hosts)")
  .option("--no-jail", "run VMMs without the jail (namespaces, own uid, seccomp)")
  .option("--no-limits", "run domains without cgroups (no CPU or memory limits)")
  .action(async (opts) => {
    exitCode = await (await import("./daemon_cmd.js")).daemonCommand(opts);
  });

/** Options every command that talks to the daemon takes. */
function daemonCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option(
      "--connect <socket|url>",
      "the daemon: its socket path or http://host:port ($VESSEL_CONNECT)",
    )
    .option("--token-file <file>", "bearer token for a TCP daemon ($VESSEL_TOKEN)")
    .option("--json", "print JSON for programs");
}

daemonCommand("create", "start a transient domain from a config file (xl create)")
  .argument("<file>", "native spec (YAML/JSON), xl.cfg, libvirt XML or Firecracker JSON")
  .option(
    "--from <format>",
    "the file's format: native, xl, libvirt, firecracker (default: detect)",
  )
  .option("-c, --console", "attach to its console once started")
  .option("--name <name>", "the domain's name (Firecracker configs have none)")
  .action(async (file: string, opts) => {
    exitCode = await (await domainsModule()).createCommand(file, opts);
  });
daemonCommand("define", "define a persistent domain from a config file (virsh define)")
  .argument("<file>", "native spec (YAML/JSON), xl.cfg, libvirt XML or Firecracker JSON")
  .option(
    "--from <format>",
    "the file's format: native, xl, libvirt, firecracker (default: detect)",
  )
  .option("--name <name>", "the domain's name (Firecracker configs have none)")
  .action(async (file: string, opts) => {
    exitCode = await (await domainsModule()).defineCommand(file, opts);
  });
for (const [name, description] of [
  ["undefine", "forget a domain's definition (a running domain carries on as transient)"],
  ["start", "start a defined domain"],
  ["reboot", "reboot a domain through ACPI (power button, then start again)"],
  ["destroy", "force a domain off at once"],
  ["pause", "stop a domain's vCPUs"],
  ["resume", "let a paused domain's vCPUs run again"],
] as const) {
  const cmd = daemonCommand(name, description).argument("<domain>");
  if (name === "start") cmd.option("-c, --console", "attach to its console once started");
  cmd.action(async (domain: string, opts) => {
    exitCode = await (await domainsModule()).actionCommand(name, domain, opts);
  });
}
daemonCommand("shutdown", "press the domain's ACPI power button (a clean shutdown)")
  .argument("<domain>")
  .option("--wait", "wait until it is off")
  .option(
    "--timeout <seconds>",
    "with --wait: give up after this long (an error; it keeps running)",
  )
  .action(async (domain: string, opts) => {
    exitCode = await (await domainsModule()).shutdownCommand(domain, opts);
  });
daemonCommand("list", "list running domains (--all: defined ones too)")
  .option("--all", "include domains that are shut off")
  .action(async (opts) => {
    exitCode = await (await domainsModule()).listCommand(opts);
  });
daemonCommand("mem-set", "set a domain's memory through its balloon (xl mem-set)")
  .argument("<domain>")
  .argument("<size>", "e.g. 256M or 1G (plain numbers are MiB)")
  .action(async (domain: string, size: string, opts) => {
    exitCode = await (await domainsModule()).memSetCommand(domain, size, opts);
  });
daemonCommand("vcpu-pin", "pin a vCPU of a running domain to host CPUs (xl vcpu-pin)")
  .argument("<domain>")
  .argument("<vcpu>", "vCPU number")
  .argument("<cpus>", "host CPU list, e.g. 0-1,3")
  .action(async (domain: string, vcpu: string, cpus: string, opts) => {
    exitCode = await (await domainsModule()).vcpuPinCommand(domain, vcpu, cpus, opts);
  });
daemonCommand("limit", "set a disk's or network device's I/O limits at runtime (token buckets)")
  .argument("<domain>")
  .argument("<device>", "a disk: vda, vdb, ... or 0, 1, ...; a network device: net0, net1, ...")
  .option("--bandwidth <rate>", "bytes per second, e.g. 10M")
  .option("--bandwidth-burst <bytes>", "bucket size for bandwidth (default one second's worth)")
  .option("--ops <n>", "requests (disk) or frames (network) per second")
  .option("--ops-burst <n>", "bucket size for operations")
  .option("--rx", "network: limit only what the guest receives")
  .option("--tx", "network: limit only what the guest sends")
  .option("--none", "remove the limits")
  .action(async (domain: string, disk: string, opts) => {
    exitCode = await (await domainsModule()).limitCommand(domain, disk, opts);
  });
daemonCommand("vcpu-list", "each vCPU's host thread, CPU time and affinity (xl vcpu-list)")
  .argument("<domain>")
  .action(async (domain: string, opts) => {
    exitCode = await (await domainsModule()).vcpuListCommand(domain, opts);
  });
daemonCommand("sched", "set a domain's CPU cap and weight (xl sched-credit -c/-w)")
  .argument("<domain>")
  .option("--cap <percent>", "ceiling in percent of one host CPU (none removes it)")
  .option("--weight <n>", "share on a contended host, xl's scale: 256 is the default")
  .action(async (domain: string, opts) => {
    exitCode = await (await domainsModule()).schedCommand(domain, opts);
  });
daemonCommand("top", "a live table of running domains (CPU, exits, I/O, balloon, memory)")
  .option("--interval <seconds>", "refresh period", "2")
  .option("--iterations <n>", "stop after this many tables")
  .action(async (opts) => {
    exitCode = await (await domainsModule()).topCommand(opts);
  });
daemonCommand("info", "a domain's state, resources and counters")
  .argument("<domain>")
  .action(async (domain: string, opts) => {
    exitCode = await (await domainsModule()).infoCommand(domain, opts);
  });
daemonCommand("console", "attach to a domain's console (Ctrl-] detaches; the domain keeps running)")
  .argument("<domain>")
  .action(async (domain: string, opts) => {
    exitCode = await (await domainsModule()).consoleCommand(domain, opts);
  });
daemonCommand("events", "print lifecycle events as they happen")
  .option("--count <n>", "exit after this many events")
  .option("--domain <name>", "only this domain's events")
  .action(async (opts) => {
    exitCode = await (await domainsModule()).eventsCommand(opts);
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // Commander already printed its one-line message (or help); keep its exit code.
    exitCode = e.exitCode;
  } else if (e instanceof UsageError) {
    process.stderr.write(`vessel: ${e.message}\n`);
    exitCode = 1;
  } else {
    process.stderr.write(`vessel: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.VESSEL_DEBUG) console.error(e);
    exitCode = 1;
  }
}
// Let piped output drain first: process.exit() does not wait for it, and a long --json
// answer to a pipe would be cut short.
await new Promise<void>((resolve) => process.stdout.write("", () => resolve()));
await settleWorkers?.();
process.exit(exitCode);
