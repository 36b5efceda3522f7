#!/usr/bin/env node
// Entry point of the `vessel` command: runs the compiled CLI (npm run build makes dist/),
// from the bundle (scripts/bundle.mjs) when it is at least as new as tsc's output, so a
// `tsc` run alone never leaves an older bundle in charge.
import { existsSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("../dist/src/cli/main.js", import.meta.url));
const bundle = fileURLToPath(new URL("../dist/src/bundle/main.js", import.meta.url));
if (!existsSync(main)) {
  process.stderr.write("vessel: not built yet; run `npm run build` in the project directory\n");
  process.exit(1);
}
const fresh = existsSync(bundle) && statSync(bundle).mtimeMs >= statSync(main).mtimeMs;
await import(fresh ? bundle : main);
