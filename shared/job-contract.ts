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

export const SubmitterSchema = z.object({ role: z.enum(['read', 'write', 'admin']), label: z.string() });
export type Submitter = z.infer<typeof SubmitterSchema>;

export const JobDataSchema = z.object({
  job_url: z.string().url(),
  release: ReleaseSchema,
  skip_existing: z.boolean(),
  /** Include globs from the request; empty means the worker's ARTIFACT_INCLUDE. */
  artifacts: z.array(z.string()),
  /** Acceptance time, ISO 8601 UTC. */
  accepted_at: z.string(),
  /** Who submitted it: the role and a token label, never the token. */
  submitted_by: SubmitterSchema.optional(),
  /**
   * Set on a batch's module job: `job_url` is that module's build, downloaded as this one module
   * (its build_map.json, if any, is not followed again).
   */
  module: z.string().optional(),
  /** Set on a batch's module job: the batch, and this module's place among all of its modules. */
  batch: z
    .object({ id: z.string(), index: z.number().int().nonnegative(), total: z.number().int().positive(), build_url: z.string() })
    .optional(),
});
export type JobData = z.infer<typeof JobDataSchema>;

/** One build of a batch, as the tracker's front end sends it ("download selected"). */
export const BatchItemSchema = z.object({
  key: z.string(),
  release: ReleaseSchema,
  release_id: z.union([z.number(), z.string()]).nullable().optional(),
  build_number: z.union([z.number(), z.string()]).nullable().optional(),
  build_url: z.string().url(),
  jenkins_job_url: z.string().nullable().optional(),
  display_name: z.string().nullable().optional(),
  environment: z.string().nullable().optional(),
});
export type BatchItem = z.infer<typeof BatchItemSchema>;

/** One module of a batch, found by reading each build's build_map.json. */
export const BatchModuleSchema = z.object({
  /** Module name (folder), or the build's job name when its planning failed. */
  module: z.string(),
  /** The module's own build (what its child job downloads). */
  module_url: z.string(),
  /** The batch build it came from. */
  build_url: z.string(),
  release: ReleaseSchema,
  /** Set when the build could not be planned: no child job runs for this entry. */
  error: z.string().optional(),
});
export type BatchModule = z.infer<typeof BatchModuleSchema>;

/** A batch job (queue `batches`): a coordinator adds one child job per module as slots free up. */
export const BatchDataSchema = z.object({
  kind: z.literal('batch'),
  builds: z.array(BatchItemSchema).min(1),
  skip_existing: z.boolean(),
  artifacts: z.array(z.string()),
  accepted_at: z.string(),
  submitted_by: SubmitterSchema.optional(),
  /** Written once by the coordinator when planned, so a coordinator that takes over keeps `[i/n]`. */
  plan: z.array(BatchModuleSchema).optional(),
});
export type BatchData = z.infer<typeof BatchDataSchema>;

export const CHILD_STATUSES = ['waiting', 'pending', 'running', 'completed', 'failed', 'cancelled'] as const;

/** The state of one module of a batch, kept in the batch job's progress and result. */
export const BatchChildSchema = z.object({
  index: z.number().int().nonnegative(),
  module: z.string(),
  build_url: z.string(),
  /** The child job's id, once it was added (null: not started, or planning failed). */
  job_id: z.string().nullable(),
  /** `waiting`: not added yet (BATCH_PARALLELISM), then as a job's status. */
  status: z.enum(CHILD_STATUSES),
  error: z.string().nullable(),
});
export type BatchChild = z.infer<typeof BatchChildSchema>;

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
  /** The host of the worker that wrote the file (or found it complete): where it is, without a shared DOWNLOAD_DIR. */
  host: z.string().optional(),
});
export type FileRecord = z.infer<typeof FileRecordSchema>;

export const JobResultSchema = z.object({
  files: z.array(FileRecordSchema),
  progress: ProgressSchema,
  /** Batches only: every module's outcome. */
  children: z.array(BatchChildSchema).optional(),
});

/** What a batch coordinator stores as its BullMQ job progress while it runs. */
export const BatchProgressSchema = z.object({
  progress: ProgressSchema,
  children: z.array(BatchChildSchema),
});
export type BatchProgress = z.infer<typeof BatchProgressSchema>;
export type JobResult = z.infer<typeof JobResultSchema>;

export const JOB_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export type FinalStatus = Extract<JobStatus, 'completed' | 'failed' | 'cancelled'>;

/** A job's failure reason starts with this when it was cancelled; status then reads `cancelled`. */
export const CANCELLED_PREFIX = 'Cancelled';

export function isCancelReason(reason: string | null | undefined): boolean {
  return typeof reason === 'string' && reason.startsWith(CANCELLED_PREFIX);
}

/** BullMQ's own failure reason for a job that lost its worker more often than maxStalledCount allows. */
export const STALL_LIMIT_REASON = 'job stalled more than allowable limit';

/** What ferry says instead of STALL_LIMIT_REASON (with the limit when the caller knows it). */
export function describeStallLimit(maxStalls?: number): string {
  const limit = maxStalls === undefined ? 'JOB_MAX_STALLS' : `JOB_MAX_STALLS (${maxStalls})`;
  return `Stalled more than ${limit} times: the worker running it died or stopped renewing its lock each time`;
}
