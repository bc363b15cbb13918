import { describe, expect, it } from 'vitest';
import { validate, version } from 'uuid';
import { uuidv7Millis } from '../../api/dedup.js';
import { newJobId } from '../../shared/job-id.js';

describe('newJobId', () => {
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
    const now = Date.now() + 60_000;
    const ids = [newJobId(now), newJobId(now), newJobId(now), newJobId(now - 5_000), newJobId(now + 1), newJobId(now + 1)];
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('does not repeat random bits between ids', () => {
    // The low 62 bits (rand_b) come from fresh pool bytes for every id.
    const tails = Array.from({ length: 1_000 }, () => newJobId().slice(-12));
    expect(new Set(tails).size).toBe(tails.length);
  });
});
