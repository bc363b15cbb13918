import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { testEnv } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

describe('operator logs: JSON lines, request_id on every line of a request (a real API process)', () => {
  let api: ChildService;
  let base: string;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-reqlog-'));
    const port = await freePort();
    api = startScript('api', testEnv('https://jenkins.example/', dir, { PORT: String(port), LOG_LEVEL: 'http' }));
    base = `http://127.0.0.1:${port}`;
    await waitReady(base, api);
  });

  afterAll(async () => {
    await api?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const lines = () =>
    api
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);

  it('keeps an incoming X-Request-Id, echoes it, and tags the access line and the refusal with it', async () => {
    const answer = await fetch(`${base}/api/v1/jenkins/download`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'trace-4711-abc' },
      body: JSON.stringify({ job_url: 'file:///etc/passwd' }),
    });
    expect(answer.status).toBe(400);
    expect(answer.headers.get('x-request-id')).toBe('trace-4711-abc');
    await waitFor(() => lines().some((line) => line.request_id === 'trace-4711-abc' && line.message === 'request'), 'the access line');
    const mine = lines().filter((line) => line.request_id === 'trace-4711-abc');
    // 4xx are info, with the error code; the access line is at http level with status and duration.
    expect(mine).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ level: 'info', message: 'request refused', code: 'VALIDATION_FAILED', status: 400, service: 'api' }),
        expect.objectContaining({ level: 'http', message: 'request', status: 400, method: 'POST', path: '/api/v1/jenkins/download' }),
      ]),
    );
    expect(typeof mine.find((line) => line.message === 'request')?.timestamp).toBe('string');
  });

  it('makes an id when there is none (or a malformed one)', async () => {
    const fresh = await fetch(`${base}/healthz`);
    expect(fresh.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const odd = await fetch(`${base}/healthz`, { headers: { 'x-request-id': 'x'.repeat(300) } });
    expect(odd.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });
});
