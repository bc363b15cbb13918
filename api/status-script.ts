import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Keys } from '../shared/keys.js';

/**
 * The job hash fields a status read needs (api/job-store.ts toStatusView), in the order the script
 * returns them. A batch coordinator's hash also gives `progress` (its children while it runs).
 */
export const STATUS_FIELDS = ['data', 'returnvalue', 'failedReason', 'processedOn', 'finishedOn', 'ats', 'atm', 'timestamp'] as const;
const BATCH_FIELDS = [...STATUS_FIELDS, 'progress'] as const;

/**
 * One job's BullMQ records, read in one script: atomic, so it sees one side of BullMQ moving a job
 * (lock released and finished set joined happen in one BullMQ script), never half of it.
 *
 * KEYS[1..4]: the downloads queue's job hash, completed set, failed set, job lock; KEYS[5]: ferry's
 * tombstone of a cancelled pending job; KEYS[6..9]: the same four keys of the batches queue.
 * ARGV[1]: the job id; ARGV[2..]: the hash fields to return (the batch fields).
 *
 * Every key lives under the queue prefix, whose hash tag (`{ferry}`) puts them in one Redis Cluster
 * slot. The job's progress stream is in its log group's slot (shared/keys.ts): it is read beside
 * the script, as it was beside the MULTI this replaces.
 *
 * Answer: `{1, completed, failed, locked, fields}` for a download, `{2, ...}` for a batch, `{0,
 * tombstone or nil}` for neither. Only the fields the status needs cross the wire.
 */
const SCRIPT = `
local id = ARGV[1]
local fields = {}
for index = 2, #ARGV do fields[index - 1] = ARGV[index] end
local function read(kind, hash, completed, failed, lock, count)
  return {
    kind,
    redis.call('ZSCORE', completed, id) and 1 or 0,
    redis.call('ZSCORE', failed, id) and 1 or 0,
    redis.call('EXISTS', lock),
    redis.call('HMGET', hash, unpack(fields, 1, count)),
  }
end
if redis.call('EXISTS', KEYS[1]) == 1 then return read(1, KEYS[1], KEYS[2], KEYS[3], KEYS[4], ${STATUS_FIELDS.length}) end
if redis.call('EXISTS', KEYS[6]) == 1 then return read(2, KEYS[6], KEYS[7], KEYS[8], KEYS[9], #fields) end
return {0, redis.call('GET', KEYS[5])}
`;
const SHA = createHash('sha1').update(SCRIPT).digest('hex');

/** What the script found: a job's records, a tombstone, or nothing. */
export type JobRecords =
  | {
      readonly kind: 'download' | 'batch';
      readonly hash: Record<string, string>;
      readonly completed: boolean;
      readonly failed: boolean;
      readonly locked: boolean;
    }
  | { readonly kind: 'tombstone'; readonly tombstone: string | null };

type ScriptAnswer = [0, string | null] | [1 | 2, 0 | 1, 0 | 1, 0 | 1, Array<string | null>];

function toRecords(answer: ScriptAnswer): JobRecords {
  if (answer[0] === 0) return { kind: 'tombstone', tombstone: answer[1] };
  const [kind, completed, failed, locked, values] = answer;
  const hash: Record<string, string> = {};
  for (const [index, value] of values.entries()) {
    if (value !== null) hash[BATCH_FIELDS[index] as string] = value;
  }
  return { kind: kind === 1 ? 'download' : 'batch', hash, completed: completed === 1, failed: failed === 1, locked: locked === 1 };
}

/** Reads one job's records (see SCRIPT). Loads the script on a server that does not have it yet. */
export async function readJobRecords(redis: Redis, keys: Keys, jobId: string): Promise<JobRecords> {
  const args = [
    keys.bullJob(jobId),
    keys.bullCompleted,
    keys.bullFailed,
    keys.bullLock(jobId),
    keys.tombstone(jobId),
    keys.batches.job(jobId),
    keys.batches.completed,
    keys.batches.failed,
    keys.batches.lock(jobId),
    jobId,
    ...BATCH_FIELDS,
  ];
  let answer: unknown;
  try {
    answer = await redis.evalsha(SHA, 9, ...args);
  } catch (error) {
    // A restarted (or flushed) Redis, or another Cluster node: EVAL loads the script there.
    if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
    answer = await redis.eval(SCRIPT, 9, ...args);
  }
  return toRecords(answer as ScriptAnswer);
}
