import client from 'prom-client';
import type { Redis } from 'ioredis';

export type Registry = client.Registry;

/**
 * A Prometheus registry for one process, with Node's default metrics (`ferry_process_*`,
 * `ferry_nodejs_*`) and the Redis round-trip time, measured with a PING at each scrape.
 */
export function createRegistry(service: 'api' | 'worker', redis: Redis): Registry {
  const registry = new client.Registry();
  registry.setDefaultLabels({ service });
  client.collectDefaultMetrics({ register: registry, prefix: 'ferry_' });
  new client.Gauge({
    name: 'ferry_redis_rtt_seconds',
    help: 'Round-trip time of a Redis PING, measured at scrape time (-1 when Redis does not answer within 1 s)',
    registers: [registry],
    async collect() {
      const started = process.hrtime.bigint();
      try {
        await Promise.race([redis.ping(), new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 1_000).unref())]);
        this.set(Number(process.hrtime.bigint() - started) / 1e9);
      } catch {
        this.set(-1);
      }
    },
  });
  return registry;
}

export const METRICS_CONTENT_TYPE = client.register.contentType;

/** Failure and retry reasons, grouped into a few kinds that make useful label values. */
export function errorKind(message: string): string {
  const status = /HTTP (\d{3})/.exec(message)?.[1];
  if (status) return `http_${status}`;
  if (/MD5 mismatch|SIZE_MISMATCH|received \d+ bytes/i.test(message)) return 'integrity';
  if (/slower than|stall/i.test(message)) return 'stalled';
  if (/JOB_TIMEOUT_SECONDS/.test(message)) return 'timeout';
  if (/TLS certificate/.test(message)) return 'tls';
  if (/free disk space|MAX_ARTIFACT_BYTES/.test(message)) return 'size';
  if (/Content-Range|resume refused/.test(message)) return 'range';
  if (/path|reserved by ferry/i.test(message) && /component|absolute|backslash|NUL|leaves|reserved/.test(message)) return 'unsafe_path';
  if (/build JSON|build_map\.json|not JSON/.test(message)) return 'bad_jenkins_data';
  if (/interrupted|ECONNRESET|ECONNREFUSED|socket|no answer|failed:/i.test(message)) return 'network';
  return 'other';
}
