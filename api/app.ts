import cors from 'cors';
import helmet from 'helmet';
import express, { type Express, type RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { readRedisHealth } from '../shared/redis.js';
import { DASHBOARD_PATH } from './dashboard.js';
import { createDrain, type Drain } from './drain.js';
import { requestIds } from './request-id.js';
import { createErrorHandler, notFoundHandler } from './error-handler.js';
import { createRedisGuard } from './redis-guard.js';
import { installPlainRoutes, type PlainRoute } from './plain-route.js';

export interface MountedRouter {
  readonly path: string;
  readonly router: RequestHandler;
  /**
   * Answer 503 REDIS_UNAVAILABLE before the router runs while the connection is down: for a router
   * that turns Redis errors into answers of its own (Bull Board answers 500).
   */
  readonly requiresRedis?: boolean;
}

export interface AppOptions {
  readonly logger: Logger;
  /** Command connection, checked by /readyz. */
  readonly redis: Redis;
  /** Routers mounted in order after health checks (downloads, dashboard...). */
  readonly routers: ReadonlyArray<MountedRouter>;
  /** Graceful stop state (default: a new one, never started). */
  readonly drain?: Drain;
  /** Milliseconds /readyz waits for Redis (default 500, so it answers within a second). */
  readonly readyTimeoutMs?: number;
  /** CORS_ORIGINS: browser origins allowed to call the API (default none). */
  readonly corsOrigins?: readonly string[];
  /** TRUST_PROXY: proxies whose X-Forwarded-For is trusted for the client address (default 0). */
  readonly trustProxy?: number;
  /** Counts every request (api/metrics.ts). */
  readonly httpMetrics?: RequestHandler;
  /**
   * Hot routes answered before the router (api/plain-route.ts), by the same middleware and handlers
   * the routers run for them. Each must also be served by one of `routers`, unchanged.
   */
  readonly plainRoutes?: readonly PlainRoute[];
}

/** Builds the Express app. It never listens: main.ts does, and tests call it in-process. */
export function createApp({ logger, redis, routers, plainRoutes = [], drain = createDrain(), readyTimeoutMs = 500, corsOrigins = [], trustProxy = 0, httpMetrics }: AppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', trustProxy > 0 ? trustProxy : false);
  // Standard security headers; Bull Board's page needs its inline scripts and styles, so the
  // dashboard gets every header but the content security policy.
  const headers = helmet();
  const dashboardHeaders = helmet({ contentSecurityPolicy: false });
  // Every request goes through these, in this order, before the routes (and through the first five
  // before the health checks). The plain routes run the same functions (api/plain-route.ts).
  const common: RequestHandler[] = [
    requestIds(logger),
    ...(httpMetrics ? [httpMetrics] : []),
    (req, res, next) => (req.path.startsWith(DASHBOARD_PATH) ? dashboardHeaders : headers)(req, res, next),
    cors({
      origin: corsOrigins.length > 0 ? [...corsOrigins] : false,
      allowedHeaders: ['Authorization', 'Content-Type', 'Idempotency-Key', 'Last-Event-ID', 'X-Admin-PIN', 'X-Request-Id'],
      exposedHeaders: ['Idempotent-Replayed', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'X-Request-Id'],
      maxAge: 600,
    }),
    // A stopping server turns requests away before any work (or body parsing) is done.
    drain.middleware,
  ];
  const beforeHealth = common.length;
  common.push(createRedisGuard({ redis }), express.json({ limit: '64kb' }));
  for (const handler of common.slice(0, beforeHealth)) app.use(handler);

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    if (drain.draining) {
      res.status(503).json({ status: 'unready', reason: 'shutting down' });
      return;
    }
    const health = await readRedisHealth(redis, readyTimeoutMs);
    if (health.state === 'up') {
      res.json({ status: 'ready', redis: 'up' });
    } else if (health.state === 'full') {
      res.status(503).json({
        status: 'unready',
        reason: 'redis full',
        redis: 'full',
        used_memory_bytes: health.usedMemoryBytes,
        maxmemory_bytes: health.maxmemoryBytes,
      });
    } else {
      res.status(503).json({ status: 'unready', reason: 'redis unavailable', redis: 'down' });
    }
  });

  for (const handler of common.slice(beforeHealth)) app.use(handler);
  const requireRedis: RequestHandler = (_req, _res, next) => {
    next(redis.status === 'ready' ? undefined : new RedisUnavailableError());
  };
  for (const { path, router, requiresRedis } of routers) {
    if (requiresRedis) app.use(path, requireRedis);
    app.use(path, router);
  }
  app.use(notFoundHandler);
  const errorHandler = createErrorHandler(logger);
  app.use(errorHandler);
  if (plainRoutes.length > 0) installPlainRoutes({ app, routes: plainRoutes, common, errorHandler });
  return app;
}
