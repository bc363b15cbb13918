import type { Redis } from 'ioredis';
import { defineScript } from '../shared/redis-script.js';

/**
 * Compare-and-set of one string key, atomically in Redis: the key is changed only while it still
 * holds `expected`. ARGV[2] empty means delete; ARGV[3] is the new expiry in milliseconds, or 0 to
 * keep the current one. A script rather than WATCH/MULTI: WATCH belongs to a connection, and the
 * API's command connection is shared by every concurrent request.
 */
const SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
`;
const run = defineScript(SCRIPT);

/**
 * Replaces `key`'s value with `next` (or deletes it when `next` is null) only if it is still
 * `expected`; `ttlMs` sets a new expiry, 'keep' keeps the current one. True when it changed.
 */
export async function compareAndSet(
  redis: Redis,
  key: string,
  expected: string,
  next: string | null,
  ttlMs: number | 'keep' = 'keep',
): Promise<boolean> {
  const result = await run(redis, [key], [expected, next ?? '', ttlMs === 'keep' ? '0' : String(Math.max(1, Math.round(ttlMs)))]);
  return result === 1;
}
