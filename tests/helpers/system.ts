import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { createHttpServer } from '../../api/http-server.js';
import { createApi, type Api } from '../../api/create-api.js';
import { loadConfig, type Config } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { closeRedis, createRedis, waitForRedis } from '../../shared/redis.js';
import { createWorkerRuntime, type WorkerRuntime } from '../../worker/create-worker-runtime.js';

export interface TestSystem {
  readonly config: Config;
  readonly baseUrl: string;
  readonly api: Api;
  readonly redis: Redis;
  readonly downloadDir: string;
  /** Starts an in-process worker (none runs until this is called). */
  startWorker(): Promise<WorkerRuntime>;
  stop(): Promise<void>;
}

/** The test configuration: a private queue prefix so files never see each other's jobs. */
export function testEnv(jenkinsUrl: string, downloadDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: inject('redisUrl'),
    JENKINS_URL: jenkinsUrl,
    DOWNLOAD_DIR: downloadDir,
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'warn',
    QUEUE_PREFIX: `{t${randomUUID().slice(0, 8)}}`,
    JOB_ATTEMPTS: '1',
    ...extra,
  };
}

/** An API (listening on a free port) and on demand workers, all in this process, on real Redis. */
export async function startSystem(jenkinsUrl: string, extra: Record<string, string> = {}, heartbeatMs?: number): Promise<TestSystem> {
  const downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-dl-'));
  const config = loadConfig(testEnv(jenkinsUrl, downloadDir, extra));
  const logger = createLogger({ service: 'test', level: config.logLevel, json: true });
  const redis = createRedis(config.redisUrl, 'api', logger, 'test-api');
  const blockingRedis = createRedis(config.redisUrl, 'worker', logger, 'test-tail');
  await waitForRedis(redis, 10_000);
  const api = createApi({ config, logger, redis, blockingRedis, ...(heartbeatMs !== undefined ? { heartbeatMs } : {}) });
  // The server api/main.ts runs (requests born with Express's prototypes).
  const server: Server = createHttpServer(api.app).listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port } = server.address() as AddressInfo;
  const workers: Array<{ worker: WorkerRuntime; redis: Redis; opsRedis: Redis }> = [];

  return {
    config,
    baseUrl: `http://127.0.0.1:${port}`,
    api,
    redis,
    downloadDir,
    async startWorker() {
      const workerRedis = createRedis(config.redisUrl, 'worker', logger, 'test-worker');
      const opsRedis = createRedis(config.redisUrl, 'worker', logger, 'test-worker-ops', { autoPipelining: true });
      const worker = createWorkerRuntime({ config, logger, redis: workerRedis, opsRedis, progressIntervalMs: 50, retryBaseDelayMs: 50, batchPollMs: 50 });
      void worker.run();
      workers.push({ worker, redis: workerRedis, opsRedis });
      return worker;
    },
    async stop() {
      for (const { worker, redis: workerRedis, opsRedis } of workers.splice(0).reverse()) {
        await worker.close();
        workerRedis.disconnect();
        await closeRedis(opsRedis);
      }
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await api.queue.obliterate({ force: true }).catch(() => undefined);
      await api.close();
      redis.disconnect();
      blockingRedis.disconnect();
      await rm(downloadDir, { recursive: true, force: true });
    },
  };
}

/** POSTs JSON and returns status and parsed body. */
export async function postJson(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

export async function getJson(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url);
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}
