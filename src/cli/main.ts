// The `vessel` command: subcommands in the manner of xl and virsh. Each one validates its
// flags up front and reports failure as one line on stderr with a non-zero exit.

import { fileURLToPath } from "node:url";
import { Command, CommanderError } from "commander";
import { UsageError } from "./args.js";

// Subcommands are imported when used: a VMM process should not carry the image builder,
// the lab harness or the progress bar in its resident memory.
const runModule = () => import("./run.js");
const imageLabModule = () => import("./image_lab.js");

const program = new Command();
program
  .name("vessel")
  .description("A virtual machine monitor on Linux KVM and a Xen-style domain toolstack")
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) })
  .showHelpAfterError(false);

let exitCode = 0;

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
  .option("--slow-kvm", "boot even on a /dev/kvm that interprets guest code (it will be very slow)")
  .action(async (opts) => {
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

program
  .command("lab")
  .description("run a command inside the lab (QEMU TCG with SVM, where /dev/kvm is real KVM)")
  .option("--cpus <n>", "lab vCPUs", "4")
  .option("--memory <size>", "lab memory", "6G")
  .option("--timeout <seconds>", "limit for the command", "1800")
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
process.exit(exitCode);
