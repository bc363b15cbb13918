import { mkdtemp, rm } from 'node:fs/promises';
import http, { type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import winston from 'winston';
import { createApp } from '../../api/app.js';
import { createAuth } from '../../api/auth.js';
import { createApi, type Api } from '../../api/create-api.js';
import { createStatusRoute, createSubmitRoute } from '../../api/download-routes.js';
import type { JobStore } from '../../api/job-store.js';
import { createStreamTokens } from '../../api/stream-tokens.js';
import { loadConfig, type Config } from '../../shared/config.js';
import type { JobResult } from '../../shared/job-contract.js';
import { publishProgress } from '../../shared/job-progress.js';
import { createKeys } from '../../shared/keys.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { createRedis, waitForRedis } from '../../shared/redis.js';
import { testEnv } from '../helpers/system.js';

const READ = 'read-token-0123456789abcdef';
const WRITE = 'write-token-0123456789abcdef';
const ADMIN = 'admin-token-0123456789abcdef';
const PIN = 'pin-4711';
const SECRET = 'stream-secret-0123456789abcdef0123456789';
const JENKINS = 'https://jenkins.example/';
const ORIGIN = 'https://tracker.example.com';
const STATUS = (id: string) => `/api/v1/jenkins/download/${id}/status`;
const SUBMIT = '/api/v1/jenkins/download';

/** An API in this process whose log lines are kept (JSON, level http). */
interface LoggedApi {
  readonly api: Api;
  readonly base: string;
  readonly lines: Array<Record<string, unknown>>;
  readonly redis: Redis;
  close(): Promise<void>;
}

function capturingLogger(lines: Array<Record<string, unknown>>): Logger {
  const logger = createLogger({ service: 'api', level: 'http', json: true });
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  logger.clear().add(new winston.transports.Stream({ stream }));
  return logger;
}

async function startApi(config: Config, plainRoutes: boolean): Promise<LoggedApi> {
  const lines: Array<Record<string, unknown>> = [];
  const logger = capturingLogger(lines);
  const redis = createRedis(config.redisUrl, 'api', logger, 'test-api');
  const blockingRedis = createRedis(config.redisUrl, 'worker', logger, 'test-tail');
  await waitForRedis(redis, 10_000);
  const api = createApi({ config, logger, redis, blockingRedis, plainRoutes });
  const server: Server = api.app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    api,
    base: `http://127.0.0.1:${port}`,
    lines,
    redis,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await api.close().catch(() => undefined);
      redis.disconnect();
      blockingRedis.disconnect();
    },
  };
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** One request with exactly these headers (node:http: fetch refuses a GET with a body). */
function request(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const headers: Record<string, string> = {};
        // Date is the clock's; everything else must be the same.
        for (const [name, value] of Object.entries(response.headers)) {
          if (name !== 'date' && value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
        }
        resolve({ status: response.statusCode ?? 0, headers, body: Buffer.concat(chunks).toString('utf8') });
      });
      response.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end(init.body);
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('GET .../status before the router answers exactly as the router does', () => {
  let dir: string;
  let config: Config;
  let plain: LoggedApi;
  let routed: LoggedApi;
  let workerRedis: Redis;
  let worker: Worker;
  const ids: Record<string, string> = {};
  let caseNumber = 0;

  /** The same request to both APIs, with the same X-Request-Id; both answers must be identical. */
  const same = async (pathname: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) => {
    caseNumber += 1;
    const headers = { 'x-request-id': `case-${caseNumber}`, ...init.headers };
    const fromPlain = await request(`${plain.base}${pathname}`, { ...init, headers });
    const fromRouter = await request(`${routed.base}${pathname}`, { ...init, headers });
    expect(fromPlain).toEqual(fromRouter);
    return fromPlain;
  };
  const json = (answer: Answer) => JSON.parse(answer.body) as Record<string, unknown>;

  const submit = async (build: number) => {
    const response = await fetch(`${plain.base}/api/v1/jenkins/download`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(WRITE) },
      body: JSON.stringify({ job_url: `${JENKINS}job/QA_Release_8.1/job/run/${build}/` }),
    });
    expect(response.status).toBe(202);
    return ((await response.json()) as { job_id: string }).job_id;
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-status-'));
    config = loadConfig(
      testEnv(JENKINS, dir, {
        API_TOKENS: `read:reader:${READ},write:ci-bot:${WRITE},admin:ops:${ADMIN}`,
        TOKEN_SECRET: SECRET,
        ADMIN_PIN: PIN,
        CORS_ORIGINS: ORIGIN,
        LOG_LEVEL: 'http',
      }),
    );
    plain = await startApi(config, true);
    routed = await startApi(config, false);
    const keys = createKeys(config.queuePrefix);
    workerRedis = createRedis(config.redisUrl, 'worker', createLogger({ service: 'test', level: 'warn' }), 'test-worker');
    // BullMQ's own worker, taking jobs by hand: a job is then running (locked) or finished exactly
    // as a ferry worker leaves it, and stays so while the answers are compared.
    worker = new Worker(keys.queueName, undefined, { connection: workerRedis, prefix: keys.queuePrefix });
    const take = async (id: string) => {
      const job = await worker.getNextJob('test-token');
      expect(job?.id).toBe(id);
      return job as NonNullable<typeof job>;
    };
    ids.running = await submit(1);
    await take(ids.running);
    await publishProgress(plain.redis, keys, ids.running, { modules_done: 0, modules_total: 1, files_done: 1, files_total: 3, bytes_done: 1_000, bytes_total: 9_000 });
    ids.completed = await submit(2);
    const result: JobResult = {
      files: [{ path: '8.1/run/2/a.xml', size: 4, sha256: 'ab'.repeat(32), host: 'box' }],
      progress: { modules_done: 1, modules_total: 1, files_done: 1, files_total: 1, bytes_done: 4, bytes_total: 4 },
    };
    await (await take(ids.completed)).moveToCompleted(result, 'test-token', false);
    ids.failed = await submit(3);
    await (await take(ids.failed)).moveToFailed(new Error('Jenkins answered HTTP 404'), 'test-token', false);
    ids.pending = await submit(4);
    ids.cancelled = await submit(5);
    const cancel = await fetch(`${plain.base}/api/v1/jenkins/download/${ids.cancelled}/cancel`, { method: 'POST', headers: bearer(WRITE) });
    expect(cancel.status).toBe(200);
    const batch = await fetch(`${plain.base}/api/v1/jenkins/download-selected`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(WRITE) },
      body: JSON.stringify({
        jobs: [{ key: 'k1', release: '8.1', build_url: `${JENKINS}job/QA_Release_8.1/job/run/6/`, display_name: 'run #6' }],
      }),
    });
    expect(batch.status).toBe(202);
    ids.batch = ((await batch.json()) as { job_id: string }).job_id;
  });

  afterAll(async () => {
    await worker?.close(true).catch(() => undefined);
    if (workerRedis) {
      const keys = createKeys(config.queuePrefix);
      for (const name of [keys.queueName, keys.batches.queueName]) {
        const queue = new Queue(name, { connection: workerRedis, prefix: keys.queuePrefix });
        await queue.obliterate({ force: true }).catch(() => undefined);
        await queue.close();
      }
      workerRedis.disconnect();
    }
    await plain?.close();
    await routed?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('takes only the canonical GET of a status URL; any other spelling is left to the router', () => {
    const auth = createAuth({ tokens: [], open: true, streamTokens: createStreamTokens(undefined) });
    const route = createStatusRoute({ jobStore: {} as JobStore, auth });
    const match = (method: string, url: string) => route.match({ method, url } as IncomingMessage);
    const id = uuidv7();
    expect(match('GET', STATUS(id))).toEqual({ id });
    expect(match('GET', `${STATUS(id)}?token=x`)).toEqual({ id });
    expect(match('GET', STATUS('not-a-job'))).toEqual({ id: 'not-a-job' });
    for (const url of [`${STATUS(id)}/`, STATUS(id).toUpperCase(), STATUS('a%2Fb'), `${STATUS(id)}x`, `http://host${STATUS(id)}`, STATUS(`${id}/x`)]) {
      expect(match('GET', url)).toBeNull();
    }
    expect(match('HEAD', STATUS(id))).toBeNull();
    expect(match('POST', STATUS(id))).toBeNull();
  });

  it('a plain route answers what it matches; everything else goes through the router', async () => {
    const logger = createLogger({ service: 'test', level: 'warn' });
    const app = createApp({
      logger,
      redis: plain.redis,
      routers: [],
      plainRoutes: [
        {
          path: '/plain/:id',
          match: (req) => (req.url?.startsWith('/plain/') ? { id: req.url.slice(7) } : null),
          before: [],
          handlers: [(req, res) => res.json({ id: req.params.id, route: (req.route as { path: string }).path })],
        },
      ],
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', () => resolve()));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const answer = await request(`${base}/plain/7`);
      expect(answer.status).toBe(200);
      expect(JSON.parse(answer.body)).toEqual({ id: '7', route: '/plain/:id' });
      // The common middleware ran: request id, security headers.
      expect(answer.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      expect(answer.headers['content-security-policy']).toBeDefined();
      expect((await request(`${base}/other`)).status).toBe(404);
      expect((await request(`${base}/healthz`)).status).toBe(200);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('jobs in every state: the same status, headers (security, CORS, ETag, X-Request-Id) and body', async () => {
    const running = await same(STATUS(ids.running as string), { headers: bearer(READ) });
    expect(running.status).toBe(200);
    expect(json(running)).toMatchObject({ id: ids.running, status: 'running', kind: 'download', release: '8.1', progress: { files_done: 1, bytes_total: 9_000 } });
    expect(running.headers).toMatchObject({
      'content-type': 'application/json; charset=utf-8',
      'x-request-id': `case-${caseNumber}`,
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'SAMEORIGIN',
    });
    expect(running.headers['content-security-policy']).toContain("default-src 'self'");
    expect(running.headers.etag).toMatch(/^W\/"/);
    expect(running.headers['x-powered-by']).toBeUndefined();

    const completed = await same(STATUS(ids.completed as string), { headers: bearer(ADMIN) });
    expect(json(completed)).toMatchObject({ status: 'completed', files: [{ path: '8.1/run/2/a.xml', host: 'box' }], progress: { files_done: 1, files_total: 1 } });
    expect(json(await same(STATUS(ids.failed as string), { headers: bearer(WRITE) }))).toMatchObject({ status: 'failed', error: 'Jenkins answered HTTP 404' });
    expect(json(await same(STATUS(ids.pending as string), { headers: bearer(READ) }))).toMatchObject({ status: 'pending', running_since: null });
    expect(json(await same(STATUS(ids.cancelled as string), { headers: bearer(READ) }))).toMatchObject({ status: 'cancelled' });
    expect(json(await same(STATUS(ids.batch as string), { headers: bearer(READ) }))).toMatchObject({ status: 'pending', kind: 'batch', builds: [{ key: 'k1' }] });

    // CORS: an allowed origin is named, another is not.
    const allowed = await same(STATUS(ids.pending as string), { headers: { ...bearer(READ), origin: ORIGIN } });
    expect(allowed.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(allowed.headers['access-control-expose-headers']).toContain('X-Request-Id');
    const other = await same(STATUS(ids.pending as string), { headers: { ...bearer(READ), origin: 'https://evil.example' } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();

    // A query string is ignored, a conditional request gets 304, HEAD and other spellings go to the router.
    expect((await same(`${STATUS(ids.pending as string)}?token=whatever&x=1`, { headers: bearer(READ) })).status).toBe(200);
    const etag = completed.headers.etag as string;
    expect((await same(STATUS(ids.completed as string), { headers: { ...bearer(READ), 'if-none-match': etag } })).status).toBe(304);
    expect((await same(STATUS(ids.completed as string), { method: 'HEAD', headers: bearer(READ) })).status).toBe(200);
    expect((await same(`${STATUS(ids.completed as string)}/`, { headers: bearer(READ) })).status).toBe(200);
  });

  it('unknown and malformed ids: the same 404', async () => {
    const unknown = await same(STATUS(uuidv7()), { headers: bearer(READ) });
    expect(unknown.status).toBe(404);
    expect(json(unknown)).toMatchObject({ error: { code: 'NOT_FOUND' } });
    expect(unknown.headers['content-security-policy']).toBeDefined();
    expect((await same(STATUS('not-a-job'), { headers: bearer(READ) })).status).toBe(404);
    expect((await same(STATUS('x'.repeat(200)), { headers: bearer(READ) })).status).toBe(404);
    expect((await same(STATUS('%E2%9C%93'), { headers: bearer(READ) })).status).toBe(404);
    // No token is checked before the id: a malformed id without credentials is a 401, as before.
    expect((await same(STATUS('not-a-job'))).status).toBe(401);
  });

  it('credentials: the same 401 without a usable one; any role may read', async () => {
    const id = ids.pending as string;
    const none = await same(STATUS(id));
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer realm="ferry"');
    expect((await same(STATUS(id), { headers: bearer('not-a-token-0123456789') })).status).toBe(401);
    // A stream token reads a job's log only: never its status, neither as a header nor in the URL.
    const streamToken = createStreamTokens(SECRET).issue(id);
    expect((await same(STATUS(id), { headers: bearer(streamToken) })).status).toBe(401);
    expect((await same(`${STATUS(id)}?token=${streamToken}`)).status).toBe(401);
    const basic = await same(STATUS(id), { headers: { authorization: `Basic ${Buffer.from(`me:${READ}`).toString('base64')}` } });
    expect(basic.status).toBe(200);
    expect((await same(STATUS(id), { headers: { 'x-admin-pin': PIN } })).status).toBe(200);
    expect((await same(STATUS(id), { headers: { 'x-admin-pin': 'wrong' } })).status).toBe(401);
    // A body on a GET is parsed as on any route: malformed JSON is a 400.
    const withBody = await same(STATUS(id), { headers: { ...bearer(READ), 'content-type': 'application/json' }, body: '{x}' });
    expect(withBody.status).toBe(400);
  });

  it('the same request log lines and the same metrics', async () => {
    const strip = (line: Record<string, unknown>) => {
      const { timestamp: _timestamp, duration_ms: _duration, ...rest } = line;
      return rest;
    };
    const byCase = (lines: Array<Record<string, unknown>>) =>
      lines
        .filter((line) => typeof line.request_id === 'string' && line.request_id.startsWith('case-'))
        .map(strip)
        .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    const fromPlain = byCase(plain.lines);
    expect(fromPlain.length).toBeGreaterThanOrEqual(caseNumber);
    expect(fromPlain).toEqual(byCase(routed.lines));
    expect(fromPlain).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ level: 'http', message: 'request', method: 'GET', path: STATUS(ids.running as string), status: 200, request_id: 'case-1' }),
        expect.objectContaining({ level: 'info', message: 'request refused', code: 'UNAUTHORIZED', status: 401 }),
      ]),
    );

    const requestMetrics = async (base: string) =>
      (await (await fetch(`${base}/metrics`, { headers: bearer(READ) })).text())
        .split('\n')
        .filter((line) => /^ferry_http_request(s_total|_duration_seconds_count)\{/.test(line) && line.includes('method="GET"') && !line.includes('route="/metrics"'))
        .sort();
    const plainMetrics = await requestMetrics(plain.base);
    expect(plainMetrics).toEqual(await requestMetrics(routed.base));
    expect(plainMetrics).toEqual(expect.arrayContaining([expect.stringMatching(/route="\/api\/v1\/jenkins\/download\/:id\/status",status="200"/)]));
  });

  it('takes only the canonical POST of the submit URL', () => {
    const auth = createAuth({ tokens: [], open: true, streamTokens: createStreamTokens(undefined) });
    const route = createSubmitRoute({ jenkinsUrl: JENKINS, jobStore: {} as JobStore, auth, idempotency: (_req, _res, next) => next() });
    const match = (method: string, url: string) => route.match({ method, url } as IncomingMessage);
    expect(match('POST', SUBMIT)).toEqual({});
    expect(match('POST', `${SUBMIT}?x=1`)).toEqual({});
    for (const url of [`${SUBMIT}/`, SUBMIT.toUpperCase(), `${SUBMIT}-selected`, `${SUBMIT}/x`]) expect(match('POST', url)).toBeNull();
    expect(match('GET', SUBMIT)).toBeNull();
  });

  it('POST .../download: the same answers to new, duplicate, invalid, unauthorised and idempotent submits', async () => {
    const submitInit = (body: unknown, headers: Record<string, string> = bearer(WRITE)) => ({
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const buildUrl = (build: number) => `${JENKINS}job/QA_Release_8.1/job/submit/${build}/`;

    // Both APIs spend the same caller's rate-limit budget (in Redis): RateLimit-Remaining counts down
    // across them, so it is compared by presence. A new job's answer names its own id (and the ETag
    // of that body), so those are compared by shape.
    const normalise = (answer: Answer, ids: 'keep' | 'mask') => ({
      ...answer,
      headers: {
        ...answer.headers,
        ...(answer.headers['ratelimit-remaining'] === undefined ? {} : { 'ratelimit-remaining': 'N' }),
        ...(ids === 'mask' ? { etag: 'ETAG' } : {}),
      },
      body: ids === 'mask' ? answer.body.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, 'JOB') : answer.body,
    });
    const sameSubmit = async (init: { method: string; headers: Record<string, string>; body: string }) => {
      caseNumber += 1;
      const headers = { 'x-request-id': `case-${caseNumber}`, ...init.headers };
      const fromPlain = await request(`${plain.base}${SUBMIT}`, { ...init, headers });
      const fromRouter = await request(`${routed.base}${SUBMIT}`, { ...init, headers });
      expect(normalise(fromPlain, 'keep')).toEqual(normalise(fromRouter, 'keep'));
      return fromPlain;
    };
    const answers: Answer[] = [];
    caseNumber += 1;
    for (const base of [plain.base, routed.base]) {
      const init = submitInit({ job_url: buildUrl(100) });
      const answer = await request(`${base}${SUBMIT}`, { ...init, headers: { ...init.headers, 'x-request-id': `case-${caseNumber}` } });
      expect(answer.status).toBe(202);
      answers.push(answer);
      // Cancelled, so the other API's submit of the same build is a new job too.
      const cancel = await fetch(`${base}/api/v1/jenkins/download/${String(json(answer).job_id)}/cancel`, { method: 'POST', headers: bearer(WRITE) });
      expect(cancel.status).toBe(200);
    }
    expect(json(answers[0] as Answer).job_id).not.toBe(json(answers[1] as Answer).job_id);
    expect(normalise(answers[0] as Answer, 'mask')).toEqual(normalise(answers[1] as Answer, 'mask'));
    expect((answers[0] as Answer).headers['ratelimit-limit']).toBeDefined();

    // A duplicate of a pending job: both answer 200 with that job.
    const first = await request(`${plain.base}${SUBMIT}`, submitInit({ job_url: buildUrl(200) }));
    expect(first.status).toBe(202);
    const duplicate = await sameSubmit(submitInit({ job_url: buildUrl(200) }));
    expect(duplicate.status).toBe(200);
    expect(json(duplicate)).toMatchObject({ job_id: json(first).job_id, deduplicated: true });

    // Invalid requests: the same 400s.
    for (const body of ['{x', JSON.stringify({}), JSON.stringify({ job_url: 'https://other.example/job/a/1/' }), JSON.stringify({ job_url: buildUrl(1), release: 7 })]) {
      const invalid = await sameSubmit(submitInit(body));
      expect(invalid.status).toBe(400);
      expect(json(invalid)).toMatchObject({ error: { code: 'VALIDATION_FAILED' } });
    }
    const wrongType = await sameSubmit({ method: 'POST', headers: { ...bearer(WRITE), 'content-type': 'text/plain' }, body: 'job_url=x' });
    expect(wrongType.status).toBe(400);

    // Credentials: none is 401, a read token is 403.
    expect((await sameSubmit(submitInit({ job_url: buildUrl(300) }, {}))).status).toBe(401);
    expect((await sameSubmit(submitInit({ job_url: buildUrl(300) }, bearer(READ)))).status).toBe(403);

    // Idempotency-Key: the first answer is stored; both APIs replay it the same way.
    const keyed = submitInit({ job_url: buildUrl(400) }, { ...bearer(WRITE), 'idempotency-key': 'submit-key-1' });
    const stored = await request(`${plain.base}${SUBMIT}`, keyed);
    expect(stored.status).toBe(202);
    const replayed = await sameSubmit(keyed);
    expect(replayed.status).toBe(202);
    expect(replayed.headers['idempotent-replayed']).toBe('true');
    expect(json(replayed).job_id).toBe(json(stored).job_id);
  });

  it('Redis unreachable, then a stopping API: the same 503s', async () => {
    plain.redis.disconnect();
    routed.redis.disconnect();
    const down = await same(STATUS(ids.pending as string), { headers: bearer(READ) });
    expect(down.status).toBe(503);
    expect(json(down)).toMatchObject({ error: { code: 'REDIS_UNAVAILABLE' } });
    expect(down.headers['retry-after']).toBe('1');

    plain.api.drain.start();
    routed.api.drain.start();
    const stopping = await same(STATUS(ids.pending as string), { headers: bearer(READ) });
    expect(stopping.status).toBe(503);
    expect(json(stopping)).toMatchObject({ error: { code: 'SHUTTING_DOWN' } });
    expect(stopping.headers.connection).toBe('close');
  });
});
