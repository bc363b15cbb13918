import type { Redis } from 'ioredis';
import { EMPTY_PROGRESS, ProgressSchema, type Progress } from './job-contract.js';
import type { Keys } from './keys.js';

/**
 * A job's latest progress snapshot lives in a Redis Stream capped at one entry: a status read gets
 * it with one command, and the API's log tail can follow it with the same XREAD as the log lines.
 */
export function parseProgress(fields: string[] | undefined): Progress {
  const index = fields?.indexOf('p') ?? -1;
  const raw = index >= 0 ? fields?.[index + 1] : undefined;
  if (!raw) return EMPTY_PROGRESS;
  try {
    const parsed = ProgressSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : EMPTY_PROGRESS;
  } catch {
    return EMPTY_PROGRESS;
  }
}

/** The stored form of a snapshot: the value of the `p` field of the progress stream's entry. */
export function serializeProgress(progress: Progress): string {
  return JSON.stringify(progress);
}

export async function publishProgress(redis: Redis, keys: Keys, jobId: string, progress: Progress): Promise<void> {
  await redis.xadd(keys.progress(jobId), 'MAXLEN', '1', '*', 'p', serializeProgress(progress));
}
