import { defineScript } from './redis-script.js';
import type { Redis } from 'ioredis';
import type { FinalStatus, Progress } from './job-contract.js';
import { serializeProgress } from './job-progress.js';
import type { Keys } from './keys.js';
import { cursorSequence } from './log-cursor.js';

/** One entry of a job's log stream. */
export type LogEntry =
  | { readonly kind: 'line'; readonly id: string; readonly message: string; readonly timestamp: string }
  | {
      readonly kind: 'end';
      readonly id: string;
      readonly status: FinalStatus;
      readonly error: string | null;
      readonly timestamp: string;
    };

export interface LogRange {
  readonly entries: LogEntry[];
  /** Lines after the requested cursor that were trimmed away by MAX_LOG_LINES before this read. */
  readonly dropped: number;
}

export interface JobLogOptions {
  readonly redis: Redis;
  readonly keys: Keys;
  /** Lines kept per job (MAX_LOG_LINES); older ones are trimmed. */
  readonly maxLines: number;
  /** Seconds the log stays after the job ends (LOG_TTL_SECONDS). */
  readonly ttlSeconds: number;
}

/** A line waiting to be appended, with the time it was written (its `t` field). */
export interface PendingLine {
  readonly message: string;
  /** ISO 8601. */
  readonly timestamp: string;
}

export interface AppendBatchOptions {
  /** Also replaces the job's progress snapshot (the stream ferry's status reads), in the same step. */
  readonly progress?: Progress | undefined;
  /** Also makes the log and the progress snapshot live again, as {@link JobLog.keep} does. */
  readonly keep?: boolean;
  /**
   * The burst's identity: its writer (one per job journal) and number (increasing per writer). A
   * burst whose number the writer already reached is skipped whole, so sending one again (a retry
   * after a lost answer, or ioredis resending after a reconnect) never writes its lines twice.
   */
  readonly burst?: { readonly writer: string; readonly seq: number } | undefined;
}

export interface JobLog {
  /** Appends one line; returns its cursor. */
  append(jobId: string, message: string): Promise<string>;
  /**
   * Appends `lines` in order, and the options' progress snapshot, in one round trip and one atomic
   * step: all of it or (on an error such as Redis refusing writes when full) none of it, so a caller
   * that keeps the lines and tries again never writes one twice or out of order.
   */
  appendBatch(jobId: string, lines: readonly PendingLine[], options?: AppendBatchOptions): Promise<void>;
  /** Makes the log live again when an attempt starts (a retried job's log had an expiry set). */
  keep(jobId: string): Promise<void>;
  /**
   * Appends the end entry unless the log already ends with one, then lets the log and the
   * progress snapshot expire after the TTL. Idempotent: any process may call it. `lastLine`, when
   * given, is appended just before the end entry, in the same atomic step.
   */
  end(jobId: string, status: FinalStatus, error: string | null, lastLine?: string): Promise<void>;
  /** Entries after `after` (exclusive), at most `count`. */
  read(jobId: string, after: string, count: number): Promise<LogRange>;
  /** The newest entry, or undefined when the log is empty. */
  lastEntry(jobId: string): Promise<LogEntry | undefined>;
  remove(jobId: string): Promise<void>;
}

/**
 * Appends the end entry only when the newest entry is not already one, atomically, so a worker and
 * an API instance that both notice the end write it once.
 */
const END_SCRIPT = `
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local ended = false
if last[1] then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 's' then ended = true end
  end
end
if not ended then
  if ARGV[6] ~= '' then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-*', 'm', ARGV[6], 't', ARGV[4])
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-*', 's', ARGV[2], 'e', ARGV[3], 't', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return ended and 0 or 1
`;

/**
 * Appends lines to a log (KEYS[1]) and optionally replaces the progress snapshot (KEYS[2], same
 * slot). ARGV: MAXLEN, the snapshot ('' for none), '1' to PERSIST both keys first, the writer id
 * ('' for none) and burst number (KEYS[3] the writers hash), then message/timestamp pairs. A burst
 * whose number its writer already reached is skipped (returns 0). A script runs whole or, when Redis
 * refuses writes, not at all.
 */
const APPEND_SCRIPT = `
if ARGV[4] ~= '' and tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0') >= tonumber(ARGV[5]) then return 0 end
if ARGV[3] == '1' then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '0-*', 'm', ARGV[i], 't', ARGV[i + 1])
end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '1', '*', 'p', ARGV[2])
end
-- Last: a script that fails part way (a key of the wrong type) has not reached this burst.
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
  redis.call('EXPIRE', KEYS[3], 3600)
end
return 1
`;

const runEnd = defineScript(END_SCRIPT);
const runAppend = defineScript(APPEND_SCRIPT);

export function parseLogEntry(id: string, fields: string[]): LogEntry {
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) map.set(fields[i] as string, fields[i + 1] as string);
  const timestamp = map.get('t') ?? '';
  const status = map.get('s');
  if (status === 'completed' || status === 'failed' || status === 'cancelled') {
    const error = map.get('e');
    return { kind: 'end', id, status, error: error ? error : null, timestamp };
  }
  return { kind: 'line', id, message: map.get('m') ?? '', timestamp };
}

export function createJobLog({ redis, keys, maxLines, ttlSeconds }: JobLogOptions): JobLog {
  return {
    async append(jobId, message) {
      const id = await redis.xadd(
        keys.log(jobId),
        'MAXLEN',
        String(maxLines),
        '0-*',
        'm',
        message,
        't',
        new Date().toISOString(),
      );
      return id ?? '';
    },

    async appendBatch(jobId, lines, options = {}) {
      if (lines.length === 0 && options.progress === undefined && !options.keep) return;
      const { burst } = options;
      const args = [
        String(maxLines),
        options.progress ? serializeProgress(options.progress) : '',
        options.keep ? '1' : '0',
        burst ? burst.writer : '',
        burst ? String(burst.seq) : '',
      ];
      for (const line of lines) args.push(line.message, line.timestamp);
      await runAppend(redis, [keys.log(jobId), keys.progress(jobId), keys.logWriters(jobId)], args);
    },

    async keep(jobId) {
      await redis.persist(keys.log(jobId));
    },

    async end(jobId, status, error, lastLine) {
      await runEnd(
        redis,
        [keys.log(jobId), keys.progress(jobId)],
        [String(maxLines), status, error ?? '', new Date().toISOString(), String(ttlSeconds), lastLine ?? ''],
      );
    },

    async read(jobId, after, count) {
      const afterSeq = cursorSequence(after);
      const key = keys.log(jobId);
      const [rangeResult, firstResult] = await redis
        .multi()
        .xrange(key, `(${after}`, '+', 'COUNT', count)
        .xrange(key, '-', '+', 'COUNT', 1)
        .exec()
        .then((results) => (results ?? []).map(([error, value]) => {
          if (error) throw error;
          return value as [string, string[]][];
        }));
      const entries = (rangeResult ?? []).map(([id, fields]) => parseLogEntry(id, fields));
      const firstId = firstResult?.[0]?.[0];
      const dropped = firstId ? Math.max(0, cursorSequence(firstId) - afterSeq - 1) : 0;
      return { entries, dropped };
    },

    async lastEntry(jobId) {
      const [last] = (await redis.xrevrange(keys.log(jobId), '+', '-', 'COUNT', 1)) as [string, string[]][];
      return last ? parseLogEntry(last[0], last[1]) : undefined;
    },

    async remove(jobId) {
      await redis.del(keys.log(jobId), keys.progress(jobId), keys.logWriters(jobId));
    },
  };
}
