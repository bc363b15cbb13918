// Redis goes away under a running system: its own redis-server (appendonly yes, as npm start and
// docker-compose run it) is shut down and started again on the same port with the same data, then
// frozen with SIGSTOP, under one API process and one worker process with jobs running.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort, startRestartableRedisServer, type RestartableRedisServer } from '../helpers/redis-server.js';
import { logLines, openSse, type SseReader } from '../helpers/sse-client.js';
import { getJson, postJson, testEnv } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

/** The bound: while Redis is unreachable, every request is answered within one second. */
const BOUND_MS = 1_000;

interface Probe {
  readonly name: string;
  readonly path: string;
  readonly init?: RequestInit;
}

interface Outcome {
  readonly name: string;
  readonly status: number;
  readonly ms: number;
  readonly body: string;
  readonly retryAfter: string | null;
}

describe('Redis goes away and comes back (real redis-server, API and worker processes)', () => {
  let redis: RestartableRedisServer;
  let jenkins: FakeJenkins;
  let downloadDir: string;
  let api: ChildService;
  let worker: ChildService;
  let baseUrl: string;
  const readers: SseReader[] = [];

  beforeAll(async () => {
    redis = await startRestartableRedisServer(['--appendonly', 'yes', '--appendfsync', 'everysec']);
    jenkins = await startFakeJenkins();
    downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-outage-'));
    const port = await freePort();
    const env = testEnv(jenkins.url, downloadDir, { REDIS_URL: redis.url, LOG_LEVEL: 'info', WORKER_CONCURRENCY: '2' });
    api = startScript('api', { ...env, PORT: String(port) });
    worker = startScript('worker', env);
    baseUrl = `http://127.0.0.1:${port}`;
    await waitReady(baseUrl, api);
  });

  afterAll(async () => {
    jenkins?.setThrottle(undefined);
    for (const reader of readers) reader.close();
    redis?.resume();
    // Processes first, then what they use.
    const codes = await Promise.all([api, worker].filter((service) => service !== undefined).map((service) => service.stop()));
    await redis?.destroy();
    await jenkins?.close();
    if (downloadDir) await rm(downloadDir, { recursive: true, force: true });
    expect(codes).toEqual(codes.map(() => 0));
  });

  /** Sends one request and measures it from before the request to the end of the body. */
  const timed = async (probe: Probe): Promise<Outcome> => {
    const started = performance.now();
    // 5 s: far past the bound, so a hang fails the assertion below instead of the test's timeout.
    const response = await fetch(`${baseUrl}${probe.path}`, { ...probe.init, signal: AbortSignal.timeout(5_000) });
    const body = await response.text();
    return { name: probe.name, status: response.status, ms: performance.now() - started, body, retryAfter: response.headers.get('retry-after') };
  };

  /** Every kind of request that needs Redis, against an existing job and a build not yet submitted. */
  const probes = (jobId: string, newBuild: string): Probe[] => {
    const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
    return [
      { name: 'submit', path: '/api/v1/jenkins/download', init: json({ job_url: newBuild }) },
      { name: 'submit with Idempotency-Key', path: '/api/v1/jenkins/download', init: json({ job_url: newBuild }, { 'idempotency-key': 'outage-1' }) },
      { name: 'batch submit', path: '/api/v1/jenkins/download-selected', init: json({ jobs: [{ key: 'k', release: '9.1', build_url: newBuild }] }) },
      { name: 'status', path: `/api/v1/jenkins/download/${jobId}/status` },
      { name: 'log page', path: `/api/v1/jenkins/download/${jobId}/logs` },
      { name: 'log stream', path: `/api/v1/jenkins/download/${jobId}` },
      { name: 'list', path: '/api/v1/jenkins/downloads' },
      { name: 'cancel', path: `/api/v1/jenkins/download/${jobId}/cancel`, init: { method: 'POST' } },
      { name: 'delete', path: `/api/v1/jenkins/download/${jobId}`, init: { method: 'DELETE' } },
      { name: 'dashboard API', path: '/admin/queues/api/queues' },
    ];
  };

  /**
   * Sends every probe, /readyz and /healthz in rounds for `durationMs`; asserts each answer and
   * that it came within the bound; returns every outcome.
   */
  const probeOutage = async (jobId: string, newBuild: string, durationMs: number): Promise<Outcome[]> => {
    const outcomes: Outcome[] = [];
    const until = Date.now() + durationMs;
    while (Date.now() < until) {
      for (const probe of probes(jobId, newBuild)) {
        const outcome = await timed(probe);
        outcomes.push(outcome);
        expect(outcome.status, `${probe.name}: ${outcome.body}`).toBe(503);
        expect(JSON.parse(outcome.body), probe.name).toMatchObject({ error: { code: 'REDIS_UNAVAILABLE' } });
        expect(outcome.retryAfter, probe.name).toBe('1');
      }
      const ready = await timed({ name: 'readyz', path: '/readyz' });
      outcomes.push(ready);
      expect(ready.status).toBe(503);
      expect(JSON.parse(ready.body)).toMatchObject({ status: 'unready', reason: 'redis unavailable' });
      const health = await timed({ name: 'healthz', path: '/healthz' });
      outcomes.push(health);
      expect(health.status).toBe(200);
      expect(api.child.exitCode, api.output()).toBeNull();
      expect(worker.child.exitCode, worker.output()).toBeNull();
    }
    for (const outcome of outcomes) expect(outcome.ms, `${outcome.name} took ${Math.round(outcome.ms)} ms`).toBeLessThan(BOUND_MS);
    return outcomes;
  };

  const slowest = (outcomes: readonly Outcome[]) =>
    outcomes.reduce((worst, outcome) => (outcome.ms > worst.ms ? outcome : worst), outcomes[0] as Outcome);

  it('answers 503 REDIS_UNAVAILABLE within a second while Redis is down or frozen, reconnects by itself, and every accepted job completes', async () => {
    const builds = Array.from({ length: 6 }, (_, index) =>
      jenkins.addBuild(['QA_Release_9.1', `outage-${index}`], 10 + index, {
        artifacts: Array.from({ length: 3 }, (__, file) => ({ relativePath: `hapy/reports/junit/r-${file}.xml`, size: 48_000 + file })),
      }),
    );
    const newBuild = jenkins.addBuild(['QA_Release_9.1', 'outage-new'], 1, { artifacts: [{ relativePath: 'hapy/x.order.txt', content: 'x\n' }] });
    // 6 KB/s per response: each artifact takes about 8 s, so two jobs are mid-download through both outages.
    jenkins.setThrottle(6_000);

    const accepted: string[] = [];
    for (const build of builds) {
      const answer = await postJson(`${baseUrl}/api/v1/jenkins/download`, { job_url: build });
      expect(answer.status).toBe(202);
      accepted.push(answer.body.job_id as string);
    }
    const first = accepted[0] as string;
    await waitFor(
      async () => {
        const status = await getJson(`${baseUrl}/api/v1/jenkins/download/${first}/status`);
        return status.body.status === 'running' && (status.body.progress as { files_total: number }).files_total > 0;
      },
      'the first job to be running',
      20_000,
      100,
    );
    const follower = await openSse(`${baseUrl}/api/v1/jenkins/download/${first}`);
    readers.push(follower);
    await waitFor(() => logLines(follower.events).length >= 2, 'two log lines of the first job', 10_000);

    // 1. Redis shuts down (SHUTDOWN: the AOF is written and fsynced) and stays down for 3 s.
    await redis.halt('SIGTERM');
    const down = await probeOutage(first, newBuild, 3_000);

    const restartedAt = Date.now();
    await redis.start();
    await waitFor(async () => (await fetch(`${baseUrl}/readyz`)).status === 200, 'the API to be ready after the restart', 15_000, 50);
    const reconnectMs = Date.now() - restartedAt;
    for (const id of accepted) {
      const status = await getJson(`${baseUrl}/api/v1/jenkins/download/${id}/status`);
      expect(status.status, `job ${id} accepted before the restart is known after it`).toBe(200);
      expect(['pending', 'running', 'completed']).toContain(status.body.status);
    }

    // 2. Redis freezes (SIGSTOP): connections stay open and nothing answers, like a cut network.
    redis.pause();
    let frozen: Outcome[];
    try {
      frozen = await probeOutage(first, newBuild, 2_500);
    } finally {
      redis.resume();
    }
    await waitFor(async () => (await fetch(`${baseUrl}/readyz`)).status === 200, 'the API to be ready after the freeze', 15_000, 50);

    // 3. Everything carries on: each job accepted before the outages completes with the right bytes.
    jenkins.setThrottle(undefined);
    // A build no probe named: a submit that Redis ran late (queued behind the freeze, after its
    // request had been answered 503) may hold newBuild's dedup claim for its 10 s grace.
    const laterBuild = jenkins.addBuild(['QA_Release_9.1', 'outage-later'], 1, { artifacts: [{ relativePath: 'hapy/y.order.txt', content: 'y\n' }] });
    const after = await postJson(`${baseUrl}/api/v1/jenkins/download`, { job_url: laterBuild });
    expect(after.status).toBe(202);
    accepted.push(after.body.job_id as string);
    for (const id of accepted) {
      const status = await waitFor(
        async () => {
          const answer = await getJson(`${baseUrl}/api/v1/jenkins/download/${id}/status`);
          if (answer.body.status === 'failed' || answer.body.status === 'cancelled') throw new Error(`job ${id}: ${JSON.stringify(answer.body)}`);
          return answer.body.status === 'completed' ? answer.body : null;
        },
        `job ${id} to complete`,
        60_000,
        100,
      );
      for (const file of status.files as Array<{ path: string; sha256: string }>) {
        const buildUrl = [...builds, laterBuild].find((build) => file.path.includes(`/${/job\/([^/]+)\/\d+\/$/.exec(build)?.[1]?.replace(/-/g, '_')}/`));
        if (!buildUrl) throw new Error(`no build for ${file.path}`);
        const relative = file.path.split('/').slice(3).join('/');
        expect(file.sha256).toBe(jenkins.artifactSha256(buildUrl, relative));
        const bytes = await readFile(path.join(downloadDir, file.path));
        expect(bytes.equals(jenkins.artifactBytes(buildUrl, relative))).toBe(true);
      }
    }

    // The log stream opened before the outages carried on through them: every line once, then the end.
    await Promise.race([follower.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('follower not closed within 20 s')), 20_000))]);
    expect(follower.events.at(-1)?.event).toBe('complete');
    const page = await getJson(`${baseUrl}/api/v1/jenkins/download/${first}/logs?limit=1000`);
    const stored = (page.body.lines as Array<{ id: string; message: string; status?: string }>).filter((line) => line.status === undefined);
    expect(logLines(follower.events).map(({ id, message }) => ({ id, message }))).toEqual(stored.map(({ id, message }) => ({ id, message })));

    // Neither process exited or restarted; both logged the outage and the recovery.
    expect(api.child.exitCode).toBeNull();
    expect(worker.child.exitCode).toBeNull();
    expect(api.output()).toContain('redis connection restored');
    const worstDown = slowest(down);
    const worstFrozen = slowest(frozen);
    console.log(
      `redis-outage: down: ${down.length} requests, slowest ${worstDown.name} ${Math.round(worstDown.ms)} ms; ` +
        `frozen: ${frozen.length} requests, slowest ${worstFrozen.name} ${Math.round(worstFrozen.ms)} ms; ` +
        `ready again ${reconnectMs} ms after redis-server was back; ${accepted.length} jobs completed`,
    );
  }, 150_000);
});
