// Persistent domain definitions: one JSON file per domain under <stateDir>/domains, each
// replaced atomically (see atomic_file.ts), so a daemon killed in the middle of a write
// leaves every definition either as it was or as it was being made, never torn. Files that
// fail to parse are reported and left alone, never deleted.

import { mkdirSync, readdirSync, readFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { type DomainSpec, parseDomainSpec } from "../domain/spec.js";
import { fsyncDir, TEMP_PREFIX, writeFileAtomic } from "../vmm/atomic_file.js";

export interface StoredDomain {
  spec: DomainSpec;
  /** When the definition was last written (ISO time). */
  definedAt: string;
}

export class DefinitionStore {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "domains");
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  /** Every definition; `problems` lists files that could not be read (kept for a person). */
  loadAll(): { domains: StoredDomain[]; problems: string[] } {
    const domains: StoredDomain[] = [];
    const problems: string[] = [];
    for (const f of readdirSync(this.dir)) {
      if (f.startsWith(TEMP_PREFIX)) {
        // An interrupted write: the definition it was replacing is intact beside it.
        try {
          unlinkSync(join(this.dir, f));
        } catch {
          // someone else removed it
        }
        continue;
      }
      if (!f.endsWith(".json")) continue;
      try {
        const raw = JSON.parse(readFileSync(join(this.dir, f), "utf8")) as StoredDomain;
        const spec = parseDomainSpec(raw.spec);
        if (`${spec.name}.json` !== f) throw new Error(`holds domain "${spec.name}"`);
        domains.push({ spec, definedAt: String(raw.definedAt) });
      } catch (e) {
        problems.push(`${f}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return { domains, problems };
  }

  save(spec: DomainSpec): StoredDomain {
    const stored = { spec, definedAt: new Date().toISOString() };
    writeFileAtomic(this.file(spec.name), `${JSON.stringify(stored, null, 2)}\n`);
    return stored;
  }

  remove(name: string): void {
    unlinkSync(this.file(name));
    fsyncDir(this.dir);
  }
}
