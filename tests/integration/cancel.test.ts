import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeys } from '../../shared/keys.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, type ChildService } from '../helpers/processes.js';
import { openSse, type SseReader } from '../helpers/sse-client.js';
import { getJson, postJson, startSystem, testEnv, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

/** Every file below `dir`, relative to it. */
async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)));
}

/** The final event of a closed stream: its `complete` status. */
function endStatus(reader: SseReader): string | undefined {
  const complete = reader.events.find((event) => event.event === 'complete');
  return complete ? (JSON.parse(complete.data) as { status: string }).status : undefined;
}

describe('cancel (API in this process, the worker in a child process)', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let worker: ChildService;
  let slowUrl: string;
  let otherUrl: string;
  let quickUrl: string;
  const base = () => `${system.baseUrl}/api/v1/jenkins/download`;

  const submit = async (body: Record<string, unknown>) => {
    const answer = await postJson(base(), body);
    expect(answer.status).toBe(202);
    return answer.body.job_id as string;
  };
  const status = async (id: string) => (await getJson(`${base()}/${id}/status`)).body;
  const cancel = (id: string) => postJson(`${base()}/${id}/cancel`, {});

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    slowUrl = jenkins.addBuild(['QA_Release_8.1', 'slow-run'], 5, {
      artifacts: [
        { relativePath: 'hapy/big.bin', size: 4_000_000 },
        { relativePath: 'hapy/small.xml', content: '<ok/>' },
      ],
    });
    otherUrl = jenkins.addBuild(['QA_Release_8.1', 'other-run'], 6, { artifacts: [{ relativePath: 'hapy/other.xml', content: '<x/>' }] });
    quickUrl = jenkins.addBuild(['QA_Release_8.1', 'quick-run'], 7, { artifacts: [{ relativePath: 'hapy/q.xml', content: '<q/>' }] });
    system = await startSystem(jenkins.url);
    const env = testEnv(jenkins.url, system.downloadDir, {
      QUEUE_PREFIX: system.config.queuePrefix,
      WORKER_CONCURRENCY: '1',
      LOG_LEVEL: 'info',
    });
    worker = startScript('worker', env);
  });

  afterAll(async () => {
    const code = await worker?.stop();
    await system?.stop();
    await jenkins?.close();
    expect(code).toBe(0);
  });

  it('cancels a pending job (removed from the queue, never run) and a running job on another process within 2 s', async () => {
    // 50 KB/s: the 4 MB artifact keeps the only worker slot busy for over a minute.
    jenkins.setFault('big.bin', { kind: 'trickle', bytesPerSecond: 50_000 });
    const running = await submit({ job_url: slowUrl });
    await waitFor(async () => (await status(running)).status === 'running', 'the slow job running', 20_000);
    await waitFor(async () => (await listFiles(system.downloadDir)).some((file) => file.endsWith('.part')), 'a .part file');

    // WORKER_CONCURRENCY=1 and the slot is taken: this one stays pending.
    const pending = await submit({ job_url: otherUrl });
    expect((await status(pending)).status).toBe('pending');
    const pendingReader = await openSse(`${base()}/${pending}`);
    const pendingAnswer = await cancel(pending);
    expect(pendingAnswer.status).toBe(200);
    expect(pendingAnswer.body).toMatchObject({ job_id: pending, status: 'cancelled' });
    await pendingReader.closed;
    expect(endStatus(pendingReader)).toBe('cancelled');
    expect(await status(pending)).toMatchObject({ id: pending, status: 'cancelled', release: '8.1' });

    const runningReader = await openSse(`${base()}/${running}`);
    const startedAt = Date.now();
    const runningAnswer = await cancel(running);
    const elapsedMs = Date.now() - startedAt;
    expect(runningAnswer.status).toBe(200);
    expect(runningAnswer.body).toMatchObject({ job_id: running, status: 'cancelled' });
    expect(elapsedMs).toBeLessThan(2_000);
    await runningReader.closed;
    expect(endStatus(runningReader)).toBe('cancelled');
    const final = await status(running);
    expect(final).toMatchObject({ status: 'cancelled', files: null });
    expect(String(final.error)).toMatch(/^Cancelled/);
    expect(final.completed_at).toBeTruthy();

    // No partial file is left behind, and nothing of the cancelled pending job was fetched.
    await waitFor(async () => !(await listFiles(system.downloadDir)).some((file) => file.includes('.part')), 'the .part files removed');
    expect(jenkins.requests.some((request) => request.path.includes('other-run'))).toBe(false);

    // A finished job cannot be cancelled again.
    expect((await cancel(running)).status).toBe(409);
    expect((await cancel(pending)).status).toBe(409);

    // The worker is free again: a new job runs to completion.
    jenkins.setFault('big.bin', undefined);
    const next = await submit({ job_url: quickUrl });
    await waitFor(async () => (await status(next)).status === 'completed', 'the next job completed', 20_000);
  });

  it('cancelling a completed job answers 409 and leaves it completed; unknown ids answer 404', async () => {
    const id = await submit({ job_url: quickUrl, release: 'done' });
    await waitFor(async () => (await status(id)).status === 'completed', 'completed', 20_000);
    const answer = await cancel(id);
    expect(answer.status).toBe(409);
    expect(answer.body).toMatchObject({ error: { code: 'CONFLICT' } });
    expect((await status(id)).status).toBe('completed');
    expect((await cancel('0190a0b4-0000-7000-8000-000000000000')).status).toBe(404);
    expect((await cancel('not-a-job')).status).toBe(404);
  });

  it('a cancelled pending job can be removed with DELETE, and is then unknown', async () => {
    jenkins.setFault('big.bin', { kind: 'trickle', bytesPerSecond: 50_000 });
    const blocker = await submit({ job_url: slowUrl, release: 'blocker' });
    await waitFor(async () => (await status(blocker)).status === 'running', 'the blocker running', 20_000);
    const pending = await submit({ job_url: otherUrl, release: 'removable' });
    expect((await cancel(pending)).status).toBe(200);
    const listed = await getJson(`${system.baseUrl}/api/v1/jenkins/downloads?status=cancelled&release=removable`);
    expect((listed.body.jobs as Array<{ id: string }>).map((job) => job.id)).toEqual([pending]);
    const removed = await fetch(`${base()}/${pending}`, { method: 'DELETE' });
    expect(removed.status).toBe(204);
    expect((await getJson(`${base()}/${pending}/status`)).status).toBe(404);
    expect((await cancel(blocker)).status).toBe(200);
    jenkins.setFault('big.bin', undefined);
  });

  it('a worker that missed the cancel message still stops the job at its marker, even when its plan fails', async () => {
    jenkins.setFault('big.bin', { kind: 'trickle', bytesPerSecond: 50_000 });
    const blocker = await submit({ job_url: slowUrl, release: 'marker-blocker' });
    await waitFor(async () => (await status(blocker)).status === 'running', 'the blocker running', 20_000);
    // Behind the blocker: one build that plans, one Jenkins answers 404 for. Their markers are set
    // without the pub/sub message, as for a worker that took a job just as its cancel came.
    const plannable = await submit({ job_url: quickUrl, release: 'marker' });
    const unplannable = await submit({ job_url: quickUrl.replace('/quick-run/7/', '/missing-run/9/'), release: 'marker' });
    const keys = createKeys(system.config.queuePrefix);
    await system.redis.set(keys.cancelRequest(plannable), '1', 'EX', 600);
    await system.redis.set(keys.cancelRequest(unplannable), '1', 'EX', 600);
    expect((await cancel(blocker)).status).toBe(200);
    jenkins.setFault('big.bin', undefined);
    for (const id of [plannable, unplannable]) {
      await waitFor(async () => ['cancelled', 'failed', 'completed'].includes((await status(id)).status as string), `job ${id} ended`, 20_000);
      expect((await status(id)).status).toBe('cancelled');
    }
    expect((await listFiles(system.downloadDir)).filter((file) => file.startsWith('marker/'))).toEqual([]);
  });
});
