import { UnrecoverableError, WaitingError, type Job } from 'bullmq';
import type { JobResult } from '../shared/job-contract.js';
import type { JobLog } from '../shared/job-log.js';
import { isCancelReason } from '../shared/job-contract.js';
import type { Logger } from '../shared/logger.js';
import type { WorkerMetrics } from './metrics.js';

/** Why a worker aborts a job's AbortSignal itself (a cancel uses CANCELLED_PREFIX reasons). */
export const ABORT = Object.freeze({
  /** The worker is stopping and the grace period ran out: the job goes back to the queue. */
  shutdown: 'ferry:shutdown',
  /** The worker could not renew the job's lock: another worker may own the job now. */
  lockLost: 'ferry:lock-lost',
  /** The job ran longer than JOB_TIMEOUT_SECONDS. */
  timeout: 'ferry:timeout',
});

export type Processor<Data> = (job: Job<Data, JobResult>, token?: string, signal?: AbortSignal) => Promise<JobResult>;

/**
 * The lease a worker holds on each of its jobs: the time until which its BullMQ lock is known to be
 * valid, from the last renewal this process saw. A writer checks it before every write, so a
 * process that was paused (SIGSTOP, a VM freeze, a long GC) past its lock stops at its first write
 * after waking, before any Redis round trip, and never races the worker that took the job over.
 */
export interface LeaseTracker {
  /** The job started here; `onLost` is called (once) when a write finds the lease gone. */
  start(jobId: string, onLost: () => void): void;
  /** The job's lock was renewed just now. */
  renewed(jobId: string): void;
  end(jobId: string): void;
  /** True while the job's lock is known to be held by this process; when not, calls its `onLost`. */
  check(jobId: string): boolean;
}

export function createLeaseTracker(lockDurationMs: number, now: () => number = Date.now): LeaseTracker {
  // The renewal is recorded when its answer arrives, a round trip after Redis set the expiry: keep a margin.
  const margin = Math.min(1_000, Math.floor(lockDurationMs / 5));
  const leases = new Map<string, { until: number; onLost: () => void }>();
  return {
    start: (jobId, onLost) => void leases.set(jobId, { until: now() + lockDurationMs - margin, onLost }),
    renewed: (jobId) => {
      const lease = leases.get(jobId);
      if (lease) lease.until = now() + lockDurationMs - margin;
    },
    end: (jobId) => void leases.delete(jobId),
    check: (jobId) => {
      const lease = leases.get(jobId);
      if (!lease) return true;
      if (lease.until > now()) return true;
      lease.onLost();
      return false;
    },
  };
}

export interface JobControlsOptions {
  readonly jobLog: JobLog;
  readonly logger: Logger;
  readonly leases: LeaseTracker;
  /** JOB_TIMEOUT_SECONDS, in milliseconds; undefined: no timeout (a batch coordinator, whose modules each have theirs). */
  readonly timeoutMs: number | undefined;
  /** Counts attempts and their outcomes (worker/metrics.ts). */
  readonly metrics?: Pick<WorkerMetrics, 'jobStarted' | 'jobFinished'>;
}

/**
 * Wraps a processor with what every ferry job gets: a timeout, a lease, and the meaning of the
 * worker's own abort reasons. A job aborted for shutdown is moved back to the queue (not failed,
 * no attempt used up) so another worker resumes its .part files at once; one that ran past
 * JOB_TIMEOUT_SECONDS fails for good, saying so; one whose lock was lost stops without touching
 * BullMQ state, which belongs to the new owner now.
 */
export function withJobControls<Data>(inner: Processor<Data>, options: JobControlsOptions): Processor<Data> {
  const { jobLog, logger, leases, timeoutMs, metrics } = options;
  // Three declared parameters: BullMQ passes the AbortSignal only to processors whose length is 3.
  return async (job, token, jobSignal) => {
    const jobId = job.id as string;
    const controller = new AbortController();
    const forward = () => controller.abort(jobSignal?.reason);
    if (jobSignal?.aborted) forward();
    jobSignal?.addEventListener('abort', forward, { once: true });
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => controller.abort(ABORT.timeout), timeoutMs);
    leases.start(jobId, () => controller.abort(ABORT.lockLost));
    const started = Date.now();
    let outcome: 'completed' | 'failed' | 'cancelled' | 'handed_back' = 'failed';
    let failure = '';
    metrics?.jobStarted(job.queueName);
    try {
      const result = await inner(job, token, controller.signal);
      outcome = 'completed';
      return result;
    } catch (error) {
      failure = error instanceof Error ? error.message : String(error);
      if (isCancelReason(failure)) outcome = 'cancelled';
      const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
      if (reason === ABORT.shutdown && token) {
        await jobLog.append(jobId, 'This worker is shutting down: the job goes back to the queue and another worker resumes it');
        await job.moveToWait(token);
        outcome = 'handed_back';
        logger.info('job handed back on shutdown', { job_id: jobId });
        throw new WaitingError();
      }
      if (reason === ABORT.timeout) {
        failure = `Job ran longer than JOB_TIMEOUT_SECONDS (${Math.round((timeoutMs ?? 0) / 1_000)} s) and was stopped`;
        throw new UnrecoverableError(failure);
      }
      if (reason === ABORT.lockLost) {
        logger.warn('job lock lost; stopped writing its files', { job_id: jobId });
        throw new Error('This worker lost the job lock (paused or cut off from Redis); it stopped and another worker owns the job');
      }
      throw error;
    } finally {
      metrics?.jobFinished(job.queueName, outcome, (Date.now() - started) / 1_000, failure);
      clearTimeout(timer);
      jobSignal?.removeEventListener('abort', forward);
      leases.end(jobId);
    }
  };
}
