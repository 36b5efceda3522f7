// The lab's scenarios, gathered so that one L1 boot runs them all (lab boots are the
// expensive part of the suite). Each case is a shell script run inside the lab with real
// KVM and a check of its result; later issues append their cases to `labCases`.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { defaultImagePaths } from "../../src/image/mod.js";
import type { LabResult, LabScenario } from "../../src/lab/mod.js";
import { shQuote } from "../../src/lab/mod.js";

export interface LabCase {
  scenario: LabScenario;
  check: (r: LabResult) => void;
}

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const VESSEL = `node ${shQuote(`${ROOT}bin/vessel.js`)}`;
export const DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1 quiet";

/** The `vessel run` command line for the default guest (stats on, quoted for sh). */
export function vesselRunCommand(
  opts: { cpus?: number; memory?: string; cmdline?: string; extra?: string } = {},
): string {
  const img = defaultImagePaths();
  return [
    VESSEL,
    "run",
    "--kernel",
    shQuote(img.kernel),
    "--initrd",
    shQuote(img.initrd),
    "--cpus",
    String(opts.cpus ?? 1),
    "--memory",
    opts.memory ?? "512M",
    "--stats",
    "--cmdline",
    shQuote(opts.cmdline ?? DEFAULT_CMDLINE),
    opts.extra ?? "",
  ].join(" ");
}

/** A `vessel run` of the default guest that runs `script` inside the guest, then powers off. */
export function vesselRunExec(
  script: string,
  opts: { cpus: number; memory?: string; extra?: string; cmdlineAppend?: string },
): string {
  const exec = Buffer.from(script).toString("base64");
  const { cmdlineAppend, ...rest } = opts;
  const append = cmdlineAppend ? ` ${cmdlineAppend}` : "";
  return vesselRunCommand({ ...rest, cmdline: `${DEFAULT_CMDLINE}${append} vessel.exec=${exec}` });
}

function bootCase(cpus: number): LabCase {
  return {
    scenario: {
      name: `vessel run boots the default guest with ${cpus} vCPU(s)`,
      script: vesselRunExec(
        'echo "GUEST-CPUS=$(nproc) ONLINE=$(cat /sys/devices/system/cpu/online)"',
        { cpus },
      ),
      timeoutSec: 180,
    },
    check: (r) => {
      assert.match(r.output, /VESSEL-INIT-READY/, "the guest's init never ran");
      const m = /GUEST-CPUS=(\d+) ONLINE=(\S+)/.exec(r.output);
      assert.ok(m, "the guest did not report its CPU count");
      assert.equal(Number(m[1]), cpus, `guest sees ${m[1]} CPUs, expected ${cpus}`);
      assert.equal(m[2], cpus === 1 ? "0" : `0-${cpus - 1}`);
      assert.match(r.output, /VESSEL-EXEC-DONE rc=0/);
      assert.match(r.output, /vessel: guest powered off/);
      assert.equal(r.exitCode, 0, "a clean power-off must exit 0");
    },
  };
}

export const labCases: LabCase[] = [
  {
    scenario: {
      name: "the lab has real KVM",
      script:
        "test -c /dev/kvm && grep -qw svm /proc/cpuinfo && test -d /sys/module/kvm_amd && echo LAB-KVM-OK",
      timeoutSec: 30,
    },
    check: (r) => {
      assert.equal(r.exitCode, 0, r.output);
      assert.match(r.output, /LAB-KVM-OK/);
    },
  },
  bootCase(1),
  bootCase(2),
  bootCase(4),
  {
    scenario: {
      name: "a reboot request from the guest ends the run with exit code 2",
      script: vesselRunExec("reboot -f", { cpus: 1 }),
      timeoutSec: 180,
    },
    check: (r) => {
      assert.match(r.output, /vessel: guest requested a reboot/);
      assert.equal(r.exitCode, 2);
    },
  },
  {
    scenario: {
      name: "the ACPI power button (kill -PWR) shuts the guest down cleanly",
      script: powerButtonScript(),
      timeoutSec: 180,
    },
    check: (r) => {
      assert.match(r.output, /VESSEL-INIT-READY/);
      assert.match(r.output, /PRESSED/);
      assert.match(r.output, /vessel: guest powered off/);
      assert.match(r.output, /VESSEL-RC=0/);
    },
  },
];

function powerButtonScript(): string {
  const run = vesselRunCommand();
  // The guest sits at its shell with acpid listening; press the button until it powers off.
  return `
out=$(mktemp)
${run} < /dev/null > "$out" 2>&1 &
pid=$!
for i in $(seq 1 240); do grep -q VESSEL-INIT-READY "$out" && break; sleep 1; done
sleep 2
for i in $(seq 1 30); do
  kill -0 $pid 2>/dev/null || break
  kill -PWR $pid && echo PRESSED
  sleep 3
done
wait $pid
rc=$?
cat "$out"
echo "VESSEL-RC=$rc"
`;
}
