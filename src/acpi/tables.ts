// Builds the ACPI tables of Vessel's guest platform: RSDP, XSDT, FADT, MADT and DSDT. The
// guest boots without firmware, and Debian's 6.1 cloud kernel learns about CPUs (MADT) and
// devices (DSDT) only from ACPI, so these tables are the whole platform description. The
// platform is hardware-reduced (ACPI 6.5 §4.1): no PM1/GPE blocks, sleep and reset through
// the FADT's generic-address registers, and the power button behind a Generic Event Device.

import {
  ACPI_RESET_VALUE,
  GED_EVENT_OFFSET,
  GED_EVENT_POWER_BUTTON,
  GED_EVENT_SIZE,
  GED_MMIO_SIZE,
  PM_RESET_OFFSET,
  PM_SLEEP_CONTROL_OFFSET,
  PM_SLEEP_STATUS_OFFSET,
  SLP_TYP_S5,
} from "../devices/acpi/mod.js";
import {
  type Aml,
  and,
  concat,
  device,
  eisaId,
  FieldAccess,
  FieldUpdate,
  field,
  ifThen,
  integer,
  interrupt,
  ioPort,
  lEqual,
  local,
  memory32Fixed,
  method,
  name,
  notify,
  operationRegion,
  pkg,
  RegionSpace,
  ref,
  resourceTemplate,
  scope,
  store,
  string,
} from "./aml.js";

/** First port of the PM register block; the VMM registers `AcpiPmDevice` here. */
export const ACPI_PM_PORT_BASE = 0x600;
/** FADT SLEEP_CONTROL_REG (§5.2.9), a byte in system I/O space. */
export const ACPI_SLEEP_CONTROL_PORT = ACPI_PM_PORT_BASE + PM_SLEEP_CONTROL_OFFSET;
/** FADT SLEEP_STATUS_REG (§5.2.9), a byte in system I/O space. */
export const ACPI_SLEEP_STATUS_PORT = ACPI_PM_PORT_BASE + PM_SLEEP_STATUS_OFFSET;
/** FADT RESET_REG (§5.2.9), a byte in system I/O space. */
export const ACPI_RESET_PORT = ACPI_PM_PORT_BASE + PM_RESET_OFFSET;

/** Local APIC base every vCPU sees (MADT Local Interrupt Controller Address, §5.2.12). */
export const LOCAL_APIC_ADDRESS = 0xfee0_0000;
/** Where KVM's in-kernel IO APIC decodes (MADT I/O APIC Address, §5.2.12.3). */
export const IO_APIC_ADDRESS = 0xfec0_0000;
/** Pins of KVM's in-kernel IO APIC (KVM_IOAPIC_NUM_PINS); GSIs 0..23 exist. */
export const IO_APIC_PINS = 24;
/** GSI of the in-kernel PIT: ISA IRQ0 is overridden to it, as on every PC. */
export const PIT_GSI = 2;

/** Default start of the tables: the BIOS read-only area the guest scans for the RSDP. */
export const ACPI_DEFAULT_BASE = 0xe_0000;
/** End (exclusive) of the area the RSDP search covers (§5.2.5.1). */
const ACPI_AREA_END = 0x10_0000;

/** What the tables describe. All interrupt numbers are IO APIC GSIs. */
export interface AcpiConfig {
  /** vCPUs; vCPU i gets ACPI Processor UID i and APIC ID i. 1..254. */
  cpus: number;
  /** IO APIC ID, 0..254. */
  ioapicId: number;
  /** 16550 UARTs: their first port (8 ports decoded) and GSI. */
  serial: readonly { port: number; irq: number }[];
  /** virtio-mmio transports: MMIO base, size and GSI (edge, active high). */
  virtioMmio: readonly { base: number; size: number; irq: number }[];
  /** The Generic Event Device: MMIO base of its register block and its GSI. */
  ged: { base: number; irq: number };
}

/** The tables, placed: write each region into guest RAM; pass `rsdpAddress` to the kernel. */
export interface AcpiImage {
  /** Guest-physical address of the RSDP, for boot_params.acpi_rsdp_addr. */
  rsdpAddress: number;
  /** One region per table, in address order, not overlapping. */
  regions: { signature: string; address: number; bytes: Uint8Array }[];
}

// §5.2.6 System Description Table Header.
const HEADER_SIZE = 36;
const OEM_ID = "VESSEL";
const OEM_TABLE_ID = "VESSELVM";
const OEM_REVISION = 1;
const CREATOR_ID = "VSSL";
const CREATOR_REVISION = 1;

// Table revisions (ACPI 6.5): §5.2.5.3 RSDP 2, §5.2.8 XSDT 1, §5.2.9 FADT 6 minor 5,
// §5.2.12 MADT 5, §5.2.11.1 DSDT 2 (which makes AML integers 64 bits wide).
const RSDP_REVISION = 2;
const XSDT_REVISION = 1;
const FADT_MAJOR_REVISION = 6;
const FADT_MINOR_REVISION = 5;
const MADT_REVISION = 5;
const DSDT_REVISION = 2;

// §5.2.5.3 Root System Description Pointer structure.
const RSDP_SIZE = 36;
const RSDP_V1_CHECKSUM_SPAN = 20;

// §5.2.9 Table 5.9: FADT field offsets used here; the ACPI 6.x FADT is 276 bytes.
const FADT_SIZE = 276;
const FADT_FLAGS = 112;
const FADT_IAPC_BOOT_ARCH = 109;
const FADT_RESET_REG = 116;
const FADT_RESET_VALUE = 128;
const FADT_MINOR_VERSION = 131;
const FADT_X_DSDT = 140;
const FADT_SLEEP_CONTROL_REG = 244;
const FADT_SLEEP_STATUS_REG = 256;

// §5.2.9.1 Table 5.10 Fixed ACPI Description Table Fixed Feature Flags.
/** The power button, if any, is a control-method device (ours: PNP0C0C behind the GED). */
const PWR_BUTTON = 1 << 4;
/** The sleep button, if any, is a control-method device (we have none). */
const SLP_BUTTON = 1 << 5;
/** RESET_REG and RESET_VALUE are valid. */
const RESET_REG_SUP = 1 << 10;
/** Hardware-reduced ACPI: no fixed hardware; Linux also drops the legacy PIC and PIT setup. */
const HW_REDUCED_ACPI = 1 << 20;

// §5.2.9.3 Table 5.11 IA-PC Boot Architecture Flags. Leaving LEGACY_DEVICES and 8042 clear
// tells Linux there is no keyboard controller to probe; we also have no VGA, MSI or CMOS RTC.
const VGA_NOT_PRESENT = 1 << 2;
const MSI_NOT_SUPPORTED = 1 << 3;
const PCIE_ASPM_CONTROLS = 1 << 4;
const CMOS_RTC_NOT_PRESENT = 1 << 5;

// §5.2.3.2 Generic Address Structure.
const GAS_SYSTEM_IO = 1;
const GAS_ACCESS_BYTE = 1;

// §5.2.12 MADT. PCAT_COMPAT (flag bit 0) is left clear: the platform is hardware-reduced,
// Linux then installs its null legacy PIC whatever this flag says, and declaring no 8259s
// keeps any other guest from routing through KVM's PIC instead of the IO APIC.
const MADT_PCAT_COMPAT = 0;
const MADT_PROCESSOR_LOCAL_APIC = 0; // §5.2.12.2
const MADT_IO_APIC = 1; // §5.2.12.3
const MADT_INTERRUPT_SOURCE_OVERRIDE = 2; // §5.2.12.5
const MADT_LOCAL_APIC_NMI = 4; // §5.2.12.7
const LOCAL_APIC_ENABLED = 1 << 0; // Table 5.23 Local APIC Flags
const MPS_INTI_CONFORMS = 0; // Table 5.26: polarity and trigger as the bus defines
const ALL_PROCESSORS = 0xff; // §5.2.12.7: ACPI Processor UID 0xFF means every processor
const LINT1 = 1;
const ISA_BUS = 0;

// §5.6.6 Device Object Notifications: 0x80 on a power button means "pressed".
const NOTIFY_POWER_BUTTON_PRESSED = 0x80;

/**
 * Build the tables for `config` and lay them out from `base` (16-byte aligned, default
 * 0xE0000). Everything must end below 1 MiB, where the RSDP search looks.
 */
export function buildAcpiTables(config: AcpiConfig, base: number = ACPI_DEFAULT_BASE): AcpiImage {
  validateConfig(config);
  if (!Number.isInteger(base) || base < 0 || base % 16 !== 0) {
    throw new RangeError(`Cannot place ACPI tables at ${base}: not a 16-byte aligned address`);
  }

  const dsdt = buildDsdt(config);
  const madt = buildMadt(config);
  // Lay out RSDP, XSDT, FADT, MADT, DSDT; sizes do not depend on addresses.
  const xsdtSize = HEADER_SIZE + 8 * 2;
  const rsdpAddress = base;
  const xsdtAddress = align16(rsdpAddress + RSDP_SIZE);
  const fadtAddress = align16(xsdtAddress + xsdtSize);
  const madtAddress = align16(fadtAddress + FADT_SIZE);
  const dsdtAddress = align16(madtAddress + madt.length);
  const end = dsdtAddress + dsdt.length;
  if (end > ACPI_AREA_END) {
    throw new RangeError(
      `Cannot place ACPI tables at 0x${base.toString(16)}: they end at 0x${end.toString(16)}, past 0x100000`,
    );
  }

  const fadt = buildFadt(dsdtAddress);
  const xsdt = buildXsdt([fadtAddress, madtAddress]);
  const rsdp = buildRsdp(xsdtAddress);
  return {
    rsdpAddress,
    regions: [
      { signature: "RSD PTR ", address: rsdpAddress, bytes: rsdp },
      { signature: "XSDT", address: xsdtAddress, bytes: xsdt },
      { signature: "FACP", address: fadtAddress, bytes: fadt },
      { signature: "APIC", address: madtAddress, bytes: madt },
      { signature: "DSDT", address: dsdtAddress, bytes: dsdt },
    ],
  };
}

function align16(n: number): number {
  return (n + 15) & ~15;
}

/** The byte that makes `bytes` sum to zero mod 256 when stored in a zeroed checksum field. */
function checksum(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += bytes[i] ?? 0;
  return (256 - (sum & 0xff)) & 0xff;
}

function writeAscii(out: Uint8Array, at: number, text: string, width: number): void {
  for (let i = 0; i < width; i++) out[at + i] = i < text.length ? text.charCodeAt(i) : 0x20;
}

/** A table of `size` bytes with its §5.2.6 header filled in except the checksum. */
function newTable(signature: string, revision: number, size: number): [Uint8Array, DataView] {
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  writeAscii(out, 0, signature, 4);
  view.setUint32(4, size, true);
  out[8] = revision;
  writeAscii(out, 10, OEM_ID, 6);
  writeAscii(out, 16, OEM_TABLE_ID, 8);
  view.setUint32(24, OEM_REVISION, true);
  writeAscii(out, 28, CREATOR_ID, 4);
  view.setUint32(32, CREATOR_REVISION, true);
  return [out, view];
}

/** Fill in the §5.2.6 header checksum (offset 9) once the table is complete. */
function sealTable(table: Uint8Array): Uint8Array {
  table[9] = 0;
  table[9] = checksum(table);
  return table;
}

function buildRsdp(xsdtAddress: number): Uint8Array {
  const out = new Uint8Array(RSDP_SIZE);
  const view = new DataView(out.buffer);
  writeAscii(out, 0, "RSD PTR ", 8);
  writeAscii(out, 9, OEM_ID, 6);
  out[15] = RSDP_REVISION;
  // RsdtAddress stays 0: there is no RSDT, and ACPI 2.0+ guests use the XSDT.
  view.setUint32(20, RSDP_SIZE, true);
  view.setBigUint64(24, BigInt(xsdtAddress), true);
  // The first checksum covers the ACPI 1.0 part, the extended one the whole structure.
  out[8] = checksum(out, 0, RSDP_V1_CHECKSUM_SPAN);
  out[32] = checksum(out, 0, RSDP_SIZE);
  return out;
}

function buildXsdt(entries: readonly number[]): Uint8Array {
  const [out, view] = newTable("XSDT", XSDT_REVISION, HEADER_SIZE + 8 * entries.length);
  entries.forEach((address, i) => {
    view.setBigUint64(HEADER_SIZE + 8 * i, BigInt(address), true);
  });
  return sealTable(out);
}

function writeGas(view: DataView, at: number, port: number): void {
  view.setUint8(at, GAS_SYSTEM_IO);
  view.setUint8(at + 1, 8); // register bit width
  view.setUint8(at + 2, 0); // register bit offset
  view.setUint8(at + 3, GAS_ACCESS_BYTE);
  view.setBigUint64(at + 4, BigInt(port), true);
}

function buildFadt(dsdtAddress: number): Uint8Array {
  const [out, view] = newTable("FACP", FADT_MAJOR_REVISION, FADT_SIZE);
  // FIRMWARE_CTRL and DSDT (32-bit) stay 0: a hardware-reduced platform needs no FACS, and
  // only X_DSDT is read when it is set.
  view.setUint16(
    FADT_IAPC_BOOT_ARCH,
    VGA_NOT_PRESENT | MSI_NOT_SUPPORTED | PCIE_ASPM_CONTROLS | CMOS_RTC_NOT_PRESENT,
    true,
  );
  view.setUint32(FADT_FLAGS, PWR_BUTTON | SLP_BUTTON | RESET_REG_SUP | HW_REDUCED_ACPI, true);
  writeGas(view, FADT_RESET_REG, ACPI_RESET_PORT);
  view.setUint8(FADT_RESET_VALUE, ACPI_RESET_VALUE);
  view.setUint8(FADT_MINOR_VERSION, FADT_MINOR_REVISION);
  view.setBigUint64(FADT_X_DSDT, BigInt(dsdtAddress), true);
  writeGas(view, FADT_SLEEP_CONTROL_REG, ACPI_SLEEP_CONTROL_PORT);
  writeGas(view, FADT_SLEEP_STATUS_REG, ACPI_SLEEP_STATUS_PORT);
  return sealTable(out);
}

function buildMadt(config: AcpiConfig): Uint8Array {
  const entries: Uint8Array[] = [];
  for (let cpu = 0; cpu < config.cpus; cpu++) {
    const e = new Uint8Array(8);
    e.set([MADT_PROCESSOR_LOCAL_APIC, 8, cpu, cpu]);
    new DataView(e.buffer).setUint32(4, LOCAL_APIC_ENABLED, true);
    entries.push(e);
  }
  const ioapic = new Uint8Array(12);
  ioapic.set([MADT_IO_APIC, 12, config.ioapicId, 0]);
  new DataView(ioapic.buffer).setUint32(4, IO_APIC_ADDRESS, true); // GSI base stays 0
  entries.push(ioapic);
  const override = new Uint8Array(10);
  override.set([MADT_INTERRUPT_SOURCE_OVERRIDE, 10, ISA_BUS, 0]);
  new DataView(override.buffer).setUint32(4, PIT_GSI, true);
  new DataView(override.buffer).setUint16(8, MPS_INTI_CONFORMS, true);
  entries.push(override);
  entries.push(Uint8Array.of(MADT_LOCAL_APIC_NMI, 6, ALL_PROCESSORS, MPS_INTI_CONFORMS, 0, LINT1));

  const body = concat(entries);
  const [out, view] = newTable("APIC", MADT_REVISION, HEADER_SIZE + 8 + body.length);
  view.setUint32(HEADER_SIZE, LOCAL_APIC_ADDRESS, true);
  view.setUint32(HEADER_SIZE + 4, MADT_PCAT_COMPAT, true);
  out.set(body, HEADER_SIZE + 8);
  return sealTable(out);
}

const EDGE_HIGH = { edge: true, activeLow: false, shared: false } as const;

function buildDsdt(config: AcpiConfig): Uint8Array {
  const devices: Aml[] = [];
  config.serial.forEach((uart, i) => {
    devices.push(
      device(`COM${i + 1}`, [
        name("_HID", eisaId("PNP0501")),
        name("_UID", integer(i)),
        name("_CRS", resourceTemplate([ioPort(uart.port, 8), interrupt(uart.irq, EDGE_HIGH)])),
      ]),
    );
  });
  config.virtioMmio.forEach((dev, i) => {
    devices.push(
      device(`V${i.toString(16).toUpperCase().padStart(3, "0")}`, [
        name("_HID", string("LNRO0005")),
        name("_UID", integer(i)),
        name(
          "_CRS",
          resourceTemplate([
            memory32Fixed(true, dev.base, dev.size),
            interrupt(dev.irq, EDGE_HIGH),
          ]),
        ),
      ]),
    );
  });
  devices.push(device("PWRB", [name("_HID", eisaId("PNP0C0C")), name("_UID", integer(0))]));
  devices.push(
    device("GED0", [
      name("_HID", string("ACPI0013")),
      name("_UID", integer(0)),
      name("_CRS", resourceTemplate([interrupt(config.ged.irq, EDGE_HIGH)])),
      operationRegion(
        "GDST",
        RegionSpace.SystemMemory,
        config.ged.base + GED_EVENT_OFFSET,
        GED_EVENT_SIZE,
      ),
      // One DWord read of GDAT is one read of the device's event register, which clears
      // what it returns, so _EVT reads it exactly once into Local0.
      field("GDST", FieldAccess.DWord, FieldUpdate.WriteAsZeros, [
        { name: "GDAT", bits: 8 * GED_EVENT_SIZE },
      ]),
      // Arg0 is the GSI that fired (§5.6.9.3); with a single interrupt it carries nothing.
      method("_EVT", 1, true, [
        store(ref("GDAT"), local(0)),
        ifThen(
          lEqual(and(local(0), integer(GED_EVENT_POWER_BUTTON)), integer(GED_EVENT_POWER_BUTTON)),
          [notify(ref("\\_SB.PWRB"), integer(NOTIFY_POWER_BUTTON_PRESSED))],
        ),
      ]),
    ]),
  );

  const body = concat([
    // §7.4.2.6 \_S5: SLP_TYP for SLEEP_CONTROL_REG, then a reserved value.
    name("\\_S5", pkg([integer(SLP_TYP_S5), integer(0)])),
    scope("\\_SB", devices),
  ]);
  const [out] = newTable("DSDT", DSDT_REVISION, HEADER_SIZE + body.length);
  out.set(body, HEADER_SIZE);
  return sealTable(out);
}

function validateConfig(config: AcpiConfig): void {
  if (typeof config !== "object" || config === null) {
    throw new TypeError("Cannot build ACPI tables: config is not an object");
  }
  checkInt(config.cpus, "cpus", 1, 254);
  checkInt(config.ioapicId, "ioapicId", 0, 254);
  if (!Array.isArray(config.serial))
    throw new TypeError("Invalid ACPI config serial: not an array");
  if (!Array.isArray(config.virtioMmio)) {
    throw new TypeError("Invalid ACPI config virtioMmio: not an array");
  }
  if (config.serial.length > 4) {
    throw new RangeError(`Invalid ACPI config serial: ${config.serial.length} ports, at most 4`);
  }
  if (config.virtioMmio.length > 0x1000) {
    throw new RangeError(`Invalid ACPI config virtioMmio: ${config.virtioMmio.length} devices`);
  }

  // Each GSI drives one edge-triggered line; sharing one would lose interrupts.
  const irqOwner = new Map<number, string>();
  const claimIrq = (irq: number, what: string) => {
    checkInt(irq, `${what}.irq`, 1, IO_APIC_PINS - 1);
    if (irq === PIT_GSI) {
      throw new RangeError(`Invalid ACPI config ${what}.irq: GSI ${PIT_GSI} belongs to the PIT`);
    }
    const owner = irqOwner.get(irq);
    if (owner !== undefined) {
      throw new RangeError(
        `Invalid ACPI config ${what}.irq: GSI ${irq} is already used by ${owner}`,
      );
    }
    irqOwner.set(irq, what);
  };
  const ranges: { base: number; end: number; what: string }[] = [];
  const claimMmio = (base: number, size: number, what: string) => {
    checkInt(base, `${what}.base`, 0, 0xffff_ffff);
    checkInt(size, `${what}.size`, 1, 0x1_0000_0000 - base);
    for (const r of ranges) {
      if (base < r.end && r.base < base + size) {
        throw new RangeError(`Invalid ACPI config ${what}: MMIO range overlaps ${r.what}`);
      }
    }
    ranges.push({ base, end: base + size, what });
  };

  const ports = new Set<number>();
  config.serial.forEach((uart, i) => {
    const what = `serial[${i}]`;
    if (typeof uart !== "object" || uart === null)
      throw new TypeError(`Invalid ACPI config ${what}`);
    checkInt(uart.port, `${what}.port`, 0, 0xfff8);
    if (ports.has(uart.port)) throw new RangeError(`Invalid ACPI config ${what}.port: duplicate`);
    ports.add(uart.port);
    claimIrq(uart.irq, what);
  });
  config.virtioMmio.forEach((dev, i) => {
    const what = `virtioMmio[${i}]`;
    if (typeof dev !== "object" || dev === null) throw new TypeError(`Invalid ACPI config ${what}`);
    claimMmio(dev.base, dev.size, what);
    claimIrq(dev.irq, what);
  });
  if (typeof config.ged !== "object" || config.ged === null) {
    throw new TypeError("Invalid ACPI config ged: not an object");
  }
  claimMmio(config.ged.base, GED_MMIO_SIZE, "ged");
  claimIrq(config.ged.irq, "ged");
}

function checkInt(value: unknown, what: string, min: number, max: number): void {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`Invalid ACPI config ${what}: ${String(value)} is not an integer`);
  }
  if (value < min || value > max) {
    throw new RangeError(`Invalid ACPI config ${what}: ${value} is outside ${min}..${max}`);
  }
}
