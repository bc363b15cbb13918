import type { ErrorRequestHandler, RequestHandler, Response } from 'express';
import { AppError, NotFoundError, RateLimitedError, RedisFullError, RedisUnavailableError, UnauthorizedError, ValidationError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { requestLogger } from './request-id.js';
import { isRedisConnectionError, isRedisFullError } from '../shared/redis.js';

export { isRedisConnectionError } from '../shared/redis.js';

/** The one place that maps error codes to HTTP statuses. */
const STATUS_BY_CODE: Record<string, number> = {
  VALIDATION_FAILED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  RATE_LIMITED: 429,
  CONFLICT: 409,
  IDEMPOTENCY_IN_PROGRESS: 409,
  REDIS_UNAVAILABLE: 503,
  REDIS_FULL: 503,
  SHUTTING_DOWN: 503,
};

/**
 * Retry-After (seconds) by code. A full Redis frees memory only when an operator acts or finished
 * jobs expire, so its clients back off longer than after a dropped connection.
 */
const RETRY_AFTER_BY_CODE: Record<string, string> = {
  REDIS_UNAVAILABLE: '1',
  REDIS_FULL: '10',
  SHUTTING_DOWN: '1',
};

/** `res.locals` flag: the answer was already sent by the Redis guard (api/redis-guard.ts). */
export const ANSWERED_EARLY = 'ferryAnsweredEarly';

const ABANDONED = 'ferryAbandoned';

/**
 * A signal that fires when the request has been answered early (the Redis guard's 503 while the
 * route still waits for Redis). A route that changes state checks it after each wait and before
 * each write: its caller was told the request failed, so when Redis answers later the route must
 * stop instead of carrying out a change nobody will hear about (a cancel that lands seconds after
 * its 503, say). A command already sent cannot be recalled: routes whose first write is their only
 * write are made safe to repeat instead (a late submit is deduplicated by the caller's retry).
 */
export function abandonedSignal(res: Response): AbortSignal {
  let controller = res.locals[ABANDONED] as AbortController | undefined;
  if (!controller) {
    controller = new AbortController();
    res.locals[ABANDONED] = controller;
    if (res.locals[ANSWERED_EARLY] === true) controller.abort(new RedisUnavailableError());
  }
  return controller.signal;
}

export interface ErrorAnswer {
  readonly error: AppError;
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: { error: { code: string; message: string; details?: readonly string[] } };
}

/** Express and body-parser errors that are the client's fault (malformed JSON, too large). */
function clientHttpStatus(error: unknown): number | undefined {
  const status = (error as { status?: unknown; statusCode?: unknown }).status ?? (error as { statusCode?: unknown }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : undefined;
}

/** Classifies any thrown value as an AppError with its HTTP status, headers and JSON body. */
export function toErrorAnswer(error: unknown): ErrorAnswer {
  let appError: AppError;
  let status: number;
  if (error instanceof AppError) {
    appError = error;
    status = STATUS_BY_CODE[error.code] ?? 500;
  } else if (isRedisFullError(error)) {
    appError = new RedisFullError({ cause: error });
    status = 503;
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
  const headers: Record<string, string> = {};
  const retryAfter = RETRY_AFTER_BY_CODE[appError.code] ?? (status === 503 ? '1' : undefined);
  if (retryAfter !== undefined) headers['retry-after'] = retryAfter;
  // A stopping server closes each connection after its answer, so the client's next request
  // opens a new one, which the load balancer sends to another instance.
  if (appError.code === 'SHUTTING_DOWN') headers.connection = 'close';
  if (appError instanceof RateLimitedError) headers['retry-after'] = String(appError.retryAfterSeconds);
  if (appError instanceof UnauthorizedError) headers['www-authenticate'] = appError.basic ? 'Basic realm="ferry", charset="UTF-8"' : 'Bearer realm="ferry"';
  const body: ErrorAnswer['body'] = { error: { code: appError.code, message: appError.message } };
  if (appError instanceof ValidationError && appError.details.length > 0) body.error.details = appError.details;
  return { error: appError, status, headers, body };
}

/**
 * Sends an error answer straight to the socket, bypassing `res.json` (which a middleware such as
 * Idempotency-Key may have wrapped with a Redis write that could hang). For answers that must
 * leave now: the Redis guard's.
 */
export function sendErrorNow(res: Response, error: unknown): void {
  const answer = toErrorAnswer(error);
  const payload = JSON.stringify(answer.body);
  res.locals[ANSWERED_EARLY] = true;
  (res.locals[ABANDONED] as AbortController | undefined)?.abort(answer.error);
  res.writeHead(answer.status, {
    ...answer.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(payload)),
  });
  res.end(payload);
}

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new NotFoundError(`No route for ${req.method} ${req.path}`));
};

export function createErrorHandler(rootLogger: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    // The request's own logger, so each line carries its request_id.
    const logger = requestLogger(res, rootLogger);
    if (res.locals[ANSWERED_EARLY] === true) {
      // The guard answered 503 while the route waited for Redis; this is the route giving up later.
      logger.debug('request ended after its answer was sent', { method: req.method, path: req.path, error });
      if (!res.writableEnded) res.end();
      return;
    }
    const answer = toErrorAnswer(error);
    const { status } = answer;
    if (status >= 500 && answer.error.code.startsWith('REDIS_')) {
      logger.warn('request failed: Redis', { method: req.method, path: req.path, status, code: answer.error.code, error: (error as Error).message });
    } else if (status >= 500) {
      logger.error('request failed', { method: req.method, path: req.path, status, error });
    } else {
      logger.info('request refused', { method: req.method, path: req.path, status, code: answer.error.code });
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    res.status(status).set(answer.headers).json(answer.body);
  };
}
