import { setTimeout as sleep } from 'node:timers/promises';
import { UnrecoverableError, type Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { v5 as uuidv5 } from 'uuid';
import {
  BatchDataSchema,
  CANCELLED_PREFIX,
  EMPTY_PROGRESS,
  isCancelReason,
  JobResultSchema,
  type BatchChild,
  type BatchData,
  type BatchModule,
  type BatchProgress,
  type FileRecord,
  type JobData,
  type JobResult,
  type Progress,
} from '../shared/job-contract.js';
import type { JobLog } from '../shared/job-log.js';
import { parseProgress, publishProgress } from '../shared/job-progress.js';
import { moduleName, parseBuildUrl } from '../shared/jenkins-url.js';
import type { Keys } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { listModules } from './build-plan.js';
import type { JenkinsClient } from './jenkins-client.js';
import { mapWithConcurrency } from './map-with-concurrency.js';

export interface BatchCoordinatorOptions {
  readonly redis: Redis;
  readonly keys: Keys;
  readonly jenkins: JenkinsClient;
  readonly jobLog: JobLog;
  readonly logger: Logger;
  /** The downloads queue: module jobs are added there and run anywhere in the fleet. */
  readonly downloads: Queue<JobData, JobResult>;
  /** BATCH_PARALLELISM: module jobs of one batch pending or running at once. */
  readonly parallelism: number;
  /** JOB_ATTEMPTS for each module job. */
  readonly attempts: number;
  /** JOB_TTL_SECONDS: how long finished module jobs and cancel markers are kept. */
  readonly jobTtlSeconds: number;
  readonly isCancelRequested: (jobId: string) => Promise<boolean>;
  /** How often the coordinator looks at its module jobs (default 250 ms). */
  readonly pollMs?: number;
  /** How long a cancelled batch waits for its running modules to stop (default 5000 ms). */
  readonly cancelWaitMs?: number;
}

export type BatchProcessor = (job: Job<BatchData, JobResult>, token?: string, signal?: AbortSignal) => Promise<JobResult>;

/** Module job ids are derived from the batch id and the module's place: a coordinator that takes over finds them. */
export const childJobId = (batchId: string, index: number) => uuidv5(String(index), batchId);

const FINISHED = new Set<BatchChild['status']>(['completed', 'failed', 'cancelled']);
const ACTIVE = new Set<BatchChild['status']>(['pending', 'running']);

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error));

function sumProgress(parts: Iterable<Progress>, modulesTotal: number, modulesDone: number): Progress {
  const total = { ...EMPTY_PROGRESS, modules_total: modulesTotal, modules_done: modulesDone };
  for (const part of parts) {
    total.files_done += part.files_done;
    total.files_total += part.files_total;
    total.bytes_done += part.bytes_done;
    total.bytes_total += part.bytes_total;
  }
  return total;
}

/**
 * The coordinator of one batch ("download selected"). It reads every build's build_map.json first
 * (so `[i/n]` counts all modules of the batch from the first line), stores that plan in its job
 * data, then keeps at most BATCH_PARALLELISM module jobs of the batch in the downloads queue at a
 * time, adding the next as one finishes. Module jobs run on any worker of the fleet; their lines go
 * to the batch's log too. BullMQ flows were not used: a flow has no per-parent concurrency limit
 * and needs every child at creation, while the modules are known only once each build map is read.
 * The coordinator holds no download slot (it has its own queue) and is stateless between ticks: a
 * coordinator that takes over a stalled batch finds its module jobs by their derived ids.
 */
export function createBatchCoordinator(options: BatchCoordinatorOptions): BatchProcessor {
  const { redis, keys, jenkins, jobLog, logger, downloads } = options;
  const pollMs = options.pollMs ?? 250;
  const cancelWaitMs = options.cancelWaitMs ?? 5_000;
  const bull = { job: keys.bullJob, lock: keys.bullLock, completed: keys.bullCompleted, failed: keys.bullFailed };

  /** Reads the state of module jobs, as the API's status derives it. */
  const readChildren = async (ids: readonly string[]) => {
    const transaction = redis.multi();
    for (const id of ids) {
      transaction.exists(bull.job(id)).zscore(bull.completed, id).zscore(bull.failed, id).exists(bull.lock(id)).hget(bull.job(id), 'failedReason').exists(keys.tombstone(id));
    }
    const results = (await transaction.exec()) ?? [];
    return ids.map((id, index) => {
      const [exists, completed, failed, locked, reason, tombstone] = results.slice(index * 6, index * 6 + 6).map(([error, value]) => {
        if (error) throw error;
        return value;
      });
      return { id, exists: exists === 1, completed: completed !== null, failed: failed !== null, locked: locked === 1, reason: (reason as string | null) ?? null, tombstone: tombstone === 1 };
    });
  };

  const plan = async (batchId: string, data: BatchData, signal: AbortSignal, log: (message: string) => Promise<unknown>): Promise<BatchModule[]> => {
    const total = data.builds.length;
    const perBuild = await mapWithConcurrency(data.builds, 4, async (item, index) => {
      const label = `Build ${index + 1}/${total} ${item.display_name ?? item.key}`;
      try {
        const modules = await listModules(jenkins, item.build_url, signal, async () => undefined);
        await log(`${label}: ${modules.length} module(s): ${modules.map((module) => module.name).join(', ')}`);
        return modules.map((module): BatchModule => ({ module: module.name, module_url: module.buildUrl, build_url: item.build_url, release: item.release }));
      } catch (error) {
        if (signal.aborted) throw error;
        logger.warn('batch build could not be planned', { job_id: batchId, build_url: item.build_url, error: describe(error) });
        await log(`${label}: cannot be downloaded: ${describe(error)}`);
        const name = moduleName(parseBuildUrl(item.build_url)?.jobName ?? item.key);
        return [{ module: name, module_url: item.build_url, build_url: item.build_url, release: item.release, error: describe(error) }];
      }
    });
    return perBuild.flat();
  };

  return async (job, _token, jobSignal) => {
    const signal = jobSignal ?? new AbortController().signal;
    const batchId = job.id as string;
    const parsed = BatchDataSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`Batch data is invalid: ${parsed.error.issues[0]?.message ?? 'unknown'}`);
    let data = parsed.data;
    const log = (message: string) => jobLog.append(batchId, message);
    await jobLog.keep(batchId);
    if (await options.isCancelRequested(batchId)) throw new UnrecoverableError(`${CANCELLED_PREFIX} before it started`);

    if (!data.plan) {
      await log(`Attempt ${job.attemptsStarted}: batch of ${data.builds.length} build(s); reading their build maps`);
      const modules = await plan(batchId, data, signal, log);
      data = { ...data, plan: modules };
      await job.updateData(data);
    } else {
      await log(`Attempt ${job.attemptsStarted}: taking over the batch (${data.plan.length} module(s) planned earlier)`);
    }
    const modules = data.plan ?? [];
    const total = modules.length;
    await log(`${total} module(s) to download, at most ${options.parallelism} at a time`);

    const children: BatchChild[] = modules.map((entry, index) => ({
      index,
      module: entry.module,
      build_url: entry.build_url,
      job_id: entry.error ? null : childJobId(batchId, index),
      status: entry.error ? 'failed' : 'waiting',
      error: entry.error ?? null,
    }));
    const progressOf = new Map<number, Progress>();
    const filesOf = new Map<number, FileRecord[]>();

    // Module jobs already in the queue were added by a coordinator that stopped: follow them.
    const candidates = children.filter((child) => child.job_id !== null);
    const existing = await readChildren(candidates.map((child) => child.job_id as string));
    for (const [position, state] of existing.entries()) {
      if (state.exists || state.completed || state.failed || state.tombstone) (candidates[position] as BatchChild).status = 'pending';
    }

    const prefix = (child: BatchChild) => `[${child.index + 1}/${total}] ${child.module}`;
    let lastPublished = '';
    const publish = async () => {
      const done = children.filter((child) => FINISHED.has(child.status)).length;
      const progress = sumProgress(progressOf.values(), total, done);
      const snapshot: BatchProgress = { progress, children };
      const serialised = JSON.stringify(snapshot);
      if (serialised === lastPublished) return progress;
      lastPublished = serialised;
      await Promise.all([job.updateProgress(snapshot), publishProgress(redis, keys, batchId, progress)]);
      return progress;
    };

    /** Looks at every pending or running module job once, recording outcomes. */
    const refresh = async () => {
      const active = children.filter((child) => ACTIVE.has(child.status));
      if (active.length === 0) return;
      const states = await readChildren(active.map((child) => child.job_id as string));
      const reads = await Promise.all(
        active.map(async (child, position) => {
          const state = states[position] as (typeof states)[number];
          if (state.completed) {
            const raw = await redis.hget(bull.job(child.job_id as string), 'returnvalue');
            const result = JobResultSchema.safeParse(raw ? (JSON.parse(raw) as unknown) : undefined);
            return { child, state, result: result.success ? result.data : undefined };
          }
          const entries = (await redis.xrevrange(keys.progress(child.job_id as string), '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
          return { child, state, progress: parseProgress(entries[0]?.[1]) };
        }),
      );
      for (const read of reads) {
        const { child, state } = read;
        if ('progress' in read && read.progress) progressOf.set(child.index, read.progress);
        if (state.completed) {
          child.status = 'completed';
          if (read.result) {
            progressOf.set(child.index, read.result.progress);
            filesOf.set(child.index, read.result.files);
          }
          await log(`${prefix(child)}: module completed`);
        } else if (state.failed) {
          child.status = isCancelReason(state.reason) ? 'cancelled' : 'failed';
          // The module job's reason already starts with "[i/n] module: " when it names a file.
          child.error = (state.reason ?? 'failed').replace(`${prefix(child)}: `, '');
          await log(`${prefix(child)}: module ${child.status}${child.status === 'failed' ? `: ${child.error}` : ''}`);
        } else if (!state.exists && state.tombstone) {
          child.status = 'cancelled';
          child.error = `${CANCELLED_PREFIX} by request`;
          await log(`${prefix(child)}: module cancelled`);
        } else if (!state.exists) {
          child.status = 'failed';
          child.error = 'The module job was removed from the queue';
          await log(`${prefix(child)}: module job removed`);
        } else {
          child.status = state.locked ? 'running' : 'pending';
        }
      }
    };

    const launch = async () => {
      let active = children.filter((child) => ACTIVE.has(child.status)).length;
      for (const child of children) {
        if (active >= options.parallelism) break;
        if (child.status !== 'waiting') continue;
        const entry = modules[child.index] as BatchModule;
        const childData: JobData = {
          job_url: entry.module_url,
          release: entry.release,
          skip_existing: data.skip_existing,
          artifacts: data.artifacts,
          accepted_at: new Date().toISOString(),
          module: entry.module,
          batch: { id: batchId, index: child.index, total, build_url: entry.build_url },
        };
        await downloads.add('download', childData, {
          jobId: child.job_id as string,
          attempts: options.attempts,
          backoff: { type: 'exponential', delay: 5_000 },
          removeOnComplete: { age: options.jobTtlSeconds },
          removeOnFail: { age: options.jobTtlSeconds },
        });
        child.status = 'pending';
        active += 1;
      }
    };

    const cancelChildren = async () => {
      for (const child of children.filter((candidate) => ACTIVE.has(candidate.status))) {
        const id = child.job_id as string;
        await redis.set(keys.cancelRequest(id), '1', 'EX', options.jobTtlSeconds);
        if ((await downloads.remove(id)) === 1) {
          child.status = 'cancelled';
          child.error = `${CANCELLED_PREFIX} with its batch`;
          await jobLog.end(id, 'cancelled', null, 'Job cancelled with its batch');
        } else {
          await redis.publish(keys.cancelChannel, id);
        }
      }
      const deadline = Date.now() + cancelWaitMs;
      await refresh();
      while (children.some((child) => ACTIVE.has(child.status)) && Date.now() < deadline) {
        await sleep(pollMs);
        await refresh();
      }
      for (const child of children) {
        if (child.status === 'waiting') {
          child.status = 'cancelled';
          child.error = `${CANCELLED_PREFIX} with its batch before it started`;
        }
      }
      await publish().catch(() => undefined);
    };

    try {
      for (;;) {
        // Aborted for another reason (shutdown, lock lost, timeout): leave the modules running.
        if (signal.aborted && !isCancelReason(String(signal.reason))) throw signal.reason;
        if (signal.aborted || (await options.isCancelRequested(batchId))) {
          await cancelChildren();
          throw new UnrecoverableError(`${CANCELLED_PREFIX} by request`);
        }
        await refresh();
        await launch();
        await publish();
        if (!children.some((child) => child.status === 'waiting' || ACTIVE.has(child.status))) break;
        await sleep(pollMs);
      }
    } catch (error) {
      if (error instanceof UnrecoverableError && isCancelReason(error.message)) throw error;
      if (signal.aborted && !isCancelReason(String(signal.reason))) throw error;
      if (signal.aborted && isCancelReason(String(signal.reason))) {
        await cancelChildren();
        throw new UnrecoverableError(`${CANCELLED_PREFIX} by request`);
      }
      throw error;
    }

    const progress = await publish();
    const failed = children.filter((child) => child.status !== 'completed');
    const files = children.flatMap((child) => filesOf.get(child.index) ?? []);
    const bytes = files.reduce((sum, file) => sum + file.size, 0);
    await log(`${total - failed.length} of ${total} module(s) completed: ${files.length} file(s), ${bytes} bytes`);
    if (failed.length > 0) {
      const names = failed.map((child) => child.module).join(', ');
      throw new UnrecoverableError(`${failed.length} of ${total} module(s) failed: ${names}`);
    }
    return { files, progress, children };
  };
}
