/**
 * ferry's error hierarchy. Every error a client or an operator can see carries a stable `code`;
 * the API maps codes to HTTP statuses in exactly one place (api/error-handler.ts).
 */
export class AppError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The request was malformed or failed validation (HTTP 400). */
export class ValidationError extends AppError {
  readonly details: readonly string[];

  constructor(message: string, details: readonly string[] = []) {
    super('VALIDATION_FAILED', message);
    this.details = details;
  }
}

/** The named resource does not exist (HTTP 404). */
export class NotFoundError extends AppError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** The resource is in a state that forbids the action (HTTP 409). */
export class ConflictError extends AppError {
  constructor(message: string) {
    super('CONFLICT', message);
  }
}

/** Redis could not be reached (HTTP 503 with Retry-After). */
export class RedisUnavailableError extends AppError {
  constructor(options?: { cause?: unknown }) {
    super('REDIS_UNAVAILABLE', 'Redis is unavailable; try again shortly', options);
  }
}

/**
 * Redis refused a write because it is full (`maxmemory` reached under `noeviction`): HTTP 503 with
 * Retry-After. Nothing was lost; writes succeed again once memory frees.
 */
export class RedisFullError extends AppError {
  constructor(options?: { cause?: unknown }) {
    super('REDIS_FULL', 'Redis is full (maxmemory reached) and refuses writes; try again later', options);
  }
}

/** This API process is shutting down: retry on another instance (HTTP 503, Connection: close). */
export class ShuttingDownError extends AppError {
  constructor() {
    super('SHUTTING_DOWN', 'This server is shutting down; retry on another instance');
  }
}

/** The configuration is invalid: the message names every bad variable. */
export class ConfigError extends AppError {
  constructor(message: string) {
    super('CONFIG_INVALID', message);
  }
}

/** No usable credentials (HTTP 401, with a WWW-Authenticate challenge). */
export class UnauthorizedError extends AppError {
  /** Challenge with HTTP Basic (the dashboard's browser login) instead of Bearer. */
  readonly basic: boolean;

  constructor(message: string, basic = false) {
    super('UNAUTHORIZED', message);
    this.basic = basic;
  }
}

/** The credentials are valid but their role is too small (HTTP 403). */
export class ForbiddenError extends AppError {
  constructor(message: string) {
    super('FORBIDDEN', message);
  }
}

/** Too many requests from one caller (HTTP 429 with Retry-After). */
export class RateLimitedError extends AppError {
  readonly retryAfterSeconds: number;

  constructor(message: string, retryAfterSeconds: number) {
    super('RATE_LIMITED', message);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}
