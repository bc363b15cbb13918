import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { EMPTY_PROGRESS, type JobData, type JobResult } from '../../shared/job-contract.js';
import { createJobLog, type JobLog } from '../../shared/job-log.js';
import { createKeys } from '../../shared/keys.js';
import { createLogger } from '../../shared/logger.js';
import { createDownloadWorker, END_RECORD_DELAY_MS } from '../../worker/download-worker.js';
import { createLeaseTracker } from '../../worker/job-controls.js';
import { waitFor } from '../helpers/wait-for.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const JOBS = 6;

/**
 * The end records of jobs that complete within END_RECORD_DELAY_MS of each other leave in one write
 * on the worker's auto-pipelined connection, each after BullMQ recorded its job's outcome, and a
 * worker that closes right after its last job still writes them (real Redis, real BullMQ worker).
 */
describe('end records of completed jobs', () => {
  const url = inject('redisUrl');
  const keys = createKeys(`{ends${Date.now()}}`);
  const bull = new Redis(url, { maxRetriesPerRequest: null });
  // As the worker's own connection (createRedis with autoPipelining): what one tick sends is one write.
  const ops = new Redis(url, { enableAutoPipelining: true });
  // The test's own reads, on a connection of their own (the writes of `ops` are counted).
  const reader = new Redis(url);
  const queue = new Queue<JobData, JobResult>(keys.queueName, { connection: bull, prefix: keys.queuePrefix });
  const logger = createLogger({ service: 'test', level: 'error', json: true });

  afterAll(async () => {
    await queue.close();
    bull.disconnect();
    ops.disconnect();
    reader.disconnect();
  });

  /** ferry's download worker on `bull`, with `jobLog` on the auto-pipelined `ops` connection. */
  const startWorker = (jobLog: JobLog, concurrency: number, processor: () => Promise<JobResult>) => {
    const worker = createDownloadWorker<JobData>({
      redis: bull,
      keys,
      // Three parameters: as ferry's processors (BullMQ passes the signal to those only).
      processor: (_job, _token, _signal) => processor(),
      jobLog,
      logger,
      concurrency,
      lockDurationMs: 30_000,
      maxStalls: 1,
      leases: createLeaseTracker(30_000),
    });
    void worker.run();
    return worker;
  };

  const endOf = async (jobId: string) => {
    const last = (await reader.xrevrange(keys.log(jobId), '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
    // An end entry has a status field `s` (shared/job-log.ts).
    const fields = last[0]?.[1] ?? [];
    return fields.includes('s') ? fields : undefined;
  };

  it(`jobs completing ${END_RECORD_DELAY_MS / 5} ms apart: their end records leave together, each after its outcome`, async () => {
    const baseLog = createJobLog({ redis: ops, keys, maxLines: 100, ttlSeconds: 60 });
    const statesAtEnd = new Map<string, Promise<string>>();
    const jobLog: JobLog = {
      ...baseLog,
      async end(jobId, status, error, lastLine) {
        // The job's state, read on another connection as the end record is sent (not before it:
        // waiting for that answer would send each record in a tick of its own).
        statesAtEnd.set(jobId, queue.getJobState(jobId));
        return baseLog.end(jobId, status, error, lastLine);
      },
    };
    const releases: Array<() => void> = [];
    const worker = startWorker(jobLog, JOBS, () => new Promise<JobResult>((resolve) => releases.push(() => resolve({ files: [], progress: EMPTY_PROGRESS }))));
    try {
      const jobs = await queue.addBulk(Array.from({ length: JOBS }, (_, index) => ({ name: 'download', data: { job_url: `https://jenkins.example/job/x/${index + 1}/`, release: '1.0' } as JobData })));
      await waitFor(async () => releases.length === JOBS, 'every job running', 10_000, 10);
      await sleep(50); // the first end-record tick of nothing has long passed; the connection is idle

      // Count what the worker's connection writes from here on (its socket, observed, not replaced).
      const stream = (ops as unknown as { stream: { write: (...args: unknown[]) => boolean } }).stream;
      const write = stream.write.bind(stream);
      let writes = 0;
      stream.write = (...args: unknown[]) => {
        writes += 1;
        return write(...args);
      };
      try {
        // The jobs complete one after another, a few milliseconds apart (each a separate
        // moveToFinished answer, so a separate 'completed' event).
        for (const release of releases) {
          release();
          await sleep(END_RECORD_DELAY_MS / 5);
        }
        const ids = jobs.map((job) => job.id as string);
        await waitFor(async () => (await Promise.all(ids.map(endOf))).every(Boolean), 'every end record', 10_000, 5);
        // One write per END_RECORD_DELAY_MS of completions (6 over about 12 ms: 2, a third on a
        // slow machine); one per job without the batching.
        expect(writes).toBeLessThanOrEqual(3);
        expect(writes).toBeGreaterThanOrEqual(1);
        for (const id of ids) expect(await statesAtEnd.get(id)).toBe('completed');
      } finally {
        stream.write = write;
      }
    } finally {
      await worker.close();
    }
  });

  it('a worker closed right after its last job still writes that job\'s end record (recorded())', async () => {
    const worker = startWorker(createJobLog({ redis: ops, keys, maxLines: 100, ttlSeconds: 60 }), 1, async () => ({ files: [], progress: EMPTY_PROGRESS }));
    const completed = new Promise<string>((resolve) => worker.once('completed', (job) => resolve(job.id as string)));
    await queue.add('download', { job_url: 'https://jenkins.example/job/x/99/', release: '1.0' } as JobData);
    const jobId = await completed;
    // At once, while its end record waits for its tick.
    await worker.close();
    await worker.recorded();
    expect(await endOf(jobId)).toBeDefined();
  });

  it('an end record Redis refuses is tried again until it is written', async () => {
    const baseLog = createJobLog({ redis: ops, keys, maxLines: 100, ttlSeconds: 60 });
    let refusals = 2;
    const tries: string[] = [];
    const jobLog: JobLog = {
      ...baseLog,
      async end(jobId, status, error, lastLine) {
        tries.push(jobId);
        if (refusals > 0) {
          refusals -= 1;
          throw new Error("OOM command not allowed when used memory > 'maxmemory'.");
        }
        return baseLog.end(jobId, status, error, lastLine);
      },
    };
    const worker = startWorker(jobLog, 1, async () => ({ files: [], progress: EMPTY_PROGRESS }));
    try {
      const completed = new Promise<string>((resolve) => worker.once('completed', (job) => resolve(job.id as string)));
      await queue.add('download', { job_url: 'https://jenkins.example/job/x/98/', release: '1.0' } as JobData);
      const jobId = await completed;
      await waitFor(async () => (await endOf(jobId)) !== undefined, 'the end record, after two refusals', 5_000, 10);
      expect(tries).toEqual([jobId, jobId, jobId]);
    } finally {
      await worker.close();
      await worker.recorded();
    }
  });
});
