import { mkdir } from 'node:fs/promises';
import { loadConfig, loadDotEnv } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { checkMaxmemoryPolicy, closeRedis, createRedis } from '../shared/redis.js';
import { createShutdown } from '../shared/shutdown.js';
import { createWorkerRuntime } from './create-worker-runtime.js';
import { serveWorkerMetrics } from './metrics.js';

/** Composition root of a worker process: the only place that reads the environment. */
async function main(): Promise<void> {
  loadDotEnv();
  const config = loadConfig(process.env);
  const logger = createLogger({ service: 'worker', level: config.logLevel });
  // The worker waits SHUTDOWN_TIMEOUT_MS for running jobs; the rest of shutdown gets a little more.
  const shutdown = createShutdown(logger, config.shutdownTimeoutMs + 5_000);
  shutdown.onSignals((code) => process.exit(code));

  await mkdir(config.downloadDir, { recursive: true });
  const redis = createRedis(config.redis, 'worker', logger, 'worker');
  // An evicted key is a lost job: warn loudly unless Redis runs with noeviction.
  void checkMaxmemoryPolicy(redis, logger);
  shutdown.add('redis', () => closeRedis(redis));

  // ferry's own commands, auto-pipelined (WorkerRuntimeOptions.opsRedis).
  const opsRedis = createRedis(config.redis, 'worker', logger, 'worker-ops', { autoPipelining: true });
  shutdown.add('redis (ferry commands)', () => closeRedis(opsRedis));

  const worker = createWorkerRuntime({ config, logger, redis, opsRedis });
  // Registered after Redis, so it runs first: stop taking jobs and let running ones finish.
  shutdown.add('worker', () => worker.close());

  if (config.metricsPort !== undefined) {
    const metrics = await serveWorkerMetrics(worker.metrics.registry, config.host, config.metricsPort);
    shutdown.add('metrics server', () => new Promise<void>((resolve) => metrics.server.close(() => resolve())));
    logger.info('worker metrics listening', { url: `http://${config.host}:${metrics.port}/metrics` });
  }
  logger.info('worker started', {
    concurrency: config.workerConcurrency,
    download_dir: config.downloadDir,
    jenkins_url: config.jenkins.url,
    pid: process.pid,
  });
  void worker.run().catch((error: unknown) => {
    logger.error('worker stopped unexpectedly', { error });
    void shutdown.run('worker failure').then(() => process.exit(1));
  });
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`ferry worker: ${error.message}\n`);
  } else {
    process.stderr.write(`ferry worker failed to start: ${(error as Error).stack ?? String(error)}\n`);
  }
  process.exit(1);
});
