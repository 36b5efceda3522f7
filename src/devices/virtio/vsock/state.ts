// What a snapshot of a virtio-vsock device records: its name, the guest's CID, the Unix
// socket path of its host side and the queue size. A plain JSON object. Connections are not
// recorded: host sockets cannot be carried across a restore, so a restored device starts
// with none and tells the guest with a transport-reset event (VirtioVsock.transportReset),
// as Firecracker does.

import { validGuestCid } from "./config.js";

export interface VirtioVsockState {
  version: 1;
  name: string;
  cid: number;
  uds: string;
  queueSize: number;
}

function fail(what: string): never {
  throw new TypeError(`Cannot restore virtio-vsock: state ${what}`);
}

/** Check that `state` has the shape state() produces (it may come from a file on disk). */
export function validateVsockState(state: unknown): VirtioVsockState {
  if (typeof state !== "object" || state === null) fail("is not an object");
  const s = state as Record<string, unknown>;
  if (s.version !== 1) fail(`version ${String(s.version)} is not 1`);
  if (typeof s.name !== "string" || s.name.length === 0) fail("name is not a non-empty string");
  if (!validGuestCid(s.cid)) fail(`cid ${String(s.cid)} is not in 3..4294967294`);
  if (typeof s.uds !== "string" || s.uds.length === 0) fail("uds is not a non-empty string");
  if (!Number.isSafeInteger(s.queueSize)) fail("queueSize is not an integer");
  return state as VirtioVsockState;
}
