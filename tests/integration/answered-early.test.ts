// A request the Redis guard answered 503 (Redis frozen) changes nothing when Redis answers later.
// Found by the outage test in CI: a cancel probe answered 503 during a freeze went on once Redis
// resumed, and cancelled a job whose caller had been told the cancel failed.
import { createKeys } from '../../shared/keys.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startRestartableRedisServer, type RestartableRedisServer } from '../helpers/redis-server.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

describe('a request answered 503 while Redis is frozen changes nothing once Redis answers', () => {
  let redis: RestartableRedisServer;
  let jenkins: FakeJenkins;
  let system: TestSystem;
  const base = () => `${system.baseUrl}/api/v1/jenkins/download`;

  beforeAll(async () => {
    redis = await startRestartableRedisServer();
    jenkins = await startFakeJenkins();
    // No worker: submitted jobs stay pending.
    system = await startSystem(jenkins.url, { REDIS_URL: redis.url });
  });

  afterAll(async () => {
    redis?.resume();
    await system?.stop();
    await jenkins?.close();
    await redis?.destroy();
  });

  it('a cancel answered 503 during a freeze does not cancel the job after the freeze; a later cancel does', async () => {
    const build = jenkins.addBuild(['QA_Release_3.3', 'frozen-cancel'], 4, { artifacts: [{ relativePath: 'hapy/a.xml', content: '<a/>' }] });
    const submitted = await postJson(base(), { job_url: build });
    expect(submitted.status).toBe(202);
    const jobId = submitted.body.job_id as string;
    expect((await getJson(`${base()}/${jobId}/status`)).body.status).toBe('pending');

    redis.pause();
    let answer: { status: number; body: Record<string, unknown> };
    try {
      answer = await postJson(`${base()}/${jobId}/cancel`, {});
    } finally {
      redis.resume();
    }
    expect(answer.status).toBe(503);
    expect(answer.body).toMatchObject({ error: { code: 'REDIS_UNAVAILABLE' } });

    // Redis answers again: the cancel route's read returns now. Give it time to (wrongly) go on.
    await waitFor(async () => (await fetch(`${system.baseUrl}/readyz`)).status === 200, 'the API to be ready again', 10_000, 50);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await getJson(`${base()}/${jobId}/status`)).body.status).toBe('pending');
    expect(await system.redis.exists(createKeys(system.config.queuePrefix).cancelRequest(jobId))).toBe(0);
    expect(await system.api.queue.getJobState(jobId)).toBe('waiting');

    // The same cancel with Redis answering works as usual.
    const again = await postJson(`${base()}/${jobId}/cancel`, {});
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ job_id: jobId, status: 'cancelled' });
  });

  it('a delete answered 503 during a freeze does not remove the job after the freeze', async () => {
    const build = jenkins.addBuild(['QA_Release_3.3', 'frozen-delete'], 5, { artifacts: [{ relativePath: 'hapy/b.xml', content: '<b/>' }] });
    const submitted = await postJson(base(), { job_url: build });
    const jobId = submitted.body.job_id as string;
    expect((await postJson(`${base()}/${jobId}/cancel`, {})).status).toBe(200);

    redis.pause();
    let status: number;
    try {
      status = (await fetch(`${base()}/${jobId}`, { method: 'DELETE' })).status;
    } finally {
      redis.resume();
    }
    expect(status).toBe(503);
    await waitFor(async () => (await fetch(`${system.baseUrl}/readyz`)).status === 200, 'the API to be ready again', 10_000, 50);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await getJson(`${base()}/${jobId}/status`)).body.status).toBe('cancelled');

    expect((await fetch(`${base()}/${jobId}`, { method: 'DELETE' })).status).toBe(204);
    expect((await getJson(`${base()}/${jobId}/status`)).status).toBe(404);
  });
});
