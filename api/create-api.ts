import { Queue } from 'bullmq';
import type { Express } from 'express';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import type { BatchData, JobData, JobResult } from '../shared/job-contract.js';
import { createJobLog } from '../shared/job-log.js';
import { createKeys } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { createApp } from './app.js';
import { createCancelJob } from './cancel-job.js';
import { createDashboardRouter, DASHBOARD_PATH } from './dashboard.js';
import { createDownloadRouter } from './download-routes.js';
import { createJobStore, type JobStore } from './job-store.js';
import { createLogStreamHandler } from './log-stream.js';
import { createLogTail, type LogTail } from './log-tail.js';

export interface ApiDependencies {
  readonly config: Config;
  readonly logger: Logger;
  /** Command connection (fails fast while Redis is down). */
  readonly redis: Redis;
  /** Dedicated connection for the blocking log tail. */
  readonly blockingRedis: Redis;
  /** SSE heartbeat period in milliseconds (default 15000). */
  readonly heartbeatMs?: number;
}

export interface Api {
  readonly app: Express;
  readonly queue: Queue<JobData, JobResult>;
  readonly batchQueue: Queue<BatchData, JobResult>;
  readonly jobStore: JobStore;
  readonly tail: LogTail;
  /** Stops the tail and the queue; the caller closes the Redis connections it created. */
  close(): Promise<void>;
}

/** Wires the API from its connections: everything but listening and signals. */
export function createApi({ config, logger, redis, blockingRedis, heartbeatMs }: ApiDependencies): Api {
  const keys = createKeys(config.queuePrefix);
  const queue = new Queue<JobData, JobResult>(keys.queueName, { connection: redis, prefix: keys.queuePrefix });
  queue.on('error', (error) => logger.warn('queue error', { error: error.message }));
  const batchQueue = new Queue<BatchData, JobResult>(keys.batches.queueName, { connection: redis, prefix: keys.queuePrefix });
  batchQueue.on('error', (error) => logger.warn('queue error', { error: error.message }));
  const jobLog = createJobLog({ redis, keys, maxLines: config.maxLogLines, ttlSeconds: config.logTtlSeconds });
  const jobStore = createJobStore({
    redis,
    queue,
    batchQueue,
    keys,
    jobLog,
    attempts: config.jobAttempts,
    jobTtlSeconds: config.jobTtlSeconds,
  });
  const tail = createLogTail({ blocking: blockingRedis, control: redis, logger });
  const logStream = createLogStreamHandler({
    jobStore,
    jobLog,
    tail,
    keys,
    logger,
    ...(heartbeatMs !== undefined ? { heartbeatMs } : {}),
  });
  const cancelJob = createCancelJob({ redis, queue, batchQueue, keys, jobStore, jobLog, ttlSeconds: config.jobTtlSeconds });
  const downloads = createDownloadRouter({ jenkinsUrl: config.jenkins.url, jobStore, jobLog, logStream, cancelJob });
  const routers = [{ path: '/', router: downloads }];
  if (config.dashboardEnabled) routers.push({ path: DASHBOARD_PATH, router: createDashboardRouter(queue, batchQueue) });
  const app = createApp({ logger, redis, routers });
  return {
    app,
    queue,
    batchQueue,
    jobStore,
    tail,
    async close() {
      await tail.close();
      await batchQueue.close();
      await queue.close();
    },
  };
}
