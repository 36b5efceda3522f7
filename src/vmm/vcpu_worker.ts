// The body of one vCPU thread: KVM_RUN in a loop, decoding each exit from the mapped
// kvm_run area. Port I/O the port map says nobody owns is answered here (all-ones / drop,
// counted), as are the shared-word registers of vcpu_channel's LocalRegisters; everything
// else is forwarded to the main thread's buses through the mailbox.
// Nothing is allocated per exit: every view is made once below.

import { parentPort, workerData } from "node:worker_threads";
import { FastPathProducer } from "../devices/legacy/serial_fast.js";
import * as abi from "../host/kvm_abi.js";
import * as libc from "../host/libc.js";
import { describeFaultState } from "./fault_state.js";
import * as ch from "./vcpu_channel.js";

interface VcpuWorkerData {
  fd: number;
  runSize: number;
  id: number;
  shared: ch.VcpuShared;
  kickSignal: number;
}

const EINTR = 4;
const EAGAIN = 11;
const port = parentPort;
if (!port) throw new Error("vcpu_worker must run in a worker thread");
// A worker started for its vCPU has it in workerData; one started ahead (vcpu_spawn.ts)
// says its modules are loaded and waits here for it.
const given = workerData as VcpuWorkerData | { loaded: Int32Array };
let init: VcpuWorkerData;
if ("loaded" in given) {
  Atomics.store(given.loaded, 0, 1);
  Atomics.notify(given.loaded, 0);
  init = await new Promise<VcpuWorkerData>((resolve) => port.once("message", resolve));
} else {
  init = given;
}
const { fd, runSize, shared, kickSignal } = init;

const ctrl = new Int32Array(shared.control);
const data = new Uint8Array(shared.data);
const stats = new Float64Array(shared.stats);
const portMap = new Uint8Array(shared.portMap);
const exitSlots = abi.KVM_EXIT_REASON_SLOTS;
const localCells = new Int32Array(shared.local.cells);
/** address → kind << 16 | cell, for the registers answered here (a number: no allocation). */
const localMmio = new Map<number, number>();
for (const r of shared.local.registers) localMmio.set(r.address, (r.kind << 16) | r.cell);
const uart = shared.local.uart;
const uartFast = uart ? new FastPathProducer(uart.shared) : undefined;
// -1 matches no port when there is no fast path.
const uartThr = uart ? uart.base : -1;
const uartLsr = uart ? uart.base + 5 : -1;

libc.unblockSignal(kickSignal);
const runMap = libc.mmap(runSize, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
const run = new DataView(runMap.buffer);
const runBytes = new Uint8Array(runMap.buffer);
Atomics.store(ctrl, ch.C_TID, libc.gettid());
Atomics.store(ctrl, ch.C_RUNSTATE, ch.RS_RUNNING);
Atomics.notify(ctrl, ch.C_RUNSTATE);

function bump(slot: number): void {
  stats[slot] = (stats[slot] ?? 0) + 1;
}

function forward(kind: number, isWrite: number, size: number, count: number, addr: number): void {
  Atomics.store(ctrl, ch.C_KIND, kind);
  Atomics.store(ctrl, ch.C_IS_WRITE, isWrite);
  Atomics.store(ctrl, ch.C_SIZE, size);
  Atomics.store(ctrl, ch.C_COUNT, count);
  Atomics.store(ctrl, ch.C_ADDR_LO, addr >>> 0);
  Atomics.store(ctrl, ch.C_ADDR_HI, Math.floor(addr / 0x100000000));
  Atomics.store(ctrl, ch.C_MAILBOX, ch.MB_REQUEST);
  Atomics.notify(ctrl, ch.C_MAILBOX);
  while (Atomics.load(ctrl, ch.C_MAILBOX) === ch.MB_REQUEST)
    Atomics.wait(ctrl, ch.C_MAILBOX, ch.MB_REQUEST);
  Atomics.store(ctrl, ch.C_MAILBOX, ch.MB_IDLE);
  bump(exitSlots + ch.S_FORWARDED);
}

function handleIo(): void {
  const direction = run.getUint8(abi.RUN_IO_DIRECTION);
  const ioPort = run.getUint16(abi.RUN_IO_PORT, true);
  const owner = portMap[ioPort];
  // I/O-delay writes (port 0x80, which Linux hits often) need no data: answered first.
  if (owner === ch.PORT_SINK && direction === abi.KVM_EXIT_IO_OUT) return;
  const size = run.getUint8(abi.RUN_IO_SIZE);
  const count = run.getUint32(abi.RUN_IO_COUNT, true);
  // Two 32-bit reads instead of getBigUint64: no BigInt is allocated on the exit path.
  const offset =
    run.getUint32(abi.RUN_IO_DATA_OFFSET, true) +
    run.getUint32(abi.RUN_IO_DATA_OFFSET + 4, true) * 0x100000000;
  const bytes = size * count;
  // The kernel fills these, but a bad value must not make us read past the mapping.
  if (offset + bytes > runBytes.length || bytes > ch.DATA_BYTES) return;
  if ((ioPort === uartThr || ioPort === uartLsr) && bytes === 1) {
    if (fastUart(direction === abi.KVM_EXIT_IO_OUT, ioPort, offset)) return;
  }
  if (owner === ch.PORT_FORWARD) {
    if (direction === abi.KVM_EXIT_IO_OUT) {
      data.set(runBytes.subarray(offset, offset + bytes), 0);
      forward(ch.KIND_PIO, 1, size, count, ioPort);
    } else {
      forward(ch.KIND_PIO, 0, size, count, ioPort);
      runBytes.set(data.subarray(0, bytes), offset);
    }
  } else if (direction === abi.KVM_EXIT_IO_OUT) {
    bump(exitSlots + ch.S_UNMAPPED_PIO_WRITE);
  } else {
    runBytes.fill(0xff, offset, offset + bytes);
    bump(exitSlots + ch.S_UNMAPPED_PIO_READ);
  }
}

/** The UART accesses serial_fast.ts lets us answer; false when the model must. */
function fastUart(isOut: boolean, ioPort: number, offset: number): boolean {
  const fast = uartFast;
  if (!fast) return false;
  if (isOut && ioPort === uartThr) {
    if (!fast.writeThr(runBytes[offset] ?? 0)) return false;
  } else if (!isOut && ioPort === uartLsr) {
    const lsr = fast.readLsr();
    if (lsr < 0) return false;
    runBytes[offset] = lsr;
  } else {
    return false;
  }
  bump(exitSlots + ch.S_LOCAL_PIO);
  return true;
}

function handleMmio(): void {
  const addr =
    run.getUint32(abi.RUN_MMIO_PHYS_ADDR, true) +
    run.getUint32(abi.RUN_MMIO_PHYS_ADDR + 4, true) * 0x100000000;
  const len = run.getUint32(abi.RUN_MMIO_LEN, true);
  const isWrite = run.getUint8(abi.RUN_MMIO_IS_WRITE);
  if (len === 0 || len > 8) return;
  const local = len === 4 ? localMmio.get(addr) : undefined;
  if (local !== undefined) {
    const cell = local & 0xffff;
    if (!isWrite && local >>> 16 === ch.LOCAL_READ) {
      run.setUint32(abi.RUN_MMIO_DATA, Atomics.load(localCells, cell) >>> 0, true);
      bump(exitSlots + ch.S_LOCAL_MMIO);
      return;
    }
    if (isWrite && local >>> 16 === ch.LOCAL_CLEAR_BITS) {
      // GUEST-CONTROLLED: any value; it can only clear bits.
      Atomics.and(localCells, cell, ~run.getUint32(abi.RUN_MMIO_DATA, true));
      bump(exitSlots + ch.S_LOCAL_MMIO);
      return;
    }
  }
  if (isWrite) {
    data.set(runBytes.subarray(abi.RUN_MMIO_DATA, abi.RUN_MMIO_DATA + len), 0);
    forward(ch.KIND_MMIO, 1, len, 1, addr);
  } else {
    forward(ch.KIND_MMIO, 0, len, 1, addr);
    runBytes.set(data.subarray(0, len), abi.RUN_MMIO_DATA);
  }
}

function finish(exit: ch.VcpuExit): void {
  Atomics.store(ctrl, ch.C_RUNSTATE, ch.RS_STOPPED);
  Atomics.notify(ctrl, ch.C_RUNSTATE);
  port?.postMessage(exit);
  libc.munmap(runMap);
}

/** Returns false when the loop must end. */
function obeyCommand(): boolean {
  for (;;) {
    const cmd = Atomics.load(ctrl, ch.C_COMMAND);
    if (cmd === ch.CMD_RUN) {
      // Clear immediate_exit with a full barrier, then look again: a command stored after
      // our first look has its immediate_exit store ordered after ours.
      Atomics.store(runBytes, abi.RUN_IMMEDIATE_EXIT, 0);
      if (Atomics.load(ctrl, ch.C_COMMAND) === ch.CMD_RUN) {
        Atomics.store(ctrl, ch.C_RUNSTATE, ch.RS_RUNNING);
        return true;
      }
      continue;
    }
    if (cmd === ch.CMD_STOP) return false;
    Atomics.store(ctrl, ch.C_RUNSTATE, ch.RS_PAUSED);
    Atomics.notify(ctrl, ch.C_RUNSTATE);
    Atomics.wait(ctrl, ch.C_COMMAND, ch.CMD_PAUSE);
  }
}

function loop(): ch.VcpuExit {
  if (!obeyCommand()) return { kind: "stopped" };
  for (;;) {
    const r = libc.ioctlRaw(fd, abi.KVM_RUN, 0);
    if (r < 0) {
      if (r === -EINTR || r === -EAGAIN) {
        bump(exitSlots + ch.S_KICKS);
        if (!obeyCommand()) return { kind: "stopped" };
        continue;
      }
      return { kind: "error", message: `KVM_RUN failed: errno ${-r}` };
    }
    const reason = run.getUint32(abi.RUN_EXIT_REASON, true);
    bump(reason < exitSlots ? reason : exitSlots - 1);
    switch (reason) {
      case abi.KVM_EXIT_IO:
        handleIo();
        break;
      case abi.KVM_EXIT_MMIO:
        handleMmio();
        break;
      case abi.KVM_EXIT_INTR:
        if (!obeyCommand()) return { kind: "stopped" };
        break;
      case abi.KVM_EXIT_SHUTDOWN:
        return { kind: "triple-fault", state: faultState() };
      case abi.KVM_EXIT_HLT:
        return { kind: "hlt" };
      case abi.KVM_EXIT_SYSTEM_EVENT:
        return { kind: "system-event", type: run.getUint32(abi.RUN_SYSTEM_EVENT_TYPE, true) };
      case abi.KVM_EXIT_INTERNAL_ERROR: {
        const n = Math.min(run.getUint32(abi.RUN_INTERNAL_NDATA, true), 16);
        const words: string[] = [];
        for (let i = 0; i < n; i++)
          words.push(`0x${run.getBigUint64(abi.RUN_INTERNAL_DATA + i * 8, true).toString(16)}`);
        return {
          kind: "internal-error",
          suberror: run.getUint32(abi.RUN_INTERNAL_SUBERROR, true),
          data: words,
        };
      }
      case abi.KVM_EXIT_FAIL_ENTRY:
        return {
          kind: "fail-entry",
          reason: `0x${run.getBigUint64(abi.RUN_FAIL_ENTRY_REASON, true).toString(16)}`,
        };
      default:
        return { kind: "unexpected-exit", reason };
    }
  }
}

let exit: ch.VcpuExit;
try {
  exit = loop();
} catch (e) {
  exit = { kind: "error", message: e instanceof Error ? e.message : String(e) };
}
finish(exit);

/** Where the guest was when it triple-faulted, for the outcome's reason. Best effort. */
function faultState(): string {
  try {
    const regs = new DataView(new ArrayBuffer(abi.SIZEOF_KVM_REGS));
    const sregs = new DataView(new ArrayBuffer(abi.SIZEOF_KVM_SREGS));
    libc.ioctl(fd, abi.KVM_GET_REGS, regs, "KVM_GET_REGS");
    libc.ioctl(fd, abi.KVM_GET_SREGS, sregs, "KVM_GET_SREGS");
    return describeFaultState(regs, sregs);
  } catch (e) {
    return `registers unreadable: ${String(e)}`;
  }
}
