import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSystem, type TestSystem } from '../helpers/system.js';

describe('API errors are JSON with a code, never HTML or a stack', () => {
  let system: TestSystem;

  beforeAll(async () => {
    system = await startSystem('http://127.0.0.1:9/');
  });

  afterAll(async () => {
    await system?.stop();
  });

  const request = async (method: string, path: string, body?: string, contentType = 'application/json') => {
    const response = await fetch(`${system.baseUrl}${path}`, {
      method,
      ...(body !== undefined ? { body, headers: { 'content-type': contentType } } : {}),
    });
    const text = await response.text();
    return { status: response.status, type: response.headers.get('content-type') ?? '', text, json: JSON.parse(text) as { error?: { code: string; message: string } } };
  };

  it.each([
    ['malformed JSON', 'POST', '/api/v1/jenkins/download', '{"job_url": ', 400, 'VALIDATION_FAILED'],
    ['a wrong content type', 'POST', '/api/v1/jenkins/download', 'job_url=x', 400, 'VALIDATION_FAILED'],
    ['an unknown field', 'POST', '/api/v1/jenkins/download', '{"job_url":"http://127.0.0.1:9/job/QA_Release_1.0/job/a/1/","x":1}', 400, 'VALIDATION_FAILED'],
    ['a foreign job_url', 'POST', '/api/v1/jenkins/download', '{"job_url":"http://10.0.0.1/job/QA_Release_1.0/job/a/1/"}', 400, 'VALIDATION_FAILED'],
    ['an unknown route', 'GET', '/api/v1/nope', undefined, 404, 'NOT_FOUND'],
    ['an unknown job', 'GET', '/api/v1/jenkins/download/01a214b4-dcbf-709f-9f50-90c01cad2802/status', undefined, 404, 'NOT_FOUND'],
    ['a malformed job id', 'GET', '/api/v1/jenkins/download/..%2F..%2Fetc/status', undefined, 404, 'NOT_FOUND'],
    ['an unknown job stream', 'GET', '/api/v1/jenkins/download/01a214b4-dcbf-709f-9f50-90c01cad2802', undefined, 404, 'NOT_FOUND'],
    ['deleting an unknown job', 'DELETE', '/api/v1/jenkins/download/01a214b4-dcbf-709f-9f50-90c01cad2802', undefined, 404, 'NOT_FOUND'],
    ['a bad list limit', 'GET', '/api/v1/jenkins/downloads?limit=0', undefined, 400, 'VALIDATION_FAILED'],
  ])('%s answers %i', async (_name, method, path, body, status, code) => {
    const response = await request(method, path, body, body?.startsWith('{') ? 'application/json' : 'application/x-www-form-urlencoded');
    expect(response.status).toBe(status);
    expect(response.type).toContain('application/json');
    expect(response.json.error?.code).toBe(code);
    expect(response.json.error?.message).toBeTruthy();
    expect(response.text).not.toMatch(/at .*\.(ts|js):\d+/);
  });

  it('a valid submission with nothing to run answers 202 and the job is pending', async () => {
    const response = await request('POST', '/api/v1/jenkins/download', '{"job_url":"http://127.0.0.1:9/job/QA_Release_1.0/job/a/1/"}');
    expect(response.status).toBe(202);
    const id = (response.json as unknown as { job_id: string }).job_id;
    const status = await request('GET', `/api/v1/jenkins/download/${id}/status`);
    expect(status.json).toMatchObject({ status: 'pending', release: '1.0' });
  });

  it('/healthz and /readyz answer 200 with Redis up, and Bull Board is served', async () => {
    expect((await fetch(`${system.baseUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${system.baseUrl}/readyz`)).status).toBe(200);
    const board = await fetch(`${system.baseUrl}/admin/queues`);
    expect(board.status).toBe(200);
    expect(await board.text()).toContain('<html');
    const queues = await fetch(`${system.baseUrl}/admin/queues/api/queues`);
    expect(queues.status).toBe(200);
    expect(JSON.stringify(await queues.json())).toContain('downloads');
  });
});
