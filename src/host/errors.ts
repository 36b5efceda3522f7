// Typed errors for failed host calls. A failed syscall or ioctl becomes a HostError that
// names the call and carries errno as a stable code, so callers can match on `code`
// ("EINTR", "ENOENT", ...) and users read which call failed and why.

import { constants } from "node:os";

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) errnoNames.set(value, name);

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** A host system call failed. `call` names it (e.g. "ioctl(KVM_CREATE_VM)"). */
export class HostError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly call: string;
  constructor(call: string, errno: number, detail?: string) {
    const name = errnoName(errno);
    super(`${call} failed: ${name}${detail ? ` (${detail})` : ""}`);
    this.name = "HostError";
    this.code = name;
    this.errno = errno;
    this.call = call;
  }
}

/** A KVM capability the VMM relies on is missing. */
export class MissingCapabilityError extends Error {
  readonly code = "KVM_CAP_MISSING";
  constructor(readonly capability: string) {
    super(`KVM on this host lacks ${capability}, which Vessel needs`);
    this.name = "MissingCapabilityError";
  }
}
