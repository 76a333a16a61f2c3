/**
 * Knit's error set, in one table. Operational failures are KnitError with a
 * stable `code`, an HTTP status and a WebSocket close code, so the HTTP layer,
 * the control channel and the CLI all speak the same language. Programmer
 * errors throw TypeError/RangeError instead; untrusted network input that is
 * merely malformed is dropped and counted, not thrown. docs/errors.md lists
 * these codes for users.
 */

export const ERROR_TABLE = {
  KNIT_ERR_BAD_REQUEST: { status: 400, close: 4400, retryable: false, message: 'the request is malformed' },
  KNIT_ERR_TOKEN_INVALID: { status: 401, close: 4401, retryable: false, message: 'the join token is not valid' },
  KNIT_ERR_TOKEN_EXPIRED: { status: 401, close: 4401, retryable: false, message: 'the join token has expired' },
  KNIT_ERR_TOKEN_USED: { status: 401, close: 4401, retryable: false, message: 'the join token has no uses left' },
  KNIT_ERR_TOKEN_WRONG_COORDINATOR: { status: 400, close: 4400, retryable: false, message: 'the join token belongs to another coordinator' },
  KNIT_ERR_ADMIN_UNAUTHORIZED: { status: 401, close: 4401, retryable: false, message: 'a valid admin token is required' },
  KNIT_ERR_AUTH_FAILED: { status: 401, close: 4403, retryable: false, message: 'proof of key possession failed' },
  KNIT_ERR_NODE_UNKNOWN: { status: 404, close: 4404, retryable: false, message: 'no such node' },
  KNIT_ERR_NOT_FOUND: { status: 404, close: 4404, retryable: false, message: 'not found' },
  KNIT_ERR_RATE_LIMITED: { status: 429, close: 4429, retryable: true, message: 'too many requests; slow down' },
  KNIT_ERR_ADDRESS_EXHAUSTED: { status: 503, close: 4503, retryable: false, message: 'the mesh address pool is exhausted' },
  KNIT_ERR_PROTOCOL: { status: 400, close: 4400, retryable: false, message: 'protocol violation' },
  KNIT_ERR_COORDINATOR_KEY: { status: 502, close: 4403, retryable: false, message: 'the coordinator did not prove the pinned key' },
  KNIT_ERR_UNREACHABLE: { status: 503, close: 1011, retryable: true, message: 'the coordinator is unreachable' },
  KNIT_ERR_STORE: { status: 500, close: 1011, retryable: false, message: 'the data store failed' },
  KNIT_ERR_STORE_LOCKED: { status: 503, close: 1011, retryable: true, message: 'the data store is locked by another process' },
  KNIT_ERR_LISTEN: { status: 500, close: 1011, retryable: true, message: 'cannot listen on the requested address' },
  KNIT_ERR_ENGINE: { status: 500, close: 1011, retryable: true, message: 'the tunnel engine failed' },
  KNIT_ERR_IO: { status: 500, close: 1011, retryable: false, message: 'a file could not be read or written' },
  KNIT_ERR_USAGE: { status: 400, close: 4400, retryable: false, message: 'bad command-line usage' },
  KNIT_ERR_INTERNAL: { status: 500, close: 1011, retryable: true, message: 'internal error' },
} as const;

export type KnitErrorCode = keyof typeof ERROR_TABLE;

export class KnitError extends Error {
  readonly code: KnitErrorCode;
  readonly status: number;
  readonly closeCode: number;
  readonly retryable: boolean;

  constructor(code: KnitErrorCode, message?: string, options?: { cause?: unknown }) {
    const row = ERROR_TABLE[code];
    super(message ?? row.message, options);
    this.name = 'KnitError';
    this.code = code;
    this.status = row.status;
    this.closeCode = row.close;
    this.retryable = row.retryable;
  }

  /** The JSON body every HTTP error uses: {"error":{"code","message"}}. */
  toJSON(): { error: { code: string; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

export function isKnitError(e: unknown): e is KnitError {
  return e instanceof KnitError;
}
