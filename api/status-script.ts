import type { Redis } from 'ioredis';
import type { Keys } from '../shared/keys.js';
import { isCluster } from '../shared/redis.js';
import { defineScript } from '../shared/redis-script.js';

/** The job hash fields a status read needs (api/job-store.ts toStatusView). */
const DOWNLOAD_FIELDS = ['data', 'returnvalue', 'failedReason', 'processedOn', 'finishedOn', 'ats', 'atm', 'timestamp'] as const;
/** A batch coordinator's hash also gives `progress`: its modules while it runs. */
const BATCH_FIELDS = [...DOWNLOAD_FIELDS, 'progress'] as const;

const luaList = (fields: readonly string[]) => fields.map((field) => `'${field}'`).join(', ');

/**
 * One job's records, read in one script: atomic, so it sees one side of BullMQ moving a job (lock
 * released and finished set joined happen in one BullMQ script), never half of it.
 *
 * KEYS[1..4]: the downloads queue's job hash, completed set, failed set, job lock; KEYS[5]: ferry's
 * tombstone of a cancelled pending job; KEYS[6..9]: the same four keys of the batches queue;
 * KEYS[10], when given: the job's progress stream. ARGV[1]: the job id.
 *
 * Redis Cluster: KEYS[1..9] are all under the queue prefix, whose hash tag (`{ferry}`) puts them in
 * one slot, but the progress stream is in its log group's slot (shared/keys.ts), and one script
 * may only touch one slot. So on a Cluster the script gets 9 keys and the progress stream is read
 * beside it (as it was beside the MULTI this replaces); on one server (or Sentinel), where slots do
 * not apply, the script reads it too: one command per status read instead of two.
 *
 * Redis full (used memory over `maxmemory`, `noeviction`): the read is refused with Redis's OOM
 * error (so 503 REDIS_FULL), as the MULTI it replaces was (Redis refuses commands queued in a MULTI
 * while full) and as the README says. A script that only reads would run, so it first tries an
 * empty SETRANGE of the tombstone key (a string when present): it changes nothing and is never
 * propagated, but Redis refuses it while full, as every command that may grow memory. Only that
 * refusal is passed on: any other refusal of a write (a replica, MISCONF after a failed save,
 * min-replicas-to-write) does not stop the read, as it did not stop the MULTI.
 *
 * Answer: `{1, completed, failed, locked, fields, progress}` for a download, `{2, ...}` for a batch
 * (`progress`: the stream entry's fields, or nil), `{0, tombstone or nil}` for neither. Only the
 * hash fields the status needs cross the wire.
 */
const SCRIPT = `
local gate = redis.pcall('SETRANGE', KEYS[5], 0, '')
if type(gate) == 'table' and gate.err and string.find(gate.err, 'OOM', 1, true) then return gate end
local id = ARGV[1]
local function read(kind, hash, completed, failed, lock, fields)
  local progress = false
  if KEYS[10] then
    local entry = redis.call('XREVRANGE', KEYS[10], '+', '-', 'COUNT', 1)[1]
    if entry then progress = entry[2] end
  end
  return {
    kind,
    redis.call('ZSCORE', completed, id) and 1 or 0,
    redis.call('ZSCORE', failed, id) and 1 or 0,
    redis.call('EXISTS', lock),
    redis.call('HMGET', hash, unpack(fields)),
    progress,
  }
end
if redis.call('EXISTS', KEYS[1]) == 1 then return read(1, KEYS[1], KEYS[2], KEYS[3], KEYS[4], {${luaList(DOWNLOAD_FIELDS)}}) end
if redis.call('EXISTS', KEYS[6]) == 1 then return read(2, KEYS[6], KEYS[7], KEYS[8], KEYS[9], {${luaList(BATCH_FIELDS)}}) end
return {0, redis.call('GET', KEYS[5])}
`;
const run = defineScript(SCRIPT);

/** What a status read found: a job's records, a tombstone, or nothing. */
export type JobRecords =
  | {
      readonly kind: 'download' | 'batch';
      /** The job hash's fields that the status needs (absent ones left out). */
      readonly hash: Record<string, string>;
      readonly completed: boolean;
      readonly failed: boolean;
      readonly locked: boolean;
      /** The latest progress stream entry's fields, if any. */
      readonly progressFields: string[] | undefined;
    }
  | { readonly kind: 'tombstone'; readonly tombstone: string | null };

type ScriptAnswer = [0, string | null] | [1 | 2, 0 | 1, 0 | 1, 0 | 1, Array<string | null>, string[] | null];

async function runScript(redis: Redis, keys: string[], jobId: string): Promise<ScriptAnswer> {
  return (await run(redis, keys, [jobId])) as ScriptAnswer;
}

/** Reads one job's records for its status (see SCRIPT): one command, two on a Redis Cluster. */
export async function readJobRecords(redis: Redis, keys: Keys, jobId: string): Promise<JobRecords> {
  const scriptKeys = [
    keys.bullJob(jobId),
    keys.bullCompleted,
    keys.bullFailed,
    keys.bullLock(jobId),
    keys.tombstone(jobId),
    keys.batches.job(jobId),
    keys.batches.completed,
    keys.batches.failed,
    keys.batches.lock(jobId),
  ];
  let answer: ScriptAnswer;
  let progressFields: string[] | undefined;
  if (isCluster(redis)) {
    const [scripted, entries] = await Promise.all([
      runScript(redis, scriptKeys, jobId),
      redis.xrevrange(keys.progress(jobId), '+', '-', 'COUNT', 1) as Promise<Array<[string, string[]]>>,
    ]);
    answer = scripted;
    progressFields = entries[0]?.[1];
  } else {
    answer = await runScript(redis, [...scriptKeys, keys.progress(jobId)], jobId);
    progressFields = answer[0] === 0 ? undefined : (answer[5] ?? undefined);
  }
  if (answer[0] === 0) return { kind: 'tombstone', tombstone: answer[1] };
  const [kind, completed, failed, locked, values] = answer;
  const hash: Record<string, string> = {};
  for (const [index, value] of values.entries()) {
    if (value !== null) hash[BATCH_FIELDS[index] as string] = value;
  }
  return { kind: kind === 1 ? 'download' : 'batch', hash, completed: completed === 1, failed: failed === 1, locked: locked === 1, progressFields };
}
