// The package's public entry (`import { ... } from "vessel"`): the API client and the
// shapes it speaks. The VMM internals are not part of the public surface.

export type {
  DomainEvent,
  DomainInfo,
  DomainList,
  DomainState,
  ShutdownRequest,
  VersionInfo,
} from "./api/schemas.js";
export { type ClientOptions, VesselApiError, VesselClient } from "./client/client.js";
export { type DomainSpec, parseDomainSpec, parseDomainSpecText, SpecError } from "./domain/spec.js";
