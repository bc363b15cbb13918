import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from './logger.js';
import { redactText } from './logger.js';

export type RedisRole =
  /** API requests: fail fast while Redis is down so the request gets a 503 instead of hanging. */
  | 'api'
  /** Workers and blocking reads: wait and reconnect (BullMQ requires maxRetriesPerRequest: null). */
  | 'worker';

/**
 * Creates one Redis connection with an error listener (an unhandled 'error' event would crash the
 * process) and reconnection with a capped backoff.
 */
export function createRedis(url: string, role: RedisRole, logger: Logger, name: string): Redis {
  const options: RedisOptions = {
    connectionName: `ferry:${name}`,
    maxRetriesPerRequest: role === 'api' ? 1 : null,
    enableOfflineQueue: role !== 'api',
    // Reconnect forever with a capped backoff: Redis restarts must not kill the process.
    retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt, 5), 2_000),
    lazyConnect: false,
  };
  const redis = new Redis(url, options);
  let lastError = '';
  redis.on('error', (error: Error) => {
    const message = redactText(error.message);
    // Log each distinct error once per outage instead of once per reconnect attempt.
    if (message === lastError) return;
    lastError = message;
    logger.warn('redis connection error', { connection: name, error: message });
  });
  redis.on('ready', () => {
    if (lastError) logger.info('redis connection restored', { connection: name });
    lastError = '';
  });
  return redis;
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export async function waitForRedis(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off('ready', onReady);
    };
    redis.on('ready', onReady);
  });
}
