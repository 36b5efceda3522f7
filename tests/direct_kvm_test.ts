// Small purpose-built guests run directly on this machine's /dev/kvm: port and MMIO exits,
// the UART, and hostile behaviour (unmapped ports, MMIO to nowhere, spinning with
// interrupts off, triple faults). Each guest reports what it saw over the serial port and
// the test checks both that report and the VMM's outcome and counters.
// These tests need /dev/kvm; without it they fail and say so (they never skip).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { VirtioRng } from "../src/devices/virtio/rng/mod.js";
import type { VirtioDevice } from "../src/virtio/device.js";
import type { VirtioMmioTransport } from "../src/virtio/mmio.js";
import { describeOutcome, type Outcome, Vm } from "../src/vmm/vm.js";
import { assemblePvhElf, assembleReal, GUEST_LOAD_ADDRESS, POWEROFF } from "./guests/assemble.js";

const bin = fileURLToPath(new URL("../../bin/vessel.js", import.meta.url));

function hostIsKvmPvm(): boolean {
  return existsSync("/sys/module/kvm_pvm");
}

interface GuestRun {
  transports: ReturnType<VirtioMmioTransport["stats"]>[];
  outcome: Outcome;
  output: string;
  stats: ReturnType<Vm["stats"]>;
  vm: Vm;
}

async function runGuest(
  source: string,
  opts: {
    cpus?: number;
    during?: (vm: Vm) => void;
    inputAfter?: { marker: string; text: string };
    pvh?: { cmdline: string };
    virtio?: VirtioDevice[];
  } = {},
): Promise<GuestRun> {
  assert.ok(existsSync("/dev/kvm"), "these tests need /dev/kvm, which this machine does not have");
  const chunks: Buffer[] = [];
  let sent = false;
  const vm: Vm = Vm.build({
    memoryBytes: 32 * 2 ** 20,
    cpus: opts.cpus ?? 1,
    boot: opts.pvh
      ? { kind: "linux", kernel: assemblePvhElf(source), cmdline: opts.pvh.cmdline }
      : { kind: "flat-real", image: assembleReal(source), address: GUEST_LOAD_ADDRESS },
    ...(opts.virtio ? { virtio: opts.virtio } : {}),
    consoleOut: (b) => {
      chunks.push(Buffer.from(b));
      // Console input is typed once the guest shows it is ready, as a person would.
      const after = opts.inputAfter;
      if (after && !sent && Buffer.concat(chunks).toString("latin1").includes(after.marker)) {
        sent = true;
        setImmediate(() => vm.serial.enqueueInput(new TextEncoder().encode(after.text)));
      }
    },
  });
  opts.during?.(vm);
  const outcome = await vm.run();
  const stats = vm.stats();
  const transports = vm.transports.map((t) => t.stats());
  vm.close();
  return { outcome, output: Buffer.concat(chunks).toString("latin1"), stats, vm, transports };
}

/** Print the byte in %al on COM1. */
const PUTC = (ch: string) => `mov $0x3f8, %dx\n mov $'${ch}', %al\n out %al, %dx\n`;

test("PIO exits reach the UART and ACPI power-off ends the run", async () => {
  const r = await runGuest(`${PUTC("o")}${PUTC("k")}${POWEROFF}`);
  assert.deepEqual(r.outcome, { kind: "poweroff" });
  assert.equal(r.output, "ok");
  assert.ok((r.stats.exits.io ?? 0) >= 3);
});

test("string I/O (rep outsb) writes a whole buffer to the UART", async () => {
  const r = await runGuest(`
    mov $msg, %si
    mov $5, %cx
    mov $0x3f8, %dx
    cld
    rep outsb
    ${POWEROFF}
  msg: .ascii "hello"
  `);
  assert.equal(r.output, "hello");
  assert.deepEqual(r.outcome, { kind: "poweroff" });
});

test("the console's LSR polls and THR writes are answered on the vCPU thread, in order", async () => {
  // As Linux's serial console writes: IER 0, then for each byte wait for THRE in LSR and
  // write THR. A forwarded IIR read after the 20th byte, then '|', checks that the bytes
  // queued on the vCPU thread come out before anything the model itself handles.
  const r = await runGuest(`
    mov $0x3f9, %dx
    xor %al, %al
    out %al, %dx
    mov $msg, %si
    mov $40, %cx
  next:
    mov $0x3fd, %dx
  wait:
    in %dx, %al
    test $0x20, %al
    jz wait
    mov $0x3f8, %dx
    lodsb
    out %al, %dx
    cmp $21, %cx
    jne 1f
    mov $0x3fa, %dx
    in %dx, %al
    mov $0x3f8, %dx
    mov $'|', %al
    out %al, %dx
  1: loop next
    ${POWEROFF}
  msg: .ascii "0123456789abcdefghijABCDEFGHIJ!@#$%^&*()"
  `);
  assert.deepEqual(r.outcome, { kind: "poweroff" });
  assert.equal(r.output, "0123456789abcdefghij|ABCDEFGHIJ!@#$%^&*()");
  const local = r.stats.exits.local_pio ?? 0;
  const forwarded = r.stats.exits.forwarded ?? 0;
  // 40 LSR reads and 41 THR writes on the vCPU thread; the IER write, the IIR read and
  // the power-off write forwarded.
  assert.ok(local >= 80, `only ${local} accesses answered on the vCPU thread`);
  assert.ok(forwarded <= 4, `${forwarded} accesses forwarded`);
});

test("UART: scratch register, loopback, and console input read by polling LSR", async () => {
  const r = await runGuest(
    `
    # Scratch register round trip: write 0x5a to SCR (base+7), read it back, print it.
    mov $0x3ff, %dx
    mov $0x5a, %al
    out %al, %dx
    in %dx, %al
    mov $0x3f8, %dx
    out %al, %dx
    # Loopback: MCR bit 4, send 'L', read it back from RBR, then leave loopback and print it.
    mov $0x3fc, %dx
    mov $0x10, %al
    out %al, %dx
    mov $0x3f8, %dx
    mov $'L', %al
    out %al, %dx
    in %dx, %al
    mov %al, %bl
    mov $0x3fc, %dx
    mov $0x00, %al
    out %al, %dx
    mov $0x3f8, %dx
    mov %bl, %al
    out %al, %dx
    # Console input: wait for Data Ready in LSR, read two bytes, echo them upper-cased.
    mov $2, %cx
  wait_rx:
    mov $0x3fd, %dx
    in %dx, %al
    test $1, %al
    jz wait_rx
    mov $0x3f8, %dx
    in %dx, %al
    sub $0x20, %al
    out %al, %dx
    dec %cx
    jnz wait_rx
    ${POWEROFF}
  `,
    { inputAfter: { marker: "L", text: "hi" } },
  );
  assert.equal(r.output, "ZLHI");
  assert.deepEqual(r.outcome, { kind: "poweroff" });
});

test("unmapped ports read all-ones and writes are dropped and counted", async () => {
  const r = await runGuest(`
    mov $0x1234, %dx
    in %dx, %al
    cmp $0xff, %al
    jne bad
    in %dx, %ax
    cmp $0xffff, %ax
    jne bad
    out %al, %dx
    out %al, %dx
    ${PUTC("y")}
    ${POWEROFF}
  bad:
    ${PUTC("n")}
    ${POWEROFF}
  `);
  assert.equal(r.output, "y");
  assert.equal(r.stats.exits.unmapped_pio_read, 2);
  assert.equal(r.stats.exits.unmapped_pio_write, 2);
});

test("MMIO to nowhere reads all-ones, writes are dropped, and the GED answers", async () => {
  // Real mode reaches 0xd0000000 through a 32-bit address-size prefix with a zero segment;
  // the guest enters big real mode first isn't needed for KVM, which checks only the
  // segment limit: we stay below 1 MiB + use an FS base via a flat descriptor instead.
  const r = await runGuest(`
    # Load a GDT with a flat 4 GiB data segment, enter protected mode just to load FS with
    # it, and return to real mode ("unreal mode") so 32-bit addresses reach the MMIO hole.
    cli
    lgdt gdtr
    mov %cr0, %eax
    or $1, %al
    mov %eax, %cr0
    mov $0x08, %bx
    mov %bx, %fs
    and $0xfe, %al
    mov %eax, %cr0
    xor %bx, %bx
    mov %bx, %fs
    # Unmapped MMIO: read must be all-ones.
    mov $0xdf000000, %esi
    addr32 movl %fs:(%esi), %eax
    cmp $0xffffffff, %eax
    jne bad
    addr32 movl %eax, %fs:(%esi)
    # GED event register at 0xd0000000 reads 0 with nothing pending.
    mov $0xd0000000, %esi
    addr32 movl %fs:(%esi), %eax
    cmp $0, %eax
    jne bad
    ${PUTC("y")}
    ${POWEROFF}
  bad:
    ${PUTC("n")}
    ${POWEROFF}
  .align 8
  gdt: .quad 0, 0x00cf93000000ffff
  gdtr: .word 15
        .long gdt
  `);
  assert.equal(r.output, "y");
  const mmio = r.stats.mmio as { unmappedReads: number; unmappedWrites: number };
  assert.equal(mmio.unmappedReads, 1);
  assert.equal(mmio.unmappedWrites, 1);
  assert.ok((r.stats.exits.mmio ?? 0) >= 3);
});

test("a guest spinning with interrupts off is stopped promptly by a kick", async () => {
  // Timed from the stop request, not from the build: in the lab, starting the vCPU threads
  // alone takes seconds, and that is not what a kick must bound.
  let asked = 0;
  const r = await runGuest("cli\n1: jmp 1b\n", {
    cpus: 2,
    during: (vm) => {
      setTimeout(() => {
        asked = performance.now();
        vm.end({ kind: "stopped", reason: "test" });
      }, 300);
    },
  });
  const elapsed = performance.now() - asked;
  assert.ok(asked > 0, "the stop was never asked for");
  assert.deepEqual(r.outcome, { kind: "stopped", reason: "test" });
  assert.ok(elapsed < 2000, `stopping took ${elapsed} ms`);
});

test("pause parks every vCPU (no exits while paused) and resume lets them run again", async () => {
  const counts: number[] = [];
  const io = (vm: Vm) => vm.stats().exits.io ?? 0;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const r = await runGuest("1: out %al, $0x80\n jmp 1b\n", {
    cpus: 2,
    during: (vm) => {
      void (async () => {
        // Until the guest has run at all (a loaded host may take a while to schedule it).
        for (let i = 0; i < 500 && io(vm) === 0; i++) await sleep(20);
        await vm.pause();
        assert.equal(vm.paused, true);
        counts.push(io(vm));
        await sleep(300);
        counts.push(io(vm));
        vm.resume();
        await sleep(300);
        counts.push(io(vm));
        vm.end({ kind: "stopped", reason: "test" });
      })().catch((e) => vm.end({ kind: "stopped", reason: String(e) }));
    },
  });
  assert.deepEqual(r.outcome, { kind: "stopped", reason: "test" });
  const [paused, stillPaused, resumed] = counts as [number, number, number];
  assert.ok(paused > 0, "the guest ran before the pause");
  assert.equal(stillPaused, paused, "no exits while paused");
  assert.ok(resumed > stillPaused, "exits again after resume");
});

test("a triple fault ends the run with its own outcome", async () => {
  const r = await runGuest(`
    lidt zero_idt
    int3
  zero_idt: .word 0
            .long 0
  `);
  if (hostIsKvmPvm()) {
    // This machine's /dev/kvm interprets guest code and cannot emulate int3 (HOST-NOTES):
    // that must surface as the internal-error outcome, with KVM's detail.
    assert.equal(r.outcome.kind, "internal-error");
    assert.match(describeOutcome(r.outcome), /KVM_EXIT_INTERNAL_ERROR/);
  } else {
    assert.equal(r.outcome.kind, "triple-fault");
    assert.match(describeOutcome(r.outcome), /at rip=0x[0-9a-f]+ rsp=0x/);
  }
});

test("the i8042 reset command is a reboot request", async () => {
  const r = await runGuest("mov $0xfe, %al\n out %al, $0x64\n1: jmp 1b\n");
  assert.equal(r.outcome.kind, "reboot");
});

test("the ACPI reset register is a reboot request", async () => {
  const r = await runGuest("mov $0x602, %dx\n mov $1, %al\n out %al, %dx\n1: jmp 1b\n");
  assert.equal(r.outcome.kind, "reboot");
});

test("the CMOS RTC answers with a plausible date", async () => {
  // Read the century-less year (index 9) in BCD; print its two digits.
  const r = await runGuest(`
    mov $0x09, %al
    out %al, $0x70
    in $0x71, %al
    mov %al, %bl
    shr $4, %al
    add $'0', %al
    mov $0x3f8, %dx
    out %al, %dx
    mov %bl, %al
    and $0x0f, %al
    add $'0', %al
    out %al, %dx
    ${POWEROFF}
  `);
  const yy = String(new Date().getUTCFullYear() % 100).padStart(2, "0");
  assert.equal(r.output, yy);
});

test("an ELF kernel boots through its PVH note with hvm_start_info in %ebx", async () => {
  // 32-bit protected mode, paging off: check the start_info magic, then print the first
  // bytes of the command line it points to.
  const r = await runGuest(
    `
    cmpl $0x336ec578, (%ebx)
    jne bad
    mov 24(%ebx), %esi
    mov $0x3f8, %dx
    mov $3, %ecx
    cld
    rep outsb
    ${POWEROFF.replace("1: jmp 1b", "2: jmp 2b")}
  bad:
    mov $0x3f8, %dx
    mov $'n', %al
    out %al, %dx
    ${POWEROFF}
  `,
    { pvh: { cmdline: "pvh ok" } },
  );
  assert.equal(r.output, "pvh");
  assert.deepEqual(r.outcome, { kind: "poweroff" });
});

/** Unreal mode: FS gets a flat 4 GiB segment so 32-bit addresses reach the MMIO hole. */
const UNREAL = `
    cli
    lgdt gdtr
    mov %cr0, %eax
    or $1, %al
    mov %eax, %cr0
    mov $0x08, %bx
    mov %bx, %fs
    and $0xfe, %al
    mov %eax, %cr0
    xor %bx, %bx
    mov %bx, %fs
`;
const UNREAL_DATA = `
  .align 8
  gdt: .quad 0, 0x00cf93000000ffff
  gdtr: .word 15
        .long gdt
`;
/** Store a 32-bit value at a 32-bit physical address through FS. */
const poke = (addr: number, value: number) => `
    mov $${addr}, %esi
    addr32 movl $${value}, %fs:(%esi)
`;

/** Print virtio-mmio InterruptStatus of the transport at `base` as a digit on COM1. */
const printInterruptStatus = (base: number) => `
    mov $${base + 0x60}, %esi
    addr32 movl %fs:(%esi), %eax
    add $0x30, %al
    mov $0x3f8, %dx
    out %al, %dx
`;

test("DMA to addresses outside RAM: a virtio buffer pointing into the MMIO hole is refused", async () => {
  // The guest drives the virtio-rng transport at 0xd0001000 as Linux would, then offers a
  // device-writable buffer at 0xf0000000 (the MMIO hole, not RAM) and kicks the queue
  // through the ioeventfd. The device must refuse the chain, hand it back with 0 bytes,
  // and keep running; the guest reports the used entry it sees.
  const T = 0xd0001000;
  const DESC = 0x10000;
  const AVAIL = 0x10100;
  const USED = 0x10200;
  const r = await runGuest(
    `
    ${UNREAL}
    ${poke(T + 0x70, 1)}
    ${poke(T + 0x70, 3)}
    ${poke(T + 0x24, 1)}
    ${poke(T + 0x20, 1)}
    ${poke(T + 0x24, 0)}
    ${poke(T + 0x20, 0)}
    ${poke(T + 0x70, 0xb)}
    ${poke(T + 0x30, 0)}
    ${poke(T + 0x38, 8)}
    ${poke(T + 0x80, DESC)}
    ${poke(T + 0x84, 0)}
    ${poke(T + 0x90, AVAIL)}
    ${poke(T + 0x94, 0)}
    ${poke(T + 0xa0, USED)}
    ${poke(T + 0xa4, 0)}
    ${poke(T + 0x44, 1)}
    ${poke(T + 0x70, 0xf)}
    # descriptor 0: addr 0xf0000000 (outside RAM), len 64, flags WRITE, next 0
    ${poke(DESC, 0xf0000000)}
    ${poke(DESC + 4, 0)}
    ${poke(DESC + 8, 64)}
    ${poke(DESC + 12, 2)}
    # avail ring: flags 0, idx 1, ring[0] = 0
    ${poke(AVAIL + 4, 0)}
    ${poke(AVAIL, 0x10000)}
    ${poke(T + 0x50, 0)}
    # wait for the used index to move
    mov $20000000, %ecx
  wait_used:
    mov $${USED}, %esi
    addr32 movl %fs:(%esi), %eax
    shr $16, %eax
    cmp $1, %ax
    je got_used
    dec %ecx
    jnz wait_used
    ${PUTC("t")}
    ${POWEROFF.replace("1: jmp 1b", "3: jmp 3b")}
  got_used:
    mov $${USED + 8}, %esi
    addr32 movl %fs:(%esi), %eax
    cmp $0, %eax
    jne bad
    ${PUTC("y")}
    # InterruptStatus (bit 0: the refused chain was signalled), ACK it, read it again
    ${printInterruptStatus(T)}
    ${poke(T + 0x64, 1)}
    ${printInterruptStatus(T)}
    ${POWEROFF.replace("1: jmp 1b", "4: jmp 4b")}
  bad:
    ${PUTC("n")}
    ${POWEROFF}
    ${UNREAL_DATA}
  `,
    { virtio: [new VirtioRng()] },
  );
  assert.deepEqual(r.outcome, { kind: "poweroff" });
  assert.equal(r.output.slice(0, 1), "y", "the guest did not see its refused buffer returned");
  // The vCPU thread answered InterruptStatus and InterruptACK from shared memory.
  assert.equal(r.output.slice(1), "10", "InterruptStatus read 1, then 0 after the ACK");
  assert.equal(r.stats.exits.local_mmio, 3);
  const q = r.transports[0]?.queues[0];
  assert.ok(q, "no queue stats");
  assert.equal(q.malformed, 1);
});

test("`vessel run` hands its ahead-started vCPU workers their vCPUs; spares never hold it open", () => {
  const dir = mkdtempSync(join(tmpdir(), "vessel-prestart-"));
  try {
    const kernel = join(dir, "guest.elf");
    writeFileSync(
      kernel,
      assemblePvhElf(`mov $0x3f8, %dx\nmov $0x56, %al\nout %al, %dx\n${POWEROFF}`),
    );
    // Two vCPUs: the boot CPU prints and powers off, the other waits for its SIPI.
    const run = spawnSync(
      process.execPath,
      [bin, "run", "--kernel", kernel, "--cpus", "2", "--memory", "64M", "--slow-kvm"],
      { encoding: "latin1", timeout: 60_000 },
    );
    assert.equal(run.status, 0, `exit ${run.status} ${run.signal ?? ""}: ${run.stderr}`);
    assert.ok(
      run.stdout.includes("V"),
      `the guest's byte is missing: ${JSON.stringify(run.stdout)}`,
    );
    // A run that fails before its VM exists leaves its started workers untaken, and ends
    // with its one line even when they are still loading koffi (exiting then aborted node
    // with a "napi_throw" fatal error in 2 of 5 runs before the CLI waited for them).
    for (let i = 0; i < 8; i++) {
      const t0 = performance.now();
      const bad = spawnSync(
        process.execPath,
        [bin, "run", "--kernel", join(dir, "missing"), "--cpus", "3"],
        { encoding: "utf8", timeout: 30_000 },
      );
      assert.equal(bad.status, 1, `exit ${bad.status} ${bad.signal ?? ""}: ${bad.stderr}`);
      assert.match(bad.stderr, /^vessel: --kernel: cannot read[^\n]*\n$/);
      assert.ok(performance.now() - t0 < 20_000, "unused vCPU workers held the process open");
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
