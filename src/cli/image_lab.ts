// `vessel image build`, `vessel lab` and `vessel up`: the default guest, the lab, and the
// one command that takes a newcomer from nothing to a shell inside a Vessel guest.

import cliProgress from "cli-progress";
import { buildDefaultImage, defaultImagePaths, imageIsBuilt } from "../image/mod.js";
import { hostKvmCanBootLinux, labAvailable, runInLab, shQuote } from "../lab/mod.js";
import { parseCount, parseSize, UsageError } from "./args.js";
import { runCommand } from "./run.js";

async function ensureImage(json: boolean, force = false) {
  const interactive = process.stderr.isTTY === true && !json;
  const bar = interactive
    ? new cliProgress.SingleBar(
        { format: "building default guest [{bar}] {value}/{total} {step}", stream: process.stderr },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  let started = false;
  const built = await buildDefaultImage({
    force,
    progress: (step, done, total) => {
      if (bar) {
        if (!started) bar.start(total, done, { step });
        else bar.update(done, { step });
      } else if (!json) {
        process.stderr.write(`vessel: image: [${done}/${total}] ${step}\n`);
      }
      started = true;
    },
  });
  bar?.stop();
  return built;
}

export async function imageBuildCommand(opts: {
  force?: boolean;
  json?: boolean;
}): Promise<number> {
  const built = await ensureImage(opts.json === true, opts.force === true);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(built)}\n`);
  } else {
    process.stdout.write(
      `${built.cached ? "cached" : "built"}: kernel ${built.kernel}\n        initrd ${built.initrd}\n        (${built.info.kernelPackage} ${built.info.kernelVersion})\n`,
    );
  }
  return 0;
}

export async function labCommand(
  command: string[],
  opts: { cpus: string; memory: string; timeout: string; console?: boolean },
): Promise<number> {
  const cpus = parseCount("--cpus", opts.cpus, 1, 16);
  const memoryMiB = Math.floor(parseSize("--memory", opts.memory) / 2 ** 20);
  const timeoutSec = parseCount("--timeout", opts.timeout, 1, 86400);
  const avail = labAvailable();
  if (!avail.ok) throw new UsageError(`the lab cannot run here: ${avail.reason}`);
  const interactive = process.stdin.isTTY === true;
  const run = await runInLab(
    [{ name: "command", script: command.map(shQuote).join(" "), timeoutSec }],
    {
      cpus,
      memoryMiB,
      interactive,
      // A long command's own output reaches us only when it ends; L1's console (where a
      // command can write progress to /dev/console) shows what it is doing meanwhile.
      ...(opts.console ? { log: (line: string) => process.stderr.write(`lab| ${line}\n`) } : {}),
    },
  );
  const r = run.results[0];
  if (!r) throw new UsageError("the lab ended before running the command");
  if (!interactive) process.stdout.write(r.output);
  if (r.timedOut) throw new UsageError(`lab: the command did not finish in ${timeoutSec} s`);
  return r.exitCode ?? 1;
}

export async function upCommand(
  opts: { cpus: string; memory: string },
  vesselBin: string,
): Promise<number> {
  const cpus = parseCount("--cpus", opts.cpus, 1, 254);
  parseSize("--memory", opts.memory);
  if (!imageIsBuilt()) await ensureImage(false);
  const img = defaultImagePaths();
  const kvm = hostKvmCanBootLinux();
  if (kvm.ok) {
    return runCommand({
      kernel: img.kernel,
      initrd: img.initrd,
      memory: opts.memory,
      cpus: String(cpus),
    });
  }
  process.stderr.write(
    `vessel: /dev/kvm here cannot boot Linux (${kvm.reason}); booting the default guest inside the lab (real KVM under QEMU TCG with SVM)\n`,
  );
  const avail = labAvailable();
  if (!avail.ok) throw new UsageError(`the lab cannot run here either: ${avail.reason}`);
  const script = [
    "node",
    vesselBin,
    "run",
    "--kernel",
    img.kernel,
    "--initrd",
    img.initrd,
    "--memory",
    opts.memory,
    "--cpus",
    String(cpus),
  ]
    .map(shQuote)
    .join(" ");
  const run = await runInLab([{ name: "up", script, timeoutSec: 86400 }], {
    cpus: Math.max(2, cpus),
    interactive: process.stdin.isTTY === true,
    log: process.stdin.isTTY === true ? () => {} : (l) => process.stderr.write(`${l}\n`),
  });
  const r = run.results[0];
  if (r && process.stdin.isTTY !== true) process.stdout.write(r.output);
  return r?.exitCode ?? 1;
}
