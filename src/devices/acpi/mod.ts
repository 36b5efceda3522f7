// The devices behind Vessel's ACPI tables: the PM register block (poweroff and reset
// requests from the guest) and the Generic Event Device (host-to-guest power button).

export {
  GED_EVENT_OFFSET,
  GED_EVENT_POWER_BUTTON,
  GED_EVENT_SIZE,
  GED_MMIO_SIZE,
  type GedCounters,
  GedDevice,
} from "./ged.js";
export {
  ACPI_RESET_VALUE,
  AcpiPmDevice,
  PM_PORT_SIZE,
  PM_RESET_OFFSET,
  PM_SLEEP_CONTROL_OFFSET,
  PM_SLEEP_STATUS_OFFSET,
  type PmCounters,
  SLP_EN,
  SLP_TYP_S5,
  SLP_TYP_SHIFT,
} from "./pm.js";
