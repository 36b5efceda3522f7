// Helpers the benchmarks' measuring halves share (they run inside the lab).

export function log(s: string): void {
  process.stderr.write(`bench: ${s}\n`);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}
