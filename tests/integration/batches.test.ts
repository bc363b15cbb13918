import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childJobId } from '../../worker/batch-coordinator.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { logLines, openSse, type SseReader } from '../helpers/sse-client.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

interface ModuleView {
  index: number;
  module: string;
  build_url: string;
  job_id: string | null;
  status: string;
  error: string | null;
}

/** The body the tracker's front end sends for one selected build. */
const item = (buildUrl: string, key: string, extra: Record<string, unknown> = {}) => ({
  key,
  release: '9.1',
  release_id: 91,
  build_number: Number(buildUrl.split('/').at(-2)),
  build_url: buildUrl,
  jenkins_job_url: buildUrl.split('/').slice(0, -2).join('/') + '/',
  display_name: `${key} #${buildUrl.split('/').at(-2)}`,
  environment: 'esxi',
  ...extra,
});

const endOf = (reader: SseReader) => {
  const complete = reader.events.find((event) => event.event === 'complete');
  return complete ? (JSON.parse(complete.data) as { status: string }).status : undefined;
};

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)));
}

describe('batches ("download selected"): module jobs spread over two workers, BATCH_PARALLELISM at a time', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let mappedUrl: string;
  let nightlyUrl: string;
  let brokenUrl: string;
  let missingUrl: string;
  let slowUrl: string;
  const base = () => `${system.baseUrl}/api/v1/jenkins`;
  const status = async (id: string) => (await getJson(`${base()}/download/${id}/status`)).body;
  const finished = (id: string) =>
    waitFor(async () => {
      const body = await status(id);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `batch ${id} to finish`, 30_000);

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    const folder = 'QA_Release_9.1';
    for (const [name, number] of [['MOD-A-ESXI', 1], ['MOD-B-MODULE', 2], ['MOD-C', 3], ['MOD-D', 4]] as const) {
      jenkins.addBuild([folder, name], number, {
        artifacts: [
          { relativePath: `hapy/reports/junit/${name.toLowerCase()}.xml`, content: `<testsuite name="${name}"/>` },
          { relativePath: 'hapy/data.bin', size: 20_000 + number },
        ],
      });
    }
    mappedUrl = jenkins.addBuild([folder, 'main-regression'], 300, {
      artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify({ MOD_A_ESXI: 1, MOD_B_MODULE: 2, MOD_C: 3 }) }],
    });
    nightlyUrl = jenkins.addBuild([folder, 'nightly-run'], 400, { artifacts: [{ relativePath: 'hapy/n.xml', content: '<n/>' }] });
    brokenUrl = jenkins.addBuild([folder, 'broken-run'], 500, { artifacts: [{ relativePath: 'hapy/gone.xml', content: '<gone/>' }] });
    missingUrl = `${jenkins.url}job/${folder}/job/never-built/7/`;
    slowUrl = jenkins.addBuild([folder, 'slow-run'], 600, {
      artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify({ MOD_A_ESXI: 1, MOD_B_MODULE: 2, MOD_C: 3, MOD_D: 4 }) }],
    });
    system = await startSystem(jenkins.url, { BATCH_PARALLELISM: '2', WORKER_CONCURRENCY: '4', JOB_ATTEMPTS: '1' }, 300);
    await system.startWorker();
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  it('runs every module of every build, numbers lines over the whole batch, and aggregates a partial failure', async () => {
    jenkins.setArtifactStatus('broken-run', 404);
    const answer = await postJson(`${base()}/download-selected`, {
      jobs: [item(mappedUrl, 'main-regression'), item(nightlyUrl, 'nightly-run'), item(brokenUrl, 'broken-run'), item(missingUrl, 'never-built')],
    });
    expect(answer.status).toBe(202);
    const id = answer.body.job_id as string;
    expect(answer.body.logs_url).toBe(`/api/v1/jenkins/download-selected/${id}`);
    const readers = await Promise.all([openSse(`${system.baseUrl}${String(answer.body.logs_url)}`), openSse(`${system.baseUrl}${String(answer.body.logs_url)}`)]);

    const done = await finished(id);
    await Promise.all(readers.map((reader) => reader.closed));
    jenkins.setArtifactStatus('broken-run', undefined);

    // 3 modules from the build map, 2 single-module builds, 1 build that cannot be planned.
    expect(done).toMatchObject({ id, kind: 'batch', status: 'failed', release: '9.1', job_url: null });
    expect(String(done.error)).toMatch(/^2 of 6 module\(s\) failed: /);
    const modules = done.modules as ModuleView[];
    expect(modules.map((module) => [module.module, module.status])).toEqual([
      ['mod_a', 'completed'],
      ['mod_b', 'completed'],
      ['mod_c', 'completed'],
      ['nightly_run', 'completed'],
      ['broken_run', 'failed'],
      ['never_built', 'failed'],
    ]);
    const failed = done.failed_modules as Array<{ module: string; build_url: string; error: string }>;
    expect(failed.map((module) => module.module)).toEqual(['broken_run', 'never_built']);
    expect(failed[0]?.build_url).toBe(brokenUrl);
    expect(failed[0]?.error).toContain('404');
    expect(failed[1]?.build_url).toBe(missingUrl);
    expect(failed[1]?.error).toContain('404');
    expect((done.builds as Array<{ key: string; environment: string }>).map((build) => build.key)).toEqual([
      'main-regression',
      'nightly-run',
      'broken-run',
      'never-built',
    ]);
    expect(done.progress).toMatchObject({ modules_total: 6, modules_done: 6 });

    // The files of the completed modules are on disk, under the folders the tracker expects.
    const files = await listFiles(system.downloadDir);
    for (const expected of ['9.1/mod_a/1/hapy/data.bin', '9.1/mod_b/2/hapy/data.bin', '9.1/mod_c/3/hapy/reports/junit/mod-c.xml', '9.1/nightly_run/400/hapy/n.xml']) {
      expect(files).toContain(expected);
    }
    expect(await readFile(path.join(system.downloadDir, '9.1/nightly_run/400/hapy/n.xml'), 'utf8')).toBe('<n/>');
    expect(files.some((file) => file.includes('.part'))).toBe(false);

    // Every reader got every line once, the module lines numbered over all six modules, and the end.
    for (const reader of readers) {
      expect(endOf(reader)).toBe('failed');
      const lines = logLines(reader.events);
      expect(new Set(lines.map((line) => line.id)).size).toBe(lines.length);
      const messages = lines.map((line) => line.message);
      for (const [index, name] of ['mod_a', 'mod_b', 'mod_c', 'nightly_run'].entries()) {
        expect(messages.some((message) => message.startsWith(`[${index + 1}/6] ${name}: Attempt 1: downloading `))).toBe(true);
        expect(messages).toContain(`[${index + 1}/6] ${name}: module completed`);
      }
      expect(messages.some((message) => message.startsWith('[5/6] broken_run: module failed') && message.includes('404'))).toBe(true);
    }
    expect(readers[0]?.events.map((event) => event.data)).toEqual(readers[1]?.events.map((event) => event.data));

    // The JSON log pages take a batch id like any job id.
    const page = await getJson(`${base()}/download/${id}/logs?limit=1000`);
    expect(page.status).toBe(200);
    expect(page.body.done).toBe(true);
    expect((page.body.lines as Array<{ message: string }>).map((line) => line.message)).toEqual(
      expect.arrayContaining(['[1/6] mod_a: module completed', '[4/6] nightly_run: module completed']),
    );

    // A module job is a job like any other: its own status names its batch.
    const child = await status(childJobId(id, 0));
    expect(child).toMatchObject({ kind: 'download', status: 'completed', batch_id: id, release: '9.1' });
  });

  it('keeps at most BATCH_PARALLELISM module jobs of a batch in the queue at once, and completes', async () => {
    jenkins.setThrottle(40_000);
    try {
      // A release of its own: the first test's folders would be skipped as already downloaded.
      const answer = await postJson(`${base()}/download-selected`, {
        jobs: [item(slowUrl, 'slow-run', { release: '9.3' }), item(nightlyUrl, 'nightly-run', { release: '9.3' })],
      });
      expect(answer.status).toBe(202);
      const id = answer.body.job_id as string;
      let peak = 0;
      let done: Record<string, unknown> | null = null;
      while (!done) {
        const jobs = await system.api.queue.getJobs(['active', 'waiting', 'delayed', 'prioritized']);
        peak = Math.max(peak, jobs.filter((job) => job.data.batch?.id === id).length);
        const body = await status(id);
        if (['completed', 'failed', 'cancelled'].includes(body.status as string)) done = body;
        else await new Promise((resolve) => setTimeout(resolve, 25));
      }
      expect(done).toMatchObject({ status: 'completed', error: null, failed_modules: [] });
      expect((done.modules as ModuleView[]).map((module) => module.status)).toEqual(Array(5).fill('completed'));
      expect(peak).toBe(2);
      expect((done.files as unknown[]).length).toBe(9);
    } finally {
      jenkins.setThrottle(undefined);
    }
  });

  it('cancelling a batch cancels its running modules and starts no more', async () => {
    jenkins.setFault('data.bin', { kind: 'trickle', bytesPerSecond: 2_000 });
    try {
      const answer = await postJson(`${base()}/download-selected`, { jobs: [item(slowUrl, 'slow-run', { release: '9.2' })] });
      const id = answer.body.job_id as string;
      const reader = await openSse(`${system.baseUrl}${String(answer.body.logs_url)}`);
      // Small bodies are held in memory until complete (no .part): the trickled requests show the modules at work.
      const asked = () => jenkins.requests.filter((request) => request.path.endsWith('/data.bin')).length;
      const askedBefore = asked();
      await waitFor(() => asked() >= askedBefore + 2, 'two modules downloading', 20_000);
      const cancelled = await postJson(`${base()}/download/${id}/cancel`, {});
      expect(cancelled.status).toBe(200);
      expect(cancelled.body).toMatchObject({ job_id: id, status: 'cancelled' });
      await reader.closed;
      expect(endOf(reader)).toBe('cancelled');
      const done = await status(id);
      expect(done.status).toBe('cancelled');
      expect((done.modules as ModuleView[]).map((module) => module.status)).toEqual(['cancelled', 'cancelled', 'cancelled', 'cancelled']);
      expect((await status(childJobId(id, 0))).status).toBe('cancelled');
      // Modules 3 and 4 were never added, so never requested; no partial file remains.
      await waitFor(async () => !(await listFiles(system.downloadDir)).some((file) => file.includes('.part')), 'no .part files');
      expect(await status(childJobId(id, 2))).toMatchObject({ error: { code: 'NOT_FOUND' } });
      expect((await postJson(`${base()}/download/${id}/cancel`, {})).status).toBe(409);

      // DELETE takes the batch and its module jobs.
      expect((await fetch(`${base()}/download/${id}`, { method: 'DELETE' })).status).toBe(204);
      expect((await getJson(`${base()}/download/${id}/status`)).status).toBe(404);
      expect((await getJson(`${base()}/download/${childJobId(id, 0)}/status`)).status).toBe(404);
    } finally {
      jenkins.setFault('data.bin', undefined);
    }
  });

  it('refuses a malformed batch with a 400 naming the problem', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ jobs: [] }, /jobs/],
      [{ jobs: Array.from({ length: 101 }, () => item(nightlyUrl, 'n')) }, /jobs/],
      [{ jobs: [item(nightlyUrl, 'n', { extra: 1 })] }, /unknown field/],
      [{ jobs: [item('https://evil.example/job/x/1/', 'n')] }, /jobs\.0\.build_url: must be on the configured Jenkins/],
      [{ jobs: [item(nightlyUrl, 'n', { release: '../etc' })] }, /release/],
      [{ jobs: [{ key: 'n', build_url: nightlyUrl }] }, /release/],
      [{}, /jobs/],
    ];
    for (const [body, message] of cases) {
      const answer = await postJson(`${base()}/download-selected`, body);
      expect(answer.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect((answer.body.error as { message: string }).message).toMatch(message);
    }
  });
});

describe('a batch may run longer than JOB_TIMEOUT_SECONDS; each of its module jobs may not', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    // One module at a time, each about 0.6 s (throttled): the batch takes about 2.4 s, past the 1 s timeout.
    system = await startSystem(jenkins.url, { BATCH_PARALLELISM: '1', JOB_TIMEOUT_SECONDS: '1', JOB_ATTEMPTS: '1' }, 300);
    await system.startWorker();
  });

  afterAll(async () => {
    jenkins?.setThrottle(undefined);
    await system?.stop();
    await jenkins?.close();
  });

  it('completes with every module, none of which ran past the timeout', async () => {
    const builds = [1, 2, 3, 4].map((number) =>
      jenkins.addBuild(['QA_Release_9.2', `LONG-${number}`], number, { artifacts: [{ relativePath: 'big.bin', size: 120_000 }] }),
    );
    jenkins.setThrottle(200_000);
    const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download-selected`, {
      jobs: builds.map((url, index) => ({ key: `LONG_${index + 1}`, release: '9.2', build_url: url })),
    });
    expect(answer.status).toBe(202);
    const id = answer.body.job_id as string;
    const started = Date.now();
    const done = await waitFor(async () => {
      const { body } = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, 'the batch to finish', 30_000);
    expect(Date.now() - started).toBeGreaterThan(1_500);
    expect(done.status).toBe('completed');
    expect((done.modules as ModuleView[]).map((module) => module.status)).toEqual(['completed', 'completed', 'completed', 'completed']);
  });
});
