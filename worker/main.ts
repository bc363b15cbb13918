import { mkdir } from 'node:fs/promises';
import { loadConfig, loadDotEnv } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { createJobLog } from '../shared/job-log.js';
import { publishProgress } from '../shared/job-progress.js';
import { createKeys } from '../shared/keys.js';
import { createLogger } from '../shared/logger.js';
import { createRedis } from '../shared/redis.js';
import { createShutdown } from '../shared/shutdown.js';
import { createDownloadProcessor } from './download-processor.js';
import { createDownloadWorker } from './download-worker.js';
import { createJenkinsClient } from './jenkins-client.js';

/** Composition root of a worker process: the only place that reads the environment. */
async function main(): Promise<void> {
  loadDotEnv();
  const config = loadConfig(process.env);
  const logger = createLogger({ service: 'worker', level: config.logLevel });
  // The worker waits SHUTDOWN_TIMEOUT_MS for running jobs; the rest of shutdown gets a little more.
  const shutdown = createShutdown(logger, config.shutdownTimeoutMs + 5_000);
  shutdown.onSignals((code) => process.exit(code));

  await mkdir(config.downloadDir, { recursive: true });
  const keys = createKeys(config.queuePrefix);
  const redis = createRedis(config.redisUrl, 'worker', logger, 'worker');
  shutdown.add('redis', async () => {
    await redis.quit().catch(() => redis.disconnect());
  });

  const jobLog = createJobLog({ redis, keys, maxLines: config.maxLogLines, ttlSeconds: config.logTtlSeconds });
  const jenkins = createJenkinsClient({
    baseUrl: config.jenkins.url,
    user: config.jenkins.user,
    apiToken: config.jenkins.apiToken,
  });
  const processor = createDownloadProcessor({
    jenkins,
    jobLog,
    logger,
    downloadDir: config.downloadDir,
    defaultInclude: config.artifactInclude,
    publishProgress: async (job, progress) => {
      await Promise.all([publishProgress(redis, keys, job.id as string, progress), job.updateProgress(progress)]);
    },
  });
  const worker = createDownloadWorker({
    redis,
    keys,
    processor,
    jobLog,
    logger,
    concurrency: config.workerConcurrency,
    lockDurationMs: config.jobLockMs,
  });
  // Registered after Redis, so it runs first: stop taking jobs and let running ones finish.
  shutdown.add('worker', () => worker.close());

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
