// Tests for format detection and loading: every test-data file is recognised, and what each
// converts to prints as YAML or JSON that parseDomainSpecText reads back to the same spec.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { stringify } from "yaml";
import { parseDomainSpecText } from "../domain/spec.js";
import { ImportError } from "./common.js";
import { type ConfigFormat, detectFormat, loadDomainConfig } from "./load.js";
import { TESTDATA_DIR } from "./testing.js";

const dir = TESTDATA_DIR;
const files = readdirSync(dir).filter((f) => f !== "README.md");

const expected = (file: string): ConfigFormat =>
  file.startsWith("xlexample")
    ? "xl"
    : file.endsWith(".xml")
      ? "libvirt"
      : file.startsWith("firecracker-")
        ? "firecracker"
        : "native";

test("every test-data file is detected as its format", () => {
  assert.ok(files.length >= 9);
  for (const file of files)
    assert.equal(detectFormat(readFileSync(`${dir}${file}`, "utf8"), file), expected(file), file);
});

test("native specs are detected in YAML and JSON; the unknown is an error", () => {
  assert.equal(detectFormat("# a domain\nname: d\nmemory: 64M\nvcpus: 1\nkernel: /k\n"), "native");
  assert.equal(detectFormat('{"name": "d", "kernel": "/k"}'), "native");
  assert.equal(detectFormat("# comment\n\nname = 'd'\n"), "xl");
  assert.equal(detectFormat("odd", "guest.cfg"), "xl");
  assert.throws(
    () => detectFormat("just words", "notes.txt"),
    /^ImportError: config: cannot tell the format of notes\.txt; name it with --from/,
  );
  assert.throws(() => detectFormat("<network/>"), /the root element is <network>, not <domain>/);
});

test("each conversion prints as YAML and JSON that parse back to the same spec", async () => {
  let converted = 0;
  for (const file of files) {
    let loaded: Awaited<ReturnType<typeof loadDomainConfig>>;
    try {
      loaded = await loadDomainConfig(`${dir}${file}`);
    } catch (e) {
      assert.ok(e instanceof ImportError, `${file}: ${e}`);
      continue;
    }
    converted++;
    assert.deepEqual(parseDomainSpecText(stringify(loaded.spec)), loaded.spec, file);
    assert.deepEqual(parseDomainSpecText(JSON.stringify(loaded.spec)), loaded.spec, file);
    const again = await loadDomainConfig(`${dir}${file}`, { format: loaded.format });
    assert.deepEqual(again.spec, loaded.spec);
  }
  assert.ok(converted >= 6, `only ${converted} test-data files converted`);
});

test("loading resolves relative paths against the file's directory and names Firecracker", async () => {
  const { spec, format } = await loadDomainConfig(`${dir}firecracker-vm_config.json`);
  assert.equal(format, "firecracker");
  assert.equal(spec.name, "firecracker-vm_config");
  assert.equal(spec.kernel, `${dir}vmlinux.bin`);
  for (const file of ["xlexample.pvlinux", "virt-install-location-manual-kernel.xml"]) {
    const named = await loadDomainConfig(`${dir}${file}`, { name: "renamed" });
    assert.equal(named.spec.name, "renamed");
    assert.ok(!named.warnings.some((w) => /\bname\b/.test(w)), named.warnings.join("\n"));
  }
});
