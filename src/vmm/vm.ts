// The VM builder and its runtime. build() is one linear recipe, as in Firecracker's
// builder: KVM and its capabilities, the VM and in-kernel irqchip/PIT, guest memory,
// buses and legacy devices, ACPI tables, the kernel and its boot parameters, then vCPUs.
// Vm.run() starts one thread per vCPU and resolves with how the guest's run ended.

import { ACPI_PM_PORT_BASE, buildAcpiTables } from "../acpi/mod.js";
import * as x86 from "../arch/x86/mod.js";
import { AcpiPmDevice, GED_MMIO_SIZE, GedDevice, PM_PORT_SIZE } from "../devices/acpi/mod.js";
import { Bus, MMIO_SPACE_SIZE, PIO_SPACE_SIZE } from "../devices/bus/mod.js";
import type { BusDevice, IrqLine, VmRequest } from "../devices/device.js";
import { I8042, I8042_COMMAND_PORT, I8042_DATA_PORT } from "../devices/legacy/i8042.js";
import { Rtc } from "../devices/legacy/rtc.js";
import { Serial } from "../devices/legacy/serial.js";
import { F_DOORBELL } from "../devices/legacy/serial_fast.js";
import { abi, FdWatcher, Kvm, libc, type VcpuFd, type VmFd } from "../host/mod.js";
import { GuestMemory, MIB, MMIO_DEVICES_START, ramRegions } from "../memory/mod.js";
import type { VirtioDevice } from "../virtio/device.js";
import { VIRTIO_MMIO_REGION_SIZE, VirtioMmioTransport } from "../virtio/mmio.js";
import { type ExitHandler, VcpuThread } from "./vcpu.js";
import * as ch from "./vcpu_channel.js";

export const COM1_PORT = 0x3f8;
export const COM1_GSI = 4;
export const RTC_PORT = 0x70;
export const GED_GSI = 5;
export const GED_ADDRESS = MMIO_DEVICES_START;
/** Linux's outb_p() I/O delay port. */
const IO_DELAY_PORT = 0x80;
const TSS_ADDRESS = 0xfffb_d000;
const IDENTITY_MAP_ADDRESS = 0xfffb_c000n;
export const MIN_MEMORY = 16 * MIB;
/** GSIs for virtio-mmio devices: the IOAPIC pins no legacy device claims. */
const VIRTIO_GSIS = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 6, 7];

export type BootSource =
  | { kind: "linux"; kernel: Uint8Array; initrd?: Uint8Array | undefined; cmdline: string }
  /** A flat test binary copied to `address` and entered in real mode at that address. */
  | { kind: "flat-real"; image: Uint8Array; address: number };

export interface VmConfig {
  memoryBytes: number;
  cpus: number;
  boot: BootSource;
  /** Receives serial output; must consume the bytes before returning. */
  consoleOut: (bytes: Uint8Array) => void;
  /** virtio devices, each behind its own virtio-mmio transport, in this order. */
  virtio?: readonly VirtioDevice[];
  /**
   * The fd watcher the VM's ioeventfds are added to. Pass one when devices built before
   * the VM (a TAP-backed net device) must share it; the VM then closes it.
   */
  watcher?: FdWatcher;
  kvmPath?: string;
}

export type Outcome =
  | { kind: "poweroff" }
  | { kind: "reboot"; reason: string }
  | { kind: "triple-fault"; vcpu: number; state?: string }
  | { kind: "internal-error"; vcpu: number; detail: string }
  | { kind: "halted"; vcpu: number }
  | { kind: "stopped"; reason: string }
  | { kind: "error"; detail: string };

/** `vessel run` exit codes per outcome. 1 is kept for usage and VMM errors. */
export const OUTCOME_EXIT_CODE: Record<Outcome["kind"], number> = {
  poweroff: 0,
  error: 1,
  reboot: 2,
  "triple-fault": 3,
  "internal-error": 4,
  halted: 5,
  stopped: 6,
};

export function describeOutcome(o: Outcome): string {
  switch (o.kind) {
    case "poweroff":
      return "guest powered off";
    case "reboot":
      return `guest requested a reboot (${o.reason})`;
    case "triple-fault":
      return `vCPU ${o.vcpu} triple-faulted (the guest reset itself)${o.state ? ` at ${o.state}` : ""}`;
    case "internal-error":
      return `vCPU ${o.vcpu}: KVM could not run the guest: ${o.detail}`;
    case "halted":
      return `vCPU ${o.vcpu} halted with interrupts off`;
    case "stopped":
      return `stopped: ${o.reason}`;
    case "error":
      return `error: ${o.detail}`;
  }
}

/** How a vCPU thread's end maps to the VM's outcome; undefined when it was asked to stop. */
function outcomeOfExit(id: number, e: ch.VcpuExit): Outcome | undefined {
  switch (e.kind) {
    case "stopped":
      return undefined;
    case "triple-fault":
      return { kind: "triple-fault", vcpu: id, ...(e.state ? { state: e.state } : {}) };
    case "system-event":
      if (e.type === abi.KVM_SYSTEM_EVENT_RESET)
        return { kind: "reboot", reason: "KVM system event" };
      if (e.type === abi.KVM_SYSTEM_EVENT_SHUTDOWN) return { kind: "poweroff" };
      return { kind: "internal-error", vcpu: id, detail: `system event ${e.type}` };
    case "internal-error":
      return {
        kind: "internal-error",
        vcpu: id,
        detail: `KVM_EXIT_INTERNAL_ERROR suberror ${e.suberror} [${e.data.join(" ")}]`,
      };
    case "fail-entry":
      return { kind: "internal-error", vcpu: id, detail: `KVM_EXIT_FAIL_ENTRY ${e.reason}` };
    case "hlt":
      return { kind: "halted", vcpu: id };
    case "unexpected-exit":
      return { kind: "internal-error", vcpu: id, detail: `unexpected exit reason ${e.reason}` };
    case "error":
      return { kind: "error", detail: e.message };
  }
}

/** An edge-triggered GSI driven through an irqfd: an interrupt is one eventfd write. */
class IrqFdLine implements IrqLine {
  private readonly one = new BigUint64Array([1n]);
  constructor(readonly fd: number) {}
  set(level: boolean): void {
    if (level) this.pulse();
  }
  pulse(): void {
    libc.write(this.fd, this.one);
  }
}

class KvmIrqLine implements IrqLine {
  constructor(
    private readonly vm: VmFd,
    private readonly gsi: number,
  ) {}
  set(level: boolean): void {
    this.vm.irqLine(this.gsi, level);
  }
  pulse(): void {
    this.vm.irqLine(this.gsi, true);
    this.vm.irqLine(this.gsi, false);
  }
}

export class Vm implements ExitHandler {
  readonly pioBus = new Bus({ name: "pio", size: PIO_SPACE_SIZE });
  readonly mmioBus = new Bus({ name: "mmio", size: MMIO_SPACE_SIZE });
  readonly serial: Serial;
  readonly ged: GedDevice;
  readonly memory: GuestMemory;
  private readonly kvm: Kvm;
  private readonly vmFd: VmFd;
  private readonly vcpuFds: VcpuFd[] = [];
  private readonly threads: VcpuThread[] = [];
  /** Per-port routing shared with the vCPU threads (see vcpu_channel PORT_*). */
  private readonly portMap = new SharedArrayBuffer(PIO_SPACE_SIZE);
  /** virtio-mmio InterruptStatus words, one per transport, answered by vCPU threads. */
  private readonly localCells = new SharedArrayBuffer(4 * VIRTIO_GSIS.length);
  private readonly localRegisters: ch.LocalMmio[] = [];
  /** ioeventfds for queue notifications; readiness arrives on the main thread. */
  private readonly watcher: FdWatcher;
  private readonly eventFds: number[] = [];
  readonly transports: VirtioMmioTransport[] = [];
  private finish: ((o: Outcome) => void) | undefined;
  private outcome: Outcome | undefined;

  private constructor(config: VmConfig) {
    this.watcher = config.watcher ?? new FdWatcher();
    // 1. KVM and the capabilities everything below relies on.
    this.kvm = new Kvm(config.kvmPath);
    this.kvm.requireExtensions({
      KVM_CAP_IRQCHIP: abi.KVM_CAP_IRQCHIP,
      KVM_CAP_USER_MEMORY: abi.KVM_CAP_USER_MEMORY,
      KVM_CAP_SET_TSS_ADDR: abi.KVM_CAP_SET_TSS_ADDR,
      KVM_CAP_EXT_CPUID: abi.KVM_CAP_EXT_CPUID,
      KVM_CAP_PIT2: abi.KVM_CAP_PIT2,
      KVM_CAP_IMMEDIATE_EXIT: abi.KVM_CAP_IMMEDIATE_EXIT,
    });
    const maxVcpus = Math.max(
      this.kvm.checkExtension(abi.KVM_CAP_MAX_VCPUS),
      this.kvm.checkExtension(abi.KVM_CAP_NR_VCPUS),
    );
    if (config.cpus > maxVcpus) {
      throw new RangeError(
        `--cpus ${config.cpus} is more than this host's KVM allows (${maxVcpus})`,
      );
    }

    // 2. The VM, with the in-kernel LAPICs/IOAPIC and PIT.
    this.vmFd = this.kvm.createVm();
    this.vmFd.setTssAddr(TSS_ADDRESS);
    this.vmFd.setIdentityMapAddr(IDENTITY_MAP_ADDRESS);
    this.vmFd.createIrqchip();
    this.vmFd.createPit2(abi.KVM_PIT_SPEAKER_DUMMY);

    // 3. Guest memory.
    const regions = ramRegions(config.memoryBytes);
    this.memory = new GuestMemory(regions);
    this.memory.regions.forEach((r, slot) => {
      this.vmFd.setUserMemoryRegion(slot, BigInt(r.start), BigInt(r.size), r.hostAddress);
    });

    // 4. Buses and legacy devices.
    const request = (r: VmRequest, reason: string) => this.request(r, reason);
    this.serial = new Serial({
      irq: new KvmIrqLine(this.vmFd, COM1_GSI),
      out: config.consoleOut,
      name: "serial0",
      fastPath: true,
    });
    this.addPio(COM1_PORT, 8, this.serial);
    const i8042 = new I8042({ request });
    this.addPio(I8042_DATA_PORT, 1, i8042.dataPort);
    this.addPio(I8042_COMMAND_PORT, 1, i8042.commandPort);
    this.addPio(
      RTC_PORT,
      2,
      new Rtc({ memoryBelow4G: regions[0]?.size ?? 0, memoryAbove4G: regions[1]?.size ?? 0 }),
    );
    this.addPio(ACPI_PM_PORT_BASE, PM_PORT_SIZE, new AcpiPmDevice(request));
    this.ged = new GedDevice(new KvmIrqLine(this.vmFd, GED_GSI));
    this.mmioBus.insert(GED_ADDRESS, GED_MMIO_SIZE, this.ged);
    new Uint8Array(this.portMap)[IO_DELAY_PORT] = ch.PORT_SINK;
    const virtioMmio = this.attachVirtio(config.virtio ?? []);

    // 5. ACPI tables.
    const acpi = buildAcpiTables({
      cpus: config.cpus,
      ioapicId: config.cpus, // distinct from every LAPIC ID
      serial: [{ port: COM1_PORT, irq: COM1_GSI }],
      virtioMmio,
      ged: { base: GED_ADDRESS, irq: GED_GSI },
    });
    for (const r of acpi.regions) this.memory.write(r.address, r.bytes);

    // 6. The kernel and its boot parameters.
    const lowRamEnd = regions[0]?.size ?? 0;
    const e820 = x86.e820Map(regions);
    let mode: x86.BootMode | "real" = "long64";
    let entry: number;
    let bootInfo = 0;
    const boot = config.boot;
    if (boot.kind === "linux") {
      if (x86.isElf(boot.kernel)) {
        const loaded = x86.loadPvh(this.memory, boot.kernel, {
          cmdline: boot.cmdline,
          initrd: boot.initrd,
          e820,
          rsdpAddress: acpi.rsdpAddress,
          lowRamEnd,
        });
        mode = "pvh32";
        entry = loaded.entry;
        bootInfo = loaded.startInfo;
      } else {
        const loaded = x86.loadBzImage(this.memory, boot.kernel, {
          cmdline: boot.cmdline,
          initrd: boot.initrd,
          e820,
          rsdpAddress: acpi.rsdpAddress,
          lowRamEnd,
        });
        entry = loaded.entry;
        bootInfo = loaded.zeroPage;
      }
      x86.writeBootTables(this.memory, mode);
    } else {
      this.memory.write(boot.address, boot.image);
      mode = "real";
      entry = boot.address;
    }

    // 7. vCPUs.
    const supported = this.kvm.supportedCpuid();
    for (let id = 0; id < config.cpus; id++) {
      const vcpu = this.vmFd.createVcpu(id);
      this.vcpuFds.push(vcpu);
      vcpu.setCpuid(x86.vcpuCpuid(supported, id, config.cpus));
      x86.setupMsrs(vcpu);
      x86.setupFpu(vcpu);
      x86.setupLapic(vcpu);
      // Application processors wait for INIT/SIPI from the boot CPU via the in-kernel LAPIC.
      if (id !== 0) continue;
      if (mode === "real") {
        const s = vcpu.getSregs();
        s.cs = { ...s.cs, base: 0n, selector: 0 };
        vcpu.setSregs(s);
        vcpu.setRegs({ rip: BigInt(entry), rflags: 0x2n });
      } else {
        x86.setupBootRegisters(vcpu, mode, entry, bootInfo);
      }
    }
  }

  static build(config: VmConfig): Vm {
    if (!Number.isInteger(config.cpus) || config.cpus < 1 || config.cpus > 254) {
      throw new RangeError(`--cpus must be 1..254, got ${config.cpus}`);
    }
    if (config.memoryBytes < MIN_MEMORY) {
      throw new RangeError(`--memory must be at least ${MIN_MEMORY / MIB} MiB`);
    }
    return new Vm(config);
  }

  /**
   * Put each virtio device behind a virtio-mmio transport: interrupts through an irqfd and
   * queue notifications through ioeventfds, so neither passes through a vCPU thread.
   */
  private attachVirtio(
    devices: readonly VirtioDevice[],
  ): { base: number; size: number; irq: number }[] {
    if (devices.length > VIRTIO_GSIS.length) {
      throw new RangeError(
        `too many virtio devices (${devices.length}); at most ${VIRTIO_GSIS.length}`,
      );
    }
    return devices.map((device, i) => {
      const base = GED_ADDRESS + VIRTIO_MMIO_REGION_SIZE * (i + 1);
      const gsi = VIRTIO_GSIS[i] as number;
      const irqFd = libc.eventfd(0, libc.EFD_NONBLOCK);
      this.eventFds.push(irqFd);
      this.vmFd.irqfd(irqFd, gsi);
      const transport = new VirtioMmioTransport({
        device,
        memory: this.memory,
        irq: new IrqFdLine(irqFd),
        base,
        interruptStatus: new Int32Array(this.localCells, 4 * i, 1),
        eventFds: {
          add: (fd, onReady) => this.watcher.addEventFd(fd, onReady),
          remove: (fd) => this.watcher.removeFd(fd),
        },
      });
      this.mmioBus.insert(base, VIRTIO_MMIO_REGION_SIZE, transport);
      const shared = transport.sharedRegisters();
      if (shared) {
        this.localRegisters.push(
          { address: shared.status, kind: ch.LOCAL_READ, cell: i },
          { address: shared.ack, kind: ch.LOCAL_CLEAR_BITS, cell: i },
        );
      }
      for (const spec of transport.ioEventFds()) {
        const fd = libc.eventfd(0, libc.EFD_NONBLOCK);
        this.eventFds.push(fd);
        this.vmFd.ioeventfd(fd, BigInt(spec.address), spec.length, {
          datamatch: BigInt(spec.datamatch),
        });
        transport.useIoEventFd(spec.queue, fd);
      }
      this.transports.push(transport);
      return { base, size: VIRTIO_MMIO_REGION_SIZE, irq: gsi };
    });
  }

  private addPio(port: number, length: number, device: BusDevice): void {
    this.pioBus.insert(port, length, device);
    new Uint8Array(this.portMap).fill(ch.PORT_FORWARD, port, port + length);
  }

  /** ExitHandler: a forwarded port access; string I/O is split into single accesses. */
  pio(isWrite: boolean, port: number, size: number, count: number, data: Uint8Array): void {
    if (count === 1) {
      // `data` is already a view of exactly `size` bytes (made once per vCPU thread).
      if (isWrite) this.pioBus.write(port, data);
      else this.pioBus.read(port, data);
      return;
    }
    for (let i = 0; i < count; i++) {
      const view = data.subarray(i * size, i * size + size);
      if (isWrite) this.pioBus.write(port, view);
      else this.pioBus.read(port, view);
    }
  }

  mmio(isWrite: boolean, address: number, _size: number, data: Uint8Array): void {
    if (isWrite) this.mmioBus.write(address, data);
    else this.mmioBus.read(address, data);
  }

  private request(r: VmRequest, reason: string): void {
    this.end(r === "poweroff" ? { kind: "poweroff" } : { kind: "reboot", reason });
  }

  /** Record the outcome (the first one wins) and begin stopping every vCPU. */
  end(outcome: Outcome): void {
    if (this.outcome) return;
    this.outcome = outcome;
    this.finish?.(outcome);
  }

  private pausedState = false;

  /** True between a successful pause() and the next resume(). */
  get paused(): boolean {
    return this.pausedState;
  }

  /**
   * Stop every vCPU where it is (kick, then park the thread) and keep it stopped until
   * resume(). Devices keep running; the guest just gets no CPU, as with `virsh suspend`.
   */
  async pause(timeoutMs = 2000): Promise<void> {
    if (this.outcome) throw new Error("the VM has ended");
    const ok = await Promise.all(this.threads.map((t) => t.pause(timeoutMs)));
    if (ok.includes(false)) {
      for (const t of this.threads) t.resume();
      throw new Error(`a vCPU did not pause within ${timeoutMs} ms`);
    }
    this.pausedState = true;
  }

  resume(): void {
    for (const t of this.threads) t.resume();
    this.pausedState = false;
  }

  /** Thread ids of the vCPU threads, by vCPU index (0 for one not started yet). */
  vcpuThreadIds(): number[] {
    return this.threads.map((t) => t.tid);
  }

  /**
   * Pin vCPU `index`'s thread to `cpus` (host CPU numbers). A supervisor may ask as soon as
   * the control socket answers, which is before the vCPU threads exist: wait for them.
   */
  async pinVcpu(index: number, cpus: readonly number[], timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const t = this.threads[index];
      if (t && t.tid !== 0) {
        libc.setAffinity(t.tid, cpus);
        return;
      }
      if (this.outcome || Date.now() > deadline)
        throw new RangeError(`there is no running vCPU ${index}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Press the ACPI power button: a well-behaved guest shuts down. */
  pressPowerButton(): void {
    this.ged.pressPowerButton();
  }

  /** Run until the guest powers off, resets, faults, or end() is called. */
  async run(): Promise<Outcome> {
    const done = new Promise<Outcome>((resolve) => {
      this.finish = resolve;
    });
    this.watcher.start();
    for (const fd of this.vcpuFds) {
      const uart = this.serial.fastPath;
      const t = new VcpuThread(fd, this.portMap, this, {
        cells: this.localCells,
        registers: this.localRegisters,
        ...(uart ? { uart: { base: COM1_PORT, shared: uart } } : {}),
      });
      this.threads.push(t);
      t.exited.then((e) => this.vcpuEnded(t.id, e));
      t.start();
    }
    const serialDone = this.serveSerialFastPath(done);
    // Atomics.waitAsync does not keep the event loop alive; this timer does while we run.
    const keepAlive = setInterval(() => {}, 1 << 30);
    const outcome = await done;
    clearInterval(keepAlive);
    await serialDone;
    await Promise.all(this.threads.map((t) => t.stop()));
    await this.watcher.stop();
    this.serial.flush();
    return outcome;
  }

  /** Drain the UART bytes the vCPU threads queue each time they ring, until `done`. */
  private async serveSerialFastPath(done: Promise<Outcome>): Promise<void> {
    const shared = this.serial.fastPath;
    if (!shared) return;
    const cells = new Int32Array(shared.cells);
    let running = true;
    // Wake the wait below when the VM ends (the notify is on the same word).
    // And every 100 ms regardless: output must reach the console even if a wake-up were
    // ever missed (cheap: a drain of an empty ring is a few loads).
    const sweep = setInterval(() => this.serial.flush(), 100);
    const ended = done.then(() => {
      running = false;
      clearInterval(sweep);
      Atomics.notify(cells, F_DOORBELL);
    });
    while (running) {
      const w = Atomics.waitAsync(cells, F_DOORBELL, 0);
      if (w.async) await w.value;
      this.serial.flush();
      // A doorbell per burst, not per byte: let the guest write a few more first.
      if (running) await new Promise((r) => setImmediate(r));
    }
    await ended;
  }

  private vcpuEnded(id: number, e: ch.VcpuExit): void {
    const outcome = outcomeOfExit(id, e);
    if (outcome) this.end(outcome);
  }

  /** Exit counters summed over vCPUs, by reason name, plus bus counters. */
  stats(): {
    exits: Record<string, number>;
    perVcpu: Record<string, number>[];
    pio: unknown;
    mmio: unknown;
  } {
    const exits: Record<string, number> = {};
    const extraNames = [
      "unmapped_pio_read",
      "unmapped_pio_write",
      "forwarded",
      "kicks",
      "local_mmio",
      "local_pio",
    ];
    const perVcpu = this.threads.map((t) => {
      const s = t.stats();
      const row: Record<string, number> = {};
      s.forEach((v, i) => {
        if (v === 0) return;
        const name =
          i < abi.KVM_EXIT_REASON_SLOTS
            ? (abi.EXIT_REASON_NAMES[i] ?? `reason_${i}`)
            : (extraNames[i - abi.KVM_EXIT_REASON_SLOTS] ?? `extra_${i}`);
        row[name] = v;
        exits[name] = (exits[name] ?? 0) + v;
      });
      return row;
    });
    return { exits, perVcpu, pio: this.pioBus.stats(), mmio: this.mmioBus.stats() };
  }

  close(): void {
    // Devices stop first: a kernel backend (vhost) must not write into guest RAM once it is
    // unmapped, where a later mapping could reuse the addresses. Resetting does not wait for
    // disk I/O already on the thread pool: callers close the devices (which waits for it)
    // before closing the VM, as `vessel run` does.
    for (const t of this.transports) t.reset();
    this.watcher.close();
    for (const fd of this.eventFds) libc.close(fd);
    for (const t of this.threads) t.close();
    for (const v of this.vcpuFds) v.close();
    this.vmFd.close();
    this.memory.close();
    this.kvm.close();
  }
}
