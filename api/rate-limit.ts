import type { Request, Response } from 'express';
import type { Redis } from 'ioredis';
import { RateLimitedError } from '../shared/errors.js';
import type { Keys } from '../shared/keys.js';
import { defineScript } from '../shared/redis-script.js';

export interface RateLimitOptions {
  readonly redis: Redis;
  readonly keys: Keys;
  /** RATE_LIMIT_PER_MINUTE. */
  readonly perMinute: number;
  /** Whose budget a request spends: the token label, or the client address when open. */
  readonly scope: (req: Request, res: Response) => string;
}

/** One caller's budget as the single-submit script spends it (api/dedup-claim.ts). */
export interface RateBudget {
  /** The counter's key: `<keyPrefix>:<caller>` (as rate-limiter-flexible named it, so counters carry over). */
  readonly key: string;
  /** Submissions allowed per window. */
  readonly points: number;
  readonly windowSeconds: number;
}

/**
 * rate-limiter-flexible's Redis script (RateLimiterRedis, 11.x, which ferry used first), inlined by the claim script so
 * a single submit spends its point in the same round trip as its dedup claim: the same key, the
 * same operations, so both paths count against one budget. KEYS[3] the counter, ARGV[5] the
 * window in seconds; leaves `consumed` and `ttl` set.
 */
export const CONSUME_POINT_LUA = `
redis.call('set', KEYS[3], 0, 'EX', ARGV[5], 'NX')
consumed = redis.call('incrby', KEYS[3], 1)
ttl = redis.call('pttl', KEYS[3])
if ttl == -1 then
  redis.call('expire', KEYS[3], ARGV[5])
  ttl = 1000 * ARGV[5]
end
`;

/**
 * Spends ARGV[2] points of the counter KEYS[1] (window ARGV[1] seconds, ARGV[3] points allowed) only
 * when they all fit: the same key and window handling as {@link CONSUME_POINT_LUA}, but a refusal
 * leaves the counter as it was (no increment to take back, so concurrent requests of the caller
 * never see it inflated). Returns {1 when spent else 0, points used, ms left in the window}.
 */
const SPEND_POINTS_LUA = `
redis.call('set', KEYS[1], 0, 'EX', ARGV[1], 'NX')
local ttl = redis.call('pttl', KEYS[1])
if ttl == -1 then
  redis.call('expire', KEYS[1], ARGV[1])
  ttl = 1000 * ARGV[1]
end
local used = tonumber(redis.call('get', KEYS[1]))
if used + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {0, used, ttl} end
return {1, redis.call('incrby', KEYS[1], ARGV[2]), ttl}
`;
const spendPoints = defineScript(SPEND_POINTS_LUA);

export interface SubmitRateLimit {
  /** The caller's budget, for the single submit, which spends it inside its claim script. */
  budget(req: Request, res: Response): RateBudget;
  /**
   * Spends `points` of the caller's budget at once (the bulk submit: one per download), setting the
   * `RateLimit-*` headers; when they do not all fit it throws RATE_LIMITED and spends nothing.
   */
  spend(req: Request, res: Response, points: number): Promise<void>;
  /** RATE_LIMIT_PER_MINUTE: no request may spend more than this at once. */
  readonly perMinute: number;
}

/** `RateLimit-*` headers of an answer that spent a point; `consumed` counts it. */
export function setRateHeaders(res: Response, points: number, consumed: number): void {
  res.setHeader('RateLimit-Limit', String(points));
  res.setHeader('RateLimit-Remaining', String(Math.max(points - consumed, 0)));
}

/** The 429 for a caller over its budget, `msBeforeNext` before the window turns. */
export function rateLimited(points: number, msBeforeNext: number): RateLimitedError {
  const seconds = Math.max(1, Math.ceil(msBeforeNext / 1_000));
  return new RateLimitedError(`More than ${points} submissions per minute; retry in ${seconds} s`, seconds);
}

/**
 * Submissions per caller per minute, counted in Redis so the limit holds across API instances
 * (an atomic increment with expiry per caller and window, as rate-limiter-flexible counts). Over the limit:
 * 429 with Retry-After. While Redis is down the request fails as any other would (503), rather
 * than letting traffic through unmetered. The single submit spends its point in its dedup claim
 * script instead (one round trip less per submit, see `budget`), on the same counter.
 */
export function createSubmitRateLimit(options: RateLimitOptions): SubmitRateLimit {
  const keyPrefix = `ferry:rate:${options.keys.queuePrefix}:${options.keys.queueName}`;
  /** The caller's counter: `<keyPrefix>:<caller>`, the key rate-limiter-flexible gave it. */
  const keyOf = (req: Request, res: Response) => `${keyPrefix}:${options.scope(req, res)}`;
  const spend = async (req: Request, res: Response, points: number): Promise<void> => {
    const [spent, used, msLeft] = (await spendPoints(options.redis, [keyOf(req, res)], [60, points, options.perMinute])) as [number, number, number];
    if (spent !== 1) throw rateLimited(options.perMinute, Number(msLeft));
    setRateHeaders(res, options.perMinute, Number(used));
  };
  return {
    spend,
    perMinute: options.perMinute,
    budget: (req, res) => ({ key: keyOf(req, res), points: options.perMinute, windowSeconds: 60 }),
  };
}
