// virtio-vsock (virtio 1.2 §5.10): stream sockets between the guest and host programs,
// reached on the host through Unix sockets in Firecracker's convention (uds.ts).
export type {
  HostAcceptor,
  HostConnectRequest,
  HostStream,
  HostStreamEvents,
  OutboundStreamEvents,
  VsockBackend,
} from "./backend.js";
export * from "./config.js";
export type { VirtioVsockOptions } from "./device.js";
export {
  VirtioVsock,
  VSOCK_BUF_ALLOC,
  VSOCK_MAX_CONNECTIONS,
  VSOCK_MAX_HOST_BUFFERED,
  VSOCK_MAX_PENDING_RESETS,
  VSOCK_QUEUE_SIZE,
  VSOCK_REQUEST_TIMEOUT_MS,
} from "./device.js";
export type { VsockMetricsSnapshot } from "./metrics.js";
export * from "./packet.js";
export type { VirtioVsockState } from "./state.js";
export { validateVsockState } from "./state.js";
export { parseConnectLine, UnixSocketBackend } from "./uds.js";
