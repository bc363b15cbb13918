import type { AddressInfo } from 'node:net';
import { loadConfig, loadDotEnv } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { createRedis, waitForRedis } from '../shared/redis.js';
import { createShutdown } from '../shared/shutdown.js';
import { createApi } from './create-api.js';
import { DASHBOARD_PATH } from './dashboard.js';

/** Composition root of an API process: the only place that reads the environment and listens. */
async function main(): Promise<void> {
  loadDotEnv();
  const config = loadConfig(process.env);
  const logger = createLogger({ service: 'api', level: config.logLevel });
  const shutdown = createShutdown(logger, config.shutdownTimeoutMs);
  shutdown.onSignals((code) => process.exit(code));

  const redis = createRedis(config.redisUrl, 'api', logger, 'api');
  const blockingRedis = createRedis(config.redisUrl, 'worker', logger, 'api-log-tail');
  shutdown.add('redis', async () => {
    await Promise.all([redis.quit().catch(() => redis.disconnect()), blockingRedis.quit().catch(() => blockingRedis.disconnect())]);
  });
  // Listen even while Redis is down (requests then get 503 and /readyz says so), but give it a
  // moment first so a normal start does not answer its first requests with 503.
  await waitForRedis(redis, 5_000).catch(() => logger.warn('Redis is not reachable yet; starting anyway', { redis: config.redisUrl }));
  const api = createApi({ config, logger, redis, blockingRedis });
  shutdown.add('queue and log tail', () => api.close());

  const server = api.app.listen(config.port, config.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  shutdown.add('http server', async () => {
    // Open SSE streams never end by themselves: give in-flight requests a moment, then close all.
    const forced = setTimeout(() => server.closeAllConnections(), Math.min(config.shutdownTimeoutMs, 5_000));
    forced.unref();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    clearTimeout(forced);
  });
  const { port } = server.address() as AddressInfo;
  const base = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info('api listening', {
    url: base,
    dashboard: config.dashboardEnabled ? `${base}${DASHBOARD_PATH}` : 'disabled',
    pid: process.pid,
  });
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`ferry api: ${error.message}\n`);
  } else {
    process.stderr.write(`ferry api failed to start: ${(error as Error).stack ?? String(error)}\n`);
  }
  process.exit(1);
});
