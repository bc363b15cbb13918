import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { CANCELLED_PREFIX, isCancelReason, type JobData, type JobResult } from '../shared/job-contract.js';
import type { JobLog } from '../shared/job-log.js';
import type { Keys } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';

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
}

/**
 * A BullMQ worker that runs download jobs and writes the end of each job's log once BullMQ has
 * recorded the outcome, so a reader that sees the end entry also sees the final status.
 */
export function createDownloadWorker<Data = JobData>(options: DownloadWorkerOptions<Data>): Worker<Data, JobResult> {
  const { redis, keys, jobLog, logger } = options;
  const queue = options.queue ?? { name: keys.queueName, failedKey: keys.bullFailed };
  const worker = new Worker<Data, JobResult>(queue.name, options.processor, {
    connection: redis,
    prefix: keys.queuePrefix,
    concurrency: options.concurrency,
    lockDuration: options.lockDurationMs,
    // Jobs are started explicitly by the composition root once everything is wired.
    autorun: false,
  });

  const safely = (what: string, job: Job | undefined, work: () => Promise<unknown>) => {
    work().catch((error: unknown) => logger.error(`could not record ${what}`, { job_id: job?.id, error }));
  };

  worker.on('active', (job) => logger.info('job started', { job_id: job.id, attempt: job.attemptsStarted }));
  worker.on('completed', (job) => {
    logger.info('job completed', { job_id: job.id });
    safely('completion', job, () => jobLog.end(job.id as string, 'completed', null));
  });
  worker.on('failed', (job, error) => {
    if (!job?.id) return;
    const jobId = job.id;
    safely('failure', job, async () => {
      // BullMQ has already moved the job: in the failed set means no attempt is left.
      const final = (await redis.zscore(queue.failedKey, jobId)) !== null;
      logger.warn(final ? 'job failed' : 'job attempt failed; will retry', { job_id: jobId, error: error.message });
      const cancelled = isCancelReason(error.message);
      const line = cancelled ? `Job cancelled` : `Attempt ${job.attemptsStarted} failed: ${error.message}`;
      if (final) await jobLog.end(jobId, cancelled ? 'cancelled' : 'failed', cancelled ? null : error.message, line);
      else await jobLog.append(jobId, `${line} (will retry)`);
    });
  });
  worker.on('error', (error) => logger.error('worker error', { error }));

  // Cancel requests reach every worker; only the one holding the job has it to abort.
  const subscriber = redis.duplicate({ connectionName: 'ferry:worker-cancel' });
  subscriber.on('error', (error) => logger.warn('cancel subscriber error', { error: error.message }));
  subscriber.on('message', (_channel, jobId) => {
    if (worker.cancelJob(jobId, `${CANCELLED_PREFIX} by request`)) logger.info('job cancel requested', { job_id: jobId });
  });
  void subscriber.subscribe(keys.cancelChannel).catch((error: unknown) => logger.error('could not subscribe to cancels', { error }));
  worker.on('closed', () => subscriber.disconnect());
  return worker;
}
