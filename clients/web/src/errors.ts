/** Thrown by the history helpers (and the ticket request) for a response that is not 2xx. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** From Retry-After (429, 503), in milliseconds; null when the server named none. */
  readonly retryAfterMs: number | null;

  constructor(status: number, code: string, message: string, retryAfterMs: number | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}
