// Validation of the options every virtio device model shares (name, queue size, log sink),
// with one wording for all of them. `cannot` prefixes the device's own "Cannot create ...".

import { MAX_QUEUE_SIZE } from "./queue.js";

export interface CommonDeviceOptions {
  name?: string;
  queueSize?: number;
  log?: (message: string) => void;
}

export function commonDeviceOptions(
  options: CommonDeviceOptions,
  defaults: { name: string; queueSize: number },
  cannot: (what: string) => string,
): { name: string; queueSize: number; log: (message: string) => void } {
  const name = options.name ?? defaults.name;
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(cannot("options.name must be a non-empty string"));
  }
  const queueSize = options.queueSize ?? defaults.queueSize;
  if (
    !Number.isSafeInteger(queueSize) ||
    queueSize < 2 ||
    queueSize > MAX_QUEUE_SIZE ||
    (queueSize & (queueSize - 1)) !== 0
  ) {
    throw new RangeError(
      cannot(`options.queueSize ${queueSize} is not a power of two in 2..32768`),
    );
  }
  const log = options.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  if (typeof log !== "function") throw new TypeError(cannot("options.log must be a function"));
  return { name, queueSize, log };
}
