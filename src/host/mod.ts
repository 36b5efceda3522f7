// Host bindings: libc, the /dev/kvm ioctls and /dev/vhost-net. Everything above this layer
// reaches the kernel only through these exports.

export { hostKvmCanBootLinux, hostKvmUsable } from "./capability.js";
export { FdWatcher } from "./epoll.js";
export * from "./errors.js";
export * from "./kvm.js";
export * as abi from "./kvm_abi.js";
export * as libc from "./libc.js";
export * as sandbox from "./sandbox.js";
export { VHOST_NET_PATH, VhostNet } from "./vhost.js";
export * as vhostAbi from "./vhost_abi.js";
