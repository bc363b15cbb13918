import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createKeys } from '../../shared/keys.js';
import { createFolderLock } from '../../worker/folder-lock.js';

describe('folder lock (real Redis)', () => {
  const redis = new Redis(inject('redisUrl'));
  const keys = createKeys(`{lock${Date.now()}}`);

  afterAll(() => {
    redis.disconnect();
  });

  it('lets one job write a folder at a time; the other waits, is told who holds it, then runs', async () => {
    const lock = createFolderLock(redis, keys, 5_000, 20);
    const signal = new AbortController().signal;
    const events: string[] = [];
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const first = lock.withLock('6.4/m/1', 'A', signal, (holder) => events.push(`A waits for ${holder}`), async () => {
      events.push('A in');
      await sleep(300);
      events.push('A out');
    });
    await sleep(50);
    const second = lock.withLock('6.4/m/1', 'B', signal, (holder) => events.push(`B waits for ${holder}`), async () => {
      events.push('B in');
    });
    await Promise.all([first, second]);
    expect(events).toEqual(['A in', 'B waits for A', 'A out', 'B in']);
    expect(await redis.exists(keys.folderLock('6.4/m/1'))).toBe(0);
  });

  it('a holder that stops renewing (crashed) loses the lock after its TTL', async () => {
    await redis.set(keys.folderLock('6.4/m/2'), 'crashed-job', 'PX', 200);
    const lock = createFolderLock(redis, keys, 5_000, 20);
    const started = Date.now();
    await lock.withLock('6.4/m/2', 'B', new AbortController().signal, () => undefined, async () => undefined);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
  });
});
