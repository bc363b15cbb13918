import express, { type Express, type RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import { createErrorHandler, notFoundHandler } from './error-handler.js';

export interface AppOptions {
  readonly logger: Logger;
  /** Command connection, pinged by /readyz. */
  readonly redis: Redis;
  /** Routers mounted in order after health checks (downloads, dashboard...). */
  readonly routers: ReadonlyArray<{ path: string; router: RequestHandler }>;
  /** Milliseconds /readyz waits for Redis. */
  readonly readyTimeoutMs?: number;
}

/** Builds the Express app. It never listens: main.ts does, and tests call it in-process. */
export function createApp({ logger, redis, routers, readyTimeoutMs = 1_000 }: AppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(express.json({ limit: '64kb' }));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const ready = await Promise.race([
      redis.ping().then(() => true, () => false),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), readyTimeoutMs).unref()),
    ]);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', redis: ready ? 'up' : 'down' });
  });

  for (const { path, router } of routers) app.use(path, router);
  app.use(notFoundHandler);
  app.use(createErrorHandler(logger));
  return app;
}
