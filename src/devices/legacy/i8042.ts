// Just enough of the Intel 8042 keyboard controller for a Linux guest: the controller's
// own command set, so the i8042 driver's probe (flush, self-test, command byte, port
// tests) finishes quickly and quietly, and the pulse-output command 0xFE that Linux's
// `reboot=k` path uses to reset the machine, turned into a VM reset request. No keyboard
// or mouse sits behind the ports: bytes sent to them are dropped, so the atkbd/psmouse
// probes time out in the background. The controller has no interrupt line for the same
// reason: it only ever answers polled controller commands.
//
// The 8042 sits on two non-contiguous ports, 0x60 (data) and 0x64 (status/command). It is
// exposed as two one-port bus devices so that the VMM never claims 0x61..0x63: port 0x61
// (system control port B: PIT channel 2 gate and output, read by Linux's TSC calibration)
// belongs to KVM's in-kernel PIT when it is created with KVM_PIT_SPEAKER_DUMMY, and to a
// PIT model otherwise, never to the keyboard controller.

import type { BusDevice, VmRequestSink } from "../device.js";

/** Data port (IBM PC/AT Technical Reference, "Keyboard Controller"). */
export const I8042_DATA_PORT = 0x60;
/** Status (read) and command (write) port. */
export const I8042_COMMAND_PORT = 0x64;

// Status register bits; names as in Linux drivers/input/serio/i8042.h.
const STR_OBF = 0x01; // output buffer full
// STR_IBF (0x02) stays clear: commands complete before the guest's next access.
const STR_SYS = 0x04; // system flag, mirrors command byte bit 2 (set after self-test)
const STR_CMDDAT = 0x08; // last write was to the command port
const STR_KEYLOCK = 0x10; // 1 = keyboard not inhibited (Linux warns "Keylock active" when 0)
const STR_AUXDATA = 0x20; // output buffer holds AUX data

// Command byte (controller RAM byte 0) bits.
const CTR_SYS = 0x04;
const CTR_KBDDIS = 0x10;
const CTR_AUXDIS = 0x20;
/** Keyboard interrupt on, system flag, translate to set 1: what a PC BIOS leaves (as Firecracker). */
const CTR_DEFAULT = 0x45;

// Controller commands (8042 command set; Linux i8042.h names).
const CMD_READ_RAM = 0x20; // 0x20..0x3f: read RAM byte n (0x20 = command byte)
const CMD_WRITE_RAM = 0x60; // 0x60..0x7f: write RAM byte n (0x60 = command byte)
const CMD_AUX_DISABLE = 0xa7;
const CMD_AUX_ENABLE = 0xa8;
const CMD_AUX_TEST = 0xa9;
const CMD_CTL_TEST = 0xaa;
const CMD_KBD_TEST = 0xab;
const CMD_KBD_DISABLE = 0xad;
const CMD_KBD_ENABLE = 0xae;
const CMD_READ_OUTPUT = 0xd0;
const CMD_WRITE_OUTPUT = 0xd1;
const CMD_KBD_LOOP = 0xd2; // next data byte appears as if from the keyboard
const CMD_AUX_LOOP = 0xd3; // next data byte appears as if from the AUX device
const CMD_AUX_SEND = 0xd4; // next data byte goes to the AUX device
const CMD_PULSE_BASE = 0xf0; // 0xf0..0xff: pulse output-port bits 0-3 where the command bit is 0

/** Self-test passed (Linux I8042_RET_CTL_TEST). */
const RET_CTL_TEST = 0x55;
/** Interface test: no error. */
const RET_PORT_OK = 0x00;

// Output port bits.
const OUTP_RESET = 0x01; // active low: 0 holds the CPU in reset
const OUTP_A20 = 0x02;
const OUTP_DEFAULT = OUTP_RESET | OUTP_A20;

const RAM_SIZE = 32;

export interface I8042Options {
  /** Receives "reset" when the guest pulses or clears the CPU reset line. */
  request: VmRequestSink;
}

export interface I8042Counters {
  /** Accesses with a size other than 1, 2, 4 or 8 bytes. */
  malformed: number;
  /** Data bytes meant for the (absent) keyboard or AUX device. */
  droppedDeviceBytes: number;
  /** Commands this model does not implement (ignored, as an 8042 ignores unknown ones). */
  unknownCommands: number;
}

/** An 8042 controller; register {@link I8042.dataPort} at 0x60 and {@link I8042.commandPort} at 0x64, length 1 each. */
export class I8042 {
  /** Port 0x60: read the output buffer, write command parameters or device bytes. */
  readonly dataPort: BusDevice;
  /** Port 0x64: read status, write controller commands. */
  readonly commandPort: BusDevice;

  #request: VmRequestSink;
  #ram = new Uint8Array(RAM_SIZE);
  #status = STR_SYS | STR_KEYLOCK;
  #output = 0;
  #outputPort = OUTP_DEFAULT;
  /** Command waiting for its parameter byte on the data port, or 0. */
  #pending = 0;
  #counters: I8042Counters = { malformed: 0, droppedDeviceBytes: 0, unknownCommands: 0 };

  constructor(options: I8042Options) {
    if (typeof options?.request !== "function") {
      throw new TypeError("Cannot create i8042: request must be a function");
    }
    this.#request = options.request;
    this.#ram[0] = CTR_DEFAULT;
    // Built once: the views dispatch by port with no per-access allocation.
    this.dataPort = {
      name: "i8042-data",
      read: (offset, data) => this.#access(offset, data, false, true),
      write: (offset, data) => this.#access(offset, data, true, true),
    };
    this.commandPort = {
      name: "i8042-command",
      read: (offset, data) => this.#access(offset, data, false, false),
      write: (offset, data) => this.#access(offset, data, true, false),
    };
  }

  /** A copy of the counters. */
  counters(): I8042Counters {
    return { ...this.#counters };
  }

  #access(offset: number, data: Uint8Array, write: boolean, isData: boolean): void {
    // GUEST-CONTROLLED: size and offset. Each view is one port: only a 1-byte access at
    // offset 0 means anything; other valid sizes read all-ones / are ignored, as the
    // neighbouring ports are not ours to answer for.
    const n = data.length;
    if (n !== 1 && n !== 2 && n !== 4 && n !== 8) {
      this.#counters.malformed++;
      if (!write) data.fill(0xff);
      return;
    }
    if (offset !== 0 || n !== 1) {
      if (!write) data.fill(0xff);
      return;
    }
    if (write) {
      if (isData) this.#writeData(data[0] ?? 0);
      else this.#writeCommand(data[0] ?? 0);
    } else {
      data[0] = isData ? this.#readData() : this.#status;
    }
  }

  #readData(): number {
    // Reading the data port empties the output buffer; with nothing there it repeats the
    // last byte, as the 8042's output latch does.
    this.#status &= ~(STR_OBF | STR_AUXDATA);
    return this.#output;
  }

  #emit(value: number, aux = false): void {
    this.#output = value & 0xff;
    this.#status = (this.#status | STR_OBF) & ~STR_AUXDATA;
    if (aux) this.#status |= STR_AUXDATA;
  }

  #setCommandByte(value: number): void {
    this.#ram[0] = value;
    // The status register's system flag follows command-byte bit 2.
    this.#status = (this.#status & ~STR_SYS) | (value & CTR_SYS ? STR_SYS : 0);
  }

  #writeCommand(cmd: number): void {
    this.#status |= STR_CMDDAT;
    // A new command abandons one still waiting for its parameter.
    this.#pending = 0;
    if (cmd >= CMD_READ_RAM && cmd < CMD_READ_RAM + RAM_SIZE) {
      this.#emit(this.#ram[cmd - CMD_READ_RAM] ?? 0);
      return;
    }
    if (cmd >= CMD_WRITE_RAM && cmd < CMD_WRITE_RAM + RAM_SIZE) {
      this.#pending = cmd;
      return;
    }
    if (cmd >= CMD_PULSE_BASE) {
      // Bits 0-3 select output-port lines to pulse low; bit 0 is the CPU reset line.
      if ((cmd & OUTP_RESET) === 0) this.#request("reset", "i8042 reset");
      return;
    }
    const ctr = this.#ram[0] ?? 0;
    switch (cmd) {
      case CMD_AUX_DISABLE:
        this.#setCommandByte(ctr | CTR_AUXDIS);
        return;
      case CMD_AUX_ENABLE:
        this.#setCommandByte(ctr & ~CTR_AUXDIS);
        return;
      case CMD_KBD_DISABLE:
        this.#setCommandByte(ctr | CTR_KBDDIS);
        return;
      case CMD_KBD_ENABLE:
        this.#setCommandByte(ctr & ~CTR_KBDDIS);
        return;
      case CMD_AUX_TEST:
      case CMD_KBD_TEST:
        // The clock and data lines of an empty port test fine.
        this.#emit(RET_PORT_OK);
        return;
      case CMD_CTL_TEST:
        this.#setCommandByte(ctr | CTR_SYS);
        this.#emit(RET_CTL_TEST);
        return;
      case CMD_READ_OUTPUT:
        this.#emit(this.#outputPort);
        return;
      case CMD_WRITE_OUTPUT:
      case CMD_KBD_LOOP:
      case CMD_AUX_LOOP:
      case CMD_AUX_SEND:
        this.#pending = cmd;
        return;
      default:
        this.#counters.unknownCommands++;
        return;
    }
  }

  #writeData(value: number): void {
    this.#status &= ~STR_CMDDAT;
    const cmd = this.#pending;
    this.#pending = 0;
    if (cmd >= CMD_WRITE_RAM && cmd < CMD_WRITE_RAM + RAM_SIZE) {
      if (cmd === CMD_WRITE_RAM) this.#setCommandByte(value);
      else this.#ram[cmd - CMD_WRITE_RAM] = value;
      return;
    }
    switch (cmd) {
      case CMD_WRITE_OUTPUT:
        // A20 is always on under KVM; only the reset line matters.
        this.#outputPort = value | OUTP_A20;
        if ((value & OUTP_RESET) === 0) {
          this.#outputPort |= OUTP_RESET;
          this.#request("reset", "i8042 output port reset");
        }
        return;
      case CMD_KBD_LOOP:
        this.#emit(value);
        return;
      case CMD_AUX_LOOP:
        this.#emit(value, true);
        return;
      default:
        // CMD_AUX_SEND or no command: the byte is for a device that is not there.
        this.#counters.droppedDeviceBytes++;
        return;
    }
  }
}
