import type { Redis } from 'ioredis';
import { defineScript } from '../shared/redis-script.js';

/**
 * Claims a submission's dedup pointer and enters the new job in the job index, in one atomic
 * round trip. KEYS[1] the dedup pointer, KEYS[2] the job index (both carry the queue prefix's hash
 * tag, so they share a Redis Cluster slot). ARGV[1] the claim to write, ARGV[2] its expiry in ms,
 * ARGV[3] the new job id, ARGV[4] the pointer value being replaced, or '' to claim only a free key.
 * Returns {1} when claimed, else {0, <current pointer>} ({0} when the key is free but a
 * replacement was asked for: the caller looks again).
 *
 * Index first, queue second (the caller adds the BullMQ job after this): a crash in between leaves
 * an index entry without a job, which list() prunes; it can never leave a queued job ferry does
 * not know.
 */
const SCRIPT = `
local held = redis.call('GET', KEYS[1])
if ARGV[4] == '' then
  if held then return {0, held} end
elseif held ~= ARGV[4] then
  if held then return {0, held} end
  return {0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return {1}
`;
const run = defineScript(SCRIPT);

export interface ClaimRequest {
  readonly pointerKey: string;
  readonly indexKey: string;
  /** The pointer value to write (`claimed:<job id>`). */
  readonly claim: string;
  readonly ttlMs: number;
  readonly jobId: string;
  /** Replace this stale pointer value; absent: claim only a free key. */
  readonly replacing?: string;
}

export type ClaimOutcome = { readonly claimed: true } | { readonly claimed: false; readonly held: string | null };

export async function claimDedupKey(redis: Redis, request: ClaimRequest): Promise<ClaimOutcome> {
  const result = await run(
    redis,
    [request.pointerKey, request.indexKey],
    [request.claim, String(Math.max(1, Math.round(request.ttlMs))), request.jobId, request.replacing ?? ''],
  );
  const [won, held] = result as [number, string | undefined];
  return won === 1 ? { claimed: true } : { claimed: false, held: held ?? null };
}
