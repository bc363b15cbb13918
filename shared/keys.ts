/**
 * The one owner of every Redis key name ferry uses. Nothing else builds a key string.
 *
 * BullMQ's own keys follow its layout `<prefix>:<queue>:<suffix>` (see BullMQ's QueueKeys); ferry
 * reads a few of them directly so that a status read is O(1) whatever the queue depth.
 */
export const QUEUE_NAME = 'downloads';
/** Batch coordinators have their own queue, so a coordinator never takes a download slot. */
export const BATCH_QUEUE_SUFFIX = 'batches';

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
  /** The job's log: a Redis Stream, one entry per line, ids `0-<line number>`. */
  log(jobId: string): string;
  /** The job's latest progress snapshot: a Redis Stream capped at one entry, so it can be followed. */
  progress(jobId: string): string;
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
    log: (jobId) => `ferry:log:${jobId}`,
    progress: (jobId) => `ferry:progress:${jobId}`,
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
