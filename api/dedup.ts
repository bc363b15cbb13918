import { createHash } from 'node:crypto';

/** What makes two submissions the same download. `skip_existing` is deliberately not part of it. */
export interface DedupInput {
  readonly job_url: string;
  readonly release: string;
  /** The request's include globs; empty means "the workers' default" (ARTIFACT_INCLUDE). */
  readonly artifacts: readonly string[];
}

/**
 * The job URL as the dedup key sees it: scheme and host lower-cased and a default port dropped
 * (WHATWG URL parsing already does both), query and fragment removed, and the path ending in
 * exactly one slash (`.../216`, `.../216/` and `.../216//` are one build).
 */
export function normaliseJobUrl(jobUrl: string): string {
  const url = new URL(jobUrl);
  url.search = '';
  url.hash = '';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/`;
  return url.toString();
}

/**
 * The dedup fingerprint (sha256 hex) of a submission: normalised `job_url`, `release`, and the
 * include globs sorted and without repeats. The API does not know the workers' ARTIFACT_INCLUDE, so
 * an empty list stands for "the default" and differs from the same globs spelt out in the request.
 */
export function dedupFingerprint(input: DedupInput): string {
  const globs = [...new Set(input.artifacts)].sort();
  const canonical = JSON.stringify([normaliseJobUrl(input.job_url), input.release, globs]);
  return createHash('sha256').update(canonical).digest('hex');
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/** The creation time (Unix milliseconds) in a UUIDv7's first 48 bits, or null for anything else. */
export function uuidv7Millis(id: string): number | null {
  if (!UUID_V7.test(id)) return null;
  return Number.parseInt(id.replaceAll('-', '').slice(0, 12), 16);
}

export type PointerState = 'claimed' | 'queued';

/**
 * A dedup pointer's value: `<state>:<job id>`. ferry writes `claimed` only: a claimed pointer whose
 * job is not in the queue may name a job about to appear (within the claim grace), a claimer that
 * crashed, or a removed job. `queued` (written after the add by earlier versions) is still read:
 * such a pointer whose job is gone names a removed job.
 */
export function formatPointer(state: PointerState, jobId: string): string {
  return `${state}:${jobId}`;
}

export function parsePointer(value: string): { state: PointerState; jobId: string; claimedAt: number } | null {
  const [state, jobId, ...rest] = value.split(':');
  if ((state !== 'claimed' && state !== 'queued') || jobId === undefined || rest.length > 0) return null;
  const claimedAt = uuidv7Millis(jobId);
  return claimedAt === null ? null : { state, jobId, claimedAt };
}
