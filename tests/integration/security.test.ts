import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { openSse } from '../helpers/sse-client.js';
import { startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const READ = 'read-token-0123456789abcdef';
const WRITE = 'write-token-0123456789abcdef';
const ADMIN = 'admin-token-0123456789abcdef';
const PIN = 'pin-4711';
const SECRET = 'stream-secret-0123456789abcdef0123456789';

interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function call(url: string, init: RequestInit & { token?: string } = {}): Promise<Answer> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  if (init.body !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/json');
  const response = await fetch(url, { ...init, headers });
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { text };
  }
  return { status: response.status, headers: response.headers, body };
}

describe('who may do what (API_TOKENS, stream tokens, admin PIN, dashboard, rate limits, headers)', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let second: TestSystem;
  let buildUrl: string;
  const prefix = `{sec${randomUUID().slice(0, 8)}}`;
  const env = {
    API_TOKENS: `read:reader:${READ},write:ci-bot:${WRITE},admin:ops:${ADMIN}`,
    TOKEN_SECRET: SECRET,
    ADMIN_PIN: PIN,
    RATE_LIMIT_PER_MINUTE: '6',
    CORS_ORIGINS: 'https://tracker.example.com',
    QUEUE_PREFIX: prefix,
  };
  const api = (path: string, base = system.baseUrl) => `${base}/api/v1/jenkins${path}`;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    buildUrl = jenkins.addBuild(['QA_Release_8.8', 'secure-run'], 1, { artifacts: [{ relativePath: 'hapy/a.xml', content: '<a/>' }] });
    system = await startSystem(jenkins.url, env);
    // A second API instance on the same Redis and queue: rate limits and stream tokens hold across both.
    second = await startSystem(jenkins.url, env);
    await system.startWorker();
  });

  afterAll(async () => {
    // The worker's system first: stopping a system removes the queue both share.
    await system?.stop();
    await second?.stop();
    await jenkins?.close();
  });

  const submit = (token: string | undefined, release: string, base = system.baseUrl) =>
    call(api('/download', base), { method: 'POST', token, body: JSON.stringify({ job_url: buildUrl, release }) } as RequestInit & { token?: string });

  it('answers 401 without or with an unknown token, 403 for too small a role, and records who submitted', async () => {
    const none = await submit(undefined, 'r1');
    expect(none.status).toBe(401);
    expect(none.body).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
    expect(none.headers.get('www-authenticate')).toContain('Bearer');
    expect((await submit('not-a-real-token-at-all', 'r1')).status).toBe(401);
    expect((await call(api('/downloads'))).status).toBe(401);

    const asReader = await submit(READ, 'r1');
    expect(asReader.status).toBe(403);
    expect(asReader.body).toMatchObject({ error: { code: 'FORBIDDEN' } });
    expect((await call(api('/downloads'), { token: READ } as RequestInit)).status).toBe(200);

    const accepted = await submit(WRITE, 'r1');
    expect(accepted.status).toBe(202);
    const id = accepted.body.job_id as string;
    const done = await waitFor(async () => {
      const status = await call(api(`/download/${id}/status`), { token: READ } as RequestInit);
      return status.body.status === 'completed' ? status.body : null;
    }, 'the job to complete');
    expect(done.submitted_by).toEqual({ role: 'write', label: 'token:ci-bot' });
    expect(JSON.stringify(done)).not.toContain(WRITE);

    expect((await call(api(`/download/${id}`), { method: 'DELETE', token: WRITE } as RequestInit)).status).toBe(403);
    expect((await call(api(`/download/${id}`), { method: 'DELETE', token: ADMIN } as RequestInit)).status).toBe(204);
  });

  it('keeps /healthz and /readyz open', async () => {
    expect((await call(`${system.baseUrl}/healthz`)).status).toBe(200);
    expect((await call(`${system.baseUrl}/readyz`)).status).toBe(200);
  });

  it('stream tokens open one job\'s log in a URL on any instance; API tokens never travel in URLs', async () => {
    const id = (await submit(WRITE, 'r2')).body.job_id as string;
    const other = (await submit(WRITE, 'r3')).body.job_id as string;
    expect((await call(api(`/download/${id}/stream-token`), { method: 'POST' })).status).toBe(401);
    const issued = await call(api(`/download/${id}/stream-token`), { method: 'POST', token: READ } as RequestInit);
    expect(issued.status).toBe(200);
    const token = issued.body.token as string;
    expect(token).toMatch(/^st1\./);

    // Issued by one instance, accepted by the other; no Authorization header (EventSource).
    const reader = await openSse(`${api(`/download/${id}`, second.baseUrl)}?token=${encodeURIComponent(token)}`);
    expect(reader.status).toBe(200);
    await reader.closed;
    expect(reader.events.some((event) => event.event === 'complete')).toBe(true);
    const page = await call(`${api(`/download/${id}/logs`, second.baseUrl)}?token=${encodeURIComponent(token)}`);
    expect(page.status).toBe(200);
    expect((page.body.lines as unknown[]).length).toBeGreaterThan(0);

    expect((await call(`${api(`/download/${other}/logs`)}?token=${encodeURIComponent(token)}`)).status).toBe(401);
    expect((await call(`${api(`/download/${id}/status`)}?token=${encodeURIComponent(token)}`)).status).toBe(401);
    expect((await call(`${api(`/download/${id}/logs`)}?token=${READ}`)).status).toBe(401);
    expect((await call(`${api(`/download/${id}/logs`)}?token=st1.forged`)).status).toBe(401);
  });

  it('X-Admin-PIN is worth the admin role (the tracker\'s "download selected"); a wrong PIN is 401', async () => {
    const body = JSON.stringify({ jobs: [{ key: 'secure-run', release: '8.8', build_url: buildUrl }] });
    const accepted = await call(api('/download-selected'), { method: 'POST', headers: { 'x-admin-pin': PIN }, body });
    expect(accepted.status).toBe(202);
    expect((await call(api('/download-selected'), { method: 'POST', headers: { 'x-admin-pin': 'pin-0000' }, body })).status).toBe(401);
  });

  it('the dashboard asks for HTTP Basic with an admin token and refuses cross-site writes', async () => {
    const dashboard = `${system.baseUrl}/admin/queues`;
    const anonymous = await fetch(dashboard);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toContain('Basic');
    const basic = (token: string) => `Basic ${Buffer.from(`ops:${token}`).toString('base64')}`;
    expect((await fetch(dashboard, { headers: { authorization: basic(READ) } })).status).toBe(403);
    expect((await fetch(dashboard, { headers: { authorization: basic(ADMIN) } })).status).toBe(200);
    const queues = await fetch(`${dashboard}/api/queues`, { headers: { authorization: basic(ADMIN) } });
    expect(queues.status).toBe(200);
    const clean = `${dashboard}/api/queues/downloads/clean/completed`;
    const crossSite = await fetch(clean, { method: 'PUT', headers: { authorization: basic(ADMIN), origin: 'https://evil.example.com', 'sec-fetch-site': 'cross-site' } });
    expect(crossSite.status).toBe(403);
    const sameSite = await fetch(clean, { method: 'PUT', headers: { authorization: basic(ADMIN), origin: system.baseUrl, 'sec-fetch-site': 'same-origin' } });
    expect(sameSite.status).toBeLessThan(400);
  });

  it('limits submissions per token per minute across API instances (429 with Retry-After)', async () => {
    // The earlier tests spent some of ci-bot's budget; spend the rest over both instances.
    const answers: number[] = [];
    for (let index = 0; index < 8; index += 1) {
      answers.push((await submit(ADMIN, `rl${index}`, index % 2 === 0 ? system.baseUrl : second.baseUrl)).status);
    }
    expect(answers.slice(0, 6)).toEqual(Array(6).fill(202));
    expect(answers.slice(6)).toEqual([429, 429]);
    const limited = await submit(ADMIN, 'rl-last', second.baseUrl);
    expect(limited.status).toBe(429);
    expect(limited.body).toMatchObject({ error: { code: 'RATE_LIMITED' } });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    // Another caller has its own budget.
    expect((await submit(WRITE, 'rl-other')).status).toBe(202);
  });

  it('sends security headers, and CORS headers only to allowed origins', async () => {
    const answer = await fetch(`${system.baseUrl}/healthz`);
    expect(answer.headers.get('x-content-type-options')).toBe('nosniff');
    expect(answer.headers.get('x-frame-options')).toBeTruthy();
    const allowed = await fetch(api('/downloads'), {
      method: 'OPTIONS',
      headers: { origin: 'https://tracker.example.com', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
    });
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://tracker.example.com');
    const refused = await fetch(api('/downloads'), {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'GET' },
    });
    expect(refused.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('ANONYMOUS_ROLE keeps the old front end working, knowingly', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    system = await startSystem(jenkins.url, { API_TOKENS: `admin:ops:${ADMIN}`, TOKEN_SECRET: SECRET, ANONYMOUS_ROLE: 'write' });
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  it('lets requests without credentials submit, but not delete', async () => {
    const url = jenkins.addBuild(['QA_Release_8.9', 'anon-run'], 1, { artifacts: [{ relativePath: 'a.xml', content: 'a' }] });
    const accepted = await call(`${system.baseUrl}/api/v1/jenkins/download`, { method: 'POST', body: JSON.stringify({ job_url: url }) });
    expect(accepted.status).toBe(202);
    const status = await call(`${system.baseUrl}/api/v1/jenkins/download/${String(accepted.body.job_id)}/status`);
    expect(status.body.submitted_by).toEqual({ role: 'write', label: 'anonymous' });
    expect((await call(`${system.baseUrl}/api/v1/jenkins/download/${String(accepted.body.job_id)}`, { method: 'DELETE' })).status).toBe(403);
  });
});
