import { Router, type RequestHandler } from 'express';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import client from 'prom-client';
import { createRegistry, METRICS_CONTENT_TYPE, type Registry } from '../shared/metrics.js';

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;

export interface ApiMetrics {
  readonly registry: Registry;
  /** Counts requests and their latency by route and status. */
  readonly httpMiddleware: RequestHandler;
  /** An SSE client connected (+1) or left (-1). */
  sseClients(delta: 1 | -1): void;
}

/**
 * The API's metrics: jobs by queue and state (BullMQ's counters, read at scrape time: O(1) each),
 * open SSE clients, HTTP requests and latency, Redis round-trip time and Node's process metrics.
 */
export function createApiMetrics(redis: Redis, queues: ReadonlyArray<Queue>): ApiMetrics {
  const registry = createRegistry('api', redis);
  new client.Gauge({
    name: 'ferry_jobs',
    help: 'Jobs by queue and BullMQ state (finished jobs are kept for JOB_TTL_SECONDS)',
    labelNames: ['queue', 'state'],
    registers: [registry],
    async collect() {
      for (const queue of queues) {
        const counts = await queue.getJobCounts(...STATES).catch(() => null);
        if (!counts) continue;
        for (const state of STATES) this.set({ queue: queue.name, state }, counts[state] ?? 0);
      }
    },
  });
  const sse = new client.Gauge({ name: 'ferry_sse_clients', help: 'Open live-log (SSE) connections on this API process', registers: [registry] });
  const requests = new client.Counter({
    name: 'ferry_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  const latency = new client.Histogram({
    name: 'ferry_http_request_duration_seconds',
    help: 'Time to the end of the answer (SSE streams excluded)',
    labelNames: ['method', 'route'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const httpMiddleware: RequestHandler = (req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      // The matched route pattern, never the raw path: ids would make one series per job.
      const route = (req.route as { path?: string } | undefined)?.path;
      const label = typeof route === 'string' ? `${req.baseUrl}${route}` : 'unmatched';
      requests.inc({ method: req.method, route: label, status: String(res.statusCode) });
      if (!String(res.getHeader('content-type') ?? '').startsWith('text/event-stream')) {
        latency.observe({ method: req.method, route: label }, Number(process.hrtime.bigint() - started) / 1e9);
      }
    });
    next();
  };
  return { registry, httpMiddleware, sseClients: (delta) => sse.inc(delta) };
}

/** `GET /metrics` in Prometheus' text format, behind `guard` (the read role unless METRICS_PUBLIC). */
export function createMetricsRouter(registry: Registry, guards: RequestHandler[]): Router {
  const router = Router();
  router.get('/metrics', ...guards, async (_req, res) => {
    res.set('content-type', METRICS_CONTENT_TYPE).send(await registry.metrics());
  });
  return router;
}
