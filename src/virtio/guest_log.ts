// Rate-limited logging for device models. A guest decides how often a device has something
// to complain about, so the first messages are logged in full and then one in LOG_EVERY,
// and a log sink that throws never takes the device (or the VMM) down with it.

const LOG_BURST = 32;
const LOG_EVERY = 1024;

export class GuestLog {
  #logged = 0;

  constructor(
    private readonly name: string,
    private readonly sink: (message: string) => void,
  ) {}

  warn(message: string): void {
    const n = ++this.#logged;
    if (n > LOG_BURST && n % LOG_EVERY !== 0) return;
    try {
      this.sink(`${this.name}: ${message}${n > LOG_BURST ? ` (${n} messages so far)` : ""}`);
    } catch {
      // A failing log sink must not take the device down with it.
    }
  }

  /** Run queue processing; anything it throws is logged here instead of reaching a vCPU. */
  guard(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.warn(`queue processing failed: ${String(e)}`);
    }
  }
}
