// Domain configurations in other toolstacks' formats (Xen xl.cfg, libvirt domain XML,
// Firecracker's config file) turned into the native domain spec, with a warning for every
// setting Vessel does not honour and an error naming the source key for what it cannot.

export { ImportError, type ImportOptions, type ImportResult } from "./common.js";
export { importFirecrackerJson } from "./firecracker.js";
export { importLibvirtXml } from "./libvirt.js";
export {
  CONFIG_FORMATS,
  type ConfigFormat,
  detectFormat,
  importDomainConfig,
  type LoadedConfig,
  loadDomainConfig,
} from "./load.js";
export { importXlCfg } from "./xl.js";
