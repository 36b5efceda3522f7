// A VirtioDevice that does nothing but record what the transport asks of it, with an
// 8-byte config space, for transport tests and fuzzing. Optionally echoes every chain
// back as used (so the rings move) and can be told to throw, to stand for a buggy model.

import type { VirtioDevice, VirtioDeviceContext } from "../device.js";
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1 } from "../device.js";

export class RecordingDevice implements VirtioDevice {
  readonly deviceType: number;
  readonly name = "test0";
  readonly features: bigint;
  readonly queueSizes: readonly number[];
  readonly config = new Uint8Array(8);
  ctx: VirtioDeviceContext | undefined;
  activations = 0;
  resets = 0;
  notifies: number[] = [];
  /** Pop and complete every available chain on notify. */
  echo = false;
  /** Throw from every call, as a buggy device would. */
  throwing = false;

  constructor(
    options: { deviceType?: number; features?: bigint; queueSizes?: readonly number[] } = {},
  ) {
    this.deviceType = options.deviceType ?? 42;
    this.features =
      options.features ??
      (1n << VIRTIO_F_VERSION_1) | (1n << VIRTIO_F_INDIRECT_DESC) | (1n << VIRTIO_F_EVENT_IDX) | 1n;
    this.queueSizes = options.queueSizes ?? [8, 16];
  }

  readConfig(offset: number, data: Uint8Array): void {
    if (this.throwing) throw new Error("readConfig failed");
    for (let i = 0; i < data.length; i++) data[i] = this.config[offset + i] ?? 0;
  }

  writeConfig(offset: number, data: Uint8Array): void {
    if (this.throwing) throw new Error("writeConfig failed");
    for (let i = 0; i < data.length; i++) {
      if (offset + i < this.config.length) this.config[offset + i] = data[i] as number;
    }
  }

  activate(ctx: VirtioDeviceContext): void {
    this.activations++;
    if (this.throwing) throw new Error("activate failed");
    this.ctx = ctx;
  }

  queueNotify(index: number): void {
    this.notifies.push(index);
    if (this.throwing) throw new Error("queueNotify failed");
    const q = this.ctx?.queues[index];
    if (!this.echo || !q) return;
    for (let chain = q.pop(); chain; chain = q.pop()) q.pushUsed(chain.head, 0);
    q.notifyIfNeeded();
  }

  reset(): void {
    this.resets++;
    this.ctx = undefined;
  }
}
