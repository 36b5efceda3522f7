// The lab run the benchmarks' starting halves share (their measuring halves run inside it).

import { LabError, type LabOptions, type LabScenario, runInLab } from "../src/lab/mod.js";
import { log } from "./common.js";

/**
 * runInLab for a benchmark's one scenario, booting the lab again when L1 itself wedges (a
 * LabError: the lab's soft lockups hit any guest, QEMU's and the C loop's too; README "A
 * defect of the lab"), up to BENCH_LAB_BOOTS times (default 3). Each boot starts the
 * scenario over, so no figure mixes two boots.
 */
export async function runBenchInLab(
  scenario: LabScenario,
  opts: LabOptions,
): Promise<Awaited<ReturnType<typeof runInLab>>> {
  const boots = Number(process.env.BENCH_LAB_BOOTS ?? 3);
  for (let boot = 1; ; boot++) {
    try {
      return await runInLab([scenario], opts);
    } catch (e) {
      if (!(e instanceof LabError) || boot >= boots) throw e;
      log(`lab boot ${boot} of ${boots} wedged (${e.message.split("\n")[0]}); booting again`);
    }
  }
}
