// The MC146818 CMOS real-time clock and NVRAM behind ports 0x70 (index) and 0x71 (data).
// Time is never stored: each read derives it from an injectable host clock plus the
// offset the guest last set, so the clock cannot drift or stall while the VM is paused in
// the host. Time and date registers follow register B's data mode (BCD or binary) and
// 12/24-hour bit; the rest of the 128 bytes are plain NVRAM, pre-filled with the memory
// size bytes that firmware and older kernels read. Interrupts (periodic, alarm, update)
// are not modelled: register C always reads zero.

import type { BusDevice } from "../device.js";

/** Index port; bit 7 of the index is the chipset's NMI mask, not part of the index. */
export const RTC_INDEX_PORT = 0x70;
/** Data port. Register the device at {@link RTC_INDEX_PORT} with length {@link RTC_PORT_COUNT}. */
export const RTC_DATA_PORT = 0x71;
export const RTC_PORT_COUNT = 2;

// Register indexes, Motorola MC146818A datasheet "Address Map" (Figure 3).
export const RTC_SECONDS = 0x00;
export const RTC_SECONDS_ALARM = 0x01;
export const RTC_MINUTES = 0x02;
export const RTC_MINUTES_ALARM = 0x03;
export const RTC_HOURS = 0x04;
export const RTC_HOURS_ALARM = 0x05;
export const RTC_DAY_OF_WEEK = 0x06;
export const RTC_DAY_OF_MONTH = 0x07;
export const RTC_MONTH = 0x08;
export const RTC_YEAR = 0x09;
export const RTC_REG_A = 0x0a;
export const RTC_REG_B = 0x0b;
export const RTC_REG_C = 0x0c;
export const RTC_REG_D = 0x0d;
/** Century, IBM PC convention (ACPI FADT "CENTURY" field points here). */
export const RTC_CENTURY = 0x32;

// Register A, MC146818A "Register A": UIP bit 7, divider bits 6-4, rate select 3-0.
const REGA_UIP = 0x80;
const REGA_DV_MASK = 0x70;
const REGA_DV_NORMAL = 0x20; // 32.768 kHz time base, divider running
const REGA_DEFAULT = 0x26; // 32.768 kHz, 1024 Hz periodic rate: what a PC BIOS sets
// Register B, MC146818A "Register B".
const REGB_SET = 0x80;
const REGB_UIE = 0x10;
const REGB_DM_BINARY = 0x04;
const REGB_24H = 0x02;
const REGB_DEFAULT = REGB_24H; // BCD, 24-hour
// Register D: valid RAM and time.
const REGD_VRT = 0x80;
const HOUR_PM = 0x80;

/**
 * UIP is high for the last 2 ms of each second (244 µs set-up plus the ~2 ms update cycle,
 * MC146818A "Update Cycle"), and the registers roll over as it falls. A window this wide
 * is visible even to a millisecond clock, so guests that wait for UIP's falling edge to
 * find a second boundary do not spin.
 */
const UIP_WINDOW_MS = 2;

const NVRAM_SIZE = 128;
const KIB = 1024;
const MIB = 1024 * KIB;

// CMOS memory-size bytes, the QEMU/SeaBIOS convention (QEMU hw/i386/pc.c pc_cmos_init).
const CMOS_BASE_MEM_LO = 0x15; // KiB below 640 KiB
const CMOS_EXT_MEM_LO = 0x17; // KiB above 1 MiB, to 64 MiB
const CMOS_EXT_MEM_LO_COPY = 0x30;
const CMOS_MEM_ABOVE_16M_LO = 0x34; // 64 KiB units between 16 MiB and 4 GiB
const CMOS_MEM_ABOVE_4G_LO = 0x5b; // 64 KiB units above 4 GiB, three bytes

export interface RtcOptions {
  /** Milliseconds since the Unix epoch, UTC; defaults to Date.now. */
  clock?: () => number;
  /** Guest RAM below 4 GiB, in bytes, for the CMOS memory-size bytes. */
  memoryBelow4G?: number;
  /** Guest RAM above 4 GiB, in bytes. */
  memoryAbove4G?: number;
}

/** Everything needed to recreate the RTC; plain JSON. */
export interface RtcState {
  index: number;
  nvram: number[];
  /** Guest time minus host clock, in milliseconds. */
  offsetMs: number;
}

export interface RtcCounters {
  /** Accesses with a size other than 1, 2, 4 or 8 bytes. */
  malformed: number;
}

// Indexes into the decoded-time scratch array.
const F_SEC = 0;
const F_MIN = 1;
const F_HOUR = 2;
const F_DOW = 3;
const F_DAY = 4;
const F_MONTH = 5;
const F_YEAR = 6;

/** The MC146818 RTC: register at 0x70, length 2. */
export class Rtc implements BusDevice {
  readonly name = "rtc";

  #clock: () => number;
  #nvram = new Uint8Array(NVRAM_SIZE);
  #index = 0;
  #offsetMs = 0;
  // Current time while SET holds the clock, and scratch for decoding otherwise.
  #frozen = new Int32Array(7);
  #now = new Int32Array(7);
  #counters: RtcCounters = { malformed: 0 };

  constructor(options: RtcOptions = {}) {
    const clock = options.clock ?? Date.now;
    if (typeof clock !== "function")
      throw new TypeError("Cannot create rtc: clock must be a function");
    this.#clock = clock;
    const below = options.memoryBelow4G ?? 0;
    const above = options.memoryAbove4G ?? 0;
    for (const [what, v, max] of [
      ["memoryBelow4G", below, 4 * 1024 * MIB],
      ["memoryAbove4G", above, 2 ** 52],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0 || v > max) {
        throw new RangeError(`Cannot create rtc: ${what} ${v} is out of range`);
      }
    }
    this.#nvram[RTC_REG_A] = REGA_DEFAULT;
    this.#nvram[RTC_REG_B] = REGB_DEFAULT;
    this.#setMemorySize(below, above);
  }

  /** Recreate an RTC from {@link Rtc.state}; throws TypeError/RangeError on a bad snapshot. */
  static fromState(state: RtcState, options: RtcOptions = {}): Rtc {
    const rtc = new Rtc(options);
    if (!Number.isInteger(state.index) || state.index < 0 || state.index >= NVRAM_SIZE) {
      throw new RangeError("Cannot restore rtc: index is out of range");
    }
    if (!Number.isFinite(state.offsetMs))
      throw new RangeError("Cannot restore rtc: offsetMs is not finite");
    if (!Array.isArray(state.nvram) || state.nvram.length !== NVRAM_SIZE) {
      throw new RangeError(`Cannot restore rtc: nvram must hold ${NVRAM_SIZE} bytes`);
    }
    state.nvram.forEach((b, i) => {
      if (!Number.isInteger(b) || b < 0 || b > 0xff) {
        throw new RangeError(`Cannot restore rtc: nvram[${i}] is not a byte`);
      }
      rtc.#nvram[i] = b;
    });
    rtc.#index = state.index;
    rtc.#offsetMs = state.offsetMs;
    // A snapshot taken mid-SET restores with the clock running from the saved time.
    if ((rtc.#nvram[RTC_REG_B] ?? 0) & REGB_SET) rtc.#now2frozen();
    return rtc;
  }

  /** A JSON-able snapshot. */
  state(): RtcState {
    return { index: this.#index, nvram: Array.from(this.#nvram), offsetMs: this.#offsetMs };
  }

  /** A copy of the counters. */
  counters(): RtcCounters {
    return { ...this.#counters };
  }

  read(offset: number, data: Uint8Array): void {
    // GUEST-CONTROLLED: size. Wider accesses are split into byte cycles as the ISA bus does.
    const n = data.length;
    if (n !== 1 && n !== 2 && n !== 4 && n !== 8) {
      this.#counters.malformed++;
      data.fill(0xff);
      return;
    }
    for (let i = 0; i < n; i++) {
      // The index port is write-only on PC chipsets; it floats.
      data[i] = offset + i === 1 ? this.#readRegister(this.#index) : 0xff;
    }
  }

  write(offset: number, data: Uint8Array): void {
    const n = data.length;
    if (n !== 1 && n !== 2 && n !== 4 && n !== 8) {
      this.#counters.malformed++;
      return;
    }
    for (let i = 0; i < n; i++) {
      const v = data[i] ?? 0;
      // GUEST-CONTROLLED: index; bit 7 is the NMI mask on port 0x70, not an address bit.
      if (offset + i === 0) this.#index = v & 0x7f;
      else if (offset + i === 1) this.#writeRegister(this.#index, v);
    }
  }

  #readRegister(index: number): number {
    const regB = this.#nvram[RTC_REG_B] ?? 0;
    switch (index) {
      case RTC_SECONDS:
        return this.#encode(this.#time()[F_SEC] ?? 0, regB);
      case RTC_MINUTES:
        return this.#encode(this.#time()[F_MIN] ?? 0, regB);
      case RTC_HOURS:
        return this.#encodeHour(this.#time()[F_HOUR] ?? 0, regB);
      case RTC_DAY_OF_WEEK:
        return this.#encode(this.#time()[F_DOW] ?? 1, regB);
      case RTC_DAY_OF_MONTH:
        return this.#encode(this.#time()[F_DAY] ?? 1, regB);
      case RTC_MONTH:
        return this.#encode(this.#time()[F_MONTH] ?? 1, regB);
      case RTC_YEAR:
        return this.#encode((this.#time()[F_YEAR] ?? 0) % 100, regB);
      case RTC_CENTURY:
        return this.#encode(Math.floor((this.#time()[F_YEAR] ?? 0) / 100) % 100, regB);
      case RTC_REG_A: {
        const a = (this.#nvram[RTC_REG_A] ?? 0) & ~REGA_UIP;
        if (regB & REGB_SET || (a & REGA_DV_MASK) !== REGA_DV_NORMAL) return a;
        const phase = ((this.#guestMs() % 1000) + 1000) % 1000;
        return phase >= 1000 - UIP_WINDOW_MS ? a | REGA_UIP : a;
      }
      case RTC_REG_C:
        // No interrupt sources are modelled, so no flags are ever set.
        return 0;
      case RTC_REG_D:
        return REGD_VRT;
      default:
        return this.#nvram[index] ?? 0xff;
    }
  }

  #writeRegister(index: number, value: number): void {
    const regB = this.#nvram[RTC_REG_B] ?? 0;
    switch (index) {
      case RTC_SECONDS:
      case RTC_MINUTES:
      case RTC_HOURS:
      case RTC_DAY_OF_WEEK:
      case RTC_DAY_OF_MONTH:
      case RTC_MONTH:
      case RTC_YEAR:
      case RTC_CENTURY:
        this.#writeTime(index, value, regB);
        return;
      case RTC_REG_A:
        // UIP is read-only.
        this.#nvram[RTC_REG_A] = value & ~REGA_UIP;
        return;
      case RTC_REG_B: {
        let b = value;
        // Setting SET clears UIE (MC146818A "Register B", SET bit).
        if (b & REGB_SET) b &= ~REGB_UIE;
        if (b & REGB_SET && !(regB & REGB_SET)) this.#now2frozen();
        this.#nvram[RTC_REG_B] = b;
        if (!(b & REGB_SET) && regB & REGB_SET) this.#frozen2offset();
        return;
      }
      case RTC_REG_C:
      case RTC_REG_D:
        return; // read-only
      default:
        this.#nvram[index] = value;
    }
  }

  #writeTime(index: number, value: number, regB: number): void {
    const held = (regB & REGB_SET) !== 0;
    const f = this.#frozen;
    // Outside SET, edit a copy of the running time and re-derive the offset from it.
    if (!held) this.#now2frozen();
    // GUEST-CONTROLLED: any byte; decode then clamp so the date arithmetic stays finite.
    switch (index) {
      case RTC_SECONDS:
        f[F_SEC] = clamp(this.#decode(value, regB), 0, 59);
        break;
      case RTC_MINUTES:
        f[F_MIN] = clamp(this.#decode(value, regB), 0, 59);
        break;
      case RTC_HOURS:
        f[F_HOUR] = this.#decodeHour(value, regB);
        break;
      case RTC_DAY_OF_WEEK:
        // Held while SET is on; the running clock derives the weekday from the date.
        f[F_DOW] = clamp(this.#decode(value, regB), 1, 7);
        break;
      case RTC_DAY_OF_MONTH:
        f[F_DAY] = clamp(this.#decode(value, regB), 1, 31);
        break;
      case RTC_MONTH:
        f[F_MONTH] = clamp(this.#decode(value, regB), 1, 12);
        break;
      case RTC_YEAR: {
        const y = f[F_YEAR] ?? 0;
        f[F_YEAR] = y - (y % 100) + clamp(this.#decode(value, regB), 0, 99);
        break;
      }
      default: {
        const y = f[F_YEAR] ?? 0;
        f[F_YEAR] = clamp(this.#decode(value, regB), 0, 99) * 100 + (y % 100);
      }
    }
    if (!held) this.#frozen2offset();
  }

  /** Guest time in ms since the epoch. */
  #guestMs(): number {
    const t = this.#clock() + this.#offsetMs;
    return Number.isFinite(t) ? t : 0;
  }

  /** The current guest time fields (the held copy while SET is on). Allocates nothing. */
  #time(): Int32Array {
    if ((this.#nvram[RTC_REG_B] ?? 0) & REGB_SET) return this.#frozen;
    civilFromMs(this.#guestMs(), this.#now);
    return this.#now;
  }

  #now2frozen(): void {
    civilFromMs(this.#guestMs(), this.#frozen);
  }

  /** Make the held fields the guest's time from now on, keeping the sub-second phase. */
  #frozen2offset(): void {
    const f = this.#frozen;
    const days = daysFromCivil(f[F_YEAR] ?? 1970, f[F_MONTH] ?? 1, f[F_DAY] ?? 1);
    const wantSec = days * 86400 + (f[F_HOUR] ?? 0) * 3600 + (f[F_MIN] ?? 0) * 60 + (f[F_SEC] ?? 0);
    const nowSec = Math.floor(this.#guestMs() / 1000);
    this.#offsetMs += (wantSec - nowSec) * 1000;
  }

  #encode(v: number, regB: number): number {
    return regB & REGB_DM_BINARY ? v & 0xff : toBcd(v);
  }

  #decode(b: number, regB: number): number {
    return regB & REGB_DM_BINARY ? b : fromBcd(b);
  }

  /** Hours in 12-hour mode are 1..12 with bit 7 for PM (MC146818A Table 3). */
  #encodeHour(h: number, regB: number): number {
    if (regB & REGB_24H) return this.#encode(h, regB);
    const h12 = h % 12 === 0 ? 12 : h % 12;
    return this.#encode(h12, regB) | (h >= 12 ? HOUR_PM : 0);
  }

  #decodeHour(b: number, regB: number): number {
    if (regB & REGB_24H) return clamp(this.#decode(b, regB), 0, 23);
    const h12 = clamp(this.#decode(b & ~HOUR_PM, regB), 1, 12) % 12;
    return b & HOUR_PM ? h12 + 12 : h12;
  }

  #setMemorySize(below: number, above: number): void {
    const put16 = (at: number, v: number): void => {
      this.#nvram[at] = v & 0xff;
      this.#nvram[at + 1] = (v >>> 8) & 0xff;
    };
    put16(CMOS_BASE_MEM_LO, Math.min(Math.floor(below / KIB), 640));
    const ext = below > MIB ? Math.min(Math.floor((below - MIB) / KIB), 0xffff) : 0;
    put16(CMOS_EXT_MEM_LO, ext);
    put16(CMOS_EXT_MEM_LO_COPY, ext);
    const above16 =
      below > 16 * MIB ? Math.min(Math.floor((below - 16 * MIB) / (64 * KIB)), 0xffff) : 0;
    put16(CMOS_MEM_ABOVE_16M_LO, above16);
    const high = Math.min(Math.floor(above / (64 * KIB)), 0xff_ffff);
    put16(CMOS_MEM_ABOVE_4G_LO, high & 0xffff);
    this.#nvram[CMOS_MEM_ABOVE_4G_LO + 2] = (high >>> 16) & 0xff;
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(v, hi));
}

function toBcd(v: number): number {
  return ((Math.floor(v / 10) % 10) << 4) | (v % 10);
}

/** Invalid nibbles decode to large values that the caller clamps. */
function fromBcd(b: number): number {
  return (b >> 4) * 10 + (b & 0x0f);
}

/** Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant, "days_from_civil"). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

/** Fill `out` with the UTC fields of `ms` (H. Hinnant, "civil_from_days"). */
function civilFromMs(ms: number, out: Int32Array): void {
  const secs = Math.floor(ms / 1000);
  const days = Math.floor(secs / 86400);
  const sod = secs - days * 86400;
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const month = mp < 10 ? mp + 3 : mp - 9;
  out[F_SEC] = sod % 60;
  out[F_MIN] = Math.floor(sod / 60) % 60;
  out[F_HOUR] = Math.floor(sod / 3600);
  // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
  out[F_DOW] = ((((days + 4) % 7) + 7) % 7) + 1;
  out[F_DAY] = doy - Math.floor((153 * mp + 2) / 5) + 1;
  out[F_MONTH] = month;
  out[F_YEAR] = yoe + era * 400 + (month <= 2 ? 1 : 0);
}
