// The lab harness end to end, in ONE L1 boot (boots are the expensive part): KVM is real in
// L1, exit codes and output come back per scenario, files written to the share reach the
// host, a hung scenario is killed by its timeout while the batch goes on, and the default
// guest image boots under QEMU with real KVM inside L1. Never skipped: without QEMU or apt
// the run throws and the test fails with the reason.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  buildDefaultImage,
  EXEC_DONE_MARKER,
  execCmdlineArg,
  INIT_READY_MARKER,
} from "../image/image.js";
import {
  hostKvmCanBootLinux,
  LabError,
  type LabRun,
  qemuGuestCommand,
  runInLab,
  shQuote,
} from "./lab.js";

describe("lab helpers", () => {
  it("quotes for sh", () => {
    assert.equal(shQuote("a b"), "'a b'");
    assert.equal(shQuote("it's"), `'it'\\''s'`);
  });

  it("knows kvm_pvm cannot boot Linux", () => {
    const verdict = hostKvmCanBootLinux();
    assert.equal(typeof verdict.reason, "string");
    if (existsSync("/sys/module/kvm_pvm")) assert.equal(verdict.ok, false);
  });

  it("rejects bad options before booting", async () => {
    await assert.rejects(runInLab([]), TypeError);
    await assert.rejects(runInLab([{ name: "x", script: "true" }], { cpus: 0 }), RangeError);
  });

  it("kills QEMU at the overall timeout and says where it was", async () => {
    await assert.rejects(
      runInLab([{ name: "never", script: "true" }], { timeoutSec: 1 }),
      (err: unknown) =>
        err instanceof LabError &&
        /overall timeout of 1 s before L1 finished booting/.test(err.message),
    );
  });
});

describe("lab batch (one L1 boot)", () => {
  let share = "";
  let run: LabRun;
  const guestCpus = 2;

  before(async () => {
    share = await mkdtemp(join(tmpdir(), "vessel-lab-test-"));
    const image = await buildDefaultImage();
    const qemu = qemuGuestCommand({
      kernel: image.kernel,
      initrd: image.initrd,
      cpus: guestCpus,
      cmdline: execCmdlineArg("nproc; grep MemTotal /proc/meminfo"),
    });
    // No vessel.exec: the guest sits at its shell until QEMU's power-down request presses the
    // ACPI power button, which acpid must turn into a clean poweroff (QEMU then exits).
    // kernel-irqchip=split: with KVM's full in-kernel irqchip, QEMU 7.2's microvm never
    // delivers the GED interrupt (ACPI:Ged stays at 0 in /proc/interrupts); pc and q35 do.
    const interactiveGuest = qemuGuestCommand({ kernel: image.kernel, initrd: image.initrd })
      .replace("-M microvm", "-M microvm,kernel-irqchip=split")
      .replace("-serial stdio", '-serial file:"$out" -monitor stdio');
    const powerButton = [
      'out="$VESSEL_LAB_SHARE/guest-console.txt" fifo=/tmp/vessel-monitor.$$',
      'mkfifo "$fifo"',
      `boot() { ${interactiveGuest} < "$fifo" > /dev/null & qemu=$!; }`,
      "boot",
      'exec 3> "$fifo"',
      // The prompt comes after acpid has started. Each step is bounded so that a failure
      // still prints the guest's console (a scenario killed at its timeout prints nothing).
      // A QEMU that ends before the prompt (its guest hit the emulated SVM's event-delivery
      // defect, README "The lab"; seen once in CI with only the kernel's PCI line on the
      // console) gets one more boot; the first console is printed at the end, marked.
      "i=0 earlier=",
      'until grep -q "vessel:/#" "$out" 2>/dev/null; do',
      '  if [ -z "$earlier" ] && ! kill -0 "$qemu" 2>/dev/null; then',
      '    wait "$qemu"; earlier="first boot: QEMU ended rc=$? before the prompt; its console: $(cat "$out")"',
      "    i=0; boot",
      "  fi",
      '  i=$((i+1)); if [ $i -gt 240 ]; then echo "no prompt after 120 s"; kill "$qemu"; cat "$out"; echo "$earlier"; exit 1; fi',
      "  sleep 0.5",
      "done",
      "echo system_powerdown >&3",
      '( sleep 60; echo "no power-off 60 s after the button"; kill "$qemu" ) &',
      "killer=$!",
      'wait "$qemu"',
      'echo "qemu exited rc=$?"',
      'kill "$killer" 2>/dev/null',
      'cat "$out"',
      '[ -z "$earlier" ] || echo "RETRIED: $earlier"',
    ].join("\n");
    const scenarios = [
      { name: "kvm", script: "grep -c -w svm /proc/cpuinfo; test -c /dev/kvm && echo kvm-ok" },
      { name: "exit 3", script: "echo to-stderr >&2; exit 3" },
      { name: "write share", script: 'echo "written in L1" > "$VESSEL_LAB_SHARE/result.txt"' },
      { name: "hang", script: "echo hanging; sleep 600", timeoutSec: 5 },
      { name: "after hang", script: "echo still-running; pwd" },
      { name: "guest under kvm", script: qemu, timeoutSec: 180 },
      { name: "guest power button", script: powerButton, timeoutSec: 240 },
    ];
    // The emulated SVM sometimes wedges L1 under a nested guest (README "The lab", seen here
    // with QEMU's guest as with Vessel's); the harness reports that as a LabError, and one
    // more boot tells a wedge from a broken harness.
    for (let attempt = 1; ; attempt++) {
      try {
        run = await runInLab(scenarios, { shareDir: share });
        break;
      } catch (e) {
        if (!(e instanceof LabError && /stopped responding/.test(e.message)) || attempt === 2)
          throw e;
        process.stderr.write(
          `lab_test: L1 wedged, booting once more: ${e.message.split("\n")[0]}\n`,
        );
      }
    }
  });
  after(async () => {
    await rm(share, { recursive: true, force: true });
  });

  const result = (name: string) => {
    const r = run.results.find((x) => x.name === name);
    assert.ok(r, `no result for ${name}`);
    return r;
  };

  it("boots L1 with real KVM", () => {
    assert.ok(run.bootMs > 0);
    const r = result("kvm");
    assert.equal(r.exitCode, 0, r.output);
    const [svmCpus, ok] = r.output.trim().split("\n");
    assert.equal(Number(svmCpus), 4);
    assert.equal(ok, "kvm-ok");
    assert.deepEqual(run.warnings, []);
  });

  it("carries exit codes and stderr", () => {
    const r = result("exit 3");
    assert.equal(r.exitCode, 3);
    assert.equal(r.timedOut, false);
    assert.equal(r.output, "to-stderr\n");
  });

  it("shares files with the host at the same path", async () => {
    assert.equal(result("write share").exitCode, 0);
    assert.equal(await readFile(join(share, "result.txt"), "utf8"), "written in L1\n");
  });

  it("kills a hung scenario at its timeout and goes on", () => {
    const hang = result("hang");
    assert.equal(hang.timedOut, true);
    assert.equal(hang.exitCode, null);
    assert.equal(hang.output, "hanging\n");
    assert.ok(hang.durationMs >= 4500 && hang.durationMs < 30_000, `${hang.durationMs} ms`);
    const next = result("after hang");
    assert.equal(next.exitCode, 0);
    assert.equal(next.output, `still-running\n${process.cwd()}\n`);
  });

  it("boots the default image under QEMU with KVM inside L1", () => {
    const r = result("guest under kvm");
    assert.equal(r.exitCode, 0, r.output);
    assert.ok(r.output.includes(INIT_READY_MARKER), r.output);
    assert.match(r.output, new RegExp(`VESSEL-INIT: cpus=${guestCpus} mem=\\d+`));
    assert.match(r.output, new RegExp(`^${guestCpus}$`, "m"));
    assert.ok(r.output.includes(`${EXEC_DONE_MARKER} rc=0`), r.output);
  });

  it("powers the guest off on the ACPI power button", () => {
    const r = result("guest power button");
    if (r.output.includes("RETRIED: "))
      process.stderr.write(`lab_test: the power-button guest was booted twice\n${r.output}\n`);
    assert.equal(r.timedOut, false, r.output);
    assert.equal(r.exitCode, 0, r.output);
    assert.ok(r.output.startsWith("qemu exited rc=0\n"), r.output);
    assert.ok(r.output.includes(INIT_READY_MARKER), r.output);
    assert.ok(!r.output.includes(EXEC_DONE_MARKER), r.output);
  });
});
