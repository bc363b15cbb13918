import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from '../shared/keys.js';
import { defineScript } from '../shared/redis-script.js';

export interface FolderLock {
  /**
   * Holds `<release>/<module>/<build>/` for this job while `work` runs: waits (polling) while another
   * job holds it, calling `onWait` once with the holder's id; renews the lock while working and
   * releases it after. The lock lasts `ttlMs` without renewal, so a crashed holder frees it with
   * its own job lock. The lock's value names the job and this hold of it: a later attempt of the
   * same job (BullMQ gave it to another worker once the first one's job lock ran out) takes the
   * lock over at once, and the earlier attempt, should it wake up, can no longer renew or release
   * it (its writes are stopped by its lost lease, see job-controls.ts).
   */
  withLock<T>(relativeDir: string, jobId: string, signal: AbortSignal, onWait: (holder: string) => void, work: () => Promise<T>): Promise<T>;
}

/**
 * Takes the lock (KEYS[1]) for this hold (ARGV[1], "<job id> <hold id>") when it is free or held by
 * an earlier attempt of the same job (ARGV[2], the job id; a bare job id is a lock taken by a worker
 * of the version before this one), for ARGV[3] ms; returns the value it holds after, so the caller
 * holds the lock when that is its own.
 */
const ACQUIRE = defineScript(`local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] and current ~= ARGV[2] and string.sub(current, 1, #ARGV[2] + 1) ~= ARGV[2] .. ' ' then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return ARGV[1]`);
/** Deletes or extends the lock only while this hold still has it. */
const RELEASE = defineScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`);
const EXTEND = defineScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`);

export interface FolderLockOptions {
  /** Milliseconds between looks at a lock another job holds (default 500). */
  readonly pollMs?: number;
  /**
   * False once this process may no longer act for the job (its BullMQ lock ran out while it was
   * paused or cut off: job-controls.ts LeaseTracker.check, which then aborts the job's signal). Such
   * an attempt must not take the lock over from the job's new attempt. Default: always held.
   */
  readonly leaseHeld?: (jobId: string) => boolean;
}

export function createFolderLock(redis: Redis, keys: Keys, ttlMs: number, options: FolderLockOptions = {}): FolderLock {
  const { pollMs = 500, leaseHeld = () => true } = options;
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
      const hold = `${jobId} ${randomUUID()}`;
      let told = false;
      for (;;) {
        signal.throwIfAborted();
        if (!leaseHeld(jobId)) {
          signal.throwIfAborted();
          throw new Error(`job ${jobId} lost its lease; not taking the lock of ${relativeDir}`);
        }
        const holder = String(await ACQUIRE(redis, [key], [hold, jobId, ttlMs]));
        if (holder === hold) break;
        if (!told) {
          onWait(holder.split(' ')[0] as string);
          told = true;
        }
        await sleep(pollMs, signal);
      }
      const renew = setInterval(() => {
        EXTEND(redis, [key], [hold, ttlMs]).catch(() => undefined);
      }, Math.max(100, Math.floor(ttlMs / 3)));
      try {
        return await work();
      } finally {
        clearInterval(renew);
        // Not awaited: it leaves with the job's next commands (its last log burst) in one write on an
        // auto-pipelined connection, and lands before the job's outcome, which waits for that burst.
        // Lost, the lock runs out after ttlMs (and only this hold can release it).
        void RELEASE(redis, [key], [hold]).catch(() => undefined);
      }
    },
  };
}
