/**
 * ferry's processes as the bench runs them: the real entry points (`node dist/api/main.js`,
 * `node dist/worker/main.js`, via tests/helpers/processes.ts) against the scenario's private Redis
 * and fake Jenkins, with the default settings except where a scenario says otherwise.
 */
import http from 'node:http';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { v7 as uuidv7 } from 'uuid';
import type { JobData } from '../../shared/job-contract.js';
import { createKeys } from '../../shared/keys.js';
import { startScript, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { ROOT, startNode, waitFor200, type NodeChild } from './harness.js';

/**
 * The environment of ferry's processes: the defaults (LOG_LEVEL info, QUEUE_PREFIX {ferry}, no API
 * tokens on loopback) plus `extra`, with the per-caller submit rate limit raised out of the way (the
 * bench is one caller sending thousands of submits; the limiter still runs on every submit), and a
 * 2 s SHUTDOWN_TIMEOUT_MS so the processes the bench stops once their work is done go in 0.5 s.
 * With BENCH_CPU_PROF=<dir>, every ferry process writes a V8 CPU profile there when it exits.
 */
export function ferryEnv(redisUrl: string, jenkinsUrl: string, downloadDir: string, extra: Record<string, string> = {}): Record<string, string> {
  const nodeOptions = [process.env.BENCH_FERRY_NODE_OPTIONS, process.env.BENCH_CPU_PROF ? `--import=${ROOT}tests/bench/cpu-profile.mjs` : undefined].filter(Boolean).join(' ');
  const profile: Record<string, string> = nodeOptions ? { NODE_OPTIONS: nodeOptions } : {};
  return {
    REDIS_URL: redisUrl,
    JENKINS_URL: jenkinsUrl,
    DOWNLOAD_DIR: downloadDir,
    HOST: '127.0.0.1',
    RATE_LIMIT_PER_MINUTE: '100000000',
    SHUTDOWN_TIMEOUT_MS: '2000',
    ...profile,
    ...extra,
  };
}

export interface RunningApi {
  readonly url: string;
  readonly service: ChildService;
}

/** Starts `node dist/api/main.js` on a free port and waits for /readyz 200. */
export async function startFerryApi(env: Record<string, string>): Promise<RunningApi> {
  const port = await freePort();
  const service = startScript('api', { ...env, PORT: String(port) });
  const url = `http://127.0.0.1:${port}`;
  await waitFor200(`${url}/readyz`, asNodeChild(service));
  return { url, service };
}

/**
 * Starts the bench's bare Express + queue.add process (tests/bench/baselines/bare-api.mjs);
 * `bornPrototypes`: on ferry's createHttpServer instead of app.listen (a reference, not the baseline).
 */
export async function startBareApi(redisUrl: string, prefix = '{bare}', bornPrototypes = false): Promise<{ url: string; process: NodeChild }> {
  const port = await freePort();
  const child = startNode('tests/bench/baselines/bare-api.mjs', [], {
    REDIS_URL: redisUrl,
    PORT: String(port),
    QUEUE_PREFIX: prefix,
    ...(bornPrototypes ? { BARE_BORN_PROTOTYPES: '1' } : {}),
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor200(`${url}/readyz`, child);
  return { url, process: child };
}

/** A ChildService seen through the harness's NodeChild interface (for waitFor200). */
export function asNodeChild(service: ChildService): NodeChild {
  return {
    child: service.child,
    pid: service.child.pid as number,
    output: service.output,
    exited: new Promise((resolve) => service.child.once('exit', (code) => resolve(code))),
    stop: (graceMs) => service.stop(graceMs),
  };
}

/** POSTs a download to a ferry API; returns the job id (throws unless 202). */
export async function submitDownload(apiUrl: string, jobUrl: string): Promise<string> {
  const response = await fetch(`${apiUrl}/api/v1/jenkins/download`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ job_url: jobUrl }),
  });
  const body = (await response.json()) as { job_id?: string };
  if (response.status !== 202 || !body.job_id) throw new Error(`submit answered ${response.status}: ${JSON.stringify(body)}`);
  return body.job_id;
}

/**
 * POSTs many downloads to a ferry API over `connections` keep-alive sockets (node:http), for the
 * scenarios that submit thousands of jobs. The load generator shares the 2 cores with what it
 * measures: `fetch` (undici) cost about 0.4 to 0.7 ms of CPU per request here, `http.request` on a
 * keep-alive agent 0.1 to 0.2 ms, about what the baselines' `queue.add` costs their submitter.
 */
export function createSubmitter(
  apiUrl: string,
  connections: number,
): { submit(jobUrl: string): Promise<string>; submitMany(jobUrls: readonly string[]): Promise<string[]>; close(): void } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  /** POSTs `payload` to `path`; the parsed answer, which must be a 202. */
  const post = (path: string, payload: unknown) =>
    new Promise<unknown>((resolve, reject) => {
      const body = JSON.stringify(payload);
      const request = http.request(`${apiUrl}${path}`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('error', reject);
        response.on('end', () => {
          try {
            if (response.statusCode !== 202) throw new Error(`POST ${path} answered ${response.statusCode}: ${text.slice(0, 500)}`);
            resolve(JSON.parse(text));
          } catch (error) {
            reject(error as Error);
          }
        });
      });
      request.on('error', reject);
      request.end(body);
    });
  return {
    async submit(jobUrl) {
      const answer = (await post('/api/v1/jenkins/download', { job_url: jobUrl })) as { job_id?: string };
      if (!answer.job_id) throw new Error(`submit answered no job id: ${JSON.stringify(answer)}`);
      return answer.job_id;
    },
    /** One bulk submit (`POST .../downloads`, at most 100); the job ids in order, every one new. */
    async submitMany(jobUrls) {
      const answer = (await post('/api/v1/jenkins/downloads', { downloads: jobUrls.map((jobUrl) => ({ job_url: jobUrl })) })) as { jobs?: Array<{ job_id: string; deduplicated: boolean }> };
      const jobs = answer.jobs ?? [];
      if (jobs.length !== jobUrls.length || jobs.some((job) => job.deduplicated)) throw new Error(`bulk submit answered ${JSON.stringify(answer).slice(0, 500)}`);
      return jobs.map((job) => job.job_id);
    },
    close: () => agent.destroy(),
  };
}

/**
 * Adds `count` pending downloads straight to ferry's queue, as the API's submit stores them (the
 * same job data, options and job index entry; UUIDv7 ids), with queue.addBulk in batches: a fast
 * way to a deep queue. Returns the ids in order of addition.
 */
export async function fillQueue(redis: Redis, prefix: string, count: number, jobUrl: (index: number) => string, batchSize = 1_000): Promise<string[]> {
  const keys = createKeys(prefix);
  const queue = new Queue<JobData>(keys.queueName, { connection: redis, prefix: keys.queuePrefix });
  const ids: string[] = [];
  try {
    for (let start = 0; start < count; start += batchSize) {
      const batch = Array.from({ length: Math.min(batchSize, count - start) }, (_, offset) => {
        const id = uuidv7();
        ids.push(id);
        const data: JobData = { job_url: jobUrl(start + offset), release: '6.4', skip_existing: true, artifacts: [], accepted_at: new Date().toISOString() };
        return {
          name: 'download',
          data,
          opts: { jobId: id, attempts: 3, backoff: { type: 'exponential', delay: 5_000 }, removeOnComplete: { age: 86_400 }, removeOnFail: { age: 86_400 } },
        };
      });
      const index = redis.pipeline();
      for (const job of batch) index.zadd(keys.jobIndex, 0, job.opts.jobId);
      await Promise.all([index.exec(), queue.addBulk(batch)]);
    }
  } finally {
    await queue.close();
  }
  return ids;
}
