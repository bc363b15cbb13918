import { Router } from 'express';
import { Queue } from 'bullmq';
import type { Express } from 'express';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import type { BatchData, JobData, JobResult } from '../shared/job-contract.js';
import { createJobLog } from '../shared/job-log.js';
import { createKeys } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { isRedisConnectionError } from '../shared/redis.js';
import { createApp, type MountedRouter } from './app.js';
import { createCancelJob } from './cancel-job.js';
import { callerScope, createAuth } from './auth.js';
import { createDashboardRouter, DASHBOARD_PATH, sameOriginWrites } from './dashboard.js';
import { createApiMetrics, createMetricsRouter } from './metrics.js';
import { createOpenApiRouter } from './openapi.js';
import { createSubmitRateLimit } from './rate-limit.js';
import { createStreamTokens } from './stream-tokens.js';
import { createDownloadRouter, createStatusRoute, createSubmitRoute, submitIdempotency } from './download-routes.js';
import { createDrain, type Drain } from './drain.js';
import { createJobStore, type JobStore } from './job-store.js';
import { createLogStreamHandler } from './log-stream.js';
import { createLogTail, type LogTail } from './log-tail.js';
import { createWebPageRouter } from './web-page.js';

export interface ApiDependencies {
  readonly config: Config;
  readonly logger: Logger;
  /** Command connection (fails fast while Redis is down). */
  readonly redis: Redis;
  /**
   * BullMQ's queues (adds, removals, Bull Board), default `redis`. main.ts gives them their own,
   * without auto-pipelining: BullMQ defines about fifty scripts on the connection it is given, and
   * ioredis copies every one onto each auto-pipeline, so on a shared connection each status read or
   * claim paid for them (about 150 us per submit at low concurrency).
   */
  readonly queueRedis?: Redis;
  /** Dedicated connection for the blocking log tail. */
  readonly blockingRedis: Redis;
  /** SSE heartbeat period in milliseconds (default 15000). */
  readonly heartbeatMs?: number;
  /**
   * Answer `GET .../status` and `POST .../download` before the router, by the same handlers (default true; api/plain-route.ts).
   * False sends every request through the router: tests compare the two.
   */
  readonly plainRoutes?: boolean;
}

export interface Api {
  readonly app: Express;
  readonly queue: Queue<JobData, JobResult>;
  readonly batchQueue: Queue<BatchData, JobResult>;
  readonly jobStore: JobStore;
  readonly tail: LogTail;
  /** Graceful stop: main.ts starts it on SIGTERM/SIGINT (readiness 503, SSE streams told to leave). */
  readonly drain: Drain;
  /** Stops the tail and the queue; the caller closes the Redis connections it created. */
  close(): Promise<void>;
}

/** Wires the API from its connections: everything but listening and signals. */
export function createApi({ config, logger, redis, queueRedis = redis, blockingRedis, heartbeatMs, plainRoutes = true }: ApiDependencies): Api {
  const keys = createKeys(config.queuePrefix);
  const queue = new Queue<JobData, JobResult>(keys.queueName, { connection: queueRedis, prefix: keys.queuePrefix });
  // Connection errors are logged once per outage by the connection itself (shared/redis.ts).
  const onQueueError = (error: Error) => logger.log(isRedisConnectionError(error) ? 'debug' : 'warn', 'queue error', { error: error.message });
  queue.on('error', onQueueError);
  const batchQueue = new Queue<BatchData, JobResult>(keys.batches.queueName, { connection: queueRedis, prefix: keys.queuePrefix });
  batchQueue.on('error', onQueueError);
  const metrics = createApiMetrics(redis, [queue, batchQueue]);
  const jobLog = createJobLog({ redis, keys, maxLines: config.maxLogLines, ttlSeconds: config.logTtlSeconds });
  const jobStore = createJobStore({
    redis,
    queue,
    batchQueue,
    keys,
    jobLog,
    attempts: config.jobAttempts,
    jobTtlSeconds: config.jobTtlSeconds,
    waitReplicas: config.redisWait,
    queueRedis,
  });
  const tail = createLogTail({ blocking: blockingRedis, control: redis, logger });
  const drain = createDrain();
  const logStream = createLogStreamHandler({
    jobStore,
    jobLog,
    tail,
    keys,
    logger,
    drain,
    onClient: (delta) => metrics.sseClients(delta),
    ...(heartbeatMs !== undefined ? { heartbeatMs } : {}),
  });
  const cancelJob = createCancelJob({ redis, queue, batchQueue, keys, jobStore, jobLog, ttlSeconds: config.jobTtlSeconds });
  const streamTokens = createStreamTokens(config.auth.tokenSecret);
  const auth = createAuth({
    tokens: config.auth.tokens,
    adminPin: config.auth.adminPin,
    anonymousRole: config.auth.anonymousRole,
    open: config.auth.tokens.length === 0,
    streamTokens,
  });
  const submitLimit = createSubmitRateLimit({ redis, keys, perMinute: config.rateLimitPerMinute, scope: callerScope });
  const downloads = createDownloadRouter({ jenkinsUrl: config.jenkins.url, jobStore, jobLog, logStream, cancelJob, auth, streamTokens, submitLimit });
  const routers: MountedRouter[] = [{ path: '/', router: createOpenApiRouter(config.jenkins.url) }, { path: '/', router: downloads }];
  routers.push({ path: '/', router: createWebPageRouter() });
  // /metrics needs the read role unless METRICS_PUBLIC=true.
  const metricsGuards = config.auth.metricsPublic ? [] : [auth.identify, auth.require('read')];
  routers.push({ path: '/', router: createMetricsRouter(metrics.registry, metricsGuards) });
  if (config.dashboardEnabled) {
    // Admins only (HTTP Basic for browsers), and no write action started by another site.
    const dashboard = Router();
    dashboard.use(auth.identify, auth.require('admin'), sameOriginWrites, createDashboardRouter([queue, batchQueue], { readOnly: config.dashboardReadOnly }));
    routers.push({ path: DASHBOARD_PATH, router: dashboard, requiresRedis: true });
  }
  const app = createApp({
    logger,
    redis,
    routers,
    // The hottest requests, status reads and submits, skip the router (same handlers: api/plain-route.ts).
    plainRoutes: plainRoutes
      ? [
          createStatusRoute({ jobStore, auth }),
          createSubmitRoute({ jenkinsUrl: config.jenkins.url, jobStore, auth, submitLimit, idempotency: submitIdempotency(jobStore.idempotency) }),
        ]
      : [],
    drain,
    corsOrigins: config.corsOrigins,
    trustProxy: config.trustProxy,
    httpMetrics: metrics.httpMiddleware,
  });
  return {
    app,
    queue,
    batchQueue,
    jobStore,
    tail,
    drain,
    async close() {
      await tail.close();
      await batchQueue.close();
      await queue.close();
    },
  };
}
