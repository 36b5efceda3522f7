// vCPU worker threads started ahead of their vCPUs. A worker's own start-up (a fresh V8
// isolate, Node's bootstrap, its modules, koffi's binding) is slow where the VMM itself runs
// under emulation, and none of it needs the vCPU: `vessel run` starts the workers first
// thing, so that work overlaps the main thread's imports and VM set-up, and VcpuThread
// takes one when its vCPU starts, handing it the vCPU by message. This module imports
// nothing of ours, so starting workers costs the main thread nothing else.
// A worker nobody takes is unref'd (it never holds the process open) and ends with it,
// but only once its modules are loaded: process.exit() while a worker is still inside
// koffi's native init aborts the whole process (node's "napi_throw" fatal error, seen when
// a flag mistake ended `vessel run` at once), so the CLI awaits spareWorkersSettled() first.

import { Worker } from "node:worker_threads";

// Written from the parent folder so it also holds from dist/src/bundle/ (scripts/bundle.mjs).
const WORKER_URL = new URL("../vmm/vcpu_worker.js", import.meta.url);
// A vCPU thread allocates nothing per exit and its heap holds about 6 MiB (its modules).
// Explicit limits, ten times that, made each vCPU thread about 8 MiB smaller resident
// (a 1-vCPU VMM: 73.9 MiB without, 65.8 MiB with, on a 24 GiB host; V8 otherwise sizes an
// isolate's heap from the host's RAM). A thread that ever hit them would end with an
// error outcome instead of growing.
const WORKER_OPTIONS = {
  stdout: false,
  stderr: false,
  resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 2 },
} as const;

interface Spare {
  worker: Worker;
  dead: boolean;
  /** Set to 1 by the worker once its modules (koffi among them) are loaded. */
  loaded: Int32Array;
}

const spares: Spare[] = [];
/** Every worker started ahead, taken or not: any of them may still be loading. */
const started: Spare[] = [];

/** Start `n` workers that wait for their vCPU. */
export function prestartVcpuWorkers(n: number): void {
  for (let i = 0; i < n; i++) {
    const loaded = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(WORKER_URL, { ...WORKER_OPTIONS, workerData: { loaded } });
    const spare: Spare = { worker, dead: false, loaded };
    // Without a listener an error would be thrown in the main thread; a dead spare is
    // skipped, and the vCPU's own worker then reports whatever is wrong.
    const onEnd = () => {
      spare.dead = true;
    };
    worker.once("error", onEnd);
    worker.once("exit", onEnd);
    worker.unref();
    spares.push(spare);
    started.push(spare);
  }
}

/**
 * Resolves when every worker started ahead has loaded its modules or ended, or after
 * `timeoutMs` (a worker that never loads is then left to the exit, as before).
 */
export async function spareWorkersSettled(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const spare of started) {
    // A timer, not Atomics.waitAsync: a pending waitAsync does not keep the event loop
    // alive, and an empty loop ends the process (exit 13) mid-load all the same.
    while (!spare.dead && Atomics.load(spare.loaded, 0) === 0 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A running worker for a vCPU: a prestarted one given `data` by message, else a new one. */
export function vcpuWorker(data: unknown): Worker {
  for (let spare = spares.shift(); spare; spare = spares.shift()) {
    if (spare.dead) continue;
    // The vCPU thread reports errors itself; the exit listener stays, as
    // spareWorkersSettled() still needs to know if a taken worker dies before it loads.
    spare.worker.removeAllListeners("error");
    spare.worker.ref();
    spare.worker.postMessage(data);
    return spare.worker;
  }
  return new Worker(WORKER_URL, { ...WORKER_OPTIONS, workerData: data });
}
