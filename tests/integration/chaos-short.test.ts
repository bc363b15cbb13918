import { expect, it } from 'vitest';
import { formatFigures, runChaos } from '../chaos/harness.js';

// The short chaos run in `npm test` (the full one is `npm run chaos`): every accepted job ends,
// with correct files, through worker SIGKILLs, a Redis restart and an API SIGTERM.
it('a short chaos run loses no accepted job and writes no wrong file', async () => {
  const figures = await runChaos({
    jobs: 24,
    apis: 2,
    workers: 2,
    killEveryMs: 2_500,
    submitOverMs: 6_000,
    redisRestartAtMs: 2_500,
    apiStopAtMs: 4_500,
    drainTimeoutMs: 90_000,
  });
  const report = formatFigures(figures).join('\n');
  expect(figures.accepted, report).toBeGreaterThan(0);
  expect(figures.redisRestarts, report).toBe(1);
  expect(figures.apiStops, report).toBe(1);
  expect(figures.workerKills, report).toBeGreaterThan(0);
  expect(figures.lost, report).toBe(0);
  expect(figures.wrongChecksum, report).toBe(0);
  expect(figures.stuckRunning, report).toBe(0);
  expect(figures.completed + figures.failed, report).toBe(figures.accepted);
}, 180_000);
