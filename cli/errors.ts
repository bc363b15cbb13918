import { AppError } from '../shared/errors.js';

/** The command line is wrong (exit 1, with a pointer to `ferry --help`). */
export class UsageError extends AppError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** The API answered with an error: `code` and `message` are the API's own (`{"error": {...}}`). */
export class ApiError extends AppError {
  /** HTTP status. */
  readonly status: number;
  /** `Retry-After` in milliseconds, when the answer had one. */
  readonly retryAfterMs: number | undefined;

  constructor(status: number, code: string, message: string, retryAfterMs?: number) {
    super(code, message);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The API could not be reached, or the connection broke before an answer. */
export class ConnectionError extends AppError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONNECTION_FAILED', message, options);
  }
}

/** Following a log gave up after reconnecting for too long; the message says how to resume. */
export class FollowGaveUpError extends AppError {
  constructor(message: string) {
    super('FOLLOW_GAVE_UP', message);
  }
}

/** Statuses worth retrying: rate limited, a proxy without upstream, Redis away, an API shutting down. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504;
}

/** One line for a user: the API's code and message, or the cause of a connection failure. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return `${error.status} ${error.code}: ${error.message}`;
  if (error instanceof Error) return error.message;
  return String(error);
}
