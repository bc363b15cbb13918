import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createKeys } from '../../shared/keys.js';
import { createLogger } from '../../shared/logger.js';
import { createPartSweeper } from '../../worker/part-sweeper.js';

describe('the .part sweeper (real Redis, real files)', () => {
  let redis: Redis;
  let queue: Queue;
  let dir: string;
  const keys = createKeys(`{sweep${randomUUID().slice(0, 8)}}`);

  beforeAll(async () => {
    redis = new Redis(inject('redisUrl'), { maxRetriesPerRequest: null });
    queue = new Queue(keys.queueName, { connection: redis, prefix: keys.queuePrefix });
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-sweep-'));
  });

  afterAll(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
    redis.disconnect();
    await rm(dir, { recursive: true, force: true });
  });

  const touch = async (relative: string, ageMs: number) => {
    const file = path.join(dir, relative);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, 'partial');
    const when = new Date(Date.now() - ageMs);
    await utimes(file, when, when);
    return file;
  };

  it('removes old .part files of jobs that are gone or finished, keeps live jobs and young files', async () => {
    const day = 24 * 60 * 60 * 1_000;
    const gone = uuidv7();
    const waiting = uuidv7();
    const failed = uuidv7();
    const young = uuidv7();
    await queue.add('download', {}, { jobId: waiting });
    await queue.add('download', {}, { jobId: failed });
    await redis.zadd(keys.bullFailed, Date.now(), failed);

    const removable = [
      await touch(`6.4/a/1/x.xml.${gone}.part`, 2 * day),
      await touch(`6.4/a/1/x.xml.${gone}.part.json`, 2 * day),
      await touch(`6.4/b/2/deep/y.bin.${failed}.part`, 2 * day),
    ];
    const kept = [
      await touch(`6.4/c/3/z.bin.${waiting}.part`, 2 * day),
      await touch(`6.4/d/4/w.bin.${young}.part`, 60_000),
      await touch('6.4/e/5/not-a-part.xml', 2 * day),
      await touch('6.4/e/5/odd.part', 2 * day),
    ];

    const sweeper = createPartSweeper({ redis, keys, downloadDir: dir, ttlMs: day, logger: createLogger({ service: 'test', level: 'error', json: true }) });
    const removed = await sweeper.sweep();
    expect(removed.sort()).toEqual([...removable].sort());
    const left = (await readdir(dir, { recursive: true, withFileTypes: true })).filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
    expect(left.sort()).toEqual([...kept].sort());
  });
});
