// Redis memory: a full Redis (maxmemory reached under noeviction) refuses writes, and the API says
// so; and at start ferry warns when Redis could evict keys. Each test runs its own redis-server.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import winston from 'winston';
import { afterEach, describe, expect, it } from 'vitest';
import { checkMaxmemoryPolicy } from '../../shared/redis.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort, startRestartableRedisServer, type RestartableRedisServer } from '../helpers/redis-server.js';
import { getJson, postJson, testEnv } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

/** The process's JSON log lines (NODE_ENV=production), skipping anything else it printed. */
function logEntries(output: string): Array<{ level: string; message: string; [key: string]: unknown }> {
  return output.split('\n').flatMap((line) => {
    try {
      const entry = JSON.parse(line) as { level?: unknown; message?: unknown };
      return typeof entry.message === 'string' ? [entry as { level: string; message: string }] : [];
    } catch {
      return [];
    }
  });
}

interface Stack {
  readonly redis: RestartableRedisServer;
  /** The test's own client, for filling Redis. */
  readonly client: Redis;
  readonly jenkins: FakeJenkins;
  readonly downloadDir: string;
  readonly api: ChildService;
  readonly worker: ChildService;
  readonly baseUrl: string;
}

/**
 * Redis with a small maxmemory under noeviction (3 MB: an empty Redis uses about 1 MB, an idle
 * ferry 2 MB), a fake Jenkins, one API and one worker process.
 */
async function startStack(cleanups: Array<() => Promise<unknown>>, extraEnv: Record<string, string> = {}): Promise<Stack> {
  const redis = await startRestartableRedisServer(['--maxmemory', '3mb', '--maxmemory-policy', 'noeviction']);
  cleanups.push(() => redis.destroy());
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  cleanups.push(async () => client.disconnect());
  const jenkins = await startFakeJenkins();
  cleanups.push(() => jenkins.close());
  const downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-full-'));
  cleanups.push(() => rm(downloadDir, { recursive: true, force: true }));
  const port = await freePort();
  const env = testEnv(jenkins.url, downloadDir, { REDIS_URL: redis.url, LOG_LEVEL: 'info', ...extraEnv });
  const api = startScript('api', { ...env, PORT: String(port) });
  const worker = startScript('worker', env);
  // Before Redis goes: free the filler so the processes stop cleanly.
  cleanups.push(() => Promise.all([api.stop(), worker.stop()]));
  cleanups.push(() => client.del(FILLER).catch(() => 0));
  const baseUrl = `http://127.0.0.1:${port}`;
  await waitReady(baseUrl, api);
  return { redis, client, jenkins, downloadDir, api, worker, baseUrl };
}

const FILLER = 'test:filler';

/**
 * Fills Redis with one key to 512 KB past maxmemory, then checks that a small write is refused.
 * The key is written by a script flagged `allow-oom`: filling with ordinary writes stops at the
 * first refusal, which is only a few KB past the limit (the refused command's own arguments count
 * while Redis reads them), so the next freed buffer would let writes in again and make the test flaky.
 */
async function fillRedis(client: Redis): Promise<{ refusal: string; maxmemory: number }> {
  const info = await client.info('memory');
  const field = (name: string) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1]);
  const maxmemory = field('maxmemory');
  expect(maxmemory).toBe(3 * 1024 * 1024);
  const free = maxmemory - field('used_memory');
  expect(free).toBeGreaterThan(0);
  await client.eval("#!lua flags=allow-oom\nreturn redis.call('SET', KEYS[1], ARGV[1])", 1, FILLER, 'x'.repeat(free + 512 * 1024));
  const refusal = await client.set('test:probe', '1').then(() => 'accepted', (error: Error) => error.message);
  expect(refusal).toContain('OOM command not allowed');
  return { refusal, maxmemory };
}

/** The job's status once it has finished (any final status), polling every 100 ms for up to 30 s. */
async function finished(baseUrl: string, id: string): Promise<Record<string, unknown>> {
  return waitFor(
    async () => {
      const answer = await getJson(`${baseUrl}/api/v1/jenkins/download/${id}/status`);
      return ['completed', 'failed', 'cancelled'].includes(answer.body.status as string) ? answer.body : null;
    },
    `job ${id} to finish`,
    30_000,
    100,
  );
}

describe('Redis full: maxmemory reached under noeviction (real redis-server, API and worker processes)', () => {
  const cleanups: Array<() => Promise<unknown>> = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('a submit answers 503 REDIS_FULL with Retry-After and /readyz says "redis full"; once memory frees, a submit is accepted and completes', async () => {
    const { client, jenkins, api, worker, baseUrl } = await startStack(cleanups);
    const build = jenkins.addBuild(['QA_Release_9.2', 'full-later'], 4, { artifacts: [{ relativePath: 'hapy/z.order.txt', content: 'z\n' }] });
    const done = await postJson(`${baseUrl}/api/v1/jenkins/download`, { job_url: jenkins.addBuild(['QA_Release_9.2', 'full-before'], 1, { artifacts: [{ relativePath: 'a.txt', content: 'a' }] }) });
    expect(done.status).toBe(202);
    expect(await finished(baseUrl, done.body.job_id as string)).toMatchObject({ status: 'completed' });

    const { maxmemory } = await fillRedis(client);

    const started = performance.now();
    const refused = await fetch(`${baseUrl}/api/v1/jenkins/download`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ job_url: build }),
    });
    const refusedMs = performance.now() - started;
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ error: { code: 'REDIS_FULL' } });
    expect(refused.headers.get('retry-after')).toBe('10');
    const withKey = await fetch(`${baseUrl}/api/v1/jenkins/download`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'full-1' },
      body: JSON.stringify({ job_url: build }),
    });
    expect(withKey.status).toBe(503);
    expect(await withKey.json()).toMatchObject({ error: { code: 'REDIS_FULL' } });
    const batch = await postJson(`${baseUrl}/api/v1/jenkins/download-selected`, { jobs: [{ key: 'k', release: '9.2', build_url: build }] });
    expect(batch.status).toBe(503);
    expect(batch.body).toMatchObject({ error: { code: 'REDIS_FULL' } });
    // A status read is refused too (it reads in a MULTI, which Redis refuses whole while full), and
    // says why rather than 500.
    const status = await getJson(`${baseUrl}/api/v1/jenkins/download/${done.body.job_id as string}/status`);
    expect(status.status).toBe(503);
    expect(status.body).toMatchObject({ error: { code: 'REDIS_FULL' } });

    const ready = await getJson(`${baseUrl}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ status: 'unready', reason: 'redis full', redis: 'full', maxmemory_bytes: maxmemory });
    expect((await fetch(`${baseUrl}/healthz`)).status).toBe(200);
    // Full for a while: nobody exits.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(api.child.exitCode, api.output()).toBeNull();
    expect(worker.child.exitCode, worker.output()).toBeNull();

    await client.del(FILLER);
    await waitFor(async () => (await fetch(`${baseUrl}/readyz`)).status === 200, '/readyz 200 once memory is free', 5_000, 50);
    const accepted = await postJson(`${baseUrl}/api/v1/jenkins/download`, { job_url: build });
    expect(accepted.status).toBe(202);
    const job = await finished(baseUrl, accepted.body.job_id as string);
    expect(job).toMatchObject({ status: 'completed', error: null });
    expect(job.files).toHaveLength(1);
    expect(logEntries(api.output()).some((entry) => entry.message.includes('UNSAFE REDIS CONFIGURATION'))).toBe(false);
    console.log(`redis-full: submit refused with REDIS_FULL in ${Math.round(refusedMs)} ms`);
  }, 60_000);

  // A log line refused with OOM is logged by the worker, never an unhandled rejection that kills it.
  it('a job running while Redis is full keeps its state: the worker survives, and the job completes once memory frees', async () => {
    // One connection to Jenkins: the job's three files start one after another, each with a log line.
    const { client, jenkins, worker, baseUrl } = await startStack(cleanups, { JENKINS_MAX_CONNECTIONS: '1' });
    const build = jenkins.addBuild(['QA_Release_9.2', 'full-running'], 3, {
      artifacts: Array.from({ length: 3 }, (_, index) => ({ relativePath: `hapy/reports/junit/f-${index}.xml`, size: 8_000 + index })),
    });
    // 8 KB/s per response: a file takes about a second, so a new file starts while Redis is full.
    jenkins.setThrottle(8_000);
    const submitted = await postJson(`${baseUrl}/api/v1/jenkins/download`, { job_url: build });
    expect(submitted.status).toBe(202);
    const id = submitted.body.job_id as string;
    await waitFor(
      async () => ((await getJson(`${baseUrl}/api/v1/jenkins/download/${id}/logs`)).body.lines as unknown[]).length >= 2,
      'the job to start its first file',
      15_000,
      50,
    );
    await fillRedis(client);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const workerAlive = worker.child.exitCode === null;
    await client.del(FILLER);
    jenkins.setThrottle(undefined);
    expect(workerAlive, worker.output()).toBe(true);
    const job = await finished(baseUrl, id);
    expect(job).toMatchObject({ status: 'completed', error: null });
    for (const file of job.files as Array<{ path: string; sha256: string }>) {
      expect(file.sha256).toBe(jenkins.artifactSha256(build, file.path.split('/').slice(3).join('/')));
    }
  }, 60_000);
});

describe('maxmemory-policy is checked at start', () => {
  const cleanups: Array<() => Promise<unknown>> = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** Starts an API process against a redis-server started with `redisArgs`; returns both. */
  const startApiAgainst = async (redisArgs: string[]) => {
    const redis = await startRestartableRedisServer(redisArgs);
    cleanups.push(() => redis.destroy());
    const downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-policy-'));
    cleanups.push(() => rm(downloadDir, { recursive: true, force: true }));
    const port = await freePort();
    const api = startScript('api', { ...testEnv('http://127.0.0.1:9/', downloadDir, { REDIS_URL: redis.url }), PORT: String(port) });
    cleanups.push(async () => expect(await api.stop()).toBe(0));
    await waitReady(`http://127.0.0.1:${port}`, api);
    return { redis, api };
  };

  it('an API against a Redis with maxmemory-policy allkeys-lru warns that keys (jobs) can be evicted', async () => {
    const { api } = await startApiAgainst(['--maxmemory-policy', 'allkeys-lru']);
    const warning = await waitFor(
      () => logEntries(api.output()).find((entry) => entry.message.includes('maxmemory-policy is "allkeys-lru", not "noeviction"')),
      'the maxmemory-policy warning in the API output',
      5_000,
    );
    expect(warning.level).toBe('warn');
    expect(warning.message).toContain('UNSAFE REDIS CONFIGURATION');
    expect(warning.maxmemory_policy).toBe('allkeys-lru');
  });

  it('an API against a Redis whose CONFIG command is renamed says the policy could not be checked', async () => {
    const { api } = await startApiAgainst(['--rename-command', 'CONFIG', 'ferry-test-hidden-config']);
    const warning = await waitFor(
      () => logEntries(api.output()).find((entry) => entry.message.includes('Could not check Redis maxmemory-policy')),
      'the could-not-check warning in the API output',
      5_000,
    );
    expect(warning.level).toBe('warn');
    expect(warning.message).toContain('CONFIG GET failed');
  });

  it('checkMaxmemoryPolicy (also for workers) reports the policy, and checks again after a reconnect', async () => {
    const redis = await startRestartableRedisServer(['--maxmemory-policy', 'volatile-lru']);
    cleanups.push(() => redis.destroy());
    const connection = new Redis(redis.url, { retryStrategy: () => 50 });
    connection.on('error', () => undefined);
    cleanups.push(async () => connection.disconnect());
    const messages: string[] = [];
    const sink = new Writable({
      objectMode: true,
      write(entry: { message: string }, _encoding, done) {
        messages.push(entry.message);
        done();
      },
    });
    const logger = winston.createLogger({ level: 'info', transports: [new winston.transports.Stream({ stream: sink })] });
    expect(await checkMaxmemoryPolicy(connection, logger)).toEqual({ ok: false, policy: 'volatile-lru' });
    await waitFor(() => messages.some((message) => message.includes('maxmemory-policy is "volatile-lru"')), 'the warning', 5_000);
    // The operator fixes the policy; the next connection (here: a forced reconnect) checks again.
    const admin = new Redis(redis.url);
    cleanups.push(async () => admin.disconnect());
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    connection.disconnect(true);
    await waitFor(() => messages.includes('Redis maxmemory-policy is noeviction'), 'the check after the reconnect', 5_000);
  });
});
