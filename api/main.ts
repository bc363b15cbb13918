import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig, loadDotEnv } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { checkMaxmemoryPolicy, closeRedis, createRedis, describeRedisTarget, waitForRedis } from '../shared/redis.js';
import { createShutdown } from '../shared/shutdown.js';
import { checkAuthSetup } from './auth.js';
import { createApi } from './create-api.js';
import { DASHBOARD_PATH } from './dashboard.js';
import type { Drain } from './drain.js';
import { createHttpServer } from './http-server.js';

/**
 * How long a stopping API keeps its port open, answering /readyz 503 and new requests 503
 * SHUTTING_DOWN, even when nothing is in flight: the time a load balancer needs to see the 503 and
 * send new clients elsewhere, rather than having them meet a closed port. A quarter of
 * SHUTDOWN_TIMEOUT_MS, at most 2 s: it delays every stop (`npm start`'s Ctrl-C too), and requests in
 * flight keep the port open for as long as they need anyway.
 */
const drainWindowMs = (shutdownTimeoutMs: number) => Math.min(2_000, Math.floor(shutdownTimeoutMs / 4));

/**
 * The HTTP part of a graceful stop, in order: drain (readiness 503, new requests 503, SSE streams
 * told to reconnect elsewhere), keep the port open for the drain window and until requests in flight
 * are answered, then close the server. Requests still running when `budgetMs` runs out are cut.
 */
async function stopHttp(server: Server, drain: Drain, logger: Logger, windowMs: number, budgetMs: number): Promise<void> {
  const started = Date.now();
  drain.start();
  logger.info('draining: readiness 503, new requests 503, open log streams told to reconnect', { in_flight: drain.inFlight });
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  const answered = await drain.idle(Math.max(0, budgetMs - (Date.now() - started)));
  if (!answered) logger.warn('requests still in flight at the shutdown deadline; closing their connections', { in_flight: drain.inFlight });
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // Keep-alive connections left idle by the answers above would hold close() for their timeout.
  server.closeIdleConnections();
  if (!answered) server.closeAllConnections();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), Math.max(100, budgetMs - (Date.now() - started)));
  });
  if (await Promise.race([closed.then(() => false), late])) server.closeAllConnections();
  clearTimeout(timer);
  await closed;
}

/** Composition root of an API process: the only place that reads the environment and listens. */
async function main(): Promise<void> {
  loadDotEnv();
  const config = loadConfig(process.env);
  const logger = createLogger({ service: 'api', level: config.logLevel });
  // Refuse to serve job data to anyone on the network unless tokens are set (or openness is chosen).
  const authSetup = checkAuthSetup({ host: config.host, tokens: config.auth.tokens, tokenSecret: config.auth.tokenSecret, disabled: config.auth.disabled });
  if (authSetup.error) throw new ConfigError(`Invalid configuration:\n  ${authSetup.error}`);
  for (const warning of authSetup.warnings) logger.warn(warning);
  const shutdown = createShutdown(logger, config.shutdownTimeoutMs);
  shutdown.onSignals((code) => process.exit(code));

  const redis = createRedis(config.redis, 'api', logger, 'api');
  // BullMQ's queues on a connection of their own (see ApiDependencies.queueRedis).
  const queueRedis = createRedis(config.redis, 'api', logger, 'api-queue', { autoPipelining: false });
  const blockingRedis = createRedis(config.redis, 'worker', logger, 'api-log-tail');
  // Cleanups run last-in-first-out: HTTP first, then the queue and log tail, Redis last.
  shutdown.add('redis', async () => {
    await Promise.all([redis, queueRedis, blockingRedis].map(closeRedis));
  });
  // Now, and after every reconnect: warns when Redis could evict (lose) jobs.
  void checkMaxmemoryPolicy(redis, logger);
  // Listen even while Redis is down (requests then get 503 and /readyz says so), but give it a
  // moment first so a normal start does not answer its first requests with 503.
  await Promise.all([waitForRedis(redis, 5_000), waitForRedis(queueRedis, 5_000)]).catch(() => logger.warn('Redis is not reachable yet; starting anyway', { redis: describeRedisTarget(config.redis) }));
  const api = createApi({ config, logger, redis, queueRedis, blockingRedis });
  shutdown.add('queue and log tail', () => api.close());

  const server = createHttpServer(api.app);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
    server.listen(config.port, config.host);
  });
  // Leave a second of SHUTDOWN_TIMEOUT_MS to the queue and Redis steps after the HTTP one.
  const httpBudgetMs = Math.max(config.shutdownTimeoutMs - 1_000, Math.floor(config.shutdownTimeoutMs / 2));
  shutdown.add('http server', () => stopHttp(server, api.drain, logger, drainWindowMs(config.shutdownTimeoutMs), httpBudgetMs));
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
