import type { Redis } from 'ioredis';
import type { Keys } from '../shared/keys.js';
import { defineScript } from '../shared/redis-script.js';

export interface FolderLock {
  /**
   * Holds `<release>/<module>/<build>/` for this job while `work` runs: waits (polling) while another
   * job holds it, calling `onWait` once with the holder's id; renews the lock while working and
   * releases it after. The lock lasts `ttlMs` without renewal, so a crashed holder frees it with
   * its own job lock.
   */
  withLock<T>(relativeDir: string, jobId: string, signal: AbortSignal, onWait: (holder: string) => void, work: () => Promise<T>): Promise<T>;
}

/** Deletes or extends the lock only while this job still holds it. */
const RELEASE = defineScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`);
const EXTEND = defineScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`);

export function createFolderLock(redis: Redis, keys: Keys, ttlMs: number, pollMs = 500): FolderLock {
  const sleep = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      // An abort that came while a command was in flight has already fired its event.
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });

  return {
    async withLock(relativeDir, jobId, signal, onWait, work) {
      const key = keys.folderLock(relativeDir);
      let told = false;
      for (;;) {
        signal.throwIfAborted();
        if ((await redis.set(key, jobId, 'PX', ttlMs, 'NX')) === 'OK') break;
        const holder = await redis.get(key);
        if (holder === jobId) break;
        if (holder && !told) {
          onWait(holder);
          told = true;
        }
        await sleep(pollMs, signal);
      }
      const renew = setInterval(() => {
        EXTEND(redis, [key], [jobId, ttlMs]).catch(() => undefined);
      }, Math.max(100, Math.floor(ttlMs / 3)));
      try {
        return await work();
      } finally {
        clearInterval(renew);
        // Not awaited: it leaves with the job's next commands (its last log burst) in one write on an
        // auto-pipelined connection, and lands before the job's outcome, which waits for that burst.
        // Lost, the lock runs out after ttlMs (and only this job's id can release it).
        void RELEASE(redis, [key], [jobId]).catch(() => undefined);
      }
    },
  };
}
