import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import type { Logger } from '../shared/logger.js';

const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;
const REQUEST_ID_KEY = 'ferryRequestId';
const LOGGER = 'ferryLogger';

/** The request's logger: every line it writes carries `request_id` (made on first use). */
export function requestLogger(res: Response, fallback: Logger): Logger {
  const made = res.locals[LOGGER] as Logger | undefined;
  if (made) return made;
  const id = res.locals[REQUEST_ID_KEY] as string | undefined;
  if (id === undefined) return fallback;
  const child = fallback.child({ request_id: id });
  res.locals[LOGGER] = child;
  return child;
}

/**
 * Gives every request an id: the caller's `X-Request-Id` when it is a sane token (printable, at
 * most 128 characters), else a new UUID; echoes it back, and logs each request once at `http` level
 * (method, route, status, duration) with it. The request's child logger is made only when a line
 * is written, and the `http` line is only timed while that level is enabled: most requests write
 * nothing.
 */
export function requestIds(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.get('x-request-id');
    const id = incoming !== undefined && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.set('X-Request-Id', id);
    res.locals[REQUEST_ID_KEY] = id;
    if (logger.isLevelEnabled('http')) {
      const started = process.hrtime.bigint();
      res.on('finish', () => {
        requestLogger(res, logger).http('request', {
          method: req.method,
          path: req.path,
          status: res.statusCode,
          duration_ms: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100,
        });
      });
    }
    next();
  };
}
