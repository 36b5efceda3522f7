// Parsing and validation of values people type on the command line. Each failure is a
// UsageError whose message names the flag and the problem in one line.

export class UsageError extends Error {
  readonly code = "USAGE";
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const UNITS: Record<string, number> = {
  "": 2 ** 20,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  b: 1,
};

/** A memory size: a plain number is MiB (as in QEMU's -m); K, M, G, T suffixes, optional "iB"/"B". */
export function parseSize(flag: string, text: string): number {
  const m = /^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new UsageError(`${flag}: "${text}" is not a size (use e.g. 512M or 2G)`);
  const bytes = Number(m[1]) * (UNITS[(m[2] ?? "").toLowerCase()] ?? 1);
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new UsageError(`${flag}: "${text}" is out of range`);
  return bytes;
}

export function parseCount(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${flag}: "${text}" is not a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new UsageError(`${flag}: ${n} is out of range (${min}..${max})`);
  return n;
}

/**
 * A rate (bytes, requests or frames per second): a number with an optional K, M or G
 * (1024-based) suffix, rounded down to a whole number of at least 1. `what` names the flag
 * or key in the error.
 */
export function parseRate(what: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmg]?)$/i.exec(text);
  const n = m ? Math.floor(Number(m[1]) * (UNITS[(m[2] ?? "").toLowerCase() || "b"] ?? 1)) : 0;
  if (!(n >= 1) || !Number.isSafeInteger(n))
    throw new UsageError(`${what}: "${text}" is not a positive rate (e.g. 10M)`);
  return n;
}
