// Builds the default guest image into a scratch cache (downloads Debian's cloud kernel and
// busybox-static with apt-get) and checks the initramfs from the inside: it parses back,
// /init is an executable script, busybox, its applets and a static vsock-cat are there, and
// every module in the load list is present, after its dependencies. A second build must
// reuse the cache.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gunzipSync } from "node:zlib";
import { type CpioParsedEntry, parseNewc, S_IFCHR, S_IFLNK, S_IFMT, S_IFREG } from "./cpio.js";
import {
  type BuiltImage,
  buildDefaultImage,
  defaultImagePaths,
  INIT_READY_MARKER,
  VSOCK_CAT_PATH,
} from "./image.js";
import { MODULE_LIST_PATH } from "./initramfs.js";
import { moduleName, readModinfo } from "./modules.js";

describe("default image", () => {
  let cache = "";
  let image: BuiltImage;
  let entries: Map<string, CpioParsedEntry>;
  const steps: string[] = [];

  before(async () => {
    cache = await mkdtemp(join(tmpdir(), "vessel-image-test-"));
    image = await buildDefaultImage({ cacheDir: cache, progress: (step) => steps.push(step) });
    const archive = parseNewc(gunzipSync(await readFile(image.initrd)));
    entries = new Map(archive.map((e) => [e.path, e]));
  });
  after(async () => {
    await rm(cache, { recursive: true, force: true });
  });

  it("reports progress through every step", () => {
    assert.equal(image.cached, false);
    assert.deepEqual(steps.slice(0, 2), ["resolve kernel package", "download kernel"]);
    assert.equal(steps.at(-1), "done");
  });

  it("has a bzImage kernel", async () => {
    const kernel = await readFile(image.kernel);
    // "HdrS" at 0x202: the x86 boot protocol header (Documentation/arch/x86/boot.rst).
    assert.equal(kernel.toString("latin1", 0x202, 0x206), "HdrS");
    assert.match(image.info.kernelPackage, /^linux-image-.*-cloud-amd64$/);
  });

  it("has an executable /init that marks readiness and handles vessel.exec", () => {
    const init = entries.get("init");
    assert.ok(init, "/init is missing");
    assert.equal(init.mode & S_IFMT, S_IFREG);
    assert.equal(init.mode & 0o111, 0o111);
    const text = new TextDecoder().decode(init.data);
    assert.ok(text.startsWith("#!/bin/sh\n"));
    assert.ok(text.includes(INIT_READY_MARKER));
    assert.ok(text.includes("vessel.exec="));
  });

  it("has busybox, its applet links and a console node", () => {
    const busybox = entries.get("bin/busybox");
    assert.ok(busybox && busybox.data.length > 500_000);
    for (const applet of ["bin/sh", "sbin/insmod", "sbin/poweroff", "sbin/acpid"]) {
      const link = entries.get(applet);
      assert.ok(link, `${applet} is missing`);
      assert.equal(link.mode & S_IFMT, S_IFLNK);
    }
    const consoleNode = entries.get("dev/console");
    assert.equal((consoleNode?.mode ?? 0) & S_IFMT, S_IFCHR);
    assert.ok(entries.get("etc/acpi/PWRF/00000080"));
  });

  it("has vsock-cat, a static x86-64 executable", () => {
    const tool = entries.get(VSOCK_CAT_PATH);
    assert.ok(tool, `${VSOCK_CAT_PATH} is missing`);
    assert.equal(tool.mode & 0o111, 0o111);
    // ELF, and no PT_INTERP: the guest has no dynamic loader for it.
    assert.equal(Buffer.from(tool.data.subarray(0, 4)).toString("latin1"), "\x7fELF");
    const elf = Buffer.from(tool.data);
    const phoff = Number(elf.readBigUInt64LE(0x20));
    const phentsize = elf.readUInt16LE(0x36);
    for (let i = 0; i < elf.readUInt16LE(0x38); i++) {
      const PT_INTERP = 3;
      assert.notEqual(elf.readUInt32LE(phoff + i * phentsize), PT_INTERP, "dynamically linked");
    }
  });

  it("has every listed module, each after its dependencies", () => {
    const list = new TextDecoder()
      .decode(entries.get(MODULE_LIST_PATH.slice(1))?.data)
      .trim()
      .split("\n");
    const loaded = new Set<string>();
    for (const path of list) {
      const mod = entries.get(path.slice(1));
      assert.ok(mod, `${path} is listed but absent`);
      const deps = readModinfo(mod.data).get("depends")?.[0] ?? "";
      for (const dep of deps.split(",").filter((d) => d !== "")) {
        assert.ok(loaded.has(moduleName(dep)), `${path} is loaded before its dependency ${dep}`);
      }
      loaded.add(moduleName(path));
    }
    for (const name of [
      "virtio_mmio",
      "virtio_blk",
      "virtio_net",
      "virtio_console",
      "vsock",
      "vmw_vsock_virtio_transport",
    ]) {
      assert.ok(loaded.has(name), `${name} is not loaded`);
    }
    assert.ok(!list.some((p) => /\.ko\.(xz|zst|gz)$/.test(p)), "modules must be uncompressed");
  });

  it("reuses the cache on a second build", async () => {
    const before = (await stat(image.initrd)).mtimeMs;
    const again: string[] = [];
    const second = await buildDefaultImage({ cacheDir: cache, progress: (s) => again.push(s) });
    assert.equal(second.cached, true);
    assert.equal(second.initrd, image.initrd);
    assert.deepEqual(again, ["resolve kernel package", "done"]);
    assert.equal((await stat(second.initrd)).mtimeMs, before);
    const current = defaultImagePaths(cache);
    assert.deepEqual(await readFile(current.initrd), await readFile(image.initrd));
  });
});
