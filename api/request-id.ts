import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import type { Logger } from '../shared/logger.js';

const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;
const LOGGER = 'ferryLogger';

/** The request's logger: every line it writes carries `request_id`. */
export function requestLogger(res: Response, fallback: Logger): Logger {
  return (res.locals[LOGGER] as Logger | undefined) ?? fallback;
}

/**
 * Gives every request an id: the caller's `X-Request-Id` when it is a sane token (printable, at
 * most 128 characters), else a new UUID; echoes it back, and logs each request once at `http` level
 * (method, route, status, duration) with it.
 */
export function requestIds(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.get('x-request-id');
    const id = incoming !== undefined && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.set('X-Request-Id', id);
    const child = logger.child({ request_id: id });
    res.locals[LOGGER] = child;
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      child.http('request', {
        method: req.method,
        path: req.path,
        status: res.statusCode,
        duration_ms: Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100,
      });
    });
    next();
  };
}
