import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import type { Keys } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';

/** `<target>.<job id>.part` and its `.part.json` record (see download-file.ts partPathFor). */
const PART_NAME = /\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.part(?:\.json)?$/;

export interface PartSweeperOptions {
  readonly redis: Redis;
  readonly keys: Keys;
  readonly downloadDir: string;
  /** PART_TTL_SECONDS in milliseconds: younger files are never touched. */
  readonly ttlMs: number;
  readonly logger: Logger;
}

export interface PartSweeper {
  /** One pass over DOWNLOAD_DIR; returns the removed paths. */
  sweep(): Promise<string[]>;
  /** Sweeps now and then every `intervalMs` until stopped. */
  start(intervalMs: number): void;
  stop(): void;
}

/**
 * Removes `.part` files that no live job owns: left by a job that failed, was cancelled while its
 * worker was gone, or was removed. A file is removed only when it is older than PART_TTL_SECONDS
 * and its job (named in the file name) is neither pending nor running, so a job that is waiting
 * between attempts keeps its partial files to resume. Every worker sweeps; removing twice is harmless.
 */
export function createPartSweeper(options: PartSweeperOptions): PartSweeper {
  const { redis, keys, downloadDir, ttlMs, logger } = options;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<string[]> | undefined;

  const isLive = async (jobId: string): Promise<boolean> => {
    const [exists, completed, failed] = (await redis
      .multi()
      .exists(keys.bullJob(jobId))
      .zscore(keys.bullCompleted, jobId)
      .zscore(keys.bullFailed, jobId)
      .exec()) ?? [];
    return exists?.[1] === 1 && completed?.[1] === null && failed?.[1] === null;
  };

  const sweepOnce = async (): Promise<string[]> => {
    const entries = await readdir(downloadDir, { recursive: true, withFileTypes: true }).catch(() => []);
    const cutoff = Date.now() - ttlMs;
    const liveByJob = new Map<string, boolean>();
    const removed: string[] = [];
    for (const entry of entries) {
      const match = entry.isFile() ? PART_NAME.exec(entry.name) : null;
      if (!match) continue;
      const file = path.join(entry.parentPath, entry.name);
      const info = await stat(file).catch(() => null);
      if (!info || info.mtimeMs > cutoff) continue;
      const jobId = match[1] as string;
      if (!liveByJob.has(jobId)) liveByJob.set(jobId, await isLive(jobId));
      if (liveByJob.get(jobId)) continue;
      await rm(file, { force: true });
      removed.push(file);
    }
    if (removed.length > 0) logger.info('removed partial files no live job owns', { count: removed.length, download_dir: downloadDir });
    return removed;
  };

  const sweep = () => {
    // One pass at a time per process.
    running ??= sweepOnce().finally(() => {
      running = undefined;
    });
    return running;
  };

  return {
    sweep,
    start(intervalMs) {
      const run = () => void sweep().catch((error: unknown) => logger.warn('partial file sweep failed', { error }));
      run();
      timer = setInterval(run, intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
  };
}
