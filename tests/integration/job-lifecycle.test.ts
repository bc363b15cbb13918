import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeys } from '../../shared/keys.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { logLines, openSse } from '../helpers/sse-client.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

describe('job lifecycle: log trimming, TTLs, and Bull Board actions reflected in status', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let manyUrl: string;
  let smallUrl: string;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    manyUrl = jenkins.addBuild(['QA_Release_2.0', 'many-files'], 9, {
      artifacts: Array.from({ length: 12 }, (_, index) => ({ relativePath: `r/${index}.xml`, content: `<t i="${index}"/>` })),
    });
    smallUrl = jenkins.addBuild(['QA_Release_2.0', 'small'], 1, { artifacts: [{ relativePath: 'a.xml', content: '<a/>' }] });
    system = await startSystem(jenkins.url, { MAX_LOG_LINES: '5', JOB_TTL_SECONDS: '2', LOG_TTL_SECONDS: '600' }, 200);
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  const submit = async (body: unknown) => (await postJson(`${system.baseUrl}/api/v1/jenkins/download`, body)).body.job_id as string;
  const status = async (id: string) => getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
  const finished = (id: string) =>
    waitFor(async () => {
      const { body } = await status(id);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `job ${id} to finish`);

  it('keeps the newest MAX_LOG_LINES lines and tells a reader how many it missed', async () => {
    const id = await submit({ job_url: manyUrl });
    await finished(id);
    // The end entry follows the outcome within END_RECORD_DELAY_MS: count the lines once it is there.
    const lastId = await waitFor(async () => {
      const [last] = (await system.redis.xrevrange(createKeys('{ferry}').log(id), '+', '-', 'COUNT', 1)) as Array<[string, string[]]>;
      return last && last[1].includes('s') ? last[0] : null;
    }, 'the end entry', 5_000);
    const total = Number(lastId.split('-')[1]);
    expect(total).toBeGreaterThan(12);
    expect(await system.redis.xlen(createKeys('{ferry}').log(id))).toBe(5);

    const reader = await openSse(`${system.baseUrl}/api/v1/jenkins/download/${id}`, { 'last-event-id': '0-1' });
    await reader.closed;
    const notice = reader.events.find((event) => event.event === 'message' && event.id === undefined);
    expect(JSON.parse(notice?.data ?? '{}').message).toContain(`${total - 5 - 1} earlier log line(s) were dropped`);
    const ids = reader.events.filter((event) => event.id !== undefined).map((event) => event.id);
    expect(ids).toEqual(Array.from({ length: 5 }, (_, index) => `0-${total - 4 + index}`));

    const page = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?after=0-1`);
    expect(page.body.dropped).toBe(total - 6);
    expect(page.body.done).toBe(true);
  });

  it('sets the log TTL when a job ends, and BullMQ forgets a finished job after JOB_TTL_SECONDS', async () => {
    const first = await submit({ job_url: smallUrl, skip_existing: false });
    await finished(first);
    const ttl = await system.redis.ttl(createKeys('{ferry}').log(first));
    expect(ttl).toBeGreaterThan(500);
    expect(ttl).toBeLessThanOrEqual(600);
    // BullMQ removes jobs older than the age when another job finishes (it cleans lazily).
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const second = await submit({ job_url: smallUrl, skip_existing: false });
    await finished(second);
    await waitFor(async () => (await status(first)).status === 404, 'the first job to expire', 10_000);
    // The log outlives the job record until its own TTL; listing prunes the vanished job.
    const listing = await getJson(`${system.baseUrl}/api/v1/jenkins/downloads?limit=200`);
    expect((listing.body.jobs as Array<{ id: string }>).some((job) => job.id === first)).toBe(false);
  });

  it('a failed job retried from Bull Board becomes pending, then completed; ferry never contradicts BullMQ', async () => {
    jenkins.setArtifactStatus('a.xml', 404);
    const id = await submit({ job_url: smallUrl, release: 'retry', skip_existing: false });
    const failed = await finished(id);
    expect(failed.status).toBe('failed');
    expect(await system.api.queue.getJobState(id)).toBe('failed');
    jenkins.setArtifactStatus('a.xml', undefined);

    const job = await system.api.queue.getJob(id);
    await job?.retry('failed');
    const done = await waitFor(async () => {
      const { body } = await status(id);
      return body.status === 'completed' ? body : null;
    }, 'the retried job to complete');
    expect(await system.api.queue.getJobState(id)).toBe('completed');
    expect(done.error).toBeNull();
    expect(done.attempts).toBe(2);
  });

  it('a pending job removed from Bull Board answers 404, and its live followers get a cancelled ending', async () => {
    await system.api.queue.pause();
    try {
      const id = await submit({ job_url: smallUrl, release: 'removed' });
      const reader = await openSse(`${system.baseUrl}/api/v1/jenkins/download/${id}`);
      expect(reader.status).toBe(200);
      expect((await status(id)).body.status).toBe('pending');
      await (await system.api.queue.getJob(id))?.remove();
      expect((await status(id)).status).toBe(404);
      await reader.closed;
      const ending = reader.events.filter((event) => event.id !== undefined).at(-1);
      expect(JSON.parse(ending?.data ?? '{}')).toEqual({ status: 'cancelled', error: 'The job was removed' });
      expect(logLines(reader.events)).toEqual([]);
    } finally {
      await system.api.queue.resume();
    }
  });
});
