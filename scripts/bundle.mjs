#!/usr/bin/env node
// Bundles the compiled CLI (dist/src/cli/main.js and everything it imports, dependencies
// included) into a few files under dist/src/bundle/, which bin/vessel.js loads when they are
// at least as new as tsc's output. Why: Node's ESM loader resolves, stats, reads and links
// each of the ~90 modules `vessel run` needs one by one, and where the VMM runs under
// emulation (the lab) or from a network file system that costs about a second of every
// domain's start; a bundle is one file per subcommand. Runs after `tsc` (npm run build and
// the test command both do).
//
// dist/src/bundle/ sits at the same depth as every dist/src/<dir>/, so the paths our
// modules compute from import.meta.url ("../../../bin/vessel.js", "../vmm/vcpu_worker.js")
// mean the same inside the bundle. The vCPU worker is loaded by URL and stays unbundled.
// koffi stays external: it loads its native binary relative to its own package.

import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("../", import.meta.url));

rmSync(fileURLToPath(new URL("../dist/src/bundle/", import.meta.url)), {
  recursive: true,
  force: true,
});

await build({
  absWorkingDir: root,
  entryPoints: { main: "dist/src/cli/main.js" },
  outdir: "dist/src/bundle",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  external: ["koffi"],
  // CommonJS dependencies (commander, yaml...) call require() for Node's built-ins, which an
  // ES module has not got by default.
  banner: {
    js: 'import { createRequire as __vesselCreateRequire } from "node:module"; const require = __vesselCreateRequire(import.meta.url);',
  },
  logLevel: "warning",
});
