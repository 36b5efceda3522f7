// Helpers the benchmarks' measuring halves share (they run inside the lab).

import { appendFileSync } from "node:fs";

/**
 * A progress line on stderr, and, when BENCH_CONSOLE names a device (the lab's scenarios
 * set /dev/console), there too: a scenario's own output reaches the host only when it
 * ends, so without this an L1 that dies mid-run takes every finished round with it.
 */
export function log(s: string): void {
  process.stderr.write(`bench: ${s}\n`);
  const dev = process.env.BENCH_CONSOLE;
  if (dev) {
    try {
      appendFileSync(dev, `bench: ${s}\r\n`);
    } catch {
      // the console is a convenience; stderr has the line
    }
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}
