/**
 * The one owner of every Redis key name ferry uses. Nothing else builds a key string.
 *
 * BullMQ's own keys follow its layout `<prefix>:<queue>:<suffix>` (see BullMQ's QueueKeys); ferry
 * reads a few of them directly so that a status read is O(1) whatever the queue depth.
 */
export const QUEUE_NAME = 'downloads';
/** Batch coordinators have their own queue, so a coordinator never takes a download slot. */
export const BATCH_QUEUE_SUFFIX = 'batches';

/**
 * Job logs and progress snapshots are spread over this many hash tags (`{g0}` .. `{g15}`). In Redis
 * Cluster a multi-key command needs one slot: the API's log tail follows every stream of one group
 * with one blocking XREAD, so it holds at most this many tail connections whatever the number of
 * followed jobs, while logs still spread over up to 16 slots (and so over the shards). Changing
 * it renames every log key: existing logs would no longer be found.
 */
export const LOG_GROUPS = 16;

/** The log group of a job: FNV-1a of its id, modulo LOG_GROUPS. */
export function logGroup(jobId: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < jobId.length; index += 1) {
    hash ^= jobId.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % LOG_GROUPS;
}

/** The log group a log, progress or wake key belongs to (its `{g<k>}` hash tag), if any. */
export function logGroupOfKey(key: string): number | undefined {
  const match = /\{g(\d+)\}/.exec(key);
  return match ? Number(match[1]) : undefined;
}

/**
 * A tiny stream per log group that the API's log tail also reads: appending to it wakes the tail's
 * blocked XREAD of that group (in its slot, so on the right Redis Cluster node) when a stream is added.
 */
export function logWakeKey(group: number): string {
  return `ferry:log-wake:{g${group}}`;
}

/** BullMQ's keys of one queue that ferry reads directly. */
export interface BullKeys {
  readonly queueName: string;
  /** The job hash. */
  job(jobId: string): string;
  /** The job lock: present exactly while a worker holds the job. */
  lock(jobId: string): string;
  readonly completed: string;
  readonly failed: string;
}

export interface Keys {
  readonly queuePrefix: string;
  readonly queueName: string;
  /** ferry's index of this queue's jobs: a sorted set of UUIDv7 ids (score 0, read in lexical order). */
  readonly jobIndex: string;
  /**
   * The job's log: a Redis Stream, one entry per line, ids `0-<line number>`. Hash-tagged with the
   * job's log group, the same as its progress key (the end script touches both).
   */
  log(jobId: string): string;
  /** The job's latest progress snapshot: a Redis Stream capped at one entry, so it can be followed. */
  progress(jobId: string): string;
  /**
   * The last burst each log writer (a worker's job journal) had applied to the job's log: a hash of
   * writer id → burst number, so a burst sent again (ioredis resends what was unanswered when a
   * connection dropped) is applied once. Same slot as the log; expires an hour after its last write.
   */
  logWriters(jobId: string): string;
  /** The lock one job holds while it writes `<release>/<module>/<build>/` (value: the job id). */
  folderLock(relativeDir: string): string;
  /** Pub/sub channel on which the API asks whichever worker holds a job to cancel it. */
  readonly cancelChannel: string;
  /** Marks a job whose cancel was requested, so a worker that has not started it yet still stops. */
  cancelRequest(jobId: string): string;
  /**
   * What remains of a pending job cancelled and removed from the queue: its final status (JSON).
   * In the queue's hash slot, so the status read takes it in the same MULTI.
   */
  tombstone(jobId: string): string;
  /** BullMQ's job hash. */
  bullJob(jobId: string): string;
  /** BullMQ's job lock: present exactly while a worker holds the job. */
  bullLock(jobId: string): string;
  /** BullMQ's finished sets. */
  readonly bullCompleted: string;
  readonly bullFailed: string;
  /**
   * Submission dedup pointer: a string naming the job that holds one dedup key (`fingerprint` is the
   * sha256 hex of the normalised submission). Scoped by queue prefix and name so queues sharing a
   * Redis never see each other's pointers. Only ferry's own scripts touch it, never with BullMQ keys.
   */
  dedup(fingerprint: string): string;
  /** A stored `Idempotency-Key` answer (or its in-progress marker); `digest` is sha256 hex of scope and key. */
  idempotency(digest: string): string;
  /** The batch coordinators' queue (same prefix, so the same hash slot in Redis Cluster). */
  readonly batches: BullKeys;
}

function bullKeys(queuePrefix: string, queueName: string): BullKeys {
  const bull = `${queuePrefix}:${queueName}`;
  return {
    queueName,
    job: (jobId) => `${bull}:${jobId}`,
    lock: (jobId) => `${bull}:${jobId}:lock`,
    completed: `${bull}:completed`,
    failed: `${bull}:failed`,
  };
}

export function createKeys(queuePrefix: string, queueName: string = QUEUE_NAME): Keys {
  const bull = `${queuePrefix}:${queueName}`;
  return {
    queuePrefix,
    queueName,
    jobIndex: `${bull}:ferry-index`,
    log: (jobId) => `ferry:log:{g${logGroup(jobId)}}:${jobId}`,
    progress: (jobId) => `ferry:progress:{g${logGroup(jobId)}}:${jobId}`,
    logWriters: (jobId) => `ferry:log-writers:{g${logGroup(jobId)}}:${jobId}`,
    folderLock: (relativeDir) => `${bull}:folder-lock:${relativeDir}`,
    cancelChannel: `ferry:cancel:${bull}`,
    cancelRequest: (jobId) => `ferry:cancel-request:${jobId}`,
    tombstone: (jobId) => `${bull}:ferry-tombstone:${jobId}`,
    bullJob: (jobId) => `${bull}:${jobId}`,
    bullLock: (jobId) => `${bull}:${jobId}:lock`,
    bullCompleted: `${bull}:completed`,
    bullFailed: `${bull}:failed`,
    dedup: (fingerprint) => `ferry:dedup:${bull}:${fingerprint}`,
    idempotency: (digest) => `ferry:idempotency:${bull}:${digest}`,
    batches: bullKeys(queuePrefix, `${queueName}-${BATCH_QUEUE_SUFFIX}`),
  };
}
