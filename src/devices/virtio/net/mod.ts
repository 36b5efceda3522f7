// virtio-net (virtio 1.2 §5.1) on a Linux TAP: one queue pair, checksum and TCP segmentation
// offloads passed through the vnet header, mergeable receive buffers.
export * from "./config.js";
export type { NetLimits, NetLimitsReport, VirtioNetOptions } from "./device.js";
export { DEFAULT_QUEUE_SIZE, RX_QUEUE, TX_QUEUE, VirtioNet } from "./device.js";
export type { NetMetricsSnapshot } from "./metrics.js";
export type { VirtioNetState } from "./state.js";
export { validateNetState } from "./state.js";
export { Tap, TapError } from "./tap.js";
export { checkTxChain } from "./tx.js";
