// `vessel config convert`: a domain configuration in any format Vessel imports (native,
// xl.cfg, libvirt XML, Firecracker JSON) printed as the native spec, YAML or JSON. Every
// setting Vessel does not honour is a warning on stderr; what it cannot convert is one line
// naming the source key, and exit status 1.

import { stringify } from "yaml";
import { CONFIG_FORMATS, type ConfigFormat, ImportError, loadDomainConfig } from "../config/mod.js";
import { SpecError } from "../domain/spec.js";
import { UsageError } from "./args.js";

export interface ConvertFlags {
  from?: string;
  json?: boolean;
  name?: string;
}

function isFormat(text: string): text is ConfigFormat {
  return (CONFIG_FORMATS as readonly string[]).includes(text);
}

export async function configConvertCommand(file: string, flags: ConvertFlags): Promise<number> {
  if (flags.from !== undefined && !isFormat(flags.from))
    throw new UsageError(`--from: "${flags.from}" is not a format (${CONFIG_FORMATS.join(", ")})`);
  let loaded: Awaited<ReturnType<typeof loadDomainConfig>>;
  try {
    loaded = await loadDomainConfig(file, {
      ...(flags.from !== undefined ? { format: flags.from as ConfigFormat } : {}),
      ...(flags.name !== undefined ? { name: flags.name } : {}),
    });
  } catch (e) {
    if (e instanceof ImportError || e instanceof SpecError) {
      process.stderr.write(`vessel: ${file}: ${e.message}\n`);
      return 1;
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== undefined) {
      process.stderr.write(`vessel: ${file}: cannot read (${code})\n`);
      return 1;
    }
    throw e;
  }
  for (const warning of loaded.warnings) process.stderr.write(`vessel: warning: ${warning}\n`);
  process.stdout.write(
    flags.json ? `${JSON.stringify(loaded.spec, null, 2)}\n` : stringify(loaded.spec),
  );
  return 0;
}
