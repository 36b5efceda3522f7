// Which format a configuration file is in, and loading one into a native spec whatever its
// format. Detection looks at the content first (an XML <domain>, a JSON object with
// "boot-source", `key = value` lines, a YAML/JSON object with name or kernel) and at the file
// name only when the content does not say.

import { readFile } from "node:fs/promises";
import { dirname, extname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { type DomainSpec, parseDomainSpec, parseDomainSpecText } from "../domain/spec.js";
import { ImportError, type ImportOptions } from "./common.js";
import { importFirecrackerJson } from "./firecracker.js";
import { importLibvirtXml } from "./libvirt.js";
import { importXlCfg } from "./xl.js";

export const CONFIG_FORMATS = ["native", "xl", "libvirt", "firecracker"] as const;
export type ConfigFormat = (typeof CONFIG_FORMATS)[number];

function objectOrUndefined(parse: () => unknown): Record<string, unknown> | undefined {
  try {
    const v = parse();
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The first line that is neither blank nor a comment. */
function firstLine(text: string): string {
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t !== "" && !t.startsWith("#")) return t;
  }
  return "";
}

/** Tell a config's format from its text (and, failing that, its file name). */
export function detectFormat(text: string, fileName = ""): ConfigFormat {
  const body = text.replace(/^\uFEFF/, "").trimStart();
  if (body.startsWith("<")) {
    const root = /<(?!\?|!)([A-Za-z_][\w.-]*)/.exec(body)?.[1];
    if (root === "domain") return "libvirt";
    throw new ImportError("libvirt", "", `the root element is <${root ?? "?"}>, not <domain>`);
  }
  const json = body.startsWith("{") ? objectOrUndefined(() => JSON.parse(body)) : undefined;
  if (json && "boot-source" in json) return "firecracker";
  if (/^[a-z][._0-9a-z]*\s*\+?=/.test(firstLine(body))) return "xl";
  const yaml = json ?? objectOrUndefined(() => parseYaml(body));
  if (yaml && ("name" in yaml || "kernel" in yaml)) return "native";
  const ext = extname(fileName).toLowerCase();
  if (ext === ".xml") return "libvirt";
  if (ext === ".cfg" || ext === ".xl") return "xl";
  throw new ImportError(
    "config",
    "",
    `cannot tell the format of ${fileName || "the config"}; name it with --from (${CONFIG_FORMATS.join(", ")})`,
  );
}

export interface LoadedConfig {
  spec: DomainSpec;
  warnings: string[];
  format: ConfigFormat;
}

/** Import `text` from the given (or detected) format. */
export function importDomainConfig(
  text: string,
  format: ConfigFormat,
  opts: ImportOptions = {},
): { spec: DomainSpec; warnings: string[] } {
  switch (format) {
    case "native": {
      const spec = parseDomainSpecText(text, opts.fileName ?? "spec");
      if (opts.name === undefined) return { spec, warnings: [] };
      return { spec: parseDomainSpec({ ...spec, name: opts.name }), warnings: [] };
    }
    case "xl":
      return importXlCfg(text, opts);
    case "libvirt":
      return importLibvirtXml(text, opts);
    case "firecracker":
      return importFirecrackerJson(text, opts);
  }
}

/** Read a config file in any supported format; relative paths in it resolve against its dir. */
export async function loadDomainConfig(
  path: string,
  options: { format?: ConfigFormat; name?: string } = {},
): Promise<LoadedConfig> {
  const text = await readFile(path, "utf8");
  const format = options.format ?? detectFormat(text, path);
  const opts: ImportOptions = {
    baseDir: dirname(resolve(path)),
    fileName: path,
    ...(options.name !== undefined ? { name: options.name } : {}),
  };
  return { ...importDomainConfig(text, format, opts), format };
}
