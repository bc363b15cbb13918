import { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import { NotFoundError, ValidationError } from '../shared/errors.js';
import type { JobLog } from '../shared/job-log.js';
import { START_CURSOR } from '../shared/log-cursor.js';
import { abandonedSignal } from './error-handler.js';
import { createIdempotencyMiddleware, type IdempotencyScope, type IdempotencyStore } from './idempotency.js';
import { callerScope, createAuth, principalOf, type Auth } from './auth.js';
import type { CancelOutcome } from './cancel-job.js';
import { setRateHeaders, type SubmitRateLimit } from './rate-limit.js';
import { createStreamTokens } from './stream-tokens.js';
import type { JobStore, SubmitResult } from './job-store.js';
import type { PlainRoute } from './plain-route.js';
import { LogsQuerySchema, ListQuerySchema, parseOrThrow, validateBatch, validateBulk, validateSubmission, type ValidatedSubmission } from './request-schemas.js';

export interface DownloadRoutesOptions {
  readonly jenkinsUrl: string;
  readonly jobStore: JobStore;
  readonly jobLog: JobLog;
  readonly logStream: RequestHandler;
  /** Cancels a pending or running job (api/cancel-job.ts). */
  readonly cancelJob: (jobId: string, signal?: AbortSignal) => Promise<CancelOutcome>;
  /** Where `Idempotency-Key` answers are kept (default: the job store's, on its Redis connection). */
  readonly idempotency?: IdempotencyStore;
  /** Whose key space an `Idempotency-Key` is in (default: the caller's token label, else address). */
  readonly idempotencyScope?: IdempotencyScope;
  /** Who may do what (default: open, every request acts as admin). */
  readonly auth?: Auth;
  /** Issues stream tokens for `POST .../stream-token` (must match the auth's). */
  readonly streamTokens?: ReturnType<typeof createStreamTokens>;
  /** The per-caller rate limit (default none). */
  readonly submitLimit?: SubmitRateLimit;
}

const BASE = '/api/v1/jenkins';
const JOB_ID = z.uuid();
const isJobId = (value: string) => JOB_ID.safeParse(value).success;

/** Unknown ids (including malformed ones) are 404, never a 500 or a Redis lookup. */
const requireJobId: RequestHandler = (req, _res, next) => {
  if (!isJobId(String(req.params.id))) throw new NotFoundError(`No job ${String(req.params.id).slice(0, 64)}`);
  next();
};

/** `GET .../status`: one job's status document. */
export const STATUS_PATH = `${BASE}/download/:id/status`;

function statusHandler(jobStore: JobStore): RequestHandler {
  return async (req, res) => {
    const view = await jobStore.get(String(req.params.id));
    if (!view) throw new NotFoundError(`No job ${String(req.params.id)}`);
    res.json(view);
  };
}

/** The canonical URL of a status read; the router also takes other letter cases, a trailing slash, percent-encoding. */
const STATUS_URL = /^\/api\/v1\/jenkins\/download\/([0-9A-Za-z-]{1,128})\/status(?:\?|$)/;

/**
 * `GET .../status` answered before the router (api/plain-route.ts): the status read is the API's
 * hottest request (trackers poll it). The same handlers as the router's route, in the same order
 * (the router's `identify` for the BASE paths, then the route's). It takes only the canonical URL,
 * whose id needs no decoding; any other spelling goes to the router, which answers it as before.
 */
export function createStatusRoute({ jobStore, auth }: { readonly jobStore: JobStore; readonly auth: Auth }): PlainRoute {
  return {
    path: STATUS_PATH,
    match(req) {
      if (req.method !== 'GET') return null;
      const id = STATUS_URL.exec(req.url ?? '')?.[1];
      return id === undefined ? null : { id };
    },
    before: [auth.identify],
    handlers: [auth.require('read'), requireJobId, statusHandler(jobStore)],
  };
}

/** `POST .../download`: submit one build's download. */
export const SUBMIT_PATH = `${BASE}/download`;

/** The canonical URL of a submit; the router also takes other letter cases and a trailing slash. */
const SUBMIT_URL = /^\/api\/v1\/jenkins\/download(?:\?|$)/;

export interface SubmitRouteOptions {
  readonly jenkinsUrl: string;
  readonly jobStore: JobStore;
  readonly auth: Auth;
  /** The per-caller rate limit (default none): spent in the submit's claim script. */
  readonly submitLimit?: SubmitRateLimit | undefined;
  /** The route's `Idempotency-Key` middleware (api/idempotency.ts). */
  readonly idempotency: RequestHandler;
}

/** The submit route's handlers, shared by the router's route and the plain route. */
function submitHandlers({ jenkinsUrl, jobStore, auth, submitLimit, idempotency }: SubmitRouteOptions): RequestHandler[] {
  const submit: RequestHandler = async (req, res) => {
    if (!req.is('application/json')) throw new ValidationError('Content-Type must be application/json');
    const submission = validateSubmission(req.body, jenkinsUrl);
    const { role, label } = principalOf(res);
    const budget = submitLimit?.budget(req, res);
    const { jobId, deduplicated, status, budget: spent } = await jobStore.submit({ ...submission, submitted_by: { role: role ?? 'read', label } }, { budget });
    if (budget && spent) setRateHeaders(res, budget.points, spent.consumed);
    // 202: a new job was queued; 200: an identical pending or running job answers instead.
    res.status(deduplicated ? 200 : 202).json(submitAnswer(submission, { jobId, deduplicated, status }));
  };
  // The rate limit is spent inside the submit (after validation and Idempotency-Key, with the
  // dedup claim: one Redis round trip for both); a replayed answer spends nothing.
  return [auth.require('write'), idempotency, submit];
}

/** The answer to one submission: the job made for it, or the pending or running one it matched. */
function submitAnswer(submission: ValidatedSubmission, result: SubmitResult) {
  const { jobId, deduplicated, status } = result;
  return {
    job_id: jobId,
    deduplicated,
    message: deduplicated
      ? `Download of ${submission.job_url} for release ${submission.release} is already ${status} as job ${jobId}`
      : `Download of ${submission.job_url} for release ${submission.release} accepted`,
    logs_url: `${BASE}/download/${jobId}`,
    status_url: `${BASE}/download/${jobId}/status`,
  };
}

/** `POST .../downloads`: several downloads in one request (a tracker submitting a release's builds). */
export const BULK_SUBMIT_PATH = `${BASE}/downloads`;

/**
 * The bulk submit's handlers: the whole body is validated first (one bad download refuses the
 * request, nothing enqueued), then one rate-limit point per download is spent, then every download
 * is deduplicated and the new jobs added together (api/job-store.ts submitMany). 202 when at least
 * one new job was made, 200 when every download matched a pending or running job.
 */
function bulkSubmitHandlers({ jenkinsUrl, jobStore, auth, submitLimit, idempotency }: SubmitRouteOptions): RequestHandler[] {
  const submit: RequestHandler = async (req, res) => {
    if (!req.is('application/json')) throw new ValidationError('Content-Type must be application/json');
    const submissions = validateBulk(req.body, jenkinsUrl);
    if (submitLimit && submissions.length > submitLimit.perMinute) {
      // It could never fit: one point per download, RATE_LIMIT_PER_MINUTE a minute.
      const message = `downloads: at most ${submitLimit.perMinute} in one request (RATE_LIMIT_PER_MINUTE)`;
      throw new ValidationError(`Invalid request body: ${message}`, [message]);
    }
    await submitLimit?.spend(req, res, submissions.length);
    const { role, label } = principalOf(res);
    const submittedBy = { role: role ?? 'read', label };
    const results = await jobStore.submitMany(submissions.map((submission) => ({ ...submission, submitted_by: submittedBy })));
    const jobs = submissions.map((submission, index) => ({ job_url: submission.job_url, ...submitAnswer(submission, results[index] as SubmitResult) }));
    res.status(results.some((result) => !result.deduplicated) ? 202 : 200).json({ jobs });
  };
  return [auth.require('write'), idempotency, submit];
}

/** The `Idempotency-Key` middleware of the submit routes, scoped per caller unless told otherwise. */
export function submitIdempotency(store: IdempotencyStore, scope?: IdempotencyScope): RequestHandler {
  return createIdempotencyMiddleware({
    store,
    scope: scope ?? ((req) => callerScope(req, req.res as Parameters<typeof callerScope>[1])),
  });
}

/**
 * `POST .../download` answered before the router (api/plain-route.ts), like the status read: trackers
 * submit every build of a release at once. The same handlers as the router's route, in the same
 * order; only the canonical URL is taken, any other spelling goes to the router.
 */
export function createSubmitRoute(options: SubmitRouteOptions): PlainRoute {
  return {
    path: SUBMIT_PATH,
    match(req) {
      return req.method === 'POST' && SUBMIT_URL.test(req.url ?? '') ? {} : null;
    },
    before: [options.auth.identify],
    handlers: submitHandlers(options),
  };
}

/** The HTTP surface the tracker's front end calls, plus JSON log paging and listing. */
export function createDownloadRouter(options: DownloadRoutesOptions): Router {
  const { jobStore, jobLog } = options;
  const router = Router();
  const streamTokens = options.streamTokens ?? createStreamTokens(undefined);
  const auth = options.auth ?? createAuth({ tokens: [], open: true, streamTokens });
  const read = auth.require('read');
  const write = auth.require('write');
  router.use(BASE, auth.identify);

  const idempotency = submitIdempotency(options.idempotency ?? jobStore.idempotency, options.idempotencyScope);

  router.post(SUBMIT_PATH, ...submitHandlers({ ...options, auth, idempotency, submitLimit: options.submitLimit }));
  router.post(BULK_SUBMIT_PATH, ...bulkSubmitHandlers({ ...options, auth, idempotency, submitLimit: options.submitLimit }));

  // The tracker's "download selected": several builds as one batch job (see worker/batch-coordinator.ts).
  // As the other submits: the rate limit is spent once the request is valid and not a replay.
  router.post(`${BASE}/download-selected`, write, idempotency, async (req, res) => {
    if (!req.is('application/json')) throw new ValidationError('Content-Type must be application/json');
    const builds = validateBatch(req.body, options.jenkinsUrl);
    await options.submitLimit?.spend(req, res, 1);
    const { role, label } = principalOf(res);
    const jobId = await jobStore.submitBatch(builds, { submittedBy: { role: role ?? 'read', label } });
    res.status(202).json({
      job_id: jobId,
      message: `Download of ${builds.length} build(s) accepted`,
      logs_url: `${BASE}/download-selected/${jobId}`,
      status_url: `${BASE}/download/${jobId}/status`,
    });
  });

  router.get(`${BASE}/download-selected/:id`, auth.requireJobReader, requireJobId, options.logStream);

  router.get(`${BASE}/downloads`, read, async (req, res) => {
    const query = parseOrThrow(ListQuerySchema, req.query, 'query');
    res.json(await jobStore.list(query));
  });

  router.get(STATUS_PATH, read, requireJobId, statusHandler(jobStore));

  router.get(`${BASE}/download/:id/logs`, auth.requireJobReader, requireJobId, async (req, res) => {
    const jobId = String(req.params.id);
    const query = parseOrThrow(LogsQuerySchema, req.query, 'query');
    const after = query.after ?? START_CURSOR;
    const [view, page] = await Promise.all([jobStore.get(jobId), jobLog.read(jobId, after, query.limit)]);
    if (!view && page.entries.length === 0 && after === START_CURSOR) throw new NotFoundError(`No job ${jobId}`);
    const lines = page.entries.map((entry) =>
      entry.kind === 'line'
        ? { id: entry.id, timestamp: entry.timestamp, message: entry.message }
        : {
            id: entry.id,
            timestamp: entry.timestamp,
            message: `Job ${entry.status}${entry.error ? `: ${entry.error}` : ''}`,
            status: entry.status,
            error: entry.error,
          },
    );
    const finished = !view || (view.status !== 'pending' && view.status !== 'running');
    res.json({
      lines,
      next: lines.at(-1)?.id ?? null,
      done: finished && page.entries.length < query.limit,
      ...(page.dropped > 0 ? { dropped: page.dropped } : {}),
    });
  });

  router.get(`${BASE}/download/:id`, auth.requireJobReader, requireJobId, options.logStream);

  // A read-only token for this job's log, for EventSource (which cannot send headers): ?token=.
  router.post(`${BASE}/download/:id/stream-token`, read, requireJobId, async (req, res) => {
    const jobId = String(req.params.id);
    if (!(await jobStore.get(jobId))) throw new NotFoundError(`No job ${jobId}`);
    const token = streamTokens.issue(jobId);
    res.json({ job_id: jobId, token, logs_url: `${BASE}/download/${jobId}?token=${token}`, json_logs_url: `${BASE}/download/${jobId}/logs?token=${token}` });
  });

  // 200 when the job is cancelled; 202 when its worker has not confirmed yet (status will follow).
  router.post(`${BASE}/download/:id/cancel`, write, requireJobId, async (req, res) => {
    const jobId = String(req.params.id);
    const outcome = await options.cancelJob(jobId, abandonedSignal(res));
    res.status(outcome.status === 'cancelled' ? 200 : 202).json({
      job_id: jobId,
      status: outcome.status,
      message: outcome.status === 'cancelled' ? `Job ${jobId} cancelled` : `Cancel of job ${jobId} requested; its worker is stopping it`,
      status_url: `${BASE}/download/${jobId}/status`,
    });
  });

  router.delete(`${BASE}/download/:id`, auth.require('admin'), requireJobId, async (req, res) => {
    await jobStore.remove(String(req.params.id), abandonedSignal(res));
    res.status(204).end();
  });

  return router;
}
