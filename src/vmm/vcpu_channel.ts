// The shared memory between a vCPU thread and the VMM's main thread. The vCPU thread
// forwards PIO/MMIO exits it cannot answer itself (unowned ports; the registers in
// LocalRegisters) through a one-slot mailbox and blocks (Atomics.wait) until the main
// thread, which owns the devices, answers. Control words let
// the main thread pause or stop a vCPU. Layout is fixed so neither side allocates per exit.

import type { SerialFastPath } from "../devices/legacy/serial_fast.js";

/** Int32 indexes into the control array. */
export const C_MAILBOX = 0; // MB_IDLE / MB_REQUEST / MB_RESPONSE
export const C_COMMAND = 1; // CMD_RUN / CMD_PAUSE / CMD_STOP
export const C_RUNSTATE = 2; // RS_*
export const C_KIND = 3; // KIND_PIO / KIND_MMIO
export const C_IS_WRITE = 4;
export const C_SIZE = 5; // bytes per access
export const C_COUNT = 6; // accesses (string PIO)
export const C_ADDR_LO = 7;
export const C_ADDR_HI = 8;
export const C_TID = 9;
export const CONTROL_WORDS = 16;

export const MB_IDLE = 0;
export const MB_REQUEST = 1;
export const MB_RESPONSE = 2;
export const CMD_RUN = 0;
export const CMD_PAUSE = 1;
export const CMD_STOP = 2;
export const RS_STARTING = 0;
export const RS_RUNNING = 1;
export const RS_PAUSED = 2;
export const RS_STOPPED = 3;
export const KIND_PIO = 1;
export const KIND_MMIO = 2;

/** Data area: enough for the largest string-PIO batch KVM hands over (one page). */
export const DATA_BYTES = 8192;

/** Port map values: what the vCPU thread does with an access to a given port. */
export const PORT_UNMAPPED = 0; // read all-ones / drop, counted, no round trip
export const PORT_FORWARD = 1; // a device in the main thread answers
export const PORT_SINK = 2; // writes dropped without counting (port 0x80 I/O delay)

/** Extra counters after the per-exit-reason slots in the stats array. */
export const S_UNMAPPED_PIO_READ = 0;
export const S_UNMAPPED_PIO_WRITE = 1;
export const S_FORWARDED = 2;
export const S_KICKS = 3;
export const S_LOCAL_MMIO = 4;
export const S_LOCAL_PIO = 5;
export const EXTRA_STATS = 6;

/**
 * Device registers the vCPU thread answers itself from a shared word (`cells[cell]`,
 * changed only with Atomics), for 4-byte accesses at `address`: virtio-mmio's
 * InterruptStatus and InterruptACK, which a driver touches twice per interrupt.
 */
export interface LocalMmio {
  address: number;
  kind: typeof LOCAL_READ | typeof LOCAL_CLEAR_BITS;
  cell: number;
}
/** A read returns the word. */
export const LOCAL_READ = 1;
/** A write clears the written bits in the word. */
export const LOCAL_CLEAR_BITS = 2;

export interface LocalRegisters {
  cells: SharedArrayBuffer;
  registers: readonly LocalMmio[];
  /** The UART whose LSR reads and THR writes the vCPU thread may answer (serial_fast.ts). */
  uart?: { base: number; shared: SerialFastPath };
}

export interface VcpuShared {
  control: SharedArrayBuffer;
  data: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  portMap: SharedArrayBuffer;
  local: LocalRegisters;
}

export function allocateShared(
  statSlots: number,
  portMap: SharedArrayBuffer,
  local: LocalRegisters = { cells: new SharedArrayBuffer(4), registers: [] },
): VcpuShared {
  return {
    control: new SharedArrayBuffer(CONTROL_WORDS * 4),
    data: new SharedArrayBuffer(DATA_BYTES),
    stats: new SharedArrayBuffer((statSlots + EXTRA_STATS) * 8),
    portMap,
    local,
  };
}

/** What ends a vCPU's run, reported by the vCPU thread. */
export type VcpuExit =
  | { kind: "stopped" }
  | { kind: "triple-fault"; state?: string }
  | { kind: "system-event"; type: number }
  | { kind: "internal-error"; suberror: number; data: string[] }
  | { kind: "fail-entry"; reason: string }
  | { kind: "hlt" }
  | { kind: "unexpected-exit"; reason: number }
  | { kind: "error"; message: string };
