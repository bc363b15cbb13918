import type { Redis } from 'ioredis';
import { defineScript } from '../shared/redis-script.js';
import { CONSUME_POINT_LUA, rateLimited, type RateBudget } from './rate-limit.js';

/**
 * Claims a submission's dedup pointer and enters the new job in the job index, in one atomic
 * round trip. KEYS[1] the dedup pointer, KEYS[2] the job index (both carry the queue prefix's hash
 * tag, so they share a Redis Cluster slot). ARGV[1] the claim to write, ARGV[2] its expiry in ms,
 * ARGV[3] the new job id, ARGV[4] the pointer value being replaced, or '' to claim only a free key.
 * Returns {1} when claimed, else {0, <current pointer>} ({0, nil} when the key is free but a
 * replacement was asked for: the caller looks again); then the budget's points used and the
 * milliseconds left in its window, when one was spent (SCRIPT_WITH_BUDGET).
 *
 * Index first, queue second (the caller adds the BullMQ job after this): a crash in between leaves
 * an index entry without a job, which list() prunes; it can never leave a queued job ferry does
 * not know.
 */
const CLAIM_LUA = `
local held = redis.call('GET', KEYS[1])
if ARGV[4] == '' then
  if held then return {0, held, consumed, ttl} end
elseif held ~= ARGV[4] then
  if held then return {0, held, consumed, ttl} end
  return {0, false, consumed, ttl}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return {1, false, consumed, ttl}
`;
const SCRIPT = `local consumed = false
local ttl = false
${CLAIM_LUA}`;
/**
 * The same with the caller's rate budget spent first (KEYS[3] its counter, ARGV[5] the window in
 * seconds, ARGV[6] the points): over budget, returns {2, false, consumed, ttl} and claims nothing.
 */
const SCRIPT_WITH_BUDGET = `local consumed = false
local ttl = false
${CONSUME_POINT_LUA}
if consumed > tonumber(ARGV[6]) then return {2, false, consumed, ttl} end
${CLAIM_LUA}`;
const run = defineScript(SCRIPT);
const runWithBudget = defineScript(SCRIPT_WITH_BUDGET);

export interface ClaimRequest {
  readonly pointerKey: string;
  readonly indexKey: string;
  /** The pointer value to write (`claimed:<job id>`). */
  readonly claim: string;
  readonly ttlMs: number;
  readonly jobId: string;
  /** Replace this stale pointer value; absent: claim only a free key. */
  readonly replacing?: string;
  /** Spend one point of this budget first (the first claim of a submit only). */
  readonly budget?: RateBudget | undefined;
}

/** What the budget said, when one was spent: points used in the window, and its milliseconds left. */
export interface BudgetState {
  readonly consumed: number;
  readonly msBeforeNext: number;
}

export interface ClaimOutcome {
  readonly claimed: boolean;
  /** The pointer held by another submit when not claimed (null: the key was free but a replacement was asked for). */
  readonly held: string | null;
  /** The budget after this claim's point, when one was spent. */
  readonly budget?: BudgetState | undefined;
}

/** Claims the pointer (spending the budget's point first, when given); over budget: throws RATE_LIMITED, nothing claimed. */
export async function claimDedupKey(redis: Redis, request: ClaimRequest): Promise<ClaimOutcome> {
  const args = [request.claim, String(Math.max(1, Math.round(request.ttlMs))), request.jobId, request.replacing ?? ''];
  const { budget } = request;
  const result = budget
    ? await runWithBudget(redis, [request.pointerKey, request.indexKey, budget.key], [...args, String(budget.windowSeconds), String(budget.points)])
    : await run(redis, [request.pointerKey, request.indexKey], args);
  // Lua false arrives as null; a table's trailing nils are dropped.
  const [won, held, consumed, ttl] = result as [number, string | null | undefined, number | null | undefined, number | null | undefined];
  const spent = typeof consumed === 'number' ? { consumed, msBeforeNext: Number(ttl ?? 0) } : undefined;
  if (won === 2) throw rateLimited(budget?.points ?? 0, spent?.msBeforeNext ?? 0);
  return { claimed: won === 1, held: held ?? null, budget: spent };
}
