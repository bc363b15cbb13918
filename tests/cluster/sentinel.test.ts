import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { getJson, postJson } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';
import { startSentinelSet, type SentinelSet } from './harness.js';

const JOBS = 30;

interface Outcome {
  readonly accepted: string[];
  readonly refused: number;
  readonly lost: string[];
  readonly ends: Record<string, number>;
}

const cleanups: Array<() => Promise<unknown>> = [];

afterAll(async () => {
  // Last in, first out: processes before the Redis they use.
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

/**
 * Submits JOBS downloads one after another, SIGKILLs the master once a third are accepted, brings the
 * old master back as a replica once the sentinels have promoted the other, and waits for every
 * accepted job to end. A job answered 202 but unknown afterwards was lost by the failover.
 */
async function failoverRun(waitReplicas: number): Promise<Outcome> {
  const set: SentinelSet = await startSentinelSet(`ferry-w${waitReplicas}`);
  cleanups.push(() => set.stop());
  const jenkins: FakeJenkins = await startFakeJenkins();
  cleanups.push(() => jenkins.close());
  const urls = Array.from({ length: JOBS }, (_, index) =>
    jenkins.addBuild(['QA_Release_8.3', `failover-${waitReplicas}-${index}`], 1 + index, {
      artifacts: Array.from({ length: 3 }, (_, file) => ({ relativePath: `hapy/reports/junit/s-${file}.xml`, size: 20_000 + file })),
    }),
  );
  const downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-sentinel-dl-'));
  cleanups.push(() => rm(downloadDir, { recursive: true, force: true }));
  const env = {
    REDIS_URL: '',
    REDIS_SENTINELS: set.seeds,
    REDIS_SENTINEL_NAME: set.name,
    REDIS_PASSWORD: set.password,
    REDIS_WAIT_REPLICAS: String(waitReplicas),
    JENKINS_URL: jenkins.url,
    DOWNLOAD_DIR: downloadDir,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    JOB_ATTEMPTS: '3',
    // A job whose worker lost its lock in the failover is taken over after this, not after 30 s.
    JOB_LOCK_MS: '4000',
    WORKER_CONCURRENCY: '3',
    RATE_LIMIT_PER_MINUTE: '1000',
  };
  const port = await freePort();
  const services: ChildService[] = [startScript('api', { ...env, PORT: String(port) }), startScript('worker', env), startScript('worker', env)];
  cleanups.push(() => Promise.all(services.map((service) => service.stop())));
  const api = `http://127.0.0.1:${port}`;
  await waitReady(api, services[0] as ChildService);

  jenkins.setThrottle(100_000);
  const accepted: string[] = [];
  let refused = 0;
  let killed = false;
  let failover: Promise<void> | undefined;
  // Each build is submitted until it is accepted (503 while the master is gone), within a bound.
  const deadline = Date.now() + 60_000;
  for (const url of urls) {
    for (;;) {
      const answer = await postJson(`${api}/api/v1/jenkins/download`, { job_url: url }).catch(() => ({ status: 0, body: {} as Record<string, unknown> }));
      if (answer.status === 202 || answer.status === 200) {
        const id = answer.body.job_id as string;
        if (!accepted.includes(id)) accepted.push(id);
        break;
      }
      refused += 1;
      if (Date.now() > deadline) throw new Error(`the API still refuses submissions 60 s into the run: ${answer.status} ${JSON.stringify(answer.body)}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    if (!killed && accepted.length >= JOBS / 3) {
      killed = true;
      const oldMasterPort = set.master.port;
      await set.master.kill();
      failover = (async () => {
        // Bounded: down after 1 s, then an election; a few seconds on loopback.
        await waitFor(async () => (await set.masterPort().catch(() => oldMasterPort)) !== oldMasterPort, 'the sentinels to promote the replica', 30_000, 100);
        // The old master comes back and the sentinels turn it into a replica of the new one.
        await set.restart(set.master);
      })();
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await failover;
  jenkins.setThrottle(undefined);

  // Every accepted job ends (bounded: retries after a lost lock take JOB_LOCK_MS each).
  const ends: Record<string, number> = {};
  const lost: string[] = [];
  for (const id of accepted) {
    const view = await waitFor(async () => {
      const status = await getJson(`${api}/api/v1/jenkins/download/${id}/status`).catch(() => null);
      if (!status || status.status === 503) return null;
      if (status.status === 404) return { status: 'lost', error: null };
      const body = status.body as { status: string; error: string | null };
      return body.status === 'completed' || body.status === 'failed' || body.status === 'cancelled' ? body : null;
    }, `job ${id} to end`, 90_000, 250);
    if (view.status === 'lost') lost.push(id);
    else if (view.status !== 'completed') expect(view.error, `job ${id} failed without a reason`).toBeTruthy();
    ends[view.status] = (ends[view.status] ?? 0) + 1;
  }
  const codes = await Promise.all(services.map((service) => service.stop()));
  expect(codes).toEqual([0, 0, 0]);
  return { accepted, refused, lost, ends };
}

describe('ferry on Redis Sentinel (1 master, 1 replica, 3 sentinels): the master is killed mid-run', () => {
  it('with REDIS_WAIT_REPLICAS=1 API and workers follow the promoted replica, every accepted job ends, none is lost', async () => {
    const outcome = await failoverRun(1);
    process.stdout.write(`sentinel, REDIS_WAIT_REPLICAS=1: ${outcome.accepted.length} accepted, ${outcome.refused} refused answers (503 during the failover), ${outcome.lost.length} lost; ends ${JSON.stringify(outcome.ends)}\n`);
    expect(outcome.accepted.length).toBe(JOBS);
    expect(outcome.lost).toEqual([]);
    expect(outcome.ends.completed ?? 0).toBeGreaterThan(0);
  }, 240_000);

  it('without REDIS_WAIT_REPLICAS the run still ends; the jobs lost by asynchronous replication are counted', async () => {
    const outcome = await failoverRun(0);
    process.stdout.write(`sentinel, REDIS_WAIT_REPLICAS=0: ${outcome.accepted.length} accepted, ${outcome.refused} refused answers (503 during the failover), ${outcome.lost.length} lost; ends ${JSON.stringify(outcome.ends)}\n`);
    expect(outcome.accepted.length).toBe(JOBS);
  }, 240_000);
});
