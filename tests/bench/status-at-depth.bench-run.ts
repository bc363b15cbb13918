/**
 * Scenario 2, status at depth: GET /api/v1/jenkins/download/:id/status at 50 connections, p50, p99
 * and requests per second, on two ferry API processes side by side: one whose queue holds only the
 * probe jobs (the baseline), one whose queue holds the same probes plus 100,000 waiting jobs
 * (20,000 in quick mode), measured in alternating rounds so a busy moment of the shared machine
 * does not land on one side only. The probes are the oldest waiting jobs, so a read that scanned
 * the wait list (BullMQ's getState) would pay for the whole depth on every request.
 */
import { it } from 'vitest';
import { startScenario } from './scenario.js';
import { createKeys } from '../../shared/keys.js';
import { ferryEnv, fillQueue, startBareApi, startFerryApi } from './ferry-fleet.js';
import { median, QUICK } from './harness.js';
import { describeLoad, runLoad, type LoadResult } from './load.js';

const DEPTH = QUICK ? 20_000 : 100_000;
const PROBES = 100;
const CONNECTIONS = 50;
const SECONDS = QUICK ? 3 : 4;
// Many short alternating rounds and their median: a busy moment of the shared machine then spoils
// one round of one side, not the figure.
const ROUNDS = QUICK ? 1 : 6;
const WARMUP_SECONDS = QUICK ? 1 : 2;

it('status at depth: status reads on a deep queue vs a queue holding only the probes', async () => {
  const depth = DEPTH.toLocaleString('en-US');
  const { redisServer, redis, jenkins, report, stop } = await startScenario(
    'status-at-depth',
    `2. Status at depth: GET .../status, ${CONNECTIONS} connections, ${ROUNDS} x ${SECONDS} s per side, ${depth} waiting jobs vs only the ${PROBES} probe jobs`,
  );
  const shallowKeys = createKeys('{shallow}');
  const deepKeys = createKeys('{ferry}');
  const env = ferryEnv(redisServer.url, jenkins.url, '/tmp/ferry-bench-unused');
  const shallowApi = await startFerryApi({ ...env, QUEUE_PREFIX: shallowKeys.queuePrefix });
  const deepApi = await startFerryApi({ ...env, QUEUE_PREFIX: deepKeys.queuePrefix });
  // Reference: a bare Express route answering queue.getJob(id) (one HGETALL) on the deep queue.
  const bare = await startBareApi(redisServer.url, deepKeys.queuePrefix);
  try {
    const jobUrl = (index: number) => `${jenkins.url}job/QA_Release_6.4/job/deep-queue/${index + 1}/`;
    const shallowProbes = await fillQueue(redis, shallowKeys.queuePrefix, PROBES, jobUrl);
    const deepProbes = await fillQueue(redis, deepKeys.queuePrefix, PROBES, jobUrl);
    const fillStarted = Date.now();
    await fillQueue(redis, deepKeys.queuePrefix, DEPTH, (index) => jobUrl(PROBES + index));
    const fillSeconds = (Date.now() - fillStarted) / 1000;
    const waiting = await redis.llen(`${deepKeys.queuePrefix}:${deepKeys.queueName}:wait`);
    report.log(`filled ${depth} jobs in ${fillSeconds.toFixed(1)} s (addBulk, 1,000 per call); deep wait list holds ${waiting}`);
    for (const [url, id] of [[shallowApi.url, shallowProbes[0]], [deepApi.url, deepProbes[0]]] as const) {
      const view = (await (await fetch(`${url}/api/v1/jenkins/download/${id}/status`)).json()) as { status?: string };
      if (view.status !== 'pending') throw new Error(`probe job is not pending: ${JSON.stringify(view)}`);
    }

    let next = 0;
    const load = (origin: string, probes: readonly string[], seconds: number) =>
      runLoad({
        origin,
        connections: CONNECTIONS,
        durationSeconds: seconds,
        method: 'GET',
        path: () => `/api/v1/jenkins/download/${probes[(next += 1) % probes.length]}/status`,
      });
    await load(shallowApi.url, shallowProbes, WARMUP_SECONDS);
    await load(deepApi.url, deepProbes, WARMUP_SECONDS);
    const shallow: LoadResult[] = [];
    const deep: LoadResult[] = [];
    for (let round = 1; round <= ROUNDS; round += 1) {
      shallow.push(await load(shallowApi.url, shallowProbes, SECONDS));
      report.log(`round ${round}, ${PROBES} jobs queued: ${describeLoad(shallow.at(-1) as LoadResult)}`);
      deep.push(await load(deepApi.url, deepProbes, SECONDS));
      report.log(`round ${round}, ${waiting} jobs queued: ${describeLoad(deep.at(-1) as LoadResult)}`);
    }
    // The reference is left out of quick mode (time).
    let reference: LoadResult | null = null;
    if (!QUICK) {
      await load(bare.url, deepProbes, WARMUP_SECONDS);
      reference = await load(bare.url, deepProbes, SECONDS);
      report.log(`bare Express + queue.getJob on the deep queue: ${describeLoad(reference)}`);
    }

    const mid = (results: LoadResult[], pick: (r: LoadResult) => number) => median(results.map(pick));
    report.figure(`status p50 at ${depth} waiting`, 'ms', mid(deep, (r) => r.p50), { baseline: mid(shallow, (r) => r.p50), goal: { ratioAtMost: 1.5 } });
    report.figure(`status p99 at ${depth} waiting`, 'ms', mid(deep, (r) => r.p99), { baseline: mid(shallow, (r) => r.p99), goal: { ratioAtMost: 1.5 } });
    report.figure(`status throughput at ${depth} waiting`, 'req/s', mid(deep, (r) => r.rps), { baseline: mid(shallow, (r) => r.rps), goal: { atLeast: 5_000 } });
    const refused = [...shallow, ...deep].reduce((sum, r) => sum + r.non2xx + r.errors, 0);
    report.figure('status answers other than 200 (or errors)', 'requests', refused, { goal: { atMost: 0 } });
    if (reference) report.figure('bare Express + queue.getJob, same depth (reference)', 'req/s', reference.rps, { baseline: mid(deep, (r) => r.rps) });
    report.figure('queue fill rate (addBulk, for orientation)', 'jobs/s', DEPTH / fillSeconds);
    report.note(`figures are the median of ${ROUNDS} alternating round(s); latency is autocannon's, in whole milliseconds`);
  } finally {
    await shallowApi.service.stop();
    await deepApi.service.stop();
    await bare.process.stop();
    await stop();
    await report.save();
  }
});
