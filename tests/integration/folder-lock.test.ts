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
    const lock = createFolderLock(redis, keys, 5_000, { pollMs: 20 });
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
    const lock = createFolderLock(redis, keys, 5_000, { pollMs: 20 });
    const started = Date.now();
    await lock.withLock('6.4/m/2', 'B', new AbortController().signal, () => undefined, async () => undefined);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
  });

  it('a later attempt of the same job takes the lock over; the earlier one can then neither release nor renew it', async () => {
    // Job X's first attempt (a worker paused past its job lock) and its second (the worker BullMQ
    // gave the job to): the first one's release, when it wakes, must not free the folder for job Y
    // while the second is still writing.
    const lock = createFolderLock(redis, keys, 5_000, { pollMs: 20 });
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const signal = new AbortController().signal;
    const events: string[] = [];
    let secondInside = false;
    const first = lock.withLock('6.4/m/3', 'X', signal, () => events.push('X1 waits'), async () => {
      events.push('X1 in');
      await sleep(100);
      events.push('X1 out');
    });
    await sleep(20);
    const second = lock.withLock('6.4/m/3', 'X', signal, () => events.push('X2 waits'), async () => {
      events.push('X2 in');
      secondInside = true;
      await sleep(400);
      secondInside = false;
      events.push('X2 out');
    });
    await sleep(200);
    const other = lock.withLock('6.4/m/3', 'Y', signal, (holder) => events.push(`Y waits for ${holder}`), async () => {
      events.push(`Y in (X2 inside: ${secondInside})`);
    });
    await Promise.all([first, second, other]);
    expect(events).toEqual(['X1 in', 'X2 in', 'X1 out', 'Y waits for X', 'X2 out', 'Y in (X2 inside: false)']);
    expect(await redis.exists(keys.folderLock('6.4/m/3'))).toBe(0);
  });

  it('an attempt whose lease is lost does not take the lock, not even from its own job', async () => {
    const holder = createFolderLock(redis, keys, 5_000, { pollMs: 20 });
    const stale = createFolderLock(redis, keys, 5_000, { pollMs: 20, leaseHeld: () => false });
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    let staleRan = false;
    const holding = holder.withLock('6.4/m/4', 'X', new AbortController().signal, () => undefined, () => sleep(200));
    await sleep(20);
    const value = await redis.get(keys.folderLock('6.4/m/4'));
    await expect(
      stale.withLock('6.4/m/4', 'X', new AbortController().signal, () => undefined, async () => {
        staleRan = true;
      }),
    ).rejects.toThrow(/lost its lease/);
    expect(staleRan).toBe(false);
    expect(await redis.get(keys.folderLock('6.4/m/4'))).toBe(value);
    await holding;
  });
});
