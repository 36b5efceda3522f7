// Prometheus text exposition (format 0.0.4) of every running domain, served at GET /metrics:
// CPU time per vCPU thread, VM exits by reason, bytes and requests per device, CPU time
// throttled by the domain's cap, the balloon's size, and the VMM's resident memory. The same
// numbers feed `vessel top` (through the JSON routes), so the two never disagree.

import type { Daemon } from "../daemon/daemon.js";
import type { Domain } from "../daemon/domain.js";

interface Sample {
  labels: Record<string, string>;
  value: number;
}

class Family {
  readonly samples: Sample[] = [];
  constructor(
    readonly name: string,
    readonly type: "counter" | "gauge",
    readonly help: string,
  ) {}
  add(labels: Record<string, string>, value: number | null | undefined): void {
    if (typeof value === "number" && Number.isFinite(value)) this.samples.push({ labels, value });
  }
}

function escapeLabel(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}

function render(families: Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels)
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(",");
      out.push(`${f.name}{${labels}} ${s.value}`);
    }
  }
  return `${out.join("\n")}\n`;
}

type DeviceStats = {
  name?: string;
  metrics?: Record<string, unknown> | null;
};

/** Counters in a device's metrics that are bytes or requests, by our metric names. */
const DEVICE_COUNTERS: Record<string, { metric: string; direction?: string }> = {
  bytesRead: { metric: "bytes", direction: "read" },
  bytesWritten: { metric: "bytes", direction: "write" },
  rxBytes: { metric: "bytes", direction: "rx" },
  txBytes: { metric: "bytes", direction: "tx" },
  rxFrames: { metric: "operations", direction: "rx" },
  txFrames: { metric: "operations", direction: "tx" },
  readRequests: { metric: "operations", direction: "read" },
  writeRequests: { metric: "operations", direction: "write" },
};

export async function renderMetrics(daemon: Daemon): Promise<string> {
  const state = new Family("vessel_domain_running", "gauge", "1 while the domain's VMM runs");
  const vcpuCpu = new Family(
    "vessel_vcpu_cpu_seconds_total",
    "counter",
    "host CPU time used by each vCPU thread",
  );
  const exits = new Family("vessel_vm_exits_total", "counter", "VM exits by reason");
  const devBytes = new Family("vessel_device_bytes_total", "counter", "bytes moved per device");
  const devOps = new Family(
    "vessel_device_operations_total",
    "counter",
    "requests or frames per device",
  );
  const throttled = new Family(
    "vessel_cpu_throttled_seconds_total",
    "counter",
    "time the domain's cgroup was held back by its CPU cap",
  );
  const ioThrottled = new Family(
    "vessel_device_throttled_seconds_total",
    "counter",
    "time a device's requests were held back by its I/O limits",
  );
  const cgroupCpu = new Family(
    "vessel_cgroup_cpu_seconds_total",
    "counter",
    "CPU time of everything in the domain's cgroup",
  );
  const balloon = new Family(
    "vessel_balloon_bytes",
    "gauge",
    "memory the guest has given back through its balloon",
  );
  const rss = new Family(
    "vessel_vmm_resident_bytes",
    "gauge",
    "resident memory of the VMM process",
  );

  for (const info of daemon.list()) {
    const domain = { domain: info.name };
    state.add(domain, info.pid === null ? 0 : 1);
    if (info.pid === null) continue;
    const d: Domain = daemon.get(info.name);
    try {
      for (const v of await d.vcpuInfo())
        vcpuCpu.add(
          { ...domain, vcpu: String(v.vcpu) },
          v.cpuTimeNs === null ? null : v.cpuTimeNs / 1e9,
        );
      const stats = (await d.stats()) as {
        exits?: Record<string, number>;
        devices?: DeviceStats[];
      } | null;
      for (const [reason, n] of Object.entries(stats?.exits ?? {}))
        exits.add({ ...domain, reason }, n);
      for (const dev of stats?.devices ?? []) {
        for (const [key, value] of Object.entries(dev.metrics ?? {})) {
          const m = DEVICE_COUNTERS[key];
          if (!m || typeof value !== "number") continue;
          const labels = { ...domain, device: dev.name ?? "?", direction: m.direction ?? "" };
          (m.metric === "bytes" ? devBytes : devOps).add(labels, value);
        }
      }
      for (const l of (await d.diskLimits()) ?? [])
        ioThrottled.add({ ...domain, device: l.device }, l.throttledMs / 1000);
      const memory = await d.memoryReport();
      rss.add(domain, memory?.vmmResidentBytes as number | null);
      const actual = (memory?.balloon as { actualPages?: number } | null)?.actualPages;
      if (actual !== undefined) balloon.add(domain, actual * 4096);
    } catch {
      // The VMM went away between list() and here; its numbers are simply absent.
    }
    const cg = d.cgroup();
    if (cg) {
      try {
        const stat = cg.read("cpu.stat");
        const usage = /^usage_usec (\d+)/m.exec(stat)?.[1];
        const thr = /^throttled_usec (\d+)/m.exec(stat)?.[1];
        cgroupCpu.add(domain, usage === undefined ? null : Number(usage) / 1e6);
        throttled.add(domain, thr === undefined ? null : Number(thr) / 1e6);
      } catch {
        // no cgroup for this domain (it was started before cgroups were available)
      }
    }
  }
  return render([
    state,
    vcpuCpu,
    exits,
    devBytes,
    devOps,
    ioThrottled,
    throttled,
    cgroupCpu,
    balloon,
    rss,
  ]);
}
