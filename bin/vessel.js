#!/usr/bin/env node
// Entry point of the `vessel` command: runs the compiled CLI (npm run build makes dist/).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("../dist/src/cli/main.js", import.meta.url));
if (!existsSync(main)) {
  process.stderr.write("vessel: not built yet; run `npm run build` in the project directory\n");
  process.exit(1);
}
await import(main);
