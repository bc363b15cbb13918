/**
 * Scenario 1, submit: POST /api/v1/jenkins/download at 50 concurrent connections against ferry's API
 * process, and against a bare Express process in the same setup whose route only calls queue.add
 * (tests/bench/baselines/bare-api.mjs). Every request names a new build, so every one is a new job
 * (no dedup shortcut). The two are measured alternately, after a warm-up of each.
 */
import { it } from 'vitest';
import { startScenario } from './scenario.js';
import { ferryEnv, startBareApi, startFerryApi } from './ferry-fleet.js';
import { median, QUICK } from './harness.js';
import { describeLoad, runLoad, type LoadResult } from './load.js';

const CONNECTIONS = 50;
const SECONDS = QUICK ? 3 : 4;
// Many short alternating rounds and their median: a busy moment of the shared machine then spoils
// one round of one side, not the figure.
const ROUNDS = QUICK ? 1 : 6;
const WARMUP_SECONDS = QUICK ? 1 : 2;

it('submit: ferry API vs a bare queue.add endpoint at 50 connections', async () => {
  const { redisServer, jenkins, report, stop } = await startScenario(
    'submit',
    `1. Submit: POST /api/v1/jenkins/download, ${CONNECTIONS} connections, ${ROUNDS} x ${SECONDS} s per side, vs a bare Express endpoint calling only queue.add`,
  );
  const ferry = await startFerryApi(ferryEnv(redisServer.url, jenkins.url, '/tmp/ferry-bench-unused'));
  const bare = await startBareApi(redisServer.url);
  // Reference only: the bare endpoint on ferry's HTTP server (api/http-server.ts), to show how much
  // of ferry's figure that server alone gives any Express app.
  const bareBorn = await startBareApi(redisServer.url, '{bare-born}', true);
  try {
    let build = 0;
    const load = (origin: string, seconds: number) =>
      runLoad({
        origin,
        connections: CONNECTIONS,
        durationSeconds: seconds,
        method: 'POST',
        path: () => '/api/v1/jenkins/download',
        body: () => JSON.stringify({ job_url: `${jenkins.url}job/QA_Release_6.4/job/main-regression/${(build += 1)}/` }),
      });
    await load(bare.url, WARMUP_SECONDS);
    await load(ferry.url, WARMUP_SECONDS);
    await load(bareBorn.url, WARMUP_SECONDS);
    const runs: { ferry: LoadResult[]; bare: LoadResult[]; bareBorn: LoadResult[] } = { ferry: [], bare: [], bareBorn: [] };
    for (let round = 1; round <= ROUNDS; round += 1) {
      const baseline = await load(bare.url, SECONDS);
      report.log(`round ${round} bare:  ${describeLoad(baseline)}`);
      runs.bare.push(baseline);
      const measured = await load(ferry.url, SECONDS);
      report.log(`round ${round} ferry: ${describeLoad(measured)}`);
      runs.ferry.push(measured);
      const reference = await load(bareBorn.url, SECONDS);
      report.log(`round ${round} bare on ferry's HTTP server: ${describeLoad(reference)}`);
      runs.bareBorn.push(reference);
    }
    const mid = (results: LoadResult[], pick: (r: LoadResult) => number) => median(results.map(pick));
    report.figure('submit throughput (202 answers)', 'req/s', mid(runs.ferry, (r) => r.rps), {
      baseline: mid(runs.bare, (r) => r.rps),
      goal: { ratioAtLeast: 0.8 },
    });
    report.figure('submit latency p50', 'ms', mid(runs.ferry, (r) => r.p50), { baseline: mid(runs.bare, (r) => r.p50) });
    report.figure('submit latency p99', 'ms', mid(runs.ferry, (r) => r.p99), { baseline: mid(runs.bare, (r) => r.p99) });
    report.figure("bare endpoint on ferry's HTTP server (reference)", 'req/s', mid(runs.bareBorn, (r) => r.rps), { baseline: mid(runs.ferry, (r) => r.rps) });
    const refused = runs.ferry.reduce((sum, r) => sum + r.non2xx + r.errors, 0);
    report.figure('ferry answers other than 202 (or errors)', 'requests', refused, { goal: { atMost: 0 } });
    report.note(`figures are the median of ${ROUNDS} alternating round(s); both processes run with NODE_ENV=production against the same Redis`);
  } finally {
    await ferry.service.stop();
    await bare.process.stop();
    await bareBorn.process.stop();
    await stop();
    await report.save();
  }
});
