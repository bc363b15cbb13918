import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { openSse } from '../helpers/sse-client.js';
import { testEnv } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const JENKINS_TOKEN = 'JENKINS-SECRET-7f3a9c41d2e8';
const API_TOKEN = 'API-SECRET-5b8e2d7c9a14f0';
const TOKEN_SECRET = 'TOKEN-SECRET-0123456789abcdef0123456789';

/** Every form a secret could leak in: as is, in a Basic header, URL-encoded. */
const forms = (secret: string, user = 'ci') => [secret, Buffer.from(`${user}:${secret}`).toString('base64'), encodeURIComponent(secret)];
const SECRETS = [...forms(JENKINS_TOKEN), ...forms(API_TOKEN), TOKEN_SECRET];

/** Every value stored in Redis under the prefix, whatever its type, as text. */
async function dumpRedis(redis: Redis): Promise<string> {
  const parts: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'COUNT', 500);
    cursor = next;
    for (const key of keys) {
      const type = await redis.type(key);
      parts.push(key);
      if (type === 'string') parts.push(String(await redis.get(key)));
      else if (type === 'hash') parts.push(JSON.stringify(await redis.hgetall(key)));
      else if (type === 'list') parts.push(JSON.stringify(await redis.lrange(key, 0, -1)));
      else if (type === 'set') parts.push(JSON.stringify(await redis.smembers(key)));
      else if (type === 'zset') parts.push(JSON.stringify(await redis.zrange(key, 0, -1)));
      else if (type === 'stream') parts.push(JSON.stringify(await redis.xrange(key, '-', '+')));
    }
  } while (cursor !== '0');
  return parts.join('\n');
}

describe('secrets never leave where they belong (real processes, a whole job, every answer, Redis, logs)', () => {
  let jenkins: FakeJenkins;
  let redis: Redis;
  let downloadDir: string;
  let api: ChildService;
  let worker: ChildService;
  let base: string;
  const seen: string[] = [];

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'ci', token: JENKINS_TOKEN });
    downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-secrets-'));
    redis = new Redis(inject('redisUrl'));
    const port = await freePort();
    const env = testEnv(jenkins.url, downloadDir, {
      JENKINS_USER: 'ci',
      JENKINS_API_TOKEN: JENKINS_TOKEN,
      API_TOKENS: `admin:ops:${API_TOKEN}`,
      TOKEN_SECRET,
      PORT: String(port),
      LOG_LEVEL: 'debug',
    });
    api = startScript('api', env);
    worker = startScript('worker', env);
    base = `http://127.0.0.1:${port}`;
    await waitReady(base, api);
  });

  afterAll(async () => {
    await worker?.stop();
    await api?.stop();
    redis?.disconnect();
    await jenkins?.close();
    await rm(downloadDir, { recursive: true, force: true });
  });

  const call = async (url: string, init: RequestInit = {}) => {
    const response = await fetch(url, { ...init, headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) } });
    const text = await response.text();
    seen.push(`${response.status} ${JSON.stringify([...response.headers])} ${text}`);
    return { status: response.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };

  it('a completed job, a failed one (500), one redirected to storage, an auth failure and a bad config leak no token', async () => {
    const ok = jenkins.addBuild(['QA_Release_1.2', 'secret-ok'], 1, { artifacts: [{ relativePath: 'hapy/a.xml', content: '<a/>' }] });
    const broken = jenkins.addBuild(['QA_Release_1.2', 'secret-broken'], 1, { artifacts: [{ relativePath: 'hapy/b.xml', content: '<b/>' }] });
    const redirected = jenkins.addBuild(['QA_Release_1.2', 'secret-s3'], 1, { artifacts: [{ relativePath: 'hapy/c.xml', content: '<c/>' }] });
    jenkins.setFault('secret-broken', { kind: 'status', status: 500 });
    jenkins.setFault('secret-s3', { kind: 'redirect' });
    const ids: string[] = [];
    for (const url of [ok, broken, redirected]) {
      const answer = await call(`${base}/api/v1/jenkins/download`, { method: 'POST', body: JSON.stringify({ job_url: url }) });
      expect(answer.status).toBe(202);
      ids.push(answer.body.job_id as string);
    }
    for (const id of ids) {
      await waitFor(async () => {
        const status = await call(`${base}/api/v1/jenkins/download/${id}/status`);
        return ['completed', 'failed'].includes(status.body.status as string);
      }, `job ${id}`, 60_000);
      await call(`${base}/api/v1/jenkins/download/${id}/logs?limit=1000`);
      const token = (await call(`${base}/api/v1/jenkins/download/${id}/stream-token`, { method: 'POST' })).body.token as string;
      const reader = await openSse(`${base}/api/v1/jenkins/download/${id}?token=${encodeURIComponent(token)}`);
      await reader.closed;
      seen.push(JSON.stringify(reader.events));
    }
    const statuses = await Promise.all(ids.map(async (id) => (await call(`${base}/api/v1/jenkins/download/${id}/status`)).body));
    expect(statuses.map((status) => status.status)).toEqual(['completed', 'failed', 'completed']);
    expect(String(statuses[1]?.error)).toContain('HTTP 500');
    await call(`${base}/api/v1/jenkins/downloads`);
    await call(`${base}/api/v1/jenkins/download`, { method: 'POST', body: '{"job_url": 1}' });
    // Wrong credentials, echoed nowhere.
    const wrong = await fetch(`${base}/api/v1/jenkins/downloads`, { headers: { authorization: `Bearer ${API_TOKEN}x` } });
    seen.push(await wrong.text());
    const dashboard = await fetch(`${base}/admin/queues/api/queues`, { headers: { authorization: `Basic ${Buffer.from(`ops:${API_TOKEN}`).toString('base64')}` } });
    expect(dashboard.status).toBe(200);
    seen.push(await dashboard.text());

    // A worker that refuses to start on a bad value must not print the good secrets beside it.
    const refused = startScript('worker', { ...testEnv(jenkins.url, downloadDir), JENKINS_API_TOKEN: JENKINS_TOKEN, JOB_ATTEMPTS: 'many' });
    await waitFor(() => refused.child.exitCode !== null, 'the misconfigured worker to exit', 20_000);
    expect(refused.child.exitCode).toBe(1);
    expect(refused.output()).toContain('JOB_ATTEMPTS');

    const haystacks = { responses: seen.join('\n'), redis: await dumpRedis(redis), api: api.output(), worker: worker.output(), refused: refused.output() };
    expect(haystacks.worker).toContain('job completed');
    expect(haystacks.redis).toContain('secret-ok');
    for (const [where, text] of Object.entries(haystacks)) {
      for (const secret of SECRETS) expect(text.includes(secret), `${where} contains a secret`).toBe(false);
    }
    // Jenkins got the credentials; the storage server never did.
    expect(jenkins.requests.filter((request) => request.path.includes('secret-ok')).every((request) => request.authorized)).toBe(true);
    expect(jenkins.storageRequests.every((request) => request.authorization === undefined)).toBe(true);
  });
});
