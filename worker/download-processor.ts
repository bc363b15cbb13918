import { hostname } from 'node:os';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { UnrecoverableError, type Job } from 'bullmq';
import { CANCELLED_PREFIX, isCancelReason, JobDataSchema, type FileRecord, type JobData, type JobResult, type Progress } from '../shared/job-contract.js';
import type { Config } from '../shared/config.js';
import type { JobLog } from '../shared/job-log.js';
import type { Logger } from '../shared/logger.js';
import { planBuild, type PlannedFile, type PlannedModule } from './build-plan.js';
import type { FolderLock } from './folder-lock.js';
import { fetchArtifact, folderMaker, formatBytes, partPathFor, smallWriteError, type DownloadedFile } from './download-file.js';
import { LeaseLostError } from './part-writer.js';
import { mapWithConcurrency } from './map-with-concurrency.js';
import type { JenkinsClient } from './jenkins-client.js';
import { manifestWrite, readVerifiedManifest } from './manifest.js';
import { createJobJournal } from './job-journal.js';
import { sharedFileWriter, type FileWrite, type FileWriter } from './file-writer.js';
import { createProgressReporter, type ProgressReporter } from './progress-reporter.js';
import { UnsafePathError } from './safe-path.js';

export interface DownloadProcessorOptions {
  readonly jenkins: JenkinsClient;
  readonly jobLog: JobLog;
  /** Shows a snapshot on the BullMQ job itself (what Bull Board shows); ferry's own snapshot goes with the log. */
  readonly publishBullProgress: (job: Job, progress: Progress) => Promise<void>;
  readonly logger: Logger;
  readonly downloadDir: string;
  /** ARTIFACT_INCLUDE: globs used when the request names none. */
  readonly defaultInclude: readonly string[];
  /** True when a cancel was requested for the job (checked before it starts). */
  readonly isCancelRequested: (jobId: string) => Promise<boolean>;
  /** Serialises writers of one module folder across the fleet. */
  readonly folderLock: FolderLock;
  /** Transfer limits (Config['transfer']). */
  readonly transfer: Pick<Config['transfer'], 'maxArtifactBytes' | 'minSpeedBytes' | 'stallSeconds' | 'maxConnections' | 'writeMode'>;
  /** Milliseconds between progress snapshots. */
  readonly progressIntervalMs?: number;
  /** Milliseconds a log line may wait to be written with the lines after it (default 50). */
  readonly logFlushMs?: number;
  /** False once this process may no longer write a job's files (see worker/job-controls.ts). */
  readonly canWrite?: (jobId: string) => boolean;
  /** Bytes just written to disk (for metrics). */
  readonly onBytes?: (bytes: number) => void;
  /** Writes small artifacts and manifests whole (file-writer.ts). Default: the process-wide one. */
  readonly fileWriter?: FileWriter;
}

type Log = (message: string) => void;

/** Bytes of a module's small files held for one trip to the writer before they go ahead without the manifest. */
const STAGED_BYTES_MAX = 4 * 1024 * 1024;

export type DownloadProcessor = (job: Job<JobData, JobResult>, token?: string, signal?: AbortSignal) => Promise<JobResult>;

/** Removes a job's partial files (and their .json records) for every planned file. */
async function removePartFiles(modules: readonly PlannedModule[], jobId: string): Promise<void> {
  const paths = modules.flatMap((module) => module.files.map((file) => partPathFor(file.target, jobId)));
  await Promise.all(paths.flatMap((part) => [rm(part, { force: true }), rm(`${part}.json`, { force: true })]));
}

/**
 * Creates the folder of the module's first file (which its download needs anyway) and tells whether
 * that made the module's own folder: a folder made just now holds no manifest, so skip_existing has
 * nothing to read (a read that fails costs a trip through the thread pool and an error).
 */
async function madeModuleFolder(module: PlannedModule, ensureDir: (dir: string) => Promise<unknown>): Promise<boolean> {
  const first = module.files[0];
  if (!first) return false;
  // mkdir -p answers with the first folder it created (undefined when all were there). A failure
  // (a file in the way, no permission) is reported by the file's own download, which tries again.
  const created = await ensureDir(path.dirname(first.target)).catch(() => undefined);
  return typeof created === 'string' && (created === module.dir || module.dir.startsWith(`${created}${path.sep}`));
}

/** Wraps a failure with the module and file it happened in, keeping "do not retry" intact. */
function withContext(prefix: string, error: unknown): Error {
  const message = `${prefix}: ${error instanceof Error ? error.message : String(error)}`;
  return error instanceof UnrecoverableError || error instanceof UnsafePathError
    ? new UnrecoverableError(message)
    : new Error(message, { cause: error });
}

/** What one job does: plan the modules, then download each, writing a manifest per module. */
export function createDownloadProcessor(options: DownloadProcessorOptions): DownloadProcessor {
  const { jenkins, jobLog, logger, downloadDir, folderLock, canWrite } = options;
  const host = hostname();

  const downloadFile = async (
    job: Job,
    module: PlannedModule,
    file: PlannedFile,
    prefix: string,
    progress: ProgressReporter,
    signal: AbortSignal,
    log: Log,
    ensureDir: (dir: string) => Promise<unknown>,
    stage: (file: FileWrite) => void,
  ) => {
    const jobId = job.id as string;
    let announced = false;
    let countedBytes = 0;
    let countedTotal = 0;
    try {
      return await fetchArtifact(jenkins, {
        url: file.url,
        target: file.target,
        partPath: partPathFor(file.target, jobId),
        expectedMd5: file.expectedMd5,
        maxBytes: options.transfer.maxArtifactBytes,
        minSpeedBytes: options.transfer.minSpeedBytes,
        stallSeconds: options.transfer.stallSeconds,
        writeMode: options.transfer.writeMode,
        signal,
        canWrite: options.canWrite ? () => (options.canWrite as (id: string) => boolean)(jobId) : undefined,
        // The job's first start: no earlier run can have left a .part of it to resume.
        fresh: job.attemptsStarted <= 1 && job.stalledCounter === 0,
        ensureDir,
        // Small files are staged and written with the module's manifest (downloadModule).
        stage,
        onStart: (total, resumedFrom) => {
          if (total !== undefined && total !== countedTotal) {
            progress.update({ bytes_total: total - countedTotal });
            countedTotal = total;
          }
          const size = total === undefined ? 'size unknown' : formatBytes(total);
          const resuming = resumedFrom > 0 ? `, resuming at ${formatBytes(resumedFrom)}` : '';
          if (!announced) log(`${prefix} ${module.name}: ${file.relativePath} (${size}${resuming})`);
          else if (resumedFrom > 0) log(`${prefix} ${module.name}: ${file.relativePath}: resuming at ${formatBytes(resumedFrom)}`);
          announced = true;
        },
        onProgress: (bytes) => {
          progress.update({ bytes_done: bytes - countedBytes });
          options.onBytes?.(bytes - countedBytes);
          countedBytes = bytes;
        },
        onNote: (message) => log(`${prefix} ${module.name}: ${file.relativePath}: ${message}`),
      });
    } catch (error) {
      throw withContext(`${prefix} ${module.name}: ${file.relativePath}`, error);
    }
  };

  const downloadModule = async (
    job: Job,
    module: PlannedModule,
    prefix: string,
    progress: ProgressReporter,
    signal: AbortSignal,
    log: Log,
    ensureDir: (dir: string) => Promise<unknown>,
  ): Promise<FileRecord[]> => {
    // Files of a module download in parallel; the client's connection cap keeps Jenkins safe.
    const writer = options.fileWriter ?? sharedFileWriter();
    const jobId = job.id as string;
    // Small files (checked, not yet written) wait here to be written with the manifest in one trip
    // to a writer thread: all written, then fsynced, then renamed, the manifest last (file-writer.ts).
    // Past STAGED_BYTES_MAX they go ahead on their own, so a module of many small files holds at most
    // that much in memory.
    let staged: FileWrite[] = [];
    let stagedBytes = 0;
    const earlier: Array<Promise<void>> = [];
    const writeStaged = (files: FileWrite[], last?: FileWrite) => {
      if (canWrite && !canWrite(jobId)) throw signal.reason ?? new LeaseLostError();
      return writer.writeAll(files, last).catch((error: unknown) => {
        throw withContext(`${prefix} ${module.name}`, smallWriteError(error, `${files.length + (last ? 1 : 0)} file(s)`, module.dir));
      });
    };
    const stage = (file: FileWrite) => {
      staged.push(file);
      stagedBytes += file.bytes.length;
      if (stagedBytes < STAGED_BYTES_MAX) return;
      const going = writeStaged(staged);
      going.catch(() => undefined); // awaited below; a failure is reported once the downloads end
      earlier.push(going);
      staged = [];
      stagedBytes = 0;
    };
    let results: Array<DownloadedFile | undefined>;
    try {
      results = await mapWithConcurrency(module.files, options.transfer.maxConnections, async (file) => {
        const result = await downloadFile(job, module, file, prefix, progress, signal, log, ensureDir, stage);
        progress.update({ files_done: 1 });
        return result;
      });
    } catch (error) {
      // Files already sent to the writer are renamed into the folder on its thread: the folder lock
      // is released only after them, so no other job's writes overlap this module's.
      await Promise.allSettled(earlier);
      throw error;
    }
    await Promise.all(earlier);
    const records = module.files.map((file, index) => ({ path: `${module.relativeDir}/${file.relativePath}`, ...(results[index] as DownloadedFile), host }));
    const manifestFiles = module.files.map((file, index) => ({ path: file.relativePath, ...(results[index] as DownloadedFile), url: file.url }));
    const manifest = manifestWrite(module.dir, {
      version: 1,
      release: module.relativeDir.split('/')[0] ?? '',
      module: module.name,
      build: module.build,
      source: module.buildUrl,
      completed_at: new Date().toISOString(),
      files: manifestFiles,
    });
    await writeStaged(staged, manifest);
    return records;
  };

  // Three declared parameters: BullMQ passes the AbortSignal only to processors whose length is 3.
  return async (job, _token, jobSignal) => {
    const signal = jobSignal ?? new AbortController().signal;
    const jobId = job.id as string;
    const parsed = JobDataSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`Job data is invalid: ${parsed.error.issues[0]?.message ?? 'unknown'}`);
    const data = parsed.data;
    const batch = data.batch;
    // A batch's module job also writes every line to the batch's log, numbered over the batch.
    const batchPrefix = batch ? `[${batch.index + 1}/${batch.total}]` : '';
    const journal = createJobJournal({
      jobLog,
      jobId,
      batch: batch
        ? { id: batch.id, format: (message) => (message.startsWith(batchPrefix) ? message : `${batchPrefix} ${data.module ?? 'module'}: ${message}`) }
        : undefined,
      delayMs: options.logFlushMs ?? 50,
      ...(canWrite ? { canWrite: () => canWrite(jobId) } : {}),
      onError: (error) => logger.warn('could not write job log lines; trying again', { job_id: jobId, error: (error as Error).message }),
    });
    const log: Log = (message) => journal.line(message);
    let cancelCheckedAt = 0;
    /** Reads the cancel markers (the job's, and its batch's) at once: one write with whatever else this tick sends. */
    const cancelRequested = async () => {
      cancelCheckedAt = Date.now();
      const answers = await Promise.all([options.isCancelRequested(jobId), ...(batch ? [options.isCancelRequested(batch.id)] : [])]);
      return answers.some(Boolean);
    };

    // ferry's snapshot (what status and the log stream show) goes out with the log lines. The BullMQ
    // job's copy (Bull Board) costs a script per update: at most one per interval, none for a job
    // shorter than that (its result holds the final progress), and the final one for a job that showed any.
    const intervalMs = options.progressIntervalMs ?? 500;
    let bullShownAt: number | undefined;
    let finishing = false;
    const startedAt = Date.now();
    const progress = createProgressReporter(
      async (snapshot) => {
        journal.progress(snapshot);
        const now = Date.now();
        if (finishing ? bullShownAt !== undefined : now - (bullShownAt ?? startedAt) >= intervalMs) {
          bullShownAt = now;
          await options.publishBullProgress(job, snapshot);
        }
      },
      intervalMs,
      (error) => logger.warn('progress publish failed', { job_id: jobId, error }),
    );
    /** Writes what is left: the final snapshot and every queued line, before BullMQ records the outcome. */
    const settle = async () => {
      finishing = true;
      await progress.flush();
      await journal.close();
    };

    let planned: PlannedModule[] = [];
    const run = async (): Promise<JobResult> => {
      log(`Attempt ${job.attemptsStarted}: downloading ${data.job_url} for release ${data.release}`);
      if (job.stalledCounter > 0) {
        log(`Resumed after a stall (${job.stalledCounter} so far): the worker that ran it stopped renewing its lock; partial files are kept`);
      }
      // Pub/sub is fire-and-forget: the marker also stops a job whose worker missed the message (or
      // that was taken just as its cancel came). It is read in the same write to Redis as the first
      // module's folder lock and answered before anything is written (below), and read before a
      // failed plan is reported as the job's failure. One write to Redis per job less than reading
      // it at the start (a write costs about 75 us of machine CPU here; docs/benchmarks.md, "Small jobs").
      const stopIfCancelled = async (cancelled: Promise<boolean>, when = 'before it started') => {
        if (await cancelled) throw new UnrecoverableError(`${CANCELLED_PREFIX} ${when}`);
      };
      let modules: PlannedModule[];
      try {
        modules = await planBuild(jenkins, {
          jobUrl: data.job_url,
          release: data.release,
          include: data.artifacts.length > 0 ? data.artifacts : options.defaultInclude,
          downloadDir,
          signal,
          log: async (message) => log(message),
          moduleName: data.module,
        });
      } catch (error) {
        await stopIfCancelled(cancelRequested());
        throw withContext('Planning failed', error);
      }
      if (modules.length === 0) await stopIfCancelled(cancelRequested());
      const total = modules.length;
      progress.update({ modules_total: total, files_total: modules.reduce((sum, m) => sum + m.files.length, 0) }, 'set');
      journal.progress(progress.current);

      planned = modules;
      const files: FileRecord[] = [];
      for (const [index, module] of modules.entries()) {
        const prefix = batch ? batchPrefix : `[${index + 1}/${total}]`;
        // The marker before each module, sent in the same tick as the folder lock (one write): for
        // the first, and for each next one unless looked at within the last second (the job was
        // listening for the message since then). Answered before the module writes anything.
        const cancelled = index === 0 || Date.now() - cancelCheckedAt >= 1_000 ? cancelRequested() : Promise.resolve(false);
        cancelled.catch(() => undefined);
        log(`${prefix} ${module.name}: build #${module.build}, ${module.files.length} artifact(s)`);
        // One writer per folder: overlapping build maps or a second submit wait for the first.
        await folderLock.withLock(module.relativeDir, jobId, signal, (holder) => {
          log(`${prefix} ${module.name}: waiting for job ${holder}, which is writing ${module.relativeDir}`);
        }, async () => {
          await stopIfCancelled(cancelled, index === 0 ? 'before it started' : 'by request');
          const ensureDir = folderMaker(downloadDir);
          const existing = data.skip_existing && !(await madeModuleFolder(module, ensureDir))
            ? await readVerifiedManifest(module.dir, module.files.map((file) => file.relativePath))
            : null;
          if (existing) {
            const bytes = existing.files.reduce((sum, file) => sum + file.size, 0);
            progress.update({ files_done: existing.files.length, bytes_done: bytes, bytes_total: bytes });
            files.push(...existing.files.map(({ path, size, sha256 }) => ({ path: `${module.relativeDir}/${path}`, size, sha256, host })));
            log(`${prefix} ${module.name}: already downloaded and verified, skipped`);
          } else {
            files.push(...(await downloadModule(job, module, prefix, progress, signal, log, ensureDir)));
            log(`${prefix} ${module.name}: done`);
          }
        });
        progress.update({ modules_done: 1 });
      }
      const bytes = files.reduce((sum, file) => sum + file.size, 0);
      log(`Downloaded ${files.length} file(s), ${formatBytes(bytes)}, from ${total} module(s)`);
      return { files, progress: progress.current };
    };

    let result: JobResult;
    try {
      result = await run();
    } catch (error) {
      try {
        const reason = signal.aborted ? String((signal.reason as Error | undefined)?.message ?? signal.reason) : '';
        if (isCancelReason(reason) || (error instanceof UnrecoverableError && isCancelReason(error.message))) {
          // A cancelled job leaves no partial files; completed files and manifests stay valid.
          await removePartFiles(planned, jobId);
          throw new UnrecoverableError(`${CANCELLED_PREFIX} by request`);
        }
        throw error;
      } finally {
        // The job's own failure is what BullMQ records; a log Redis refused is only reported.
        await settle().catch((flushError: unknown) =>
          logger.warn('could not write the last job log lines', { job_id: jobId, error: (flushError as Error).message }),
        );
      }
    }
    try {
      await settle();
    } catch (error) {
      throw new Error(`Could not write the job's log to Redis: ${(error as Error).message}`, { cause: error });
    }
    return result;
  };
}
