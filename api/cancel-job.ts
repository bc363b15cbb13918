import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { ConflictError, NotFoundError } from '../shared/errors.js';
import { CANCELLED_PREFIX, type BatchData, type JobData, type JobResult } from '../shared/job-contract.js';
import type { JobLog } from '../shared/job-log.js';
import type { Keys } from '../shared/keys.js';
import type { JobStatusView, JobStore } from './job-store.js';

export interface CancelJobOptions {
  readonly redis: Redis;
  readonly queue: Queue<JobData, JobResult>;
  readonly batchQueue: Queue<BatchData, JobResult>;
  readonly keys: Keys;
  readonly jobStore: JobStore;
  readonly jobLog: JobLog;
  /** Seconds the cancel marker and a cancelled pending job's record are kept (JOB_TTL_SECONDS). */
  readonly ttlSeconds: number;
  /** Milliseconds to wait for the worker holding a running job to stop it. Default 3000. */
  readonly waitMs?: number;
}

export type CancelOutcome = { readonly status: 'cancelled' | 'cancelling'; readonly job: JobStatusView };

const isFinished = (status: string) => status === 'completed' || status === 'failed' || status === 'cancelled';
const REASON = `${CANCELLED_PREFIX} by request`;

/**
 * Cancels a job wherever it is. A pending job is removed from the queue, leaving a tombstone with
 * its final status; a running one is aborted by whichever worker holds it, reached through Redis
 * pub/sub (BullMQ's worker.cancelJob only reaches its own process). A marker key stops a worker
 * that takes the job between the two steps. A batch is cancelled the same way: its coordinator,
 * once aborted, cancels its module jobs (worker/batch-coordinator.ts).
 */
export function createCancelJob(options: CancelJobOptions): (jobId: string, signal?: AbortSignal) => Promise<CancelOutcome> {
  const { redis, keys, jobStore, jobLog, ttlSeconds } = options;
  const waitMs = options.waitMs ?? 3_000;

  // `signal` fires when the caller has already been answered (the Redis guard's 503): nothing is
  // changed after that. Checked after every wait, before every write.
  return async (jobId, signal) => {
    /** Once the caller was answered, takes back what this cancel wrote so far, and stops. */
    const stopIfAnswered = async (...written: string[]) => {
      if (!signal?.aborted) return;
      if (written.length > 0) await redis.del(...written);
      signal.throwIfAborted();
    };
    const view = await jobStore.get(jobId);
    await stopIfAnswered();
    if (!view) throw new NotFoundError(`No job ${jobId}`);
    if (isFinished(view.status)) throw new ConflictError(`Job ${jobId} has already ${view.status === 'cancelled' ? 'been cancelled' : view.status}`);
    await redis.set(keys.cancelRequest(jobId), '1', 'EX', ttlSeconds);
    // Answered 503 while the marker was on its way: take it back, the caller was told it failed.
    await stopIfAnswered(keys.cancelRequest(jobId));

    if (view.status === 'pending') {
      const tombstone: JobStatusView = { ...view, status: 'cancelled', error: REASON, completed_at: new Date().toISOString(), running_since: null };
      // The tombstone goes first: there is never a moment when the job is unknown.
      await redis.set(keys.tombstone(jobId), JSON.stringify(tombstone), 'EX', ttlSeconds);
      await stopIfAnswered(keys.tombstone(jobId), keys.cancelRequest(jobId));
      const queue = view.kind === 'batch' ? options.batchQueue : options.queue;
      if ((await queue.remove(jobId)) === 1) {
        await jobLog.end(jobId, 'cancelled', null, 'Job cancelled before it started');
        return { status: 'cancelled', job: tombstone };
      }
      // A worker took it meanwhile: cancel it as a running job.
      await redis.del(keys.tombstone(jobId));
      await stopIfAnswered(keys.cancelRequest(jobId));
    }

    await redis.publish(keys.cancelChannel, jobId);
    const deadline = Date.now() + waitMs;
    for (;;) {
      const current = await jobStore.get(jobId);
      if (current?.status === 'cancelled') return { status: 'cancelled', job: current };
      if (current && isFinished(current.status)) {
        throw new ConflictError(`Job ${jobId} ${current.status} before the cancel reached it`);
      }
      if (Date.now() > deadline) return { status: 'cancelling', job: current ?? view };
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
}
