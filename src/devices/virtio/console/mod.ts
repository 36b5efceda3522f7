// virtio-console (virtio 1.2 §5.3): one port, the guest's /dev/hvc0 (console=hvc0).
export {
  CONSOLE_CONFIG_SIZE,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_F_SIZE,
} from "./config.js";
export type { VirtioConsoleOptions } from "./device.js";
export {
  CONSOLE_INPUT_BACKLOG,
  CONSOLE_QUEUE_SIZE,
  CONSOLE_TX_BYTES_PER_TURN,
  VirtioConsole,
} from "./device.js";
export type { ConsoleMetricsSnapshot } from "./metrics.js";
