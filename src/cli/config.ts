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

/** Load a config file in any format, or throw a one-line UsageError naming the file. */
export async function loadConfigFile(
  file: string,
  flags: { from?: string; name?: string },
): Promise<Awaited<ReturnType<typeof loadDomainConfig>>> {
  if (flags.from !== undefined && !isFormat(flags.from))
    throw new UsageError(`--from: "${flags.from}" is not a format (${CONFIG_FORMATS.join(", ")})`);
  try {
    return await loadDomainConfig(file, {
      ...(flags.from !== undefined ? { format: flags.from as ConfigFormat } : {}),
      ...(flags.name !== undefined ? { name: flags.name } : {}),
    });
  } catch (e) {
    if (e instanceof ImportError || e instanceof SpecError)
      throw new UsageError(`${file}: ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== undefined) throw new UsageError(`${file}: cannot read (${code})`);
    throw e;
  }
}

export async function configConvertCommand(file: string, flags: ConvertFlags): Promise<number> {
  const loaded = await loadConfigFile(file, flags);
  for (const warning of loaded.warnings) process.stderr.write(`vessel: warning: ${warning}\n`);
  process.stdout.write(
    flags.json ? `${JSON.stringify(loaded.spec, null, 2)}\n` : stringify(loaded.spec),
  );
  return 0;
}
