import { Queue, type Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import type { BatchData, JobData, JobResult } from '../shared/job-contract.js';
import { createJobLog, type JobLog } from '../shared/job-log.js';
import { createKeys } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { createBatchCoordinator } from './batch-coordinator.js';
import { createDownloadProcessor } from './download-processor.js';
import { createDownloadWorker } from './download-worker.js';
import { createFileWriter } from './file-writer.js';
import { createFolderLock } from './folder-lock.js';
import { ABORT, createLeaseTracker, withJobControls } from './job-controls.js';
import { createWorkerMetrics, type WorkerMetrics } from './metrics.js';
import { createPartSweeper, type PartSweeper } from './part-sweeper.js';
import { createJenkinsClient } from './jenkins-client.js';

export interface WorkerRuntimeOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** The worker's command connection (BullMQ duplicates it for its blocking reads). */
  readonly redis: Redis;
  /**
   * ferry's own commands (job log bursts, folder locks, cancel markers), on a connection with
   * auto-pipelining: what one tick sends leaves in one write (a folder lock's release with the job's
   * last log burst, and the commands of concurrent jobs). Kept off
   * `redis`, whose auto-pipelines would copy BullMQ's fifty scripts each time. Default: `redis`.
   */
  readonly opsRedis?: Redis;
  /** Milliseconds between progress snapshots (default 500). */
  readonly progressIntervalMs?: number;
  /** Milliseconds between a batch coordinator's looks at its module jobs (default 250). */
  readonly batchPollMs?: number;
  /** First retry backoff in milliseconds (default 500; tests shorten it). */
  readonly retryBaseDelayMs?: number;
}

/** A worker process's BullMQ workers: module and single downloads, and batch coordinators. */
export interface WorkerRuntime {
  readonly downloads: Worker<JobData, JobResult>;
  readonly batches: Worker<BatchData, JobResult>;
  /** Removes .part files no live job owns (started by run()). */
  readonly sweeper: PartSweeper;
  /** This process's Prometheus metrics (served on METRICS_PORT by main.ts). */
  readonly metrics: WorkerMetrics;
  /** Starts taking jobs; resolves when both workers have stopped. */
  run(): Promise<void>;
  /**
   * Stops taking jobs and lets running ones finish for `graceMs` (default SHUTDOWN_TIMEOUT_MS);
   * then aborts the rest, which go back to the queue for another worker to resume at once.
   */
  close(graceMs?: number): Promise<void>;
}

/** Wires a worker process from its connection: everything but signals and process exit. */
export function createWorkerRuntime(options: WorkerRuntimeOptions): WorkerRuntime {
  const { config, logger, redis } = options;
  const ops = options.opsRedis ?? redis;
  const keys = createKeys(config.queuePrefix);
  /** Whether a cancel marker is set for a job (or batch): for a worker that missed the pub/sub message. */
  const isCancelRequested = async (jobId: string) => (await ops.exists(keys.cancelRequest(jobId))) === 1;
  const metrics = createWorkerMetrics(redis);
  const baseLog = createJobLog({ redis: ops, keys, maxLines: config.maxLogLines, ttlSeconds: config.logTtlSeconds });
  // Every line a job publishes is counted.
  const jobLog: JobLog = {
    ...baseLog,
    append: async (jobId, message) => {
      const cursor = await baseLog.append(jobId, message);
      metrics.logLine();
      return cursor;
    },
    appendBatch: async (jobId, lines, batchOptions) => {
      await baseLog.appendBatch(jobId, lines, batchOptions);
      metrics.logLine(lines.length);
    },
  };
  if (config.transfer.tlsInsecure) {
    logger.warn('JENKINS_TLS_INSECURE=true: TLS certificates of Jenkins are NOT verified; anyone on the path can read the credentials');
  }
  const jenkins = createJenkinsClient({
    baseUrl: config.jenkins.url,
    user: config.jenkins.user,
    apiToken: config.jenkins.apiToken,
    maxConnections: config.transfer.maxConnections,
    retries: config.transfer.retries,
    caFile: config.transfer.caFile,
    tlsInsecure: config.transfer.tlsInsecure,
    ...(options.retryBaseDelayMs !== undefined ? { retryBaseDelayMs: options.retryBaseDelayMs } : {}),
    onRetry: (message) => {
      metrics.retried(message);
      logger.info('retrying Jenkins request', { detail: message });
    },
  });
  const leases = createLeaseTracker(config.jobLockMs);
  // Small artifacts and manifests: closed after the workers, once no job can write.
  const fileWriter = createFileWriter({ threads: config.transfer.writerThreads });
  const controls = { jobLog, logger, leases, timeoutMs: config.jobTimeoutMs, metrics };
  const processor = createDownloadProcessor({
    canWrite: (jobId) => leases.check(jobId),
    onBytes: (bytes) => metrics.bytesDownloaded(bytes),
    fileWriter,
    jenkins,
    jobLog,
    logger,
    downloadDir: config.downloadDir,
    defaultInclude: config.artifactInclude,
    transfer: config.transfer,
    folderLock: createFolderLock(ops, keys, config.jobLockMs, { leaseHeld: (jobId) => leases.check(jobId) }),
    isCancelRequested,
    ...(options.progressIntervalMs !== undefined ? { progressIntervalMs: options.progressIntervalMs } : {}),
    publishBullProgress: async (job, progress) => {
      await job.updateProgress(progress);
    },
  });
  const downloads = createDownloadWorker({
    redis,
    keys,
    processor: withJobControls(processor, controls),
    jobLog,
    logger,
    concurrency: config.workerConcurrency,
    lockDurationMs: config.jobLockMs,
    maxStalls: config.jobMaxStalls,
    leases,
  });
  const downloadQueue = new Queue<JobData, JobResult>(keys.queueName, { connection: redis, prefix: keys.queuePrefix });
  downloadQueue.on('error', (error) => logger.warn('queue error', { error: error.message }));
  const batches = createDownloadWorker<BatchData>({
    redis,
    keys,
    // No JOB_TIMEOUT_SECONDS for a coordinator: it only waits for its modules, each of which has its
    // own, and a batch of many modules may rightly run longer than one job; a coordinator stopped by
    // the timeout would fail the batch with modules never added or never recorded.
    processor: withJobControls(createBatchCoordinator({
      redis,
      keys,
      jenkins,
      jobLog,
      logger,
      downloads: downloadQueue,
      parallelism: config.batch.parallelism,
      attempts: config.jobAttempts,
      jobTtlSeconds: config.jobTtlSeconds,
      isCancelRequested,
      ...(options.batchPollMs !== undefined ? { pollMs: options.batchPollMs } : {}),
    }), { ...controls, timeoutMs: undefined }),
    queue: { name: keys.batches.queueName, failedKey: keys.batches.failed },
    jobLog,
    logger,
    concurrency: config.batch.coordinators,
    lockDurationMs: config.jobLockMs,
    maxStalls: config.jobMaxStalls,
    leases,
  });
  const sweeper = createPartSweeper({ redis, keys, downloadDir: config.downloadDir, ttlMs: config.partTtlMs, logger });
  return {
    downloads,
    batches,
    sweeper,
    metrics,
    async run() {
      sweeper.start(config.partSweepIntervalMs);
      await Promise.all([downloads.run(), batches.run()]);
    },
    async close(graceMs = config.shutdownTimeoutMs) {
      sweeper.stop();
      const grace = setTimeout(() => {
        logger.warn('shutdown grace ran out; handing running jobs back to the queue', { grace_ms: graceMs });
        batches.cancelAllJobs(ABORT.shutdown);
        downloads.cancelAllJobs(ABORT.shutdown);
      }, graceMs);
      try {
        await Promise.all([batches.close(), downloads.close()]);
      } finally {
        clearTimeout(grace);
      }
      // The last jobs' end records, still on their way to Redis.
      await Promise.all([batches.recorded(), downloads.recorded()]);
      await downloadQueue.close();
      await fileWriter.close();
    },
  };
}
