import { describe, expect, it } from 'vitest';
import { validate, version } from 'uuid';
import { uuidv7Millis } from '../../api/dedup.js';
import { createJobIdGenerator, newJobId } from '../../shared/job-id.js';

describe('job ids (UUIDv7 from pooled random bytes)', () => {
  it('makes valid, distinct UUIDv7s carrying the time they were made', () => {
    const before = Date.now();
    // More than one pool of random bytes (256 ids), so refilling is exercised too.
    const ids = Array.from({ length: 2_000 }, () => newJobId());
    const after = Date.now();
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) {
      expect(validate(id)).toBe(true);
      expect(version(id)).toBe(7);
      const millis = uuidv7Millis(id);
      expect(millis).not.toBeNull();
      expect(millis!).toBeGreaterThanOrEqual(before);
      // The counter may carry a busy millisecond into the next one.
      expect(millis!).toBeLessThanOrEqual(after + 1);
    }
  });

  it('sorts in the order made, within one millisecond and when the clock goes back', () => {
    const next = createJobIdGenerator();
    const now = Date.now();
    const ids = [next(now), next(now), next(now), next(now - 5_000), next(now + 1), next(now + 1)];
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    // The clock went back: the id keeps the later time (the counter moved on instead).
    expect(uuidv7Millis(ids[3]!)).toBe(now);
  });

  it("starts each millisecond's counter below 2^31, as uuid's own v7 does (room before it carries)", () => {
    const next = createJobIdGenerator();
    const start = Date.now();
    for (let ms = 0; ms < 500; ms += 1) {
      const id = next(start + ms);
      // The counter's top bits are the first digit of the third group after the version digit:
      // xxxxxxxx-xxxx-7SSS-...: its first bit is the counter's bit 31, which must be 0.
      expect(Number.parseInt(id[15]!, 16), id).toBeLessThan(8);
      expect(uuidv7Millis(id)).toBe(start + ms);
    }
  });

  it('uses fresh random bytes for every id, across pool refills', () => {
    const next = createJobIdGenerator();
    const now = Date.now();
    // One new millisecond per id, so every id's counter is drawn afresh from its random bytes; the
    // 62 low bits (rand_b, hex digits after the fourth dash plus the variant group) are random too.
    const ids = Array.from({ length: 1_000 }, (_, i) => next(now + i));
    const randomParts = ids.map((id) => `${id.slice(15, 18)}${id.slice(19)}`);
    expect(new Set(randomParts).size).toBe(randomParts.length);
    const rand = ids.map((id) => id.slice(24));
    expect(new Set(rand).size).toBe(rand.length);
  });
});
