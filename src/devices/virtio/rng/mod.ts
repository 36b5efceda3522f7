// virtio-rng (virtio 1.2 §5.4): entropy from the host's getrandom for the guest.
// It has no configuration space and no state beyond its one queue, so a snapshot needs
// only the transport's queue state.
export * from "./device.js";
export * from "./metrics.js";
