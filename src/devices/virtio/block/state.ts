// What a snapshot of a virtio-blk device records: the device's own configuration and how to
// reopen its backend (image path, read-only flag, serial). A plain JSON object. Queue state
// (ring addresses, indices, negotiated features) belongs to the transport and is saved by
// it; requests in flight at snapshot time are not recorded, so the VMM must pause the vCPUs
// and wait for VirtioBlock.settled() before taking one. The image's contents are the
// disk's state and are not copied.

import type { BlockConfig } from "./config.js";

export interface VirtioBlockState {
  version: 1;
  name: string;
  path: string;
  readOnly: boolean;
  serial: string;
  queueSize: number;
  config: BlockConfig;
}

function fail(what: string): never {
  throw new TypeError(`Cannot restore virtio-blk: state ${what}`);
}

const CONFIG_NUMBERS = [
  "capacity",
  "sizeMax",
  "segMax",
  "blkSize",
  "maxDiscardSectors",
  "maxDiscardSeg",
  "discardSectorAlignment",
  "maxWriteZeroesSectors",
  "maxWriteZeroesSeg",
] as const;

/** Check that `state` has the shape state() produces (it may come from a file on disk). */
export function validateBlockState(state: unknown): VirtioBlockState {
  if (typeof state !== "object" || state === null) fail("is not an object");
  const s = state as Record<string, unknown>;
  if (s.version !== 1) fail(`version ${String(s.version)} is not 1`);
  for (const k of ["name", "path", "serial"] as const) {
    if (typeof s[k] !== "string") fail(`${k} is not a string`);
  }
  if (typeof s.readOnly !== "boolean") fail("readOnly is not a boolean");
  if (!Number.isSafeInteger(s.queueSize)) fail("queueSize is not an integer");
  const c = s.config;
  if (typeof c !== "object" || c === null) fail("config is not an object");
  const config = c as Record<string, unknown>;
  for (const k of CONFIG_NUMBERS) {
    const v = config[k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      fail(`config.${k} is not a non-negative integer`);
    }
  }
  if (typeof config.writeZeroesMayUnmap !== "boolean") {
    fail("config.writeZeroesMayUnmap is not a boolean");
  }
  return state as VirtioBlockState;
}
