// The guest's memory map (e820), derived from the RAM regions: conventional memory below
// the EBDA, the BIOS/ACPI area reserved, then RAM from 1 MiB and above 4 GiB.

import type { RamRegion } from "../../memory/mod.js";
import {
  ACPI_AREA_START,
  E820_RAM,
  E820_RESERVED,
  type E820Entry,
  EBDA_START,
  HIMEM_START,
} from "./layout.js";

export function e820Map(regions: readonly RamRegion[]): E820Entry[] {
  const map: E820Entry[] = [];
  for (const r of regions) {
    if (r.start === 0) {
      if (r.size < HIMEM_START)
        throw new RangeError("Cannot build the e820 map: less than 1 MiB of RAM");
      map.push({ addr: 0, size: EBDA_START, type: E820_RAM });
      map.push({ addr: ACPI_AREA_START, size: HIMEM_START - ACPI_AREA_START, type: E820_RESERVED });
      if (r.size > HIMEM_START)
        map.push({ addr: HIMEM_START, size: r.size - HIMEM_START, type: E820_RAM });
    } else {
      map.push({ addr: r.start, size: r.size, type: E820_RAM });
    }
  }
  return map;
}
