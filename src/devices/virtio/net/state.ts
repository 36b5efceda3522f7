// What a snapshot of a virtio-net device records: its name, MAC, queue size and the TAP to
// reattach to. A plain JSON object. Queue state belongs to the transport; frames in the
// TAP's kernel queue at snapshot time are not recorded (a network may lose frames).

import { parseMac } from "./config.js";
import { validTapName } from "./tap.js";

export interface VirtioNetState {
  version: 1;
  name: string;
  tap: string;
  mac: string;
  queueSize: number;
}

function fail(what: string): never {
  throw new TypeError(`Cannot restore virtio-net: state ${what}`);
}

/** Check that `state` has the shape state() produces (it may come from a file on disk). */
export function validateNetState(state: unknown): VirtioNetState {
  if (typeof state !== "object" || state === null) fail("is not an object");
  const s = state as Record<string, unknown>;
  if (s.version !== 1) fail(`version ${String(s.version)} is not 1`);
  if (typeof s.name !== "string" || s.name.length === 0) fail("name is not a non-empty string");
  if (typeof s.tap !== "string" || !validTapName(s.tap)) fail("tap is not an interface name");
  if (typeof s.mac !== "string" || !parseMac(s.mac)) fail("mac is not a unicast MAC address");
  if (!Number.isSafeInteger(s.queueSize)) fail("queueSize is not an integer");
  return state as VirtioNetState;
}
