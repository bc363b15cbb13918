import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, type ChildService } from '../helpers/processes.js';
import { getJson, postJson, startSystem, testEnv, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

/** `.part` files below `dir` with their sizes. */
async function partFiles(dir: string): Promise<Array<{ file: string; size: number }>> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  const parts = entries.filter((entry) => entry.isFile() && entry.name.endsWith('.part'));
  return Promise.all(
    parts.map(async (entry) => {
      const file = path.join(entry.parentPath, entry.name);
      return { file, size: (await stat(file).catch(() => ({ size: 0 }))).size };
    }),
  );
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('a worker that dies, stops, hangs or overruns loses nothing (real worker processes)', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let workerEnv: Record<string, string>;
  let builds = 0;
  const workers: ChildService[] = [];

  const startWorker = (extra: Record<string, string> = {}) => {
    const worker = startScript('worker', { ...workerEnv, ...extra });
    workers.push(worker);
    return worker;
  };
  const status = async (id: string) => (await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`)).body;
  const lines = async (id: string) =>
    ((await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`)).body.lines as Array<{ message: string }>).map(
      (line) => line.message,
    );
  const finished = (id: string, timeoutMs = 30_000) =>
    waitFor(async () => {
      const body = await status(id);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `job ${id} to finish`, timeoutMs);
  /** A fresh build with one generated artifact, and a submitted job for it. */
  const submitBig = async (size: number) => {
    builds += 1;
    const url = jenkins.addBuild(['QA_Release_4.4', `crash-${builds}`], 1, { artifacts: [{ relativePath: 'hapy/big.bin', size }] });
    const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url });
    expect(answer.status).toBe(202);
    return { url, id: answer.body.job_id as string };
  };
  const expectCorrectFile = async (done: Record<string, unknown>, url: string) => {
    const file = (done.files as Array<{ path: string; sha256: string }>)[0];
    const bytes = await readFile(path.join(system.downloadDir, file?.path ?? 'missing'));
    expect(sha256(bytes)).toBe(jenkins.artifactSha256(url, 'hapy/big.bin'));
    expect(file?.sha256).toBe(sha256(bytes));
  };

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    // The API runs here; workers are child processes sharing its Redis, queue and DOWNLOAD_DIR.
    system = await startSystem(jenkins.url);
    workerEnv = testEnv(jenkins.url, system.downloadDir, {
      QUEUE_PREFIX: system.config.queuePrefix,
      JOB_LOCK_MS: '2000',
      WORKER_CONCURRENCY: '1',
      LOG_LEVEL: 'info',
    });
  });

  afterEach(async () => {
    jenkins.setThrottle(undefined);
    await Promise.all(workers.splice(0).map((worker) => worker.stop(5_000)));
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  it('SIGKILL mid-download: another worker takes the job after its lock expires and resumes the .part', async () => {
    jenkins.setThrottle(200_000);
    const first = startWorker();
    const { url, id } = await submitBig(3_000_000);
    await waitFor(async () => (await partFiles(system.downloadDir)).some((part) => part.size > 200_000), 'a .part with data', 20_000);
    first.child.kill('SIGKILL');
    const left = (await partFiles(system.downloadDir))[0]?.size ?? 0;
    jenkins.setThrottle(undefined);
    startWorker();

    const done = await finished(id);
    expect(done).toMatchObject({ status: 'completed', attempts: 2 });
    await expectCorrectFile(done, url);
    const ranges = jenkins.requests.filter((request) => request.method === 'GET' && request.path.includes(`crash-${builds}/1/artifact/`)).map((request) => request.range);
    expect(ranges[0]).toBeUndefined();
    const resumedFrom = Number(/^bytes=(\d+)-$/.exec(ranges.at(-1) ?? '')?.[1] ?? 0);
    expect(resumedFrom).toBeGreaterThanOrEqual(left);
    expect(resumedFrom).toBeGreaterThan(0);
    const log = await lines(id);
    expect(log.some((line) => line.includes('stopped renewing its lock') && line.includes('back in the queue'))).toBe(true);
    expect(log.some((line) => line.startsWith('Resumed after a stall'))).toBe(true);
    expect(log.some((line) => line.includes('resuming at'))).toBe(true);
  });

  it('a job that keeps killing its worker fails after JOB_MAX_STALLS, saying so', async () => {
    jenkins.setThrottle(100_000);
    const { id } = await submitBig(5_000_000);
    // JOB_MAX_STALLS=1: the first stall puts it back, the second fails it.
    for (let round = 1; round <= 2; round += 1) {
      const worker = startWorker({ JOB_MAX_STALLS: '1' });
      await waitFor(async () => (await status(id)).status === 'running', `round ${round}: running`, 20_000);
      worker.child.kill('SIGKILL');
      await waitFor(async () => (await status(id)).status !== 'running', `round ${round}: lock expired`, 20_000);
    }
    // Someone must run the stalled check; this worker finds the job failed, not waiting.
    startWorker({ JOB_MAX_STALLS: '1' });
    const done = await finished(id);
    expect(done.status).toBe('failed');
    expect(String(done.error)).toMatch(/^Stalled more than JOB_MAX_STALLS times/);
    const log = await lines(id);
    expect(log.some((line) => line.startsWith('Stalled more than JOB_MAX_STALLS (1) times'))).toBe(true);
  });

  it('SIGTERM: a worker finishes a short job, hands a long one back after SHUTDOWN_TIMEOUT_MS, takes no new job, exits 0', async () => {
    jenkins.setThrottle(150_000);
    const worker = startWorker({ SHUTDOWN_TIMEOUT_MS: '1500', WORKER_CONCURRENCY: '2' });
    const short = await submitBig(150_000);
    const long = await submitBig(3_000_000);
    await waitFor(async () => (await status(short.id)).status === 'running' && (await status(long.id)).status === 'running', 'both running', 20_000);
    const stoppedAt = Date.now();
    const exited = worker.stop(15_000);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const late = await submitBig(1_000);
    const code = await exited;
    expect(code).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);

    expect(await status(short.id)).toMatchObject({ status: 'completed' });
    // Handed back: waiting for a worker, not failed, not "running" with nobody on it.
    expect(await status(long.id)).toMatchObject({ status: 'pending', error: null });
    expect(await status(late.id)).toMatchObject({ status: 'pending', attempts: 0 });
    expect((await lines(long.id)).some((line) => line.includes('shutting down') && line.includes('back to the queue'))).toBe(true);
    expect(worker.output()).toContain('job handed back on shutdown');

    jenkins.setThrottle(undefined);
    startWorker();
    const done = await finished(long.id);
    expect(done.status).toBe('completed');
    await expectCorrectFile(done, long.url);
    const ranges = jenkins.requests.filter((request) => request.path.includes(`crash-${builds - 1}/1/artifact/`)).map((request) => request.range);
    expect(ranges.at(-1)).toMatch(/^bytes=[1-9]\d*-$/);
    expect((await finished(late.id)).status).toBe('completed');
  });

  it('a paused worker that lost its lock stops writing when it wakes, and never touches the new owner files', async () => {
    jenkins.setThrottle(100_000);
    const paused = startWorker();
    const { url, id } = await submitBig(1_500_000);
    await waitFor(async () => (await partFiles(system.downloadDir)).some((part) => part.size > 100_000), 'a .part with data', 20_000);
    process.kill(paused.child.pid as number, 'SIGSTOP');
    try {
      // The artifact is rebuilt meanwhile: the new owner restarts it; the paused one still holds the old bytes in flight.
      jenkins.setArtifactContent(url, 'hapy/big.bin', Buffer.alloc(1_200_000, 7), new Date('2025-06-01T00:00:00Z'));
      startWorker();
      await waitFor(async () => (await status(id)).attempts === 2, 'the job taken over', 20_000);
      await waitFor(async () => (await partFiles(system.downloadDir)).some((part) => part.size > 50_000), 'the new owner writing', 20_000);
    } finally {
      process.kill(paused.child.pid as number, 'SIGCONT');
    }
    const done = await finished(id);
    expect(done.status).toBe('completed');
    await expectCorrectFile(done, url);
    await waitFor(() => paused.output().includes('stopped writing its files'), 'the woken worker to stop', 10_000);
  });

  it('JOB_TIMEOUT_SECONDS fails a job that runs longer, saying so, and frees the worker', async () => {
    jenkins.setThrottle(50_000);
    startWorker({ JOB_TIMEOUT_SECONDS: '2' });
    const slow = await submitBig(2_000_000);
    const done = await finished(slow.id);
    expect(done.status).toBe('failed');
    expect(done.error).toBe('Job ran longer than JOB_TIMEOUT_SECONDS (2 s) and was stopped');
    jenkins.setThrottle(undefined);
    const next = await submitBig(10_000);
    expect((await finished(next.id)).status).toBe('completed');
  });
});
