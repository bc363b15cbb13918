import os from 'node:os';
import { expect, it } from 'vitest';
import { formatFigures, runChaos } from './harness.js';

// `npm run chaos`: the full run. Its figures go into the README's "Chaos run" table.
it('chaos: 200 jobs, 2 APIs, 3 workers, a worker SIGKILL every few seconds, a Redis restart, an API SIGTERM', async () => {
  const figures = await runChaos({
    jobs: Number(process.env.CHAOS_JOBS ?? 200),
    apis: 2,
    workers: 3,
    killEveryMs: 4_000,
    submitOverMs: 40_000,
    redisRestartAtMs: 15_000,
    apiStopAtMs: 25_000,
    drainTimeoutMs: 300_000,
    log: (line) => console.log(line),
  });
  const cpus = os.cpus();
  console.log(`\nchaos run on ${cpus.length} x ${cpus[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
  for (const line of formatFigures(figures)) console.log(line);
  expect(figures.lost).toBe(0);
  expect(figures.wrongChecksum).toBe(0);
  expect(figures.stuckRunning).toBe(0);
});
