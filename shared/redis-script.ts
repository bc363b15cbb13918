import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/** Runs a Lua script: `keys` are its KEYS (one Cluster slot), `args` its ARGV. */
export type RedisScript = (redis: Redis, keys: readonly string[], args: ReadonlyArray<string | number>) => Promise<unknown>;

/**
 * A Lua script run by its SHA1 (EVALSHA, so the text crosses the wire once per server), loaded
 * with EVAL when a server lacks it: a restarted or flushed Redis, a Cluster node not asked before.
 * The one place ferry runs its own scripts.
 */
export function defineScript(source: string): RedisScript {
  const sha = createHash('sha1').update(source).digest('hex');
  return async (redis, keys, args) => {
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return redis.eval(source, keys.length, ...keys, ...args);
    }
  };
}
