import { Router } from 'express';
import { z } from 'zod';
import {
  BatchChildSchema,
  BatchItemSchema,
  FileRecordSchema,
  JOB_STATUSES,
  ProgressSchema,
  SubmitterSchema,
} from '../shared/job-contract.js';
import { BatchBodySchema, BulkBodySchema, IdempotencyKeySchema, ListQuerySchema, LogsQuerySchema, SubmitBodySchema } from './request-schemas.js';

/**
 * The OpenAPI 3.1 document, generated from the zod schemas the routes validate with (requests) and
 * from the job contract (responses): no hand-kept copy to drift. OpenAPI 3.1 schemas are JSON
 * Schema 2020-12, which zod emits itself.
 */

/** Response documents, as the routes build them (a test parses real answers with these). */
export const StatusViewSchema = z.object({
  id: z.string(),
  kind: z.enum(['download', 'batch']),
  release: z.string().nullable(),
  job_url: z.string().nullable(),
  status: z.enum(JOB_STATUSES),
  progress: ProgressSchema,
  started_at: z.string().nullable(),
  running_since: z.string().nullable(),
  completed_at: z.string().nullable(),
  error: z.string().nullable(),
  attempts: z.number().int(),
  files: z.array(FileRecordSchema).nullable(),
  submitted_by: SubmitterSchema.nullable(),
  batch_id: z.string().optional().describe('A module job of a batch: the batch'),
  builds: z.array(BatchItemSchema).optional().describe('A batch: its builds as submitted'),
  modules: z.array(BatchChildSchema).optional().describe('A batch: every module and its job'),
  failed_modules: z.array(z.object({ module: z.string(), build_url: z.string(), error: z.string().nullable() })).optional(),
});

export const SubmitAnswerSchema = z.object({
  job_id: z.string(),
  deduplicated: z.boolean(),
  message: z.string(),
  logs_url: z.string(),
  status_url: z.string(),
});

export const BulkAnswerSchema = z.object({ jobs: z.array(SubmitAnswerSchema.extend({ job_url: z.string() })) });

export const BatchAnswerSchema = z.object({ job_id: z.string(), message: z.string(), logs_url: z.string(), status_url: z.string() });
export const ListAnswerSchema = z.object({ jobs: z.array(StatusViewSchema), next: z.string().nullable() });
export const LogsAnswerSchema = z.object({
  lines: z.array(z.object({ id: z.string(), timestamp: z.string(), message: z.string(), status: z.string().optional(), error: z.string().nullable().optional() })),
  next: z.string().nullable(),
  done: z.boolean(),
  dropped: z.number().int().optional(),
});
export const CancelAnswerSchema = z.object({ job_id: z.string(), status: z.enum(['cancelled', 'cancelling']), message: z.string(), status_url: z.string() });
export const StreamTokenAnswerSchema = z.object({ job_id: z.string(), token: z.string(), logs_url: z.string(), json_logs_url: z.string() });
export const ErrorSchema = z.object({ error: z.object({ code: z.string(), message: z.string(), details: z.array(z.string()).optional() }) });

const json = (schema: z.ZodType, io: 'input' | 'output' = 'output') => {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
};

const errors = (...codes: number[]) =>
  Object.fromEntries(codes.map((code) => [String(code), { description: ERROR_TEXT[code] ?? 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }]));

const ERROR_TEXT: Record<number, string> = {
  400: 'Invalid request (VALIDATION_FAILED)',
  401: 'No usable credentials (UNAUTHORIZED)',
  403: 'The role is too small (FORBIDDEN)',
  404: 'No such job (NOT_FOUND)',
  409: 'The job is in a state that forbids it (CONFLICT, IDEMPOTENCY_IN_PROGRESS)',
  429: 'Too many submissions (RATE_LIMITED), with Retry-After',
  503: 'Redis unavailable or full, or the server is stopping (REDIS_UNAVAILABLE, REDIS_FULL, SHUTTING_DOWN), with Retry-After',
};

/** Query parameters from a zod object schema. */
function queryParameters(schema: z.ZodObject): Array<Record<string, unknown>> {
  const shape = json(schema, 'input') as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(shape.properties ?? {}).map(([name, property]) => ({
    name,
    in: 'query',
    required: shape.required?.includes(name) ?? false,
    schema: property,
  }));
}

const idParameter = { name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' }, description: 'A job or batch id' };
const tokenParameter = { name: 'token', in: 'query', required: false, schema: { type: 'string' }, description: 'A stream token for this job (POST .../stream-token); API tokens are refused in URLs' };
const ok = (description: string, ref: string) => ({ description, content: { 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } } });
const sse = (description: string) => ({ description, content: { 'text/event-stream': { schema: { type: 'string' } } } });
const idempotencyHeader = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  schema: json(IdempotencyKeySchema),
  description: 'Replays the first answer to this key for 24 h (Idempotent-Replayed: true)',
};

/** Example request bodies: the OpenAPI test sends each and expects it accepted. */
export function examples(jenkinsUrl: string) {
  const build = `${jenkinsUrl}job/QA_Release_6.4/job/main-regression/216/`;
  return {
    submit: { job_url: build, artifacts: ['hapy/**/*.order.txt', 'hapy/reports/junit/**/*.xml'] },
    bulk: { downloads: [{ job_url: build }, { job_url: `${jenkinsUrl}job/QA_Release_6.4/job/main-regression/217/` }] },
    batch: {
      jobs: [
        {
          key: 'main-regression',
          release: '6.4',
          release_id: 12,
          build_number: 216,
          build_url: build,
          jenkins_job_url: `${jenkinsUrl}job/QA_Release_6.4/job/main-regression/`,
          display_name: 'main-regression #216',
          environment: 'esxi',
        },
      ],
    },
  };
}

export function createOpenApiDocument(jenkinsUrl: string): Record<string, unknown> {
  const sample = examples(jenkinsUrl);
  const base = '/api/v1/jenkins';
  return {
    openapi: '3.1.0',
    info: {
      title: 'ferry',
      version: '1.0.0',
      description: 'Downloads Jenkins test artifacts through a BullMQ worker fleet; job state and live logs in Redis.',
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'An API_TOKENS token' },
        adminPin: { type: 'apiKey', in: 'header', name: 'X-Admin-PIN' },
        streamToken: { type: 'apiKey', in: 'query', name: 'token' },
      },
      schemas: {
        SubmitBody: json(SubmitBodySchema, 'input'),
        BatchBody: json(BatchBodySchema, 'input'),
        BulkBody: json(BulkBodySchema, 'input'),
        BulkAnswer: json(BulkAnswerSchema),
        SubmitAnswer: json(SubmitAnswerSchema),
        BatchAnswer: json(BatchAnswerSchema),
        Status: json(StatusViewSchema),
        List: json(ListAnswerSchema),
        Logs: json(LogsAnswerSchema),
        Cancel: json(CancelAnswerSchema),
        StreamToken: json(StreamTokenAnswerSchema),
        Error: json(ErrorSchema),
      },
    },
    security: [{ bearer: [] }],
    paths: {
      [`${base}/download`]: {
        post: {
          summary: 'Submit a download (write role)',
          parameters: [idempotencyHeader],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/SubmitBody' }, examples: { tracker: { value: sample.submit } } } } },
          responses: { '202': ok('Accepted: a new job', 'SubmitAnswer'), '200': ok('An identical job is pending or running: that job', 'SubmitAnswer'), ...errors(400, 401, 403, 409, 429, 503) },
        },
      },
      [`${base}/download-selected`]: {
        post: {
          summary: 'Submit a batch ("download selected"; write role, or X-Admin-PIN)',
          security: [{ bearer: [] }, { adminPin: [] }],
          parameters: [idempotencyHeader],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/BatchBody' }, examples: { tracker: { value: sample.batch } } } } },
          responses: { '202': ok('Accepted', 'BatchAnswer'), ...errors(400, 401, 403, 409, 429, 503) },
        },
      },
      [`${base}/download-selected/{id}`]: {
        get: {
          summary: "A batch's live log (Server-Sent Events); same format as a job's",
          security: [{ bearer: [] }, { streamToken: [] }],
          parameters: [idParameter, tokenParameter, { name: 'Last-Event-ID', in: 'header', required: false, schema: { type: 'string' } }],
          responses: { '200': sse('The log, then new lines, then the end'), ...errors(400, 401, 404, 503) },
        },
      },
      [`${base}/downloads`]: {
        post: {
          summary: 'Submit up to 100 downloads at once (write role); one rate-limit point each',
          description:
            'Each download is validated and deduplicated as POST /download does; one invalid download refuses the whole request (400, each problem named by its place, nothing enqueued). The answer lists one job per download, in order.',
          parameters: [idempotencyHeader],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/BulkBody' }, examples: { tracker: { value: sample.bulk } } } } },
          responses: {
            '202': ok('At least one new job', 'BulkAnswer'),
            '200': ok('Every download matched a pending or running job', 'BulkAnswer'),
            ...errors(400, 401, 403, 409, 413, 429, 503),
          },
        },
        get: {
          summary: 'Jobs, newest first (read role)',
          parameters: queryParameters(ListQuerySchema),
          responses: { '200': ok('A page of jobs; pass next as cursor', 'List'), ...errors(400, 401, 503) },
        },
      },
      [`${base}/download/{id}`]: {
        get: {
          summary: "A job's live log (Server-Sent Events; read role or a stream token)",
          security: [{ bearer: [] }, { streamToken: [] }],
          parameters: [
            idParameter,
            tokenParameter,
            { name: 'Last-Event-ID', in: 'header', required: false, schema: { type: 'string' }, description: 'Resume after this line' },
            { name: 'last_event_id', in: 'query', required: false, schema: { type: 'string' }, description: 'Resume after this line' },
          ],
          responses: { '200': sse('The log so far, then new lines as they come, then the end (event: complete)'), ...errors(400, 401, 404, 503) },
        },
        delete: {
          summary: 'Remove a finished job (admin role)',
          parameters: [idParameter],
          responses: { '204': { description: 'Removed' }, ...errors(401, 403, 404, 409, 503) },
        },
      },
      [`${base}/download/{id}/status`]: {
        get: { summary: "A job's status (read role)", parameters: [idParameter], responses: { '200': ok('The status', 'Status'), ...errors(401, 404, 503) } },
      },
      [`${base}/download/{id}/logs`]: {
        get: {
          summary: "A page of a job's log (read role or a stream token)",
          security: [{ bearer: [] }, { streamToken: [] }],
          parameters: [idParameter, ...queryParameters(LogsQuerySchema)],
          responses: { '200': ok('Lines after the cursor', 'Logs'), ...errors(400, 401, 404, 503) },
        },
      },
      [`${base}/download/{id}/cancel`]: {
        post: {
          summary: 'Cancel a pending or running job (write role)',
          parameters: [idParameter],
          responses: { '200': ok('Cancelled', 'Cancel'), '202': ok('Its worker is stopping it', 'Cancel'), ...errors(401, 403, 404, 409, 503) },
        },
      },
      [`${base}/download/{id}/stream-token`]: {
        post: {
          summary: "A read-only token for this job's log, for EventSource (read role)",
          parameters: [idParameter],
          responses: { '200': ok('The token and URLs that carry it', 'StreamToken'), ...errors(401, 404, 503) },
        },
      },
      '/healthz': { get: { summary: 'The process is alive (open)', security: [], responses: { '200': { description: 'Alive' } } } },
      '/readyz': { get: { summary: 'Redis answers and the server is not stopping (open)', security: [], responses: { '200': { description: 'Ready' }, '503': { description: 'Not ready, with the reason' } } } },
      '/metrics': { get: { summary: 'Prometheus metrics (read role unless METRICS_PUBLIC)', responses: { '200': { description: 'Prometheus text format', content: { 'text/plain': { schema: { type: 'string' } } } } } } },
      '/api/v1/openapi.json': { get: { summary: 'This document (open)', security: [], responses: { '200': { description: 'OpenAPI 3.1' } } } },
      '/': { get: { summary: 'The web page (open; it holds no job data)', security: [], responses: { '200': { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } } } },
      '/admin/queues': { get: { summary: 'Bull Board (admin role, HTTP Basic with the token as password)', responses: { '200': { description: 'HTML' }, ...errors(401, 403) } } },
    },
  };
}

export function createOpenApiRouter(jenkinsUrl: string): Router {
  const document = createOpenApiDocument(jenkinsUrl);
  const router = Router();
  router.get('/api/v1/openapi.json', (_req, res) => {
    res.json(document);
  });
  return router;
}
