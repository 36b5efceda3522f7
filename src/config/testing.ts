// What the importers' tests share: reading the files in testdata/ and asserting that a
// warning was given (with every warning in the failure message, to see what was said).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** testdata/ in the source tree (the tests run from dist/, which has no copy). */
export const TESTDATA_DIR = fileURLToPath(
  new URL("../../../src/config/testdata/", import.meta.url),
);

export function testdata(name: string): string {
  return readFileSync(`${TESTDATA_DIR}${name}`, "utf8");
}

export function assertWarned(warnings: string[], pattern: RegExp): void {
  assert.ok(
    warnings.some((w) => pattern.test(w)),
    `no warning matches ${pattern}:\n${warnings.join("\n")}`,
  );
}
