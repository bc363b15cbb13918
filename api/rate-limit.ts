import type { Request, RequestHandler, Response } from 'express';
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitedError, RedisUnavailableError } from '../shared/errors.js';
import type { Keys } from '../shared/keys.js';

export interface RateLimitOptions {
  readonly redis: Redis;
  readonly keys: Keys;
  /** RATE_LIMIT_PER_MINUTE. */
  readonly perMinute: number;
  /** Whose budget a request spends: the token label, or the client address when open. */
  readonly scope: (req: Request, res: Response) => string;
}

/**
 * Submissions per caller per minute, counted in Redis so the limit holds across API instances
 * (rate-limiter-flexible: an atomic increment with expiry per caller and window). Over the limit:
 * 429 with Retry-After. While Redis is down the request fails as any other would (503), rather
 * than letting traffic through unmetered.
 */
export function createSubmitRateLimit(options: RateLimitOptions): RequestHandler {
  const limiter = new RateLimiterRedis({
    storeClient: options.redis,
    keyPrefix: `ferry:rate:${options.keys.queuePrefix}:${options.keys.queueName}`,
    points: options.perMinute,
    duration: 60,
    rejectIfRedisNotReady: true,
  });
  return async (req, res, next) => {
    try {
      const result = await limiter.consume(options.scope(req, res));
      res.set('RateLimit-Limit', String(options.perMinute));
      res.set('RateLimit-Remaining', String(result.remainingPoints));
      next();
    } catch (outcome) {
      if (outcome instanceof RateLimiterRes) {
        const seconds = Math.max(1, Math.ceil(outcome.msBeforeNext / 1_000));
        next(new RateLimitedError(`More than ${options.perMinute} submissions per minute; retry in ${seconds} s`, seconds));
        return;
      }
      next(outcome instanceof Error && /not ready|closed|ECONN|Connection/i.test(outcome.message) ? new RedisUnavailableError({ cause: outcome }) : outcome);
    }
  };
}
