// Errors the control plane reports to API clients: each carries its HTTP status and a stable
// code (as Hono's HTTPException and Node's `code` do), and a one-line message for people.

export type ErrorCode =
  | "NOT_FOUND"
  | "CONFLICT"
  | "INVALID"
  | "TIMEOUT"
  | "START_FAILED"
  | "UNAUTHORIZED"
  | "INTERNAL";

const STATUS: Record<ErrorCode, number> = {
  NOT_FOUND: 404,
  CONFLICT: 409,
  INVALID: 400,
  TIMEOUT: 504,
  START_FAILED: 500,
  UNAUTHORIZED: 401,
  INTERNAL: 500,
};

export class DomainError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "DomainError";
    this.status = STATUS[code];
  }
}
