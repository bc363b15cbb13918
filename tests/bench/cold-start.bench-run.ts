/**
 * Scenario 6, cold start: from spawning `node dist/api/main.js` until GET /readyz answers 200 (and
 * the same through `npm run api`, which adds npm's own start), and from spawning
 * `node dist/worker/main.js` until it takes a job already waiting (the job's processedOn). Built
 * JavaScript only, no compile step. Baselines: the bench's bare Express + BullMQ process
 * (baselines/bare-api.mjs) until its /readyz answers, and a bare BullMQ worker
 * (baselines/bare-worker.mjs) until it takes its first job.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { it } from 'vitest';
import { startScenario } from './scenario.js';
import { createKeys } from '../../shared/keys.js';
import { startScript } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { asNodeChild, ferryEnv, startFerryApi, submitDownload } from './ferry-fleet.js';
import { median, QUICK, sleep, startCommand, startNode, waitFor200, type NodeChild } from './harness.js';

const RUNS = QUICK ? 3 : 5;
const NPM_RUNS = QUICK ? 1 : 3;

/** Seconds from `start()` until GET <url>/readyz answers 200. */
async function timeToReady(start: (port: number) => NodeChild): Promise<number> {
  const port = await freePort();
  const started = performance.now();
  const child = start(port);
  try {
    await waitFor200(`http://127.0.0.1:${port}/readyz`, child, 20_000, 5);
    return (performance.now() - started) / 1000;
  } finally {
    await child.stop();
  }
}

it('cold start: API until /readyz 200, worker until it takes its first job', async () => {
  const { redisServer, redis, jenkins, report, stop } = await startScenario(
    'cold-start',
    `6. Cold start: process spawn until /readyz 200 (API) and until the first job is taken (worker), ${RUNS} starts each`,
  );
  const work = await mkdtemp(path.join(os.tmpdir(), 'ferry-bench-cold-'));
  // A short drain window on stop: it does not change the start, and the runs follow each other.
  const env = ferryEnv(redisServer.url, jenkins.url, work, { SHUTDOWN_TIMEOUT_MS: '400' });
  let build = 0;
  const newBuild = () =>
    jenkins.addBuild(['QA_Release_6.4', 'cold-start'], (build += 1), { artifacts: [{ relativePath: 'hapy/junit.xml', size: 1_000 }] });

  /** Seconds from spawning `start()` until the waiting job `jobId` of queue `prefix` is taken. */
  const timeToFirstJob = async (prefix: string, jobId: string, start: () => NodeChild): Promise<number> => {
    const jobKey = `${prefix}:downloads:${jobId}`;
    const spawnedAt = Date.now();
    const child = start();
    try {
      const deadline = spawnedAt + 20_000;
      for (;;) {
        const processedOn = await redis.hget(jobKey, 'processedOn');
        if (processedOn) return (Number(processedOn) - spawnedAt) / 1000;
        if (Date.now() > deadline || child.child.exitCode !== null) throw new Error(`job ${jobId} not taken: ${child.output()}`);
        await sleep(5);
      }
    } finally {
      await child.stop();
    }
  };

  try {
    const apiTimes: number[] = [];
    const bareApiTimes: number[] = [];
    for (let run = 0; run < RUNS; run += 1) {
      bareApiTimes.push(await timeToReady((port) => startNode('tests/bench/baselines/bare-api.mjs', [], { REDIS_URL: redisServer.url, PORT: String(port) })));
      apiTimes.push(await timeToReady((port) => asNodeChild(startScript('api', { ...env, PORT: String(port) }))));
    }
    const npmTimes: number[] = [];
    for (let run = 0; run < NPM_RUNS; run += 1) {
      npmTimes.push(await timeToReady((port) => startCommand('npm', ['run', '--silent', 'api'], { ...env, PORT: String(port) })));
    }
    report.log(`node dist/api/main.js: ${apiTimes.map((t) => t.toFixed(2)).join(' ')} s; bare API: ${bareApiTimes.map((t) => t.toFixed(2)).join(' ')} s`);
    report.log(`npm run api: ${npmTimes.map((t) => t.toFixed(2)).join(' ')} s`);

    const api = await startFerryApi(env);
    const bareQueue = new Queue('downloads', { connection: redis, prefix: '{bare}' });
    const workerTimes: number[] = [];
    const bareWorkerTimes: number[] = [];
    try {
      for (let run = 0; run < RUNS; run += 1) {
        const bareJob = await bareQueue.add('download', { job_url: newBuild(), release: '6.4' });
        bareWorkerTimes.push(
          await timeToFirstJob('{bare}', bareJob.id as string, () =>
            startNode('tests/bench/baselines/bare-worker.mjs', [], { REDIS_URL: redisServer.url, DOWNLOAD_DIR: path.join(work, 'bare') }),
          ),
        );
        const jobId = await submitDownload(api.url, newBuild());
        workerTimes.push(await timeToFirstJob(createKeys('{ferry}').queuePrefix, jobId, () => asNodeChild(startScript('worker', env))));
      }
    } finally {
      await bareQueue.close();
      await api.service.stop();
    }
    report.log(`node dist/worker/main.js: ${workerTimes.map((t) => t.toFixed(2)).join(' ')} s; bare worker: ${bareWorkerTimes.map((t) => t.toFixed(2)).join(' ')} s`);

    const bareApi = median(bareApiTimes);
    const bareWorker = median(bareWorkerTimes);
    report.figure(`API start to /readyz 200, median of ${RUNS}`, 's', median(apiTimes), { baseline: bareApi, goal: { below: 1.5 } });
    report.figure(`API start to /readyz 200, slowest of ${RUNS}`, 's', Math.max(...apiTimes), { baseline: Math.max(...bareApiTimes), goal: { below: 1.5 } });
    report.figure(`npm run api to /readyz 200, median of ${NPM_RUNS}`, 's', median(npmTimes), { baseline: bareApi, goal: { below: 1.5 } });
    report.figure(`worker start to first job taken, median of ${RUNS}`, 's', median(workerTimes), { baseline: bareWorker, goal: { below: 1.5 } });
    report.figure(`worker start to first job taken, slowest of ${RUNS}`, 's', Math.max(...workerTimes), {
      baseline: Math.max(...bareWorkerTimes),
      goal: { below: 1.5 },
    });
  } finally {
    await stop();
    await rm(work, { recursive: true, force: true });
    await report.save();
  }
});
