/**
 * HTTP load for the submit and status scenarios, with autocannon: it keeps N connections busy with
 * keep-alive requests, builds each request on the fly (a new body or path per request) and records
 * latency in an HDR histogram. Chosen over a loop of undici/fetch calls because the load generator
 * shares the 2 cores with the API and Redis: autocannon's client costs a fraction of fetch's per
 * request, so more of the CPU goes to the server being measured.
 */
import autocannon from 'autocannon';

export interface LoadOptions {
  /** Origin, e.g. 'http://127.0.0.1:3000'. */
  readonly origin: string;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly method: 'GET' | 'POST';
  /** The path of each request (called once per request). */
  readonly path: () => string;
  /** The JSON body of each request, for POST. */
  readonly body?: () => string;
}

export interface LoadResult {
  /** 2xx answers per second. */
  readonly rps: number;
  /** Latency of 2xx answers, milliseconds (autocannon records whole milliseconds). */
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly ok: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly statuses: Record<string, number>;
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: options.origin,
    connections: options.connections,
    duration: options.durationSeconds,
    // One request in flight per connection: what 50 concurrent clients do.
    pipelining: 1,
    requests: [
      {
        method: options.method,
        ...(options.body ? { headers: { 'content-type': 'application/json' } } : {}),
        setupRequest: (request) => ({ ...request, path: options.path(), ...(options.body ? { body: options.body() } : {}) }),
      },
    ],
  });
  const statuses: Record<string, number> = {};
  for (const [status, stats] of Object.entries(result.statusCodeStats ?? {})) statuses[status] = stats.count ?? 0;
  return {
    rps: result['2xx'] / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    mean: result.latency.mean,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    statuses,
  };
}

export const describeLoad = (r: LoadResult) =>
  `${Math.round(r.rps)} req/s, p50 ${r.p50} ms, p99 ${r.p99} ms, ${r.ok} ok, ${r.non2xx} non-2xx ${JSON.stringify(r.statuses)}, ${r.errors} errors`;
