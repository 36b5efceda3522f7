// Tests for `vessel config convert`, run as a person runs it: the built CLI in a child process.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { parseDomainSpecText } from "../domain/spec.js";

const bin = fileURLToPath(new URL("../../../bin/vessel.js", import.meta.url));
const testdata = fileURLToPath(new URL("../../../src/config/testdata/", import.meta.url));

const vessel = (...args: string[]) =>
  spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 30_000 });

test("convert prints YAML on stdout and each warning on stderr", () => {
  const r = vessel("config", "convert", `${testdata}xlexample.pvlinux`);
  assert.equal(r.status, 0, r.stderr);
  const spec = parseDomainSpecText(r.stdout);
  assert.equal(spec.name, "example.pvlinux");
  assert.deepEqual(parse(r.stdout), spec);
  const lines = r.stderr.trimEnd().split("\n");
  assert.ok(lines.length >= 4);
  for (const line of lines) assert.match(line, /^vessel: warning: xl\.cfg: /);
});

test("--json, --from and --name", () => {
  const r = vessel(
    "config",
    "convert",
    "--json",
    "--from",
    "firecracker",
    "--name",
    "fc1",
    `${testdata}firecracker-vm_config_network.json`,
  );
  assert.equal(r.status, 0, r.stderr);
  const spec = JSON.parse(r.stdout);
  assert.equal(spec.name, "fc1");
  assert.deepEqual(spec.nets, [{ tap: "tap0", mac: "06:00:c0:a8:00:02" }]);
});

test("errors are one line and exit 1", () => {
  for (const [args, pattern] of [
    [
      [`${testdata}xlexample.hvm`],
      /^vessel: .*xlexample\.hvm: xl\.cfg: type: "hvm" without kernel=/,
    ],
    [
      [`${testdata}virt-install-kvm-fedoralatest-url.xml`],
      /libvirt: devices\/disk\[0\]\/driver\/@type: "qcow2" is not supported/,
    ],
    [[`${testdata}nonexistent.cfg`], /^vessel: .*nonexistent\.cfg: cannot read \(ENOENT\)$/],
    [["--from", "vmx", `${testdata}xlexample.pvlinux`], /^vessel: --from: "vmx" is not a format/],
  ] as const) {
    const r = vessel("config", "convert", ...args);
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stdout, "");
    assert.match(r.stderr.trimEnd(), pattern);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
  }
});
