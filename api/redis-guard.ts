import type { RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../shared/errors.js';
import { sendErrorNow } from './error-handler.js';

export interface RedisGuardOptions {
  /** The API's command connection. */
  readonly redis: Redis;
  /**
   * Milliseconds a request may go unanswered before the guard looks at Redis (default 500). With
   * `pingMs` it keeps the promise that no request waits more than a second for an unreachable Redis,
   * with a margin for a busy event loop.
   */
  readonly deadlineMs?: number;
  /** Milliseconds a PING gets to show that a connected Redis still answers (default 150). */
  readonly pingMs?: number;
}

async function answersPing(redis: Redis, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([redis.ping().then(() => true, () => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Answers `503 REDIS_UNAVAILABLE` for a request still unanswered after `deadlineMs` when Redis is
 * the reason: the connection is down, or it is up but Redis does not answer a PING (paused, or the
 * network silently dropped). A request that is slow for another reason (a submit waiting for a
 * concurrent one, a cancel waiting for its worker) runs on. Commands fail at once while the
 * connection is down (no offline queue), so this only catches the commands that were already on
 * their way, or a Redis that went silent: ioredis would hold those until Redis returns.
 */
export function createRedisGuard({ redis, deadlineMs = 500, pingMs = 150 }: RedisGuardOptions): RequestHandler {
  return (_req, res, next) => {
    const timer = setTimeout(() => {
      if (res.headersSent) return;
      void (async () => {
        const reachable = redis.status === 'ready' && (await answersPing(redis, pingMs));
        if (reachable || res.headersSent) return;
        sendErrorNow(res, new RedisUnavailableError());
      })();
    }, deadlineMs);
    res.once('close', () => clearTimeout(timer));
    res.once('finish', () => clearTimeout(timer));
    next();
  };
}
