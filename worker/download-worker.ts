import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { CANCELLED_PREFIX, describeStallLimit, isCancelReason, STALL_LIMIT_REASON, type JobData, type JobResult } from '../shared/job-contract.js';
import type { JobLog } from '../shared/job-log.js';
import type { Keys } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { ABORT, type LeaseTracker } from './job-controls.js';
import { REDIS_WRITE_RETRY_DELAYS_MS, retryOnSchedule } from './retry-policy.js';


/** How long a completed job's end record may wait for others to leave with (milliseconds). */
export const END_RECORD_DELAY_MS = 10;

export interface DownloadWorkerOptions<Data> {
  readonly redis: Redis;
  readonly keys: Keys;
  /** Declare three parameters: BullMQ passes the AbortSignal only to processors of length 3. */
  readonly processor: (job: Job<Data, JobResult>, token?: string, signal?: AbortSignal) => Promise<JobResult>;
  /** The queue and its BullMQ failed set (default: the downloads queue). */
  readonly queue?: { readonly name: string; readonly failedKey: string };
  readonly jobLog: JobLog;
  readonly logger: Logger;
  /** Jobs run at once by this process (WORKER_CONCURRENCY). */
  readonly concurrency: number;
  /** Milliseconds a job lock lasts without renewal (JOB_LOCK_MS). */
  readonly lockDurationMs: number;
  /** JOB_MAX_STALLS: times a job may lose its worker before it fails. */
  readonly maxStalls: number;
  /** Records lock renewals, so writers know their lease (see job-controls.ts). */
  readonly leases: LeaseTracker;
}

/** A BullMQ worker, and a way to wait for what its event handlers still write to Redis. */
export type DownloadWorker<Data> = Worker<Data, JobResult> & {
  /** Resolves once the job outcomes heard so far are recorded in the job logs (after close(), before Redis goes). */
  recorded(): Promise<void>;
};

/**
 * A BullMQ worker that runs download jobs and writes the end of each job's log once BullMQ has
 * recorded the outcome, so a reader that sees the end entry also sees the final status.
 */
export function createDownloadWorker<Data = JobData>(options: DownloadWorkerOptions<Data>): DownloadWorker<Data> {
  const { redis, keys, logger } = options;
  /**
   * The end entry, tried again while Redis refuses it (otherwise a log would wait for a reader to
   * end it). The end script appends the entry once however often it runs.
   */
  const jobLog: Pick<JobLog, 'end' | 'append'> = {
    append: (jobId, message) => options.jobLog.append(jobId, message),
    end: (jobId, status, error, lastLine) =>
      retryOnSchedule(() => options.jobLog.end(jobId, status, error, lastLine), REDIS_WRITE_RETRY_DELAYS_MS, (failure) =>
        logger.warn('could not write a job log end entry; trying again', { job_id: jobId, error: (failure as Error).message }),
      ),
  };
  const queue = options.queue ?? { name: keys.queueName, failedKey: keys.bullFailed };
  const worker = new Worker<Data, JobResult>(queue.name, options.processor, {
    connection: redis,
    prefix: keys.queuePrefix,
    concurrency: options.concurrency,
    lockDuration: options.lockDurationMs,
    // Look for jobs whose worker died as often as a lock lasts, so one is taken over within 2 locks.
    stalledInterval: Math.min(options.lockDurationMs, 30_000),
    maxStalledCount: options.maxStalls,
    // Jobs are started explicitly by the composition root once everything is wired.
    autorun: false,
  });

  /**
   * End records of completed jobs leave together, at most END_RECORD_DELAY_MS after the outcome:
   * the handlers waiting on one tick resume in one turn, so their scripts go out in one write on the
   * auto-pipelined connection instead of one each (a busy worker completes a small job every few
   * milliseconds). A reader sees a job's end that much later, still after its final status.
   */
  let endTick: Promise<void> | undefined;
  const nextEndTick = () =>
    (endTick ??= new Promise<void>((resolve) =>
      setTimeout(() => {
        endTick = undefined;
        resolve();
      }, END_RECORD_DELAY_MS),
    ));

  /** What the handlers below are still writing (a job log's end record): waited for by `recorded()`. */
  const recording = new Set<Promise<unknown>>();
  const safely = (what: string, job: Job | undefined, work: () => Promise<unknown>) => {
    const pending = work().catch((error: unknown) => logger.error(`could not record ${what}`, { job_id: job?.id, error }));
    recording.add(pending);
    void pending.finally(() => recording.delete(pending));
  };

  // One info line per job, at its end (with its attempt and run time); the start is a debug line,
  // built only when debug lines are wanted (the level is read per job, so it may change at run time).
  worker.on('active', (job) => {
    if (logger.isDebugEnabled()) logger.debug('job started', { job_id: job.id, attempt: job.attemptsStarted });
  });
  worker.on('completed', (job) => {
    logger.info('job completed', { job_id: job.id, attempt: job.attemptsStarted, duration_ms: (job.finishedOn ?? Date.now()) - (job.processedOn ?? Date.now()) });
    safely('completion', job, async () => {
      await nextEndTick();
      await jobLog.end(job.id as string, 'completed', null);
    });
  });
  worker.on('failed', (job, error) => {
    if (!job?.id) return;
    const jobId = job.id;
    safely('failure', job, async () => {
      // BullMQ has already moved the job: in the failed set means no attempt is left.
      const final = (await redis.zscore(queue.failedKey, jobId)) !== null;
      logger.warn(final ? 'job failed' : 'job attempt failed; will retry', { job_id: jobId, error: error.message });
      const cancelled = isCancelReason(error.message);
      if (final && error.message === STALL_LIMIT_REASON) {
        // BullMQ fails such a job when a worker next takes it (a "deferred failure").
        const message = describeStallLimit(options.maxStalls);
        await jobLog.end(jobId, 'failed', message, message);
        return;
      }
      const line = cancelled ? `Job cancelled` : `Attempt ${job.attemptsStarted} failed: ${error.message}`;
      if (final) await jobLog.end(jobId, cancelled ? 'cancelled' : 'failed', cancelled ? null : error.message, line);
      else await jobLog.append(jobId, `${line} (will retry)`);
    });
  });
  worker.on('error', (error) => logger.error('worker error', { error }));
  worker.on('locksRenewed', ({ jobIds }) => jobIds.forEach((jobId) => options.leases.renewed(jobId)));
  // A lock this process could not renew may belong to another worker now: stop that job at once.
  worker.on('lockRenewalFailed', (jobIds) => {
    for (const jobId of jobIds) {
      logger.warn('could not renew a job lock; stopping the job', { job_id: jobId });
      worker.cancelJob(jobId, ABORT.lockLost);
    }
  });
  // Any worker's stalled check may find a job whose worker died: say so in the job's log. BullMQ
  // moves it back to the queue (failing it only when a worker next takes it, past JOB_MAX_STALLS).
  worker.on('stalled', (jobId) => {
    logger.warn('job stalled; back in the queue', { job_id: jobId });
    safely('stall', undefined, () =>
      jobLog.append(jobId, 'The worker running this job stopped renewing its lock (killed, paused or cut off); the job is back in the queue'),
    );
  });

  // Cancel requests reach every worker; only the one holding the job has it to abort.
  const subscriber = redis.duplicate({ connectionName: 'ferry:worker-cancel' });
  subscriber.on('error', (error) => logger.warn('cancel subscriber error', { error: error.message }));
  subscriber.on('message', (_channel, jobId) => {
    if (worker.cancelJob(jobId, `${CANCELLED_PREFIX} by request`)) logger.info('job cancel requested', { job_id: jobId });
  });
  void subscriber.subscribe(keys.cancelChannel).catch((error: unknown) => logger.error('could not subscribe to cancels', { error }));
  worker.on('closed', () => subscriber.disconnect());
  return Object.assign(worker, {
    async recorded() {
      while (recording.size > 0) await Promise.allSettled([...recording]);
    },
  });
}
