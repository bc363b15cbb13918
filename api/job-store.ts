import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { ConflictError, NotFoundError, RedisUnavailableError } from '../shared/errors.js';
import {
  BatchDataSchema,
  BatchProgressSchema,
  describeStallLimit,
  isCancelReason,
  JobDataSchema,
  STALL_LIMIT_REASON,
  type BatchChild,
  type BatchData,
  type BatchItem,
  type Submitter,
  JobResultSchema,
  type FileRecord,
  type JobData,
  type JobResult,
  type JobStatus,
  type Progress,
} from '../shared/job-contract.js';
import { newJobId } from '../shared/job-id.js';
import type { JobLog } from '../shared/job-log.js';
import { parseProgress } from '../shared/job-progress.js';
import type { Keys } from '../shared/keys.js';
import { dedupFingerprint, formatPointer, parsePointer } from './dedup.js';
import { claimDedupKey, type BudgetState, type ClaimOutcome } from './dedup-claim.js';
import type { RateBudget } from './rate-limit.js';
import { createIdempotencyStore, type IdempotencyStore } from './idempotency.js';
import { compareAndSet } from './redis-cas.js';
import { readJobRecords, type JobRecords } from './status-script.js';

/** The status document of one job, as `GET .../status` answers it. */
export interface JobStatusView {
  id: string;
  release: string | null;
  job_url: string | null;
  status: JobStatus;
  progress: Progress;
  started_at: string | null;
  running_since: string | null;
  completed_at: string | null;
  error: string | null;
  attempts: number;
  files: FileRecord[] | null;
  /** Who submitted it (role and token label), when known. */
  submitted_by: Submitter | null;
  /** `batch` for a "download selected" batch; `download` for a single job and a batch's module job. */
  kind: 'download' | 'batch';
  /** A module job: its batch's id. */
  batch_id?: string;
  /** A batch: the builds as submitted (with the tracker's own fields). */
  builds?: BatchItem[];
  /** A batch: every module found in its builds' build maps, with its module job and outcome. */
  modules?: BatchChild[];
  /** A batch: the modules that failed or were cancelled. */
  failed_modules?: Array<{ module: string; build_url: string; error: string | null }>;
}

export interface JobStoreOptions {
  readonly redis: Redis;
  readonly queue: Queue<JobData, JobResult>;
  /** The batch coordinators' queue. */
  readonly batchQueue: Queue<BatchData, JobResult>;
  readonly keys: Keys;
  readonly jobLog: JobLog;
  /** Attempts per job (JOB_ATTEMPTS). */
  readonly attempts: number;
  /** Seconds a finished job stays readable (JOB_TTL_SECONDS). */
  readonly jobTtlSeconds: number;
  /** Dedup tuning; the defaults suit production (see DEDUP_DEFAULTS). */
  readonly dedup?: Partial<DedupOptions>;
  /**
   * REDIS_WAIT_REPLICAS / REDIS_WAIT_TIMEOUT_MS: a submit is answered only once Redis WAIT confirms
   * that many replicas hold the new job (else it fails with REDIS_UNAVAILABLE). 0 (default): no wait.
   */
  readonly waitReplicas?: { readonly replicas: number; readonly timeoutMs: number };
  /** The connection the queues add jobs on, when not `redis` (WAIT must run on it too). */
  readonly queueRedis?: Redis | undefined;
}

export interface DedupOptions {
  /**
   * Expiry of a dedup pointer: only a safety net that keeps Redis from filling with pointers to
   * long-gone jobs. Correctness never depends on it: a pointer counts only while its job is pending
   * or running. A job still pending after this long can be submitted again.
   */
  readonly pointerTtlMs: number;
  /**
   * How long a pointer naming a job that BullMQ does not have (yet) is honoured, from the job id's
   * UUIDv7 time: the claimer is between claiming and adding the job. Past it the claimer is taken
   * to have crashed (or the job was removed) and the pointer is replaced. An API's add either lands
   * or fails within its command timeout (API_COMMAND_TIMEOUT_MS, 2 s, one retry), so 10 s is ample.
   */
  readonly claimGraceMs: number;
  /** How long a submit waits for a concurrent claimer's job to appear before answering 409. */
  readonly settleMs: number;
}

export const DEDUP_DEFAULTS: DedupOptions = Object.freeze({
  pointerTtlMs: 6 * 60 * 60 * 1_000,
  claimGraceMs: 10_000,
  settleMs: 2_000,
});

export interface SubmitOptions {
  /**
   * The caller's rate budget: one point is spent in the same script as the dedup claim (a new job
   * or a deduplicated answer alike); over budget, the submit throws RATE_LIMITED and claims nothing.
   */
  readonly budget?: RateBudget | undefined;
}

export interface SubmitResult {
  readonly jobId: string;
  /** True when an earlier pending or running job with the same dedup key was returned instead. */
  readonly deduplicated: boolean;
  /** The returned job's status when the answer was made. */
  readonly status: JobStatus;
  /** The budget after this submit's point, when one was given. */
  readonly budget?: BudgetState | undefined;
}

export interface ListQuery {
  readonly status?: JobStatus | undefined;
  readonly release?: string | undefined;
  readonly limit: number;
  readonly cursor?: string | undefined;
}

export interface JobStore {
  /**
   * Enqueues a download, unless a job with the same dedup key (see api/dedup.ts) is pending or
   * running: then that job is returned with `deduplicated: true`. Race-free across API processes.
   */
  submit(data: Omit<JobData, 'accepted_at'>, options?: SubmitOptions): Promise<SubmitResult>;
  /**
   * Several downloads at once (`POST .../downloads`), each deduplicated as {@link submit} does, in
   * the order given; the same dedup key twice in one call gives one job. The claims go to Redis
   * together and the new jobs are added in one pipeline (BullMQ addBulk, not a transaction); on an
   * error the keys of the jobs that were not added are given back, and a retry answers with the
   * ones that were. Spends no rate budget: the caller spends it first.
   */
  submitMany(data: ReadonlyArray<Omit<JobData, 'accepted_at'>>): Promise<SubmitResult[]>;
  /** Enqueues a "download selected" batch; returns its id. */
  submitBatch(builds: BatchItem[], options?: { skipExisting?: boolean; artifacts?: string[]; submittedBy?: Submitter }): Promise<string>;
  /** One job's status, or null when unknown. Costs the same whatever the queue depth. */
  get(jobId: string): Promise<JobStatusView | null>;
  list(query: ListQuery): Promise<{ jobs: JobStatusView[]; next: string | null }>;
  /** Removes a finished job and its log; removes nothing once `signal` has fired. */
  remove(jobId: string, signal?: AbortSignal): Promise<void>;
  /** The latest progress stream entry `[id, fields]`, or null. */
  progressEntry(jobId: string): Promise<readonly [string, string[]] | null>;
  /** Stored `Idempotency-Key` answers, on the same Redis connection. */
  readonly idempotency: IdempotencyStore;
}

const isoOrNull = (ms: string | undefined) => (ms && /^\d+$/.test(ms) ? new Date(Number(ms)).toISOString() : null);

function parseJson(raw: string | undefined): unknown {
  if (!raw) return undefined;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

interface RawJob {
  hash: Record<string, string>;
  /** The job is a batch coordinator's (queue `batches`). */
  batch: boolean;
  completed: boolean;
  failed: boolean;
  locked: boolean;
  progressFields: string[] | undefined;
}

/**
 * Derives ferry's status from BullMQ's own records, so it never contradicts BullMQ (or actions
 * taken in Bull Board): in the completed or failed set means finished; holding a lock means an
 * attempt is running; anything else (waiting, delayed between retries, stalled) is pending. Every
 * read is O(1): BullMQ's getState() would scan the wait list.
 */
export function toStatusView(jobId: string, raw: RawJob): JobStatusView {
  const { hash } = raw;
  const result = JobResultSchema.safeParse(parseJson(hash.returnvalue));
  // A cancelled job is one BullMQ failed with ferry's cancel reason (see worker/download-processor.ts).
  const cancelled = raw.failed && isCancelReason(hash.failedReason);
  const status: JobStatus = raw.completed ? 'completed' : cancelled ? 'cancelled' : raw.failed ? 'failed' : raw.locked ? 'running' : 'pending';
  const finished = raw.completed || raw.failed;
  const progress = raw.completed && result.success ? result.data.progress : parseProgress(raw.progressFields);
  const common = {
    id: jobId,
    status,
    progress,
    running_since: status === 'pending' ? null : isoOrNull(hash.processedOn),
    completed_at: finished ? isoOrNull(hash.finishedOn) : null,
    error: status === 'completed' ? null : describeFailure(hash.failedReason),
    attempts: Number(hash.ats ?? hash.atm ?? 0),
    files: raw.completed && result.success ? result.data.files : null,
  };
  if (raw.batch) {
    const data = BatchDataSchema.safeParse(parseJson(hash.data));
    const running = BatchProgressSchema.safeParse(parseJson(hash.progress));
    const modules = (result.success ? result.data.children : undefined) ?? (running.success ? running.data.children : []);
    const releases = new Set(data.success ? data.data.builds.map((build) => build.release) : []);
    return {
      ...common,
      release: releases.size === 1 ? ([...releases][0] as string) : null,
      job_url: null,
      started_at: data.success ? data.data.accepted_at : isoOrNull(hash.timestamp),
      kind: 'batch',
      submitted_by: data.success ? (data.data.submitted_by ?? null) : null,
      builds: data.success ? data.data.builds : [],
      modules,
      failed_modules: modules
        .filter((module) => module.status === 'failed' || module.status === 'cancelled')
        .map(({ module, build_url, error }) => ({ module, build_url, error })),
    };
  }
  const data = JobDataSchema.safeParse(parseJson(hash.data));
  return {
    ...common,
    release: data.success ? data.data.release : null,
    job_url: data.success ? data.data.job_url : null,
    started_at: data.success ? data.data.accepted_at : isoOrNull(hash.timestamp),
    kind: 'download',
    submitted_by: data.success ? (data.data.submitted_by ?? null) : null,
    ...(data.success && data.data.batch ? { batch_id: data.data.batch.id } : {}),
  };
}

const describeFailure = (reason: string | undefined): string | null => (reason === STALL_LIMIT_REASON ? describeStallLimit() : reason || null);

const TombstoneSchema = z.object({ id: z.string(), status: z.literal('cancelled') }).loose();

/** A pending job cancelled before it ran leaves only this record of its final status. */
function parseTombstone(raw: unknown): JobStatusView | null {
  if (typeof raw !== 'string') return null;
  const parsed = TombstoneSchema.safeParse(parseJson(raw));
  return parsed.success ? (parsed.data as unknown as JobStatusView) : null;
}

export function createJobStore(options: JobStoreOptions): JobStore {
  const { redis, queue, keys, jobLog } = options;

  const readMany = async (jobIds: readonly string[]): Promise<Array<JobStatusView | null>> => {
    // One script per job reads its records atomically (api/status-script.ts): BullMQ moves a
    // finishing job in one step (lock released, set joined) and the read sees one side of it.
    const records = await Promise.all(jobIds.map((id) => readJobRecords(redis, keys, id)));
    return jobIds.map((id, index) => {
      const record = records[index] as JobRecords;
      if (record.kind === 'tombstone') return parseTombstone(record.tombstone);
      const { hash, completed, failed, locked, progressFields } = record;
      return toStatusView(id, { hash, batch: record.kind === 'batch', completed, failed, locked, progressFields });
    });
  };

  const get = async (jobId: string) => (await readMany([jobId]))[0] ?? null;

  /**
   * Redis replicates asynchronously: a failover right after a submit can lose a job already
   * answered 202. WAIT on the connection that added the job returns once that many replicas have
   * acknowledged every write it sent so far (the job included), or at the timeout with fewer; and
   * on the command connection too, for the dedup claim and pointer (when the queues have their own).
   */
  const waitConnections = options.queueRedis && options.queueRedis !== redis ? [options.queueRedis, redis] : [redis];
  const confirmReplicated = async () => {
    const wanted = options.waitReplicas?.replicas ?? 0;
    if (wanted <= 0) return;
    const timeoutMs = options.waitReplicas?.timeoutMs ?? 1_000;
    const answers = await Promise.all(waitConnections.map((connection) => connection.call('WAIT', String(wanted), String(timeoutMs))));
    const acked = Math.min(...answers.map(Number));
    if (acked < wanted) {
      throw new RedisUnavailableError({ cause: new Error(`WAIT: ${acked} of ${wanted} replica(s) acknowledged the new job within ${timeoutMs} ms`) });
    }
  };
  const dedup: DedupOptions = { ...DEDUP_DEFAULTS, ...options.dedup };

  /** One submission's dedup pointer, its would-be job id and the claim it writes. */
  const prepare = (request: Omit<JobData, 'accepted_at'>) => {
    const jobId = newJobId();
    return { request, jobId, pointerKey: keys.dedup(dedupFingerprint(request)), claim: formatPointer('claimed', jobId) };
  };
  type Prepared = ReturnType<typeof prepare>;
  /** Gives a claimed key back, so the next submit need not wait out the claim grace. */
  const giveBack = ({ pointerKey, claim }: Prepared) => compareAndSet(redis, pointerKey, claim, null).catch(() => false);
  const jobOptions = (jobId: string) => ({
    jobId,
    attempts: options.attempts,
    backoff: { type: 'exponential', delay: 5_000 },
    removeOnComplete: { age: options.jobTtlSeconds },
    removeOnFail: { age: options.jobTtlSeconds },
  });
  /**
   * After a failed add: gives back the claims of the jobs that are not in the queue. Asked on the
   * connection the add went on, so the answer comes after every command of the add that reached
   * Redis (a timed-out add can still land after an error; ioredis resends unanswered commands first
   * after a reconnect). When even that cannot be read, the claims stay and turn stale after the
   * claim grace.
   */
  const queueConnection = options.queueRedis ?? redis;
  const releaseUnqueued = async (claims: readonly Prepared[]) => {
    const present = await Promise.all(claims.map(({ jobId }) => queueConnection.exists(keys.bullJob(jobId)))).catch(() => undefined);
    if (!present) return;
    await Promise.all(claims.map((prepared, index) => (present[index] === 0 ? giveBack(prepared) : false)));
  };
  /**
   * Adds the job whose id the caller has just claimed the dedup pointer for (and entered in the
   * job index: api/dedup-claim.ts).
   */
  const enqueue = async (prepared: Prepared): Promise<SubmitResult> => {
    const data: JobData = { ...prepared.request, accepted_at: new Date().toISOString() };
    try {
      await queue.add('download', data, jobOptions(prepared.jobId));
    } catch (error) {
      await releaseUnqueued([prepared]);
      throw error;
    }
    // The pointer stays `claimed`: marking it `queued` here (as earlier versions did, and as the
    // stale test still reads) cost every submit a round trip, to spare only a resubmit of a job
    // removed within the claim grace of its submit a wait of that grace.
    // WAIT (when configured) covers the claim and the job: a retry after a 503 here finds this job.
    await confirmReplicated();
    return { jobId: prepared.jobId, deduplicated: false, status: 'pending' };
  };

  const claimKey = (prepared: Prepared, replacing?: string, budget?: RateBudget) =>
    claimDedupKey(redis, {
      pointerKey: prepared.pointerKey,
      indexKey: keys.jobIndex,
      claim: prepared.claim,
      ttlMs: dedup.pointerTtlMs,
      jobId: prepared.jobId,
      budget,
      ...(replacing === undefined ? {} : { replacing }),
    });
  /**
   * From a claim's outcome to the answer: this job (enqueued once claimed), or the pending or
   * running job holding the key. One pointer per dedup key names the job holding it.
   * Claiming is SET NX, replacing a stale pointer is compare-and-set, so of any number of concurrent
   * submits (in any number of API processes) exactly one enqueues; the others answer with its job.
   * Whether the pointed job still holds the key is decided by its status, as GET .../status derives it.
   */
  const settle = async (prepared: Prepared, first: ClaimOutcome): Promise<SubmitResult> => {
    const deadline = Date.now() + dedup.settleMs;
    for (let outcome = first; ; outcome = await claimKey(prepared)) {
      if (outcome.claimed) return enqueue(prepared);
      const held = outcome.held;
      if (held !== null) {
        const pointer = parsePointer(held);
        const view = pointer ? await get(pointer.jobId) : null;
        if (pointer && view && (view.status === 'pending' || view.status === 'running')) {
          return { jobId: pointer.jobId, deduplicated: true, status: view.status };
        }
        // Stale: unreadable, the job finished, the job was removed after being queued, or the
        // claimer never queued it within the grace (it crashed or lost Redis).
        const stale =
          !pointer || view !== null || pointer.state === 'queued' || Date.now() - pointer.claimedAt > dedup.claimGraceMs;
        if (stale && (await claimKey(prepared, held)).claimed) return enqueue(prepared);
        // Otherwise another request claimed the key moments ago and is adding its job, or
        // replaced the pointer before us: look again shortly.
      }
      if (Date.now() > deadline) {
        throw new ConflictError('An identical download is being submitted by another request; try again shortly');
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  return {
    async submit(request, submitOptions = {}) {
      const prepared = prepare(request);
      // The budget is spent by the first claim only (over it, that claim throws RATE_LIMITED):
      // looking again is the same submit.
      const first = await claimKey(prepared, undefined, submitOptions.budget);
      const result = await settle(prepared, first);
      return first.budget ? { ...result, budget: first.budget } : result;
    },

    async submitMany(requests) {
      // The same dedup key twice in one call: one job, the later ones answer with it.
      const byKey = new Map<string, Prepared>();
      const entries = requests.map((request) => {
        const prepared = prepare(request);
        const earlier = byKey.get(prepared.pointerKey);
        if (earlier) return { prepared: earlier, repeat: true };
        byKey.set(prepared.pointerKey, prepared);
        return { prepared, repeat: false };
      });
      const unique = [...byKey.values()];
      // All claims in one go (ioredis writes them together); a key already held goes the single
      // submit's way below, looking at the job that holds it.
      const settled = await Promise.allSettled(unique.map((prepared) => claimKey(prepared)));
      const outcomes = settled.map((result) => (result.status === 'fulfilled' ? result.value : undefined));
      const failure = settled.find((result) => result.status === 'rejected');
      if (failure) {
        // Redis failed part way: give back the keys that were claimed, then fail the whole call.
        await Promise.all(unique.map((prepared, index) => (outcomes[index]?.claimed ? giveBack(prepared) : false)));
        throw failure.reason;
      }
      const claimed = unique.filter((_, index) => outcomes[index]?.claimed);
      if (claimed.length > 0) {
        const acceptedAt = new Date().toISOString();
        try {
          await queue.addBulk(
            claimed.map(({ request, jobId }) => ({ name: 'download', data: { ...request, accepted_at: acceptedAt }, opts: jobOptions(jobId) })),
          );
        } catch (error) {
          // BullMQ's addBulk sends one pipeline, not a transaction: some jobs may have been added.
          // Only the keys of the jobs not in the queue are given back; a retry answers with the others.
          await releaseUnqueued(claimed);
          throw error;
        }
      }
      const results = new Map<Prepared, SubmitResult>();
      for (const prepared of claimed) results.set(prepared, { jobId: prepared.jobId, deduplicated: false, status: 'pending' });
      await Promise.all(
        unique.map(async (prepared, index) => {
          if (results.has(prepared)) return;
          results.set(prepared, await settle(prepared, outcomes[index] as ClaimOutcome));
        }),
      );
      // WAIT (when configured) once, for the claims and jobs of the whole call.
      if (claimed.length > 0) await confirmReplicated();
      return entries.map(({ prepared, repeat }) => {
        const result = results.get(prepared) as SubmitResult;
        return repeat ? { ...result, deduplicated: true } : result;
      });
    },

    get,

    async submitBatch(builds, submitOptions = {}) {
      const jobId = newJobId();
      const data: BatchData = {
        kind: 'batch',
        builds,
        skip_existing: submitOptions.skipExisting ?? true,
        artifacts: submitOptions.artifacts ?? [],
        accepted_at: new Date().toISOString(),
        ...(submitOptions.submittedBy ? { submitted_by: submitOptions.submittedBy } : {}),
      };
      await redis.zadd(keys.jobIndex, 0, jobId);
      await options.batchQueue.add('batch', data, {
        jobId,
        attempts: options.attempts,
        backoff: { type: 'exponential', delay: 5_000 },
        removeOnComplete: { age: options.jobTtlSeconds },
        removeOnFail: { age: options.jobTtlSeconds },
      });
      await confirmReplicated();
      return jobId;
    },

    async list({ status, release, limit, cursor }) {
      // Job ids are UUIDv7: their text order is their time order, so the index is a sorted set
      // with every score 0, read newest first by lexical range.
      const jobs: JobStatusView[] = [];
      const batchSize = Math.max(limit, 50);
      const scanBudget = Math.max(limit * 10, 1_000);
      let scanned = 0;
      let position = cursor ? `(${cursor}` : '+';
      let next: string | null = null;
      while (jobs.length < limit && scanned < scanBudget) {
        const ids = await redis.zrevrangebylex(keys.jobIndex, position, '-', 'LIMIT', 0, batchSize);
        if (ids.length === 0) {
          next = null;
          break;
        }
        const views = await readMany(ids);
        const gone = ids.filter((_, index) => views[index] === null);
        if (gone.length > 0) await redis.zrem(keys.jobIndex, ...gone);
        for (const [index, view] of views.entries()) {
          scanned += 1;
          const id = ids[index] as string;
          position = `(${id}`;
          if (view && (!status || view.status === status) && (!release || view.release === release)) jobs.push(view);
          if (jobs.length === limit) {
            next = index < ids.length - 1 || ids.length === batchSize ? id : null;
            break;
          }
          next = id;
        }
        if (ids.length < batchSize && jobs.length < limit) {
          next = null;
          break;
        }
      }
      return { jobs, next };
    },

    async progressEntry(jobId) {
      const entries = (await redis.xrevrange(keys.progress(jobId), '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
      return entries[0] ?? null;
    },

    async remove(jobId, signal) {
      const view = await get(jobId);
      signal?.throwIfAborted();
      if (!view) throw new NotFoundError(`No job ${jobId}`);
      if (view.status === 'pending' || view.status === 'running') {
        throw new ConflictError(`Job ${jobId} is ${view.status}; only a finished job can be removed`);
      }
      const owner = view.kind === 'batch' ? options.batchQueue : queue;
      const removed = (await owner.remove(jobId)) + (await redis.del(keys.tombstone(jobId)));
      if (removed === 0) throw new ConflictError(`Job ${jobId} is being worked on; try again when it has finished`);
      // A batch takes its module jobs and their logs with it.
      const children = (view.modules ?? []).map((module) => module.job_id).filter((id): id is string => id !== null);
      await Promise.all(children.map(async (childId) => Promise.all([queue.remove(childId).catch(() => 0), jobLog.remove(childId)])));
      await Promise.all([jobLog.remove(jobId), redis.zrem(keys.jobIndex, jobId), redis.del(keys.cancelRequest(jobId))]);
    },

    idempotency: createIdempotencyStore({ redis, keys }),
  };
}
