// Device flags of `vessel run`: `--disk PATH[,ro][,serial=S]` (repeatable) and `--rng`.
// Each value is checked here and turned into a device model; a mistake names the flag.

import { VirtioBlock } from "../devices/virtio/block/mod.js";
import { VirtioRng } from "../devices/virtio/rng/mod.js";
import type { VirtioDevice } from "../virtio/device.js";
import { UsageError } from "./args.js";

export interface DiskSpec {
  path: string;
  readOnly: boolean;
  serial?: string;
}

/** Parse one --disk value. */
export function parseDisk(text: string): DiskSpec {
  const [path, ...opts] = text.split(",");
  if (!path) throw new UsageError(`--disk: "${text}" has no path`);
  const spec: DiskSpec = { path, readOnly: false };
  for (const opt of opts) {
    if (opt === "ro") spec.readOnly = true;
    else if (opt === "rw") spec.readOnly = false;
    else if (opt.startsWith("serial=")) spec.serial = opt.slice("serial=".length);
    else throw new UsageError(`--disk ${text}: unknown option "${opt}" (known: ro, rw, serial=S)`);
  }
  return spec;
}

/** Open every device; on any failure close those already opened and report which flag. */
export async function openDevices(disks: readonly string[], rng: boolean): Promise<VirtioDevice[]> {
  const opened: VirtioBlock[] = [];
  const devices: VirtioDevice[] = [];
  try {
    disks.forEach((text, i) => {
      const spec = parseDisk(text);
      try {
        const disk = new VirtioBlock({
          path: spec.path,
          readOnly: spec.readOnly,
          name: `virtio-blk${i}`,
          ...(spec.serial !== undefined ? { serial: spec.serial } : {}),
        });
        opened.push(disk);
        devices.push(disk);
      } catch (e) {
        throw new UsageError(`--disk ${text}: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  } catch (e) {
    await closeDevices(opened);
    throw e;
  }
  if (rng) devices.push(new VirtioRng({ name: "virtio-rng0" }));
  return devices;
}

export async function closeDevices(devices: readonly VirtioDevice[]): Promise<void> {
  for (const d of devices) if (d instanceof VirtioBlock) await d.close();
}
