import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import type { Redis } from 'ioredis';
import { createRegistry, errorKind, METRICS_CONTENT_TYPE, type Registry } from '../shared/metrics.js';

/** What a worker process counts. */
export interface WorkerMetrics {
  readonly registry: Registry;
  jobStarted(queue: string): void;
  jobFinished(queue: string, outcome: 'completed' | 'failed' | 'cancelled' | 'handed_back', seconds: number, reason?: string): void;
  bytesDownloaded(bytes: number): void;
  retried(message: string): void;
  /** `count` (default 1) job log lines were written. */
  logLine(count?: number): void;
}

export function createWorkerMetrics(redis: Redis): WorkerMetrics {
  const registry = createRegistry('worker', redis);
  const active = new client.Gauge({ name: 'ferry_active_jobs', help: 'Jobs this worker process is running', labelNames: ['queue'], registers: [registry] });
  const duration = new client.Histogram({
    name: 'ferry_job_duration_seconds',
    help: 'Duration of job attempts on this worker, by outcome',
    labelNames: ['queue', 'outcome'],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3_600, 4 * 3_600],
    registers: [registry],
  });
  const bytes = new client.Counter({ name: 'ferry_downloaded_bytes_total', help: 'Artifact bytes written by this worker', registers: [registry] });
  const errors = new client.Counter({ name: 'ferry_download_errors_total', help: 'Failed job attempts, by kind', labelNames: ['kind'], registers: [registry] });
  const retries = new client.Counter({ name: 'ferry_download_retries_total', help: 'Retried Jenkins requests, by kind', labelNames: ['kind'], registers: [registry] });
  const lines = new client.Counter({ name: 'ferry_log_lines_total', help: 'Job log lines published by this worker', registers: [registry] });
  return {
    registry,
    jobStarted: (queue) => active.inc({ queue }),
    jobFinished(queue, outcome, seconds, reason) {
      active.dec({ queue });
      duration.observe({ queue, outcome }, seconds);
      if (outcome === 'failed') errors.inc({ kind: errorKind(reason ?? '') });
    },
    bytesDownloaded: (count) => {
      if (count > 0) bytes.inc(count);
    },
    retried: (message) => retries.inc({ kind: errorKind(message) }),
    logLine: (count = 1) => {
      if (count > 0) lines.inc(count);
    },
  };
}

/** Serves GET /metrics on METRICS_PORT (only when set). Returns the server, listening. */
export async function serveWorkerMetrics(registry: Registry, host: string, port: number): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'Only GET /metrics here' } }));
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(text),
      (error: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(String(error)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
