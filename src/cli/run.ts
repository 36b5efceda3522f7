// `vessel run`: boot a kernel on KVM with the serial console on the terminal. Validates
// every flag before touching KVM, so a mistake costs one line, not a half-started VM.

import { statSync } from "node:fs";
import { isElf, KernelImageError, parseBzImage, parseElf } from "../arch/x86/mod.js";
import { VirtioBalloon } from "../devices/virtio/balloon/mod.js";
import { VirtioBlock } from "../devices/virtio/block/mod.js";
import { VirtioConsole } from "../devices/virtio/console/mod.js";
import { type NetLimits, VirtioNet } from "../devices/virtio/net/mod.js";
import type { LimitConfig } from "../devices/virtio/rate_limiter.js";
import {
  FdWatcher,
  HostError,
  hostKvmCanBootLinux,
  libc,
  MissingCapabilityError,
} from "../host/mod.js";
import type { JailOptions } from "../jail/mod.js";
import { GuestMemoryError } from "../memory/mod.js";
import type { VirtioDevice } from "../virtio/device.js";
import { writeFileAtomic } from "../vmm/atomic_file.js";
import { ConsoleServer } from "../vmm/console_server.js";
import { type ControlHandler, ControlServer } from "../vmm/control.js";
import { describeOutcome, OUTCOME_EXIT_CODE, type Outcome, Vm } from "../vmm/vm.js";
import { parseCount, parseSize, UsageError } from "./args.js";
import { closeDevices, openDevices, parseDisk, parseNet, parseVsock } from "./devices.js";

export interface RunFlags {
  kernel: string;
  initrd?: string;
  cmdline?: string;
  memory?: string;
  cpus?: string;
  stats?: boolean;
  json?: boolean;
  /** Boot even where /dev/kvm is known to interpret guest code (very slow; usually fails). */
  slowKvm?: boolean;
  disk?: string[];
  net?: string[];
  rng?: boolean;
  balloon?: boolean;
  /** --vsock values (commander collects repeats so that a second one can be refused). */
  vsock?: string[];
  /** "serial" (default): the terminal is COM1. "virtio": the terminal is hvc0. */
  console?: string;
  controlSocket?: string;
  /** Serve the console on this Unix socket instead of the terminal (the daemon's way). */
  consoleSocket?: string;
  /** Write the outcome here (atomically) before the control socket closes. */
  outcomeFile?: string;
  /** The domain's name, shown in `ps` as the process title. */
  name?: string;
  /** Run the VMM in its jail (namespaces, minimal root, its own user, seccomp). */
  jail?: boolean;
  jailUid?: string;
  jailGid?: string;
}

export const DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet";
/** Ctrl-] detaches, as in telnet, virsh console and Firecracker users' habits. */
const QUIT_BYTE = 0x1d;

interface Input {
  bytes: Uint8Array;
  close(): void;
}

function readInput(flag: string, path: string, limit: number): Input {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new UsageError(`${flag}: ${path} is not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    throw new UsageError(`${flag}: cannot read ${path} (${code})`);
  }
  if (size === 0) throw new UsageError(`${flag}: ${path} is empty`);
  if (size > limit) throw new UsageError(`${flag}: ${path} is larger than guest memory`);
  try {
    const mapping = libc.mapFile(path, size);
    return { bytes: new Uint8Array(mapping.buffer), close: () => libc.munmap(mapping) };
  } catch (e) {
    throw new UsageError(
      `${flag}: cannot read ${path} (${e instanceof HostError ? e.code : String(e)})`,
    );
  }
}

/** Check everything a person gave us; returns the loaded inputs. */
export function validateRunFlags(flags: RunFlags) {
  const memoryBytes = parseSize("--memory", flags.memory ?? "512M");
  if (memoryBytes % 4096 !== 0) throw new UsageError("--memory: must be a multiple of 4 KiB");
  if (memoryBytes < 16 * 2 ** 20)
    throw new UsageError("--memory: too little memory (at least 16M)");
  const cpus = parseCount("--cpus", flags.cpus ?? "1", 1, 254);
  if (!flags.kernel) throw new UsageError("--kernel: required");
  const kernel = readInput("--kernel", flags.kernel, memoryBytes);
  let initrd: Input | undefined;
  try {
    if (isElf(kernel.bytes)) parseElf(kernel.bytes);
    else parseBzImage(kernel.bytes);
    initrd = flags.initrd ? readInput("--initrd", flags.initrd, memoryBytes) : undefined;
  } catch (e) {
    kernel.close();
    if (e instanceof KernelImageError)
      throw new UsageError(`--kernel: ${flags.kernel}: ${e.message}`);
    throw e;
  }
  for (const d of flags.disk ?? []) parseDisk(d);
  for (const n of flags.net ?? []) parseNet(n);
  const vsocks = flags.vsock ?? [];
  if (vsocks.length > 1) {
    throw new UsageError("--vsock: at most one vsock device (the guest's driver takes one)");
  }
  for (const v of vsocks) parseVsock(v);
  const consoleKind = flags.console ?? "serial";
  if (consoleKind !== "serial" && consoleKind !== "virtio") {
    throw new UsageError(`--console: "${consoleKind}" is not serial or virtio`);
  }
  const cmdline =
    flags.cmdline ??
    (consoleKind === "virtio"
      ? DEFAULT_CMDLINE.replace("console=ttyS0", "console=hvc0")
      : DEFAULT_CMDLINE);
  return { memoryBytes, cpus, kernel, initrd, cmdline };
}

/** Only `vessel run --jail` loads the jail's code. */
const jailModule = () => import("../jail/mod.js");

/** --jail: check its flags; the first time through, relaunch in namespaces of its own. */
async function prepareJail(flags: RunFlags): Promise<JailOptions | undefined> {
  if (!flags.jail) {
    if (flags.jailUid !== undefined || flags.jailGid !== undefined)
      throw new UsageError("--jail-uid/--jail-gid: only with --jail");
    return undefined;
  }
  const jail = await jailModule();
  let options: JailOptions;
  try {
    options = {
      uid: jail.parseJailId("--jail-uid", flags.jailUid),
      gid: jail.parseJailId("--jail-gid", flags.jailGid),
      outcomeFile: flags.outcomeFile,
      taps: (flags.net ?? []).map((n) => parseNet(n).tap),
      vsockUds: flags.vsock?.[0] !== undefined ? parseVsock(flags.vsock[0]).uds : undefined,
    };
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw e;
  }
  if (!jail.relaunched()) {
    // Mistakes in the other flags cost one line here, before any namespace exists.
    const input = validateRunFlags(flags);
    input.kernel.close();
    input.initrd?.close();
    try {
      jail.relaunchInNamespaces();
    } catch (e) {
      throw new UsageError(`--jail: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return options;
}

export async function runCommand(flags: RunFlags): Promise<number> {
  const jailOptions = await prepareJail(flags);
  const input = validateRunFlags(flags);
  if (!flags.slowKvm) {
    const kvm = hostKvmCanBootLinux();
    if (!kvm.ok) {
      input.kernel.close();
      input.initrd?.close();
      throw new UsageError(
        `/dev/kvm here cannot boot Linux (${kvm.reason}); run it in the lab: vessel lab -- vessel run ...`,
      );
    }
  }
  if (flags.name) process.title = `vessel-vmm:${flags.name}`;
  // Under the daemon the console is a socket; input reaches the guest once the VM exists.
  let consoleInput: (bytes: Uint8Array) => void = () => {};
  let consoleServer: ConsoleServer | undefined;
  if (flags.consoleSocket) {
    try {
      consoleServer = await ConsoleServer.listen(flags.consoleSocket, (b) => consoleInput(b));
    } catch (e) {
      input.kernel.close();
      input.initrd?.close();
      throw new UsageError(`--console-socket: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const watcher = new FdWatcher();
  const toTerminal = consoleServer
    ? (bytes: Uint8Array) => consoleServer.write(bytes)
    : (bytes: Uint8Array) => {
        process.stdout.write(Buffer.from(bytes));
      };
  let devices: VirtioDevice[];
  // A jailed VMM lives in an empty network namespace; its TAPs are the host's.
  const inHostNetwork = jailOptions
    ? (await jailModule()).withHostNetwork
    : <T>(open: () => Promise<T>) => open();
  try {
    devices = await inHostNetwork(() =>
      openDevices(
        {
          disks: flags.disk ?? [],
          nets: flags.net ?? [],
          rng: flags.rng === true,
          balloon: flags.balloon === true,
          ...(flags.vsock?.[0] !== undefined ? { vsock: flags.vsock[0] } : {}),
          ...(flags.console === "virtio" ? { virtioConsoleOut: toTerminal } : {}),
        },
        watcher,
      ),
    );
  } catch (e) {
    watcher.close();
    input.kernel.close();
    input.initrd?.close();
    await consoleServer?.close();
    throw e;
  }
  let vm: Vm;
  try {
    vm = Vm.build({
      virtio: devices,
      watcher,
      memoryBytes: input.memoryBytes,
      cpus: input.cpus,
      boot: {
        kind: "linux",
        kernel: input.kernel.bytes,
        initrd: input.initrd?.bytes,
        cmdline: input.cmdline,
      },
      consoleOut: toTerminal,
    });
  } catch (e) {
    await closeDevices(devices);
    await consoleServer?.close();
    if (e instanceof KernelImageError) throw new UsageError(`--kernel: ${e.message}`);
    if (
      e instanceof MissingCapabilityError ||
      e instanceof HostError ||
      e instanceof GuestMemoryError
    ) {
      throw new UsageError(`cannot start the VM: ${e.message}`);
    }
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw e;
  } finally {
    // The guest has its copy now; drop ours (file pages, not heap).
    input.kernel.close();
    input.initrd?.close();
  }

  // How long the VMM itself took before the guest's first instruction: Node start-up,
  // flag checks, loading the kernel, building the VM.
  const setupMs = Math.round(process.uptime() * 1000);
  const stdin = process.stdin;
  const hvc = devices.find((d): d is VirtioConsole => d instanceof VirtioConsole);
  const guestInput = hvc
    ? (b: Uint8Array) => hvc.enqueueInput(b)
    : (b: Uint8Array) => vm.serial.enqueueInput(b);
  consoleInput = guestInput;
  const restoreTty = consoleServer ? () => {} : attachConsole(vm, stdin, guestInput);
  let control: ControlServer | undefined;
  // Inside the jail's PID namespace process.pid is 1; a supervisor wants the host's pid.
  const vmmPid = jailOptions ? (await jailModule()).hostPid() : process.pid;
  if (flags.controlSocket) {
    try {
      control = await ControlServer.listen(
        flags.controlSocket,
        controlHandlers(vm, devices, {
          name: flags.name ?? null,
          cpus: input.cpus,
          memoryBytes: input.memoryBytes,
          setupMs,
          pid: vmmPid,
          jailed: jailOptions !== undefined,
        }),
      );
    } catch (e) {
      await closeDevices(devices);
      vm.close();
      await consoleServer?.close();
      throw new UsageError(`--control-socket: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const onSignal = (signal: string) => vm.end({ kind: "stopped", reason: `${signal} received` });
  // SIGPWR is the traditional "power is failing" signal: press the guest's power button,
  // so `kill -PWR` is a clean shutdown request, as `virsh shutdown` is.
  const onPower = () => {
    process.stderr.write("vessel: pressing the guest's power button\n");
    vm.pressPowerButton();
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  process.on("SIGPWR", onPower);
  if (jailOptions) {
    // Everything is open: /dev/kvm, the VM and vCPU fds, images, TAPs, both sockets.
    try {
      (await jailModule()).enterJail(jailOptions);
    } catch (e) {
      restoreTty();
      await control?.close();
      await closeDevices(devices);
      vm.close();
      await consoleServer?.close();
      throw new UsageError(`--jail: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  let outcome: Outcome;
  try {
    outcome = await vm.run();
  } finally {
    restoreTty();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("SIGPWR", onPower);
  }
  const stats = vm.stats();
  // The supervisor learns how the VM ended from this file; it must exist before the control
  // socket closes, because the socket closing is how the supervisor notices the end.
  if (flags.outcomeFile) {
    writeFileAtomic(
      flags.outcomeFile,
      `${JSON.stringify({ outcome, exitCode: OUTCOME_EXIT_CODE[outcome.kind], setupMs, stats })}\n`,
    );
  }
  await control?.close();
  await consoleServer?.close();
  const perDevice = deviceStats(vm, devices);
  // Devices first: disk I/O still in flight and vhost must be done with guest RAM before the
  // VM unmaps it.
  await closeDevices(devices);
  vm.close();
  if (flags.json) {
    process.stderr.write(
      `${JSON.stringify({ outcome, exitCode: OUTCOME_EXIT_CODE[outcome.kind], setupMs, stats, devices: perDevice })}\n`,
    );
  } else {
    process.stderr.write(`\nvessel: ${describeOutcome(outcome)}\n`);
    if (flags.stats)
      process.stderr.write(
        `VMM set-up before the first guest instruction: ${setupMs} ms\n${formatStats(stats)}${formatNetStats(perDevice)}`,
      );
  }
  return OUTCOME_EXIT_CODE[outcome.kind];
}

/** What the control socket offers for this VM (see src/vmm/control.ts). */
function controlHandlers(
  vm: Vm,
  devices: readonly VirtioDevice[],
  about: { cpus: number } & Record<string, unknown>,
): Record<string, ControlHandler> {
  return {
    status: () => ({
      ...about,
      state: vm.paused ? "paused" : "running",
      vcpuThreads: vm.vcpuThreadIds(),
    }),
    /** {"op":"vcpu-pin","vcpu":N,"cpus":[...]}: pin one vCPU thread (numbers already checked by the daemon). */
    "vcpu-pin": async (args) => {
      const { vcpu, cpus } = args;
      if (typeof vcpu !== "number" || !Array.isArray(cpus) || cpus.length === 0)
        throw new Error("vcpu-pin needs vcpu (a number) and cpus (a non-empty list)");
      if (vcpu < 0 || vcpu >= about.cpus) throw new Error(`there is no vCPU ${vcpu}`);
      await vm.pinVcpu(vcpu, cpus as number[]);
      return { vcpu, cpus: libc.getAffinity(vm.vcpuThreadIds()[vcpu] ?? 0) };
    },
    affinity: () =>
      vm
        .vcpuThreadIds()
        .map((tid, vcpu) => ({ vcpu, tid, cpus: tid ? libc.getAffinity(tid) : [] })),
    pause: () => vm.pause(),
    resume: () => vm.resume(),
    "power-button": () => vm.pressPowerButton(),
    stop: () => vm.end({ kind: "stopped", reason: "stop requested on the control socket" }),
    ...balloonHandlers(devices),
    /**
     * {"op":"limit","device":"virtio-blk0","limits":{bandwidth?,ops?}} replaces a disk's rate
     * limits; for "virtio-netN" the limits are {rx?:{...},tx?:{...}}.
     */
    limit: (args) => {
      const dev = devices.find(
        (d): d is VirtioBlock | VirtioNet =>
          (d instanceof VirtioBlock || d instanceof VirtioNet) && d.name === args.device,
      );
      if (!dev) throw new Error(`no disk or network device named ${String(args.device)}`);
      if (dev instanceof VirtioNet) {
        dev.setLimits((args.limits ?? {}) as NetLimits);
        return dev.limits();
      }
      dev.setLimits((args.limits ?? {}) as LimitConfig);
      return dev.limits();
    },
    /** Every limited kind of device: its limits and the time it was held back. */
    limits: () =>
      devices.flatMap((d): { device: string; throttledMs: number }[] => {
        if (d instanceof VirtioBlock) return [{ device: d.name, ...d.limits() }];
        if (d instanceof VirtioNet) {
          const l = d.limits();
          return [{ device: d.name, throttledMs: l.rx.throttledMs + l.tx.throttledMs, ...l }];
        }
        return [];
      }),
    stats: () => ({ ...vm.stats(), devices: deviceStats(vm, devices) }),
    ...(process.env.VESSEL_TEST_HOOKS === "1" ? testHooks() : {}),
  };
}

/**
 * Ops for tests only, present when VESSEL_TEST_HOOKS=1 was set at start: they prove a
 * property of the running VMM from outside and do nothing useful otherwise.
 */
function testHooks(): Record<string, ControlHandler> {
  return {
    /** Make a call the jail's filter forbids: a jailed VMM dies of SIGSYS (no reply). */
    "test-forbidden-syscall": async () => (await jailModule()).testForbiddenCall(),
  };
}

/** Each device's transport counters and its own metrics; a net device also names its path. */
function deviceStats(vm: Vm, devices: readonly VirtioDevice[]) {
  return vm.transports.map((t, i) => {
    // Devices expose their counters as metrics() (block, net, console, balloon) or as a
    // metrics object (rng); either way they go out as plain numbers.
    const d = devices[i] as (VirtioDevice & { metrics?: unknown }) | undefined;
    const m = d?.metrics;
    const metrics = typeof m === "function" ? (m as () => unknown).call(d) : (m ?? null);
    const net = d instanceof VirtioNet ? { net: { backend: d.backend, ...d.metrics() } } : {};
    return { name: d?.name, ...t.stats(), metrics, ...net };
  });
}

/** One line per net device: which path carried the frames and what the VMM itself did. */
function formatNetStats(perDevice: ReturnType<typeof deviceStats>): string {
  let out = "";
  for (const d of perDevice) {
    if (!("net" in d)) continue;
    const n = d.net;
    const popped = d.queues.reduce((sum, q) => sum + q.popped, 0);
    out += `${d.name}: ${n.backend} path; frames through the VMM: tx ${n.txFrames}, rx ${n.rxFrames}; chains popped by the VMM: ${popped}; vhost interrupts relayed: ${n.vhostInterrupts}, kicks relayed: ${n.vhostKicksRelayed}, errors: ${n.vhostErrors}\n`;
  }
  return out;
}

function balloonHandlers(devices: readonly VirtioDevice[]): Record<string, ControlHandler> {
  const balloon = devices.find((d): d is VirtioBalloon => d instanceof VirtioBalloon);
  if (!balloon) return {};
  return {
    /** Set the balloon's target: {"op":"balloon","targetBytes":N} (what the guest gives back). */
    balloon: (args) => {
      const bytes = args.targetBytes;
      if (typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0) {
        throw new Error("targetBytes must be a non-negative integer");
      }
      balloon.setTarget(Math.floor(bytes / 4096));
      return balloon.stats();
    },
    "balloon-stats": () => {
      balloon.requestStats();
      return balloon.stats();
    },
  };
}

function attachConsole(
  vm: Vm,
  stdin: NodeJS.ReadStream,
  input: (bytes: Uint8Array) => number,
): () => void {
  const tty = stdin.isTTY === true;
  if (tty) stdin.setRawMode(true);
  const onData = (chunk: Buffer) => {
    const quit = chunk.indexOf(QUIT_BYTE);
    if (tty && quit >= 0) {
      vm.end({ kind: "stopped", reason: "Ctrl-] pressed" });
      return;
    }
    input(chunk);
  };
  stdin.on("data", onData);
  stdin.on("error", () => {});
  return () => {
    stdin.off("data", onData);
    if (tty) stdin.setRawMode(false);
    stdin.pause();
    stdin.unref?.();
  };
}

export function formatStats(stats: ReturnType<Vm["stats"]>): string {
  const rows = Object.entries(stats.exits).sort((a, b) => b[1] - a[1]);
  const width = Math.max(12, ...rows.map(([k]) => k.length));
  const lines = [`${"exit reason".padEnd(width)}  count`];
  for (const [k, v] of rows) lines.push(`${k.padEnd(width)}  ${v}`);
  const pio = stats.pio as {
    unmappedReads: number;
    unmappedWrites: number;
    straddled: number;
    malformed: number;
  };
  const mmio = stats.mmio as typeof pio;
  lines.push(
    `pio bus: ${pio.unmappedReads} unmapped reads, ${pio.unmappedWrites} unmapped writes, ${pio.straddled + pio.malformed} refused`,
  );
  lines.push(
    `mmio bus: ${mmio.unmappedReads} unmapped reads, ${mmio.unmappedWrites} unmapped writes, ${mmio.straddled + mmio.malformed} refused`,
  );
  return `${lines.join("\n")}\n`;
}
