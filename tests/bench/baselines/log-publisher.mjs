// The "worker" side of the log fan-out scenario: takes the bench's jobs from ferry's queue with a
// BullMQ worker (so they are running, as ferry reports it), and for each publishes LINES log lines,
// one every INTERVAL_MS, with ferry's own shared/job-log.js append (XADD, as a ferry worker does),
// then ends the log as a ferry worker does on completion. Each line carries its number and the wall
// clock (ms, sub-ms precision) taken just before the XADD, so a reader can measure the delay.
// Env: REDIS_URL, QUEUE_PREFIX, JOB_IDS (comma-separated), LINES, INTERVAL_MS.
import { performance } from 'node:perf_hooks';
import process from 'node:process';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'bullmq';
import { createJobLog } from '../../../dist/shared/job-log.js';
import { createKeys } from '../../../dist/shared/keys.js';
import { createLogger } from '../../../dist/shared/logger.js';
import { createRedis } from '../../../dist/shared/redis.js';

const jobIds = new Set((process.env.JOB_IDS ?? '').split(',').filter(Boolean));
const lines = Number(process.env.LINES ?? 200);
const intervalMs = Number(process.env.INTERVAL_MS ?? 50);
const logger = createLogger({ service: 'log-publisher', level: 'warn' });
const redis = createRedis(process.env.REDIS_URL ?? '', 'worker', logger, 'bench-publisher');
const keys = createKeys(process.env.QUEUE_PREFIX ?? '{ferry}');
const jobLog = createJobLog({ redis, keys, maxLines: 10_000, ttlSeconds: 86_400 });
const now = () => performance.timeOrigin + performance.now();
let published = 0;
let late = 0;
let ended = 0;

const worker = new Worker(
  keys.queueName,
  async (job) => {
    if (!jobIds.has(job.id)) throw new Error(`unexpected job ${job.id}`);
    const started = performance.now();
    for (let line = 1; line <= lines; line += 1) {
      const wait = started + line * intervalMs - performance.now();
      if (wait > 0) await sleep(wait);
      else late += 1;
      await jobLog.append(job.id, `bench line ${line} at ${now().toFixed(3)}`);
      published += 1;
    }
    return { files: [], progress: { modules_done: 0, modules_total: 0, files_done: 0, files_total: 0, bytes_done: 0, bytes_total: 0 } };
  },
  { connection: redis, prefix: keys.queuePrefix, concurrency: jobIds.size },
);
worker.on('error', (error) => logger.warn('worker error', { error: error.message }));
worker.on('completed', (job) => {
  void jobLog.end(job.id, 'completed', null).then(async () => {
    ended += 1;
    if (ended < jobIds.size) return;
    process.stdout.write(`${JSON.stringify({ published, late })}\n`);
    await worker.close();
    redis.disconnect();
  });
});
