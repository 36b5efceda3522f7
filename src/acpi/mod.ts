// ACPI tables for Vessel guests. `buildAcpiTables` turns a description of the vCPUs and
// devices into placed tables; the constants say which ports and addresses the VMM must wire
// to the devices in src/devices/acpi so that the tables tell the truth.

export {
  ACPI_RESET_VALUE,
  GED_MMIO_SIZE,
  PM_PORT_SIZE as ACPI_PM_PORT_SIZE,
  SLP_TYP_S5,
} from "../devices/acpi/mod.js";
export {
  ACPI_DEFAULT_BASE,
  ACPI_PM_PORT_BASE,
  ACPI_RESET_PORT,
  ACPI_SLEEP_CONTROL_PORT,
  ACPI_SLEEP_STATUS_PORT,
  type AcpiConfig,
  type AcpiImage,
  buildAcpiTables,
  IO_APIC_ADDRESS,
  IO_APIC_PINS,
  LOCAL_APIC_ADDRESS,
  PIT_GSI,
} from "./tables.js";
