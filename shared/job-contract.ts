import { z } from 'zod';

/**
 * The contract between the API and the workers: what a queued job carries and what a finished one
 * returns. Both ends parse it, because Redis content is untyped and may come from an older deploy.
 */

/** A release becomes a folder name. */
export const RELEASE_PATTERN = /^[0-9A-Za-z._-]{1,64}$/;

export const ReleaseSchema = z
  .string()
  .regex(RELEASE_PATTERN, 'must be 1-64 characters of letters, digits, ".", "_" or "-"')
  .refine((value) => value !== '.' && value !== '..', 'must not be "." or ".."');

export const JobDataSchema = z.object({
  job_url: z.string().url(),
  release: ReleaseSchema,
  skip_existing: z.boolean(),
  /** Include globs from the request; empty means the worker's ARTIFACT_INCLUDE. */
  artifacts: z.array(z.string()),
  /** Acceptance time, ISO 8601 UTC. */
  accepted_at: z.string(),
});
export type JobData = z.infer<typeof JobDataSchema>;

export const ProgressSchema = z.object({
  modules_done: z.number().int().nonnegative(),
  modules_total: z.number().int().nonnegative(),
  files_done: z.number().int().nonnegative(),
  files_total: z.number().int().nonnegative(),
  bytes_done: z.number().nonnegative(),
  bytes_total: z.number().nonnegative(),
});
export type Progress = z.infer<typeof ProgressSchema>;

export const EMPTY_PROGRESS: Progress = Object.freeze({
  modules_done: 0,
  modules_total: 0,
  files_done: 0,
  files_total: 0,
  bytes_done: 0,
  bytes_total: 0,
});

export const FileRecordSchema = z.object({
  /** Relative to DOWNLOAD_DIR, with forward slashes. */
  path: z.string(),
  size: z.number().int().nonnegative(),
  sha256: z.string(),
});
export type FileRecord = z.infer<typeof FileRecordSchema>;

export const JobResultSchema = z.object({
  files: z.array(FileRecordSchema),
  progress: ProgressSchema,
});
export type JobResult = z.infer<typeof JobResultSchema>;

export const JOB_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export type FinalStatus = Extract<JobStatus, 'completed' | 'failed' | 'cancelled'>;

/** A job's failure reason starts with this when it was cancelled; status then reads `cancelled`. */
export const CANCELLED_PREFIX = 'Cancelled';

export function isCancelReason(reason: string | null | undefined): boolean {
  return typeof reason === 'string' && reason.startsWith(CANCELLED_PREFIX);
}
