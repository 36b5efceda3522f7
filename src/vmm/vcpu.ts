// The main thread's handle on one vCPU thread: starts the worker, answers its forwarded
// PIO/MMIO exits from the buses, and pauses or stops it with a kick (immediate_exit plus a
// signal to the thread) that works even while the guest spins without exiting.

import type { Worker } from "node:worker_threads";
import { abi, libc, type VcpuFd } from "../host/mod.js";
import * as ch from "./vcpu_channel.js";
import { vcpuWorker } from "./vcpu_spawn.js";

export const KICK_SIGNAL = 12; // SIGUSR2
let kickHandlerInstalled = false;

/** The signal only has to interrupt KVM_RUN; a handler must exist or it would kill us. */
function installKickHandler(): void {
  if (kickHandlerInstalled) return;
  process.on("SIGUSR2", () => {});
  kickHandlerInstalled = true;
}

/**
 * Answers forwarded exits. `data` is a view of exactly size × count bytes of the mailbox
 * (for a single access, one of the views made once per thread: nothing is allocated).
 */
export interface ExitHandler {
  pio(isWrite: boolean, port: number, size: number, count: number, data: Uint8Array): void;
  mmio(isWrite: boolean, address: number, size: number, data: Uint8Array): void;
}

export class VcpuThread {
  readonly id: number;
  private readonly shared: ch.VcpuShared;
  private readonly ctrl: Int32Array;
  private readonly data: Uint8Array;
  /** Views of the mailbox's first 1..8 bytes, indexed by access size. */
  private readonly sized: Uint8Array[];
  private readonly runBytes: Uint8Array;
  private readonly runMapping: libc.Mapping;
  private worker: Worker | undefined;
  private serving = false;
  /** Resolves with how the vCPU thread ended. */
  readonly exited: Promise<ch.VcpuExit>;
  private resolveExit!: (e: ch.VcpuExit) => void;

  constructor(
    private readonly vcpu: VcpuFd,
    portMap: SharedArrayBuffer,
    private readonly handler: ExitHandler,
    local?: ch.LocalRegisters,
  ) {
    this.id = vcpu.id;
    this.shared = ch.allocateShared(abi.KVM_EXIT_REASON_SLOTS, portMap, local);
    this.ctrl = new Int32Array(this.shared.control);
    this.data = new Uint8Array(this.shared.data);
    this.sized = Array.from({ length: 9 }, (_, n) => this.data.subarray(0, n));
    // Our own mapping of kvm_run, only to set immediate_exit when kicking.
    this.runMapping = vcpu.mapRun();
    this.runBytes = new Uint8Array(this.runMapping.buffer);
    this.exited = new Promise((resolve) => {
      this.resolveExit = resolve;
    });
  }

  start(): void {
    installKickHandler();
    const worker = vcpuWorker({
      fd: this.vcpu.fd,
      runSize: this.runMapping.length,
      id: this.id,
      shared: this.shared,
      kickSignal: KICK_SIGNAL,
    });
    this.worker = worker;
    let reported = false;
    worker.on("message", (m: ch.VcpuExit) => {
      reported = true;
      this.serving = false;
      Atomics.notify(this.ctrl, ch.C_MAILBOX);
      this.resolveExit(m);
    });
    worker.on("error", (e) => {
      reported = true;
      this.serving = false;
      Atomics.notify(this.ctrl, ch.C_MAILBOX);
      this.resolveExit({ kind: "error", message: `vCPU ${this.id} thread failed: ${e.message}` });
    });
    worker.on("exit", (code) => {
      this.serving = false;
      Atomics.notify(this.ctrl, ch.C_MAILBOX);
      if (!reported)
        this.resolveExit({
          kind: "error",
          message: `vCPU ${this.id} thread exited with code ${code}`,
        });
    });
    this.serving = true;
    void this.serve();
  }

  private async serve(): Promise<void> {
    const ctrl = this.ctrl;
    while (this.serving) {
      const state = Atomics.load(ctrl, ch.C_MAILBOX);
      if (state !== ch.MB_REQUEST) {
        const w = Atomics.waitAsync(ctrl, ch.C_MAILBOX, state);
        if (w.async) await w.value;
        continue;
      }
      this.answer();
      Atomics.store(ctrl, ch.C_MAILBOX, ch.MB_RESPONSE);
      Atomics.notify(ctrl, ch.C_MAILBOX);
    }
  }

  private answer(): void {
    const ctrl = this.ctrl;
    const isWrite = Atomics.load(ctrl, ch.C_IS_WRITE) === 1;
    const size = Atomics.load(ctrl, ch.C_SIZE);
    const count = Atomics.load(ctrl, ch.C_COUNT);
    const addr =
      (Atomics.load(ctrl, ch.C_ADDR_LO) >>> 0) +
      (Atomics.load(ctrl, ch.C_ADDR_HI) >>> 0) * 0x100000000;
    try {
      // GUEST-CONTROLLED (via KVM): size and count; the worker bounded size*count to the mailbox.
      const bytes = Math.min(size * count, this.data.length);
      const view = bytes <= 8 ? (this.sized[bytes] as Uint8Array) : this.data.subarray(0, bytes);
      if (Atomics.load(ctrl, ch.C_KIND) === ch.KIND_PIO)
        this.handler.pio(isWrite, addr, size, count, view);
      else this.handler.mmio(isWrite, addr, size, view);
    } catch (e) {
      // A device must never take the VMM down; a throw here is our bug, so log it loudly.
      process.emitWarning(
        `device error on vCPU ${this.id}: ${e instanceof Error ? e.stack : String(e)}`,
      );
      if (!isWrite) this.data.fill(0xff, 0, Math.min(size * count, this.data.length));
    }
  }

  private command(cmd: number): void {
    Atomics.store(this.ctrl, ch.C_COMMAND, cmd);
    Atomics.notify(this.ctrl, ch.C_COMMAND);
    Atomics.store(this.runBytes, abi.RUN_IMMEDIATE_EXIT, 1);
    this.signal();
  }

  private signal(): void {
    const tid = Atomics.load(this.ctrl, ch.C_TID);
    if (tid > 0) {
      try {
        libc.tgkill(process.pid, tid, KICK_SIGNAL);
      } catch {
        // The thread may have exited already.
      }
    }
  }

  private async waitRunState(want: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const s = Atomics.load(this.ctrl, ch.C_RUNSTATE);
      if (s === want || s === ch.RS_STOPPED) return s === want;
      // Re-send the signal: one that landed just before KVM_RUN was entered is lost.
      this.signal();
      // A timer, not waitAsync's timeout: only a timer keeps Node's event loop alive.
      await new Promise((r) => setTimeout(r, 5));
    }
    return false;
  }

  /** The kernel thread id of this vCPU's thread (0 until it has started). */
  get tid(): number {
    return Atomics.load(this.ctrl, ch.C_TID);
  }

  async pause(timeoutMs = 2000): Promise<boolean> {
    this.command(ch.CMD_PAUSE);
    return this.waitRunState(ch.RS_PAUSED, timeoutMs);
  }

  resume(): void {
    Atomics.store(this.ctrl, ch.C_COMMAND, ch.CMD_RUN);
    Atomics.notify(this.ctrl, ch.C_COMMAND);
  }

  /** Stop the vCPU thread and wait for it to end. */
  async stop(timeoutMs = 5000): Promise<void> {
    this.command(ch.CMD_STOP);
    if (Atomics.load(this.ctrl, ch.C_MAILBOX) === ch.MB_REQUEST) {
      this.data.fill(0xff);
      Atomics.store(this.ctrl, ch.C_MAILBOX, ch.MB_RESPONSE);
      Atomics.notify(this.ctrl, ch.C_MAILBOX);
    }
    await this.waitRunState(ch.RS_STOPPED, timeoutMs);
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
    await this.worker?.terminate();
    this.serving = false;
  }

  /** Exit counters: one per KVM exit reason, then the extra counters. */
  stats(): Float64Array {
    return new Float64Array(this.shared.stats).slice();
  }

  close(): void {
    libc.munmap(this.runMapping);
  }
}
