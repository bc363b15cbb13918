import type { ErrorRequestHandler, RequestHandler } from 'express';
import { AppError, NotFoundError, RedisUnavailableError, ValidationError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';

/** The one place that maps error codes to HTTP statuses. */
const STATUS_BY_CODE: Record<string, number> = {
  VALIDATION_FAILED: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  IDEMPOTENCY_IN_PROGRESS: 409,
  REDIS_UNAVAILABLE: 503,
};

/** ioredis errors that mean "Redis cannot be reached right now" rather than a bug. */
export function isRedisConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as NodeJS.ErrnoException).code;
  return (
    error.name === 'MaxRetriesPerRequestError' ||
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'ETIMEDOUT' ||
    /enableOfflineQueue|Connection is closed|Stream isn't writeable|connect ETIMEDOUT/.test(error.message)
  );
}

/** Express and body-parser errors that are the client's fault (malformed JSON, too large). */
function clientHttpStatus(error: unknown): number | undefined {
  const status = (error as { status?: unknown; statusCode?: unknown }).status ?? (error as { statusCode?: unknown }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : undefined;
}

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new NotFoundError(`No route for ${req.method} ${req.path}`));
};

export function createErrorHandler(logger: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    let appError: AppError;
    let status: number;
    if (error instanceof AppError) {
      appError = error;
      status = STATUS_BY_CODE[error.code] ?? 500;
    } else if (isRedisConnectionError(error)) {
      appError = new RedisUnavailableError({ cause: error });
      status = 503;
    } else if (clientHttpStatus(error) !== undefined) {
      status = clientHttpStatus(error) as number;
      const type = (error as { type?: string }).type;
      appError =
        type === 'entity.parse.failed'
          ? new ValidationError('Request body is not valid JSON')
          : new AppError(status === 413 ? 'PAYLOAD_TOO_LARGE' : 'BAD_REQUEST', (error as Error).message);
    } else {
      appError = new AppError('INTERNAL', 'Internal server error');
      status = 500;
    }
    if (status >= 500) logger.error('request failed', { method: req.method, path: req.path, status, error });
    else logger.info('request refused', { method: req.method, path: req.path, status, code: appError.code });
    if (res.headersSent) {
      res.end();
      return;
    }
    if (status === 503) res.set('retry-after', '1');
    const body: { error: { code: string; message: string; details?: readonly string[] } } = {
      error: { code: appError.code, message: appError.message },
    };
    if (appError instanceof ValidationError && appError.details.length > 0) body.error.details = appError.details;
    res.status(status).json(body);
  };
}
