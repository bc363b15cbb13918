import { randomFillSync } from 'node:crypto';
import { v7 } from 'uuid';

/**
 * Job ids: UUIDv7 (RFC 9562) made by the uuid package, with two things of our own.
 *
 * Random bytes come from a pool filled 256 ids at a time. uuid's own v7() asks the CSPRNG for 16
 * bytes on every call (`crypto.getRandomValues`), and that call has a fixed cost whatever its size:
 * 4-5 µs in a tight loop on the bench machine and ~30 µs per submit in a profile of the API under
 * load. Node's crypto.randomUUID() pools the same way. Every pooled byte is used once.
 *
 * The timestamp and counter follow uuid's own monotonic rule (updateV7State), kept here because
 * uuid keeps it only when it draws its own random bytes: ids made by one process sort in the order
 * they were made, even within one millisecond, which the job index's newest-first listing relies on.
 */
const POOL_IDS = 256;

/** A job id maker with its own pool and monotonic state (one per process: `newJobId`; tests make their own). */
export function createJobIdGenerator(): (now?: number) => string {
  const pool = new Uint8Array(16 * POOL_IDS);
  let used = POOL_IDS;
  const state = { msecs: Number.NEGATIVE_INFINITY, seq: 0 };
  const randomBytes16 = (): Uint8Array => {
    if (used === POOL_IDS) {
      randomFillSync(pool);
      used = 0;
    }
    used += 1;
    return pool.subarray((used - 1) * 16, used * 16);
  };
  return (now = Date.now()) => {
    const random = randomBytes16();
    if (now > state.msecs) {
      // As uuid's v7Sequence: a random 31-bit start, so ids of two processes in one ms interleave
      // and a busy millisecond has at least 2^31 ids before the counter carries into the next one.
      state.seq = ((random[6]! & 0x7f) << 24) | (random[7]! << 16) | (random[8]! << 8) | random[9]!;
      state.msecs = now;
    } else {
      state.seq = (state.seq + 1) | 0;
      if (state.seq === 0) state.msecs += 1;
    }
    return v7({ random, msecs: state.msecs, seq: state.seq });
  };
}

/** A new UUIDv7 (this process's generator); `now` (Unix ms) for tests. */
export const newJobId = createJobIdGenerator();
