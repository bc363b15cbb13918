import { z } from 'zod';
import { isUnderBase, parseBuildUrl, releaseFromJobUrl } from '../shared/jenkins-url.js';
import { JOB_STATUSES, ReleaseSchema, type BatchItem } from '../shared/job-contract.js';
import { ValidationError } from '../shared/errors.js';

/** Body of `POST /api/v1/jenkins/download`. Unknown fields are refused. */
export const SubmitBodySchema = z.strictObject({
  job_url: z.string().min(1).max(2_048),
  release: z.string().optional(),
  skip_existing: z.boolean().default(true),
  artifacts: z.array(z.string().min(1).max(200)).max(50).optional(),
});

const text = (max: number) => z.string().max(max);

/** One build of `POST /api/v1/jenkins/download-selected`: the fields the tracker's front end sends, no others. */
export const BatchItemBodySchema = z.strictObject({
  key: text(200).min(1),
  release: ReleaseSchema,
  release_id: z.union([z.number().int(), text(64)]).nullable().optional(),
  build_number: z.union([z.number().int().nonnegative(), text(64)]).nullable().optional(),
  build_url: text(2_048).min(1),
  jenkins_job_url: text(2_048).nullable().optional(),
  display_name: text(500).nullable().optional(),
  environment: text(200).nullable().optional(),
});

/** Body of `POST /api/v1/jenkins/download-selected`: 1 to 100 builds. */
export const BatchBodySchema = z.strictObject({
  jobs: z.array(BatchItemBodySchema).min(1).max(100),
});

/** Most downloads one `POST /api/v1/jenkins/downloads` takes. */
export const MAX_BULK_DOWNLOADS = 100;

/** Body of `POST /api/v1/jenkins/downloads`: 1 to 100 downloads, each as `POST .../download` takes it. */
export const BulkBodySchema = z.strictObject({
  downloads: z.array(SubmitBodySchema).min(1).max(MAX_BULK_DOWNLOADS),
});

const BulkListSchema = z.strictObject({ downloads: z.array(z.unknown()).min(1).max(MAX_BULK_DOWNLOADS) });

export const ListQuerySchema = z.strictObject({
  status: z.enum(JOB_STATUSES).optional(),
  release: ReleaseSchema.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.uuid().optional(),
});

export const LogsQuerySchema = z.strictObject({
  after: z.string().max(40).optional(),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
  /** A stream token (checked by the auth middleware before this schema runs). */
  token: z.string().max(200).optional(),
});

/** An `Idempotency-Key` value: 1-200 printable ASCII characters (space to tilde). */
export const IdempotencyKeySchema = z.string().regex(/^[\x20-\x7e]{1,200}$/, 'must be 1-200 printable ASCII characters');

/** The `Idempotency-Key` header's value, or undefined when the request has none; 400 when malformed. */
export function parseIdempotencyKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const result = IdempotencyKeySchema.safeParse(header);
  if (result.success) return result.data;
  const message = `Idempotency-Key: ${result.error.issues[0]?.message ?? 'invalid'}`;
  throw new ValidationError(`Invalid header: ${message}`, [message]);
}

/** Parses with a schema, turning zod's issues into one ValidationError naming every field. */
export function parseOrThrow<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const details = result.error.issues.map((issue) => {
    const field = issue.path.join('.');
    if (issue.code === 'unrecognized_keys') return `${field ? `${field}: ` : ''}unknown field(s): ${issue.keys.join(', ')}`;
    return field ? `${field}: ${issue.message}` : issue.message;
  });
  throw new ValidationError(`Invalid ${what}: ${details.join('; ')}`, details);
}

export interface ValidatedSubmission {
  job_url: string;
  release: string;
  skip_existing: boolean;
  artifacts: string[];
}

/** The reason `value` cannot be a build URL ferry may fetch, or null when it can. */
function buildUrlProblem(field: string, value: string, jenkinsUrl: string): string | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `${field}: must be an absolute http(s) URL`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `${field}: must be an http(s) URL`;
  if (url.username || url.password) return `${field}: must not contain credentials`;
  if (!isUnderBase(url, jenkinsUrl)) return `${field}: must be on the configured Jenkins (${jenkinsUrl})`;
  if (!parseBuildUrl(url.toString())) return `${field}: must name a build, like <jenkins>/job/<name>/<number>/`;
  return null;
}

/** A validated "download selected" batch: each `build_url` on JENKINS_URL, without query or fragment. */
export function validateBatch(body: unknown, jenkinsUrl: string): BatchItem[] {
  const parsed = parseOrThrow(BatchBodySchema, body ?? {}, 'request body');
  const problems = parsed.jobs
    .map((item, index) => buildUrlProblem(`jobs.${index}.build_url`, item.build_url, jenkinsUrl))
    .filter((problem): problem is string => problem !== null);
  if (problems.length > 0) throw new ValidationError(`Invalid request body: ${problems.join('; ')}`, problems);
  return parsed.jobs.map((item) => {
    const url = new URL(item.build_url);
    url.hash = '';
    url.search = '';
    return { ...item, build_url: url.toString() };
  });
}

/**
 * Checks what zod cannot: the job URL is a Jenkins build URL on the JENKINS_URL origin (ferry
 * never fetches an address a user chose), and the release, given or derived, is a safe folder name.
 */
export function validateSubmission(body: unknown, jenkinsUrl: string): ValidatedSubmission {
  const parsed = parseOrThrow(SubmitBodySchema, body ?? {}, 'request body');
  let url: URL;
  try {
    url = new URL(parsed.job_url);
  } catch {
    throw new ValidationError('Invalid request body: job_url: must be an absolute http(s) URL', ['job_url: must be an absolute http(s) URL']);
  }
  const problems: string[] = [];
  if (url.protocol !== 'http:' && url.protocol !== 'https:') problems.push('job_url: must be an http(s) URL');
  else if (url.username || url.password) problems.push('job_url: must not contain credentials');
  else if (!isUnderBase(url, jenkinsUrl)) problems.push(`job_url: must be on the configured Jenkins (${jenkinsUrl})`);
  else if (!parseBuildUrl(url.toString())) problems.push('job_url: must name a build, like <jenkins>/job/<name>/<number>/');
  if (problems.length > 0) throw new ValidationError(`Invalid request body: ${problems.join('; ')}`, problems);

  url.hash = '';
  url.search = '';
  const jobUrl = url.toString();
  const release = parsed.release ?? releaseFromJobUrl(jobUrl);
  if (release === undefined) {
    const message = 'release: required when job_url has no /QA_Release_<x.y>/ segment';
    throw new ValidationError(`Invalid request body: ${message}`, [message]);
  }
  const releaseCheck = ReleaseSchema.safeParse(release);
  if (!releaseCheck.success) {
    const message = `release: ${releaseCheck.error.issues[0]?.message ?? 'invalid'}`;
    throw new ValidationError(`Invalid request body: ${message}`, [message]);
  }
  return { job_url: jobUrl, release, skip_existing: parsed.skip_existing, artifacts: parsed.artifacts ?? [] };
}

/**
 * A validated bulk submit: every download checked as {@link validateSubmission} checks one; any
 * problem in any of them refuses the whole request, naming each problem by its place
 * (`downloads.3.job_url: ...`), so nothing is enqueued from a body that is partly wrong.
 */
export function validateBulk(body: unknown, jenkinsUrl: string): ValidatedSubmission[] {
  // The list first; each download then as the single submit checks it, so every problem is named.
  const parsed = parseOrThrow(BulkListSchema, body ?? {}, 'request body');
  const problems: string[] = [];
  const submissions = parsed.downloads.map((item, index) => {
    try {
      return validateSubmission(item, jenkinsUrl);
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      const details = error.details.length > 0 ? error.details : [error.message];
      // `job_url: ...` becomes `downloads.3.job_url: ...`; a message about the whole item `downloads.3: ...`.
      problems.push(...details.map((detail) => (/^[a-z_]+(\.\d+)?: /.test(detail) ? `downloads.${index}.${detail}` : `downloads.${index}: ${detail}`)));
      return undefined;
    }
  });
  if (problems.length > 0) throw new ValidationError(`Invalid request body: ${problems.join('; ')}`, problems);
  return submissions as ValidatedSubmission[];
}
