import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { EMPTY_PROGRESS, type Progress } from '../../shared/job-contract.js';
import { createJobLog } from '../../shared/job-log.js';
import { parseProgress } from '../../shared/job-progress.js';
import { createKeys } from '../../shared/keys.js';
import { createJobJournal } from '../../worker/job-journal.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Redis's count of calls of one command so far (INFO commandstats). */
async function calls(redis: Redis, command: string): Promise<number> {
  const match = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(await redis.info('commandstats'));
  return Number(match?.[1] ?? 0);
}

describe('job journal: a job log written in bursts (real Redis)', () => {
  const redis = new Redis(inject('redisUrl'));
  const keys = createKeys(`{journal${Date.now()}}`);
  const jobLog = createJobLog({ redis, keys, maxLines: 1_000, ttlSeconds: 60 });
  const messages = async (jobId: string) =>
    ((await redis.xrange(keys.log(jobId), '-', '+')) as Array<[string, string[]]>).map(([id, fields]) => [id, fields[1]]);
  const snapshot = async (jobId: string) => parseProgress(((await redis.xrevrange(keys.progress(jobId), '+', '-', 'COUNT', 1)) as Array<[string, string[]]>)[0]?.[1]);
  const progress = (files_done: number): Progress => ({ ...EMPTY_PROGRESS, files_total: 3, files_done });
  const errors: unknown[] = [];
  const journalFor = (jobId: string, extra: Partial<Parameters<typeof createJobJournal>[0]> = {}) =>
    createJobJournal({ jobLog, jobId, delayMs: 20, onError: (error) => errors.push(error), closeRetryDelaysMs: [20, 20, 20], ...extra });

  afterAll(() => {
    redis.disconnect();
  });

  it('writes a burst of lines and the newest snapshot in one script call, in order, each line once', async () => {
    const journal = journalFor('burst');
    const before = await calls(redis, 'evalsha');
    for (let index = 1; index <= 5; index += 1) journal.line(`line ${index}`);
    journal.progress(progress(1));
    journal.progress(progress(2));
    await journal.flush();
    expect(await calls(redis, 'evalsha')).toBe(before + 1);
    expect(await messages('burst')).toEqual([1, 2, 3, 4, 5].map((n) => [`0-${n}`, `line ${n}`]));
    expect(await snapshot('burst')).toMatchObject({ files_done: 2, files_total: 3 });
    // Nothing queued: a flush writes nothing.
    await journal.flush();
    expect(await calls(redis, 'evalsha')).toBe(before + 1);
  });

  it('writes nothing more once the lease is lost: queued lines and snapshot are dropped, later ones ignored', async () => {
    let leaseHeld = true;
    const journal = journalFor('stale', { canWrite: () => leaseHeld });
    journal.line('before the pause');
    await journal.flush();
    journal.line('queued while paused');
    journal.progress(progress(3));
    leaseHeld = false;
    await journal.flush();
    journal.line('after waking');
    await journal.close();
    leaseHeld = true; // even if asked again, what was dropped stays dropped
    await journal.flush();
    expect((await messages('stale')).map(([, message]) => message)).toEqual(['before the pause']);
    expect((await snapshot('stale')).files_done).not.toBe(3);
  });

  it('writes on its own within delayMs, without a flush', async () => {
    const journal = journalFor('timer');
    journal.line('a');
    journal.line('b');
    await waitFor(async () => (await messages('timer')).length === 2, 'the burst written by the timer', 2_000, 10);
    expect((await messages('timer')).map(([, message]) => message)).toEqual(['a', 'b']);
  });

  it('keeps a burst Redis refused, in front of newer lines, and writes it once when Redis takes it', async () => {
    const journal = journalFor('refused');
    journal.line('first');
    await journal.flush();
    // The log key of the wrong type makes every XADD fail: the script writes nothing.
    await redis.rename(keys.log('refused'), `${keys.log('refused')}:aside`);
    await redis.set(keys.log('refused'), 'not a stream');
    journal.line('second');
    journal.progress(progress(1));
    await expect(journal.flush()).rejects.toThrow(/WRONGTYPE/);
    journal.line('third');
    await expect(journal.flush()).rejects.toThrow(/WRONGTYPE/);
    await redis.del(keys.log('refused'));
    await redis.rename(`${keys.log('refused')}:aside`, keys.log('refused'));
    journal.line('fourth');
    await journal.flush();
    expect((await messages('refused')).map(([, message]) => message)).toEqual(['first', 'second', 'third', 'fourth']);
    expect(await snapshot('refused')).toMatchObject({ files_done: 1 });
  });

  it('a burst whose answer was lost after Redis ran it is sent again and applied once', async () => {
    // A JobLog whose first appendBatch reaches Redis (the real script runs) and then fails as a
    // dropped connection would: the journal cannot tell, and sends the burst again.
    let lose = 1;
    const lossy: typeof jobLog = {
      ...jobLog,
      async appendBatch(jobId, lines, batchOptions) {
        await jobLog.appendBatch(jobId, lines, batchOptions);
        if (lose > 0) {
          lose -= 1;
          throw new Error('Connection is closed.');
        }
      },
    };
    const journal = journalFor('lost-answer', { jobLog: lossy });
    journal.line('one');
    journal.line('two');
    await expect(journal.flush()).rejects.toThrow(/Connection is closed/);
    journal.line('three');
    await journal.close();
    expect((await messages('lost-answer')).map(([, message]) => message)).toEqual(['one', 'two', 'three']);
    // The same burst number twice, straight to the script: the second is skipped.
    const line = [{ message: 'once', timestamp: new Date().toISOString() }];
    await jobLog.appendBatch('twice', line, { burst: { writer: 'w1', seq: 1 } });
    await jobLog.appendBatch('twice', line, { burst: { writer: 'w1', seq: 1 } });
    await jobLog.appendBatch('twice', line, { burst: { writer: 'w2', seq: 1 } });
    expect((await messages('twice')).map(([, message]) => message)).toEqual(['once', 'once']);
    expect(await redis.ttl(keys.logWriters('twice'))).toBeGreaterThan(0);
    await jobLog.remove('twice');
    expect(await redis.exists(keys.logWriters('twice'))).toBe(0);
  });

  it('while Redis refuses, at most maxQueuedLines wait; the oldest give way to a line saying how many were dropped', async () => {
    const journal = journalFor('capped', { maxQueuedLines: 3 });
    journal.line('written');
    await journal.flush();
    await redis.rename(keys.log('capped'), `${keys.log('capped')}:aside`);
    await redis.set(keys.log('capped'), 'not a stream');
    journal.line('refused burst');
    await expect(journal.flush()).rejects.toThrow(/WRONGTYPE/);
    for (let index = 1; index <= 7; index += 1) journal.line(`queued ${index}`);
    await redis.del(keys.log('capped'));
    await redis.rename(`${keys.log('capped')}:aside`, keys.log('capped'));
    await journal.close();
    // The burst already sent is kept whole (it may have been written); of the 7 queued after it,
    // the newest 3 remain.
    expect((await messages('capped')).map(([, message]) => message)).toEqual([
      'written',
      'refused burst',
      '4 log line(s) dropped here: Redis refused writes while they were queued',
      'queued 5',
      'queued 6',
      'queued 7',
    ]);
  });

  it('close() tries again until Redis takes the lines, and rejects when it never does', async () => {
    const journal = journalFor('close');
    await redis.set(keys.log('close'), 'not a stream');
    journal.line('kept');
    const closing = journal.close();
    await sleep(30);
    await redis.del(keys.log('close'));
    await closing;
    expect((await messages('close')).map(([, message]) => message)).toEqual(['kept']);

    const never = journalFor('never');
    await redis.set(keys.log('never'), 'not a stream');
    never.line('refused for good');
    await expect(never.close()).rejects.toThrow(/WRONGTYPE/);
    await redis.del(keys.log('never'));
  });

  it('the first write of an attempt makes an ended log live again; a batch gets its own numbered copy', async () => {
    await jobLog.appendBatch('retried', [{ message: 'attempt 1', timestamp: new Date().toISOString() }], { progress: progress(0) });
    await jobLog.end('retried', 'failed', 'boom');
    expect(await redis.ttl(keys.progress('retried'))).toBeGreaterThan(0);
    expect(await redis.ttl(keys.log('retried'))).toBeGreaterThan(0);
    const journal = journalFor('retried', { batch: { id: 'the-batch', format: (message) => `[2/3] module: ${message}` } });
    journal.line('attempt 2');
    await journal.close();
    expect(await redis.ttl(keys.log('retried'))).toBe(-1);
    expect(await redis.ttl(keys.progress('retried'))).toBe(-1);
    expect((await messages('retried')).at(-1)?.[1]).toBe('attempt 2');
    expect(await messages('the-batch')).toEqual([['0-1', '[2/3] module: attempt 2']]);
  });
});

describe('a worker writes each job log whole before BullMQ records the outcome', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    system = await startSystem(jenkins.url);
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  const finished = (id: string) =>
    waitFor(async () => {
      const { body } = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `job ${id} to finish`);
  const bullProgress = async (id: string) => {
    const keys = createKeys(system.config.queuePrefix);
    const queue = new Queue(keys.queueName, { connection: system.redis, prefix: keys.queuePrefix });
    try {
      return (await queue.getJob(id))?.progress;
    } finally {
      await queue.close();
    }
  };

  it('a job: every line, then the end; the BullMQ job shows no progress or the final one, never a stale one', async () => {
    const url = jenkins.addBuild(['QA_Release_6.4', 'quick'], 1, {
      artifacts: [0, 1, 2].map((index) => ({ relativePath: `hapy/reports/junit/q${index}.xml`, size: 10_000 })),
    });
    const { body } = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url });
    const id = body.job_id as string;
    const done = await finished(id);
    expect(done).toMatchObject({ status: 'completed', progress: { files_done: 3, files_total: 3, modules_done: 1 } });
    // The end entry follows BullMQ's record of the outcome; every line of the job is before it.
    const entries = await waitFor(async () => {
      const logs = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=100`);
      const all = logs.body.lines as Array<{ message: string; status?: string }>;
      return all.at(-1)?.status === 'completed' ? all : null;
    }, 'the end of the log');
    const lines = entries.map((line) => line.message);
    expect(lines[0]).toMatch(/^Attempt 1: downloading /);
    expect(lines.filter((line) => / hapy\/reports\/junit\/q\d\.xml \(10\.0 kB\)$/.test(line))).toHaveLength(3);
    expect(lines.slice(-3)).toEqual(['[1/1] quick: done', 'Downloaded 3 file(s), 30.0 kB, from 1 module(s)', 'Job completed']);
    // A job shorter than the progress interval leaves BullMQ's progress alone (its result holds the final one).
    const shown = await bullProgress(id);
    if (shown !== 0) expect(shown).toEqual(done.progress);
  });

  it('a slow job still shows its progress on the BullMQ job (Bull Board), ending with the final snapshot', async () => {
    const url = jenkins.addBuild(['QA_Release_6.4', 'slow'], 1, { artifacts: [{ relativePath: 'hapy/slow.bin', size: 100_000 }] });
    jenkins.setThrottle(200_000);
    try {
      const { body } = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url });
      const id = body.job_id as string;
      await finished(id);
      expect(await bullProgress(id)).toMatchObject({ files_done: 1, files_total: 1, bytes_done: 100_000, modules_done: 1 });
    } finally {
      jenkins.setThrottle(undefined);
    }
  });
});
