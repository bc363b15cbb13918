import { hostname } from 'node:os';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { logLines, openSse } from '../helpers/sse-client.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('downloads end to end (one API, in-process worker, real Redis)', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let parentUrl: string;
  let policyUrl: string;
  let routingUrl: string;

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'ci', token: 'secret-token' });
    policyUrl = jenkins.addBuild(['QA_Release_6.4', 'BUSINESS-POLICY-ESXI'], 101, {
      artifacts: [
        { relativePath: 'hapy/reports/junit/a.xml', content: '<testsuite name="a"/>' },
        { relativePath: 'hapy/run.order.txt', content: 'a\nb\n' },
        { relativePath: 'hapy/big.bin', size: 300_000 },
        { relativePath: 'other/ignored.log', content: 'not included' },
      ],
    });
    routingUrl = jenkins.addBuild(['QA_Release_6.4', 'ROUTING-MODULE'], 55, {
      artifacts: [{ relativePath: 'hapy/reports/junit/r 1.xml', content: '<testsuite name="r"/>' }],
    });
    parentUrl = jenkins.addBuild(['QA_Release_6.4', 'main-regression'], 216, {
      artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify({ BUSINESS_POLICY_ESXI: 101, ROUTING_MODULE: 55 }) }],
    });
    system = await startSystem(jenkins.url, {
      JENKINS_USER: 'ci',
      JENKINS_API_TOKEN: 'secret-token',
      ARTIFACT_INCLUDE: 'hapy/**/*.order.txt,hapy/reports/junit/**/*.xml,hapy/*.bin',
    }, 300);
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  const submit = (body: unknown) => postJson(`${system.baseUrl}/api/v1/jenkins/download`, body);
  const status = async (id: string) => (await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`)).body;
  const finished = (id: string) =>
    waitFor(async () => {
      const body = await status(id);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `job ${id} to finish`);

  it('a pending job answers 409 to DELETE, then runs, fans out build_map.json and writes verified files', async () => {
    const { status: code, body } = await submit({ job_url: parentUrl });
    expect(code).toBe(202);
    const id = body.job_id as string;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    expect(body.logs_url).toBe(`/api/v1/jenkins/download/${id}`);
    expect(body.status_url).toBe(`/api/v1/jenkins/download/${id}/status`);

    const pending = await status(id);
    expect(pending).toMatchObject({ id, release: '6.4', job_url: parentUrl, status: 'pending', attempts: 0, files: null });
    expect(pending.started_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const conflict = await fetch(`${system.baseUrl}/api/v1/jenkins/download/${id}`, { method: 'DELETE' });
    expect(conflict.status).toBe(409);
    expect(((await conflict.json()) as { error: { code: string } }).error.code).toBe('CONFLICT');

    await system.startWorker();
    const done = await finished(id);
    expect(done.status).toBe('completed');
    expect(done.error).toBeNull();
    expect(done.attempts).toBe(1);
    expect(done.completed_at).toMatch(/Z$/);
    expect(done.progress).toEqual({ modules_done: 2, modules_total: 2, files_done: 4, files_total: 4, bytes_done: 300_000 + 21 + 4 + 21, bytes_total: 300_000 + 21 + 4 + 21 });

    const files = done.files as Array<{ path: string; size: number; sha256: string }>;
    expect(files.map((file) => file.path).sort()).toEqual([
      '6.4/business_policy/101/hapy/big.bin',
      '6.4/business_policy/101/hapy/reports/junit/a.xml',
      '6.4/business_policy/101/hapy/run.order.txt',
      '6.4/routing/55/hapy/reports/junit/r 1.xml',
    ]);
    for (const file of files) {
      const [, module, , ...rest] = file.path.split('/');
      const source = module === 'routing' ? routingUrl : policyUrl;
      const served = jenkins.artifactBytes(source, rest.join('/'));
      const onDisk = await readFile(path.join(system.downloadDir, file.path));
      expect(onDisk.equals(served)).toBe(true);
      expect(file.sha256).toBe(sha256(served));
      expect(file.size).toBe(served.length);
      // Without a shared DOWNLOAD_DIR, this says on which host the file is.
      expect((file as { host?: string }).host).toBe(hostname());
    }
    expect(existsSync(path.join(system.downloadDir, '6.4/business_policy/101/other'))).toBe(false);
    const manifest = JSON.parse(await readFile(path.join(system.downloadDir, '6.4/business_policy/101/.ferry-manifest.json'), 'utf8')) as {
      files: Array<{ path: string }>;
      build: number;
    };
    expect(manifest.build).toBe(101);
    expect(manifest.files).toHaveLength(3);
    const leftovers = (await readdir(system.downloadDir, { recursive: true })).filter((name) => String(name).endsWith('.part'));
    expect(leftovers).toEqual([]);
    // Credentials went to Jenkins with every request.
    expect(jenkins.requests.every((request) => request.authorized)).toBe(true);

    const log = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`);
    const messages = (log.body.lines as Array<{ message: string }>).map((line) => line.message);
    expect(messages).toContain('[1/2] business_policy: hapy/reports/junit/a.xml (21 B)');
    expect(messages).toContain('[2/2] routing: hapy/reports/junit/r 1.xml (21 B)');
    expect(log.body.done).toBe(true);
    expect(JSON.stringify(log.body)).not.toContain('secret-token');

    const removed = await fetch(`${system.baseUrl}/api/v1/jenkins/download/${id}`, { method: 'DELETE' });
    expect(removed.status).toBe(204);
    expect((await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`)).status).toBe(404);
    expect((await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs`)).status).toBe(404);
  });

  it('skip_existing skips a module whose manifest and files match, and re-downloads when off', async () => {
    const first = await submit({ job_url: routingUrl, release: 'skiptest' });
    expect((await finished(first.body.job_id as string)).status).toBe('completed');
    const requestsBefore = jenkins.requests.filter((request) => request.path.includes('/artifact/')).length;

    const second = await submit({ job_url: routingUrl, release: 'skiptest' });
    const secondId = second.body.job_id as string;
    const done = await finished(secondId);
    expect(done.status).toBe('completed');
    expect((done.files as unknown[]).length).toBe(1);
    expect(jenkins.requests.filter((request) => request.path.includes('/artifact/')).length).toBe(requestsBefore);
    const log = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${secondId}/logs`);
    expect((log.body.lines as Array<{ message: string }>).some((line) => line.message.includes('already downloaded and verified, skipped'))).toBe(true);

    const third = await submit({ job_url: routingUrl, release: 'skiptest', skip_existing: false });
    expect((await finished(third.body.job_id as string)).status).toBe('completed');
    expect(jenkins.requests.filter((request) => request.path.includes('/artifact/')).length).toBe(requestsBefore + 1);
  });

  it('an artifact answering 404 fails the job at once, naming the module, file, status and URL', async () => {
    const url = jenkins.addBuild(['QA_Release_6.4', 'broken-job'], 7, {
      artifacts: [{ relativePath: 'hapy/reports/junit/gone.xml', content: 'x' }],
    });
    jenkins.setArtifactStatus('gone.xml', 404);
    try {
      const { body } = await submit({ job_url: url });
      const done = await finished(body.job_id as string);
      expect(done.status).toBe('failed');
      expect(done.error).toContain('broken_job');
      expect(done.error).toContain('hapy/reports/junit/gone.xml');
      expect(done.error).toContain('HTTP 404');
      expect(done.error).toContain(`${url}artifact/hapy/reports/junit/gone.xml`);
      expect(done.error).not.toContain('secret-token');
      expect(done.attempts).toBe(1);
    } finally {
      jenkins.setArtifactStatus('gone.xml', undefined);
    }
  });

  it.each([
    ['a .. escape', 'hapy/../../../../escape.xml', /"\.\." component/],
    ['an absolute path', '/tmp/ferry-escape.xml', /absolute/],
  ])('an artifact path with %s fails the job and writes nothing', async (_name, evilPath, reason) => {
    const url = jenkins.addBuild(['QA_Release_6.4', 'evil-job'], evilPath.startsWith('/') ? 2 : 1, {
      artifacts: [
        { relativePath: 'hapy/reports/junit/fine.xml', content: 'fine' },
        { relativePath: evilPath, content: 'evil' },
      ],
    });
    const release = `evil${evilPath.length}`;
    const { body } = await submit({ job_url: url, release, artifacts: ['**'] });
    const done = await finished(body.job_id as string);
    expect(done.status).toBe('failed');
    expect(done.error).toMatch(reason);
    expect(existsSync(path.join(system.downloadDir, release))).toBe(false);
    expect(existsSync(path.join(system.downloadDir, '..', 'escape.xml'))).toBe(false);
    expect(existsSync('/tmp/ferry-escape.xml')).toBe(false);
  });

  it('SSE: two readers get every line and the same ending; a reconnect with Last-Event-ID gets exactly the rest', async () => {
    const url = jenkins.addBuild(['QA_Release_6.4', 'slow-job'], 3, {
      artifacts: Array.from({ length: 6 }, (_, index) => ({ relativePath: `hapy/reports/junit/t${index}.xml`, size: 20_000 })),
    });
    jenkins.setThrottle(60_000);
    try {
      const { body } = await submit({ job_url: url });
      const id = body.job_id as string;
      const streamUrl = `${system.baseUrl}/api/v1/jenkins/download/${id}`;
      const [a, b] = await Promise.all([openSse(streamUrl), openSse(streamUrl)]);
      expect(a.status).toBe(200);
      // A third reader leaves after a few lines and comes back with Last-Event-ID.
      const c = await openSse(streamUrl);
      await waitFor(() => logLines(c.events).length >= 3, 'three lines on reader c');
      c.close();
      const seen = logLines(c.events);
      const cursor = seen[seen.length - 1]?.id as string;
      await Promise.all([a.closed, b.closed]);
      const resumed = await openSse(streamUrl, { 'last-event-id': cursor });
      await resumed.closed;

      const all = logLines(a.events);
      expect(logLines(b.events)).toEqual(all);
      expect(all.length).toBeGreaterThan(8);
      expect(new Set(all.map((line) => line.id)).size).toBe(all.length);
      expect([...seen, ...logLines(resumed.events)]).toEqual(all);
      for (const reader of [a, b, resumed]) {
        const ending = reader.events.slice(-2);
        expect(JSON.parse(ending[0]?.data ?? '{}')).toEqual({ status: 'completed', error: null });
        expect(ending[0]?.id).toBeDefined();
        expect(ending[1]).toEqual({ event: 'complete', data: JSON.stringify({ status: 'completed' }) });
      }
      const progress = a.events.filter((event) => event.event === 'progress');
      expect(progress.length).toBeGreaterThan(1);
      expect(progress.every((event) => event.id === undefined)).toBe(true);
      expect(JSON.parse(progress[progress.length - 1]?.data ?? '{}')).toMatchObject({ files_done: 6, files_total: 6 });
      expect(a.comments).toContain('ping');

      // Connecting after the end replays everything and the same ending; reading deleted nothing.
      const late = await openSse(streamUrl);
      await late.closed;
      expect(logLines(late.events)).toEqual(all);
      expect((await status(id)).status).toBe('completed');
    } finally {
      jenkins.setThrottle(undefined);
    }
  });

  it('GET /logs pages with after/next and ends with done', async () => {
    const { body } = await submit({ job_url: routingUrl, release: 'paging', skip_existing: false });
    const id = body.job_id as string;
    await finished(id);
    const collected: string[] = [];
    let after: string | null = null;
    let done = false;
    for (let page = 0; page < 50 && !done; page += 1) {
      const response = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=2${after ? `&after=${after}` : ''}`);
      const lines = response.body.lines as Array<{ id: string; message: string }>;
      collected.push(...lines.map((line) => line.id));
      after = (response.body.next as string | null) ?? after;
      done = response.body.done as boolean;
    }
    expect(done).toBe(true);
    const everything = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`);
    expect(collected).toEqual((everything.body.lines as Array<{ id: string }>).map((line) => line.id));
    const bad = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?after=banana`);
    expect(bad.status).toBe(400);
  });

  it('GET /downloads lists newest first, filters by status and release, and pages with next', async () => {
    const ids: string[] = [];
    // One after another: an identical submit while the previous is pending would be deduplicated.
    for (let index = 0; index < 3; index += 1) {
      const id = (await submit({ job_url: routingUrl, release: 'listing' })).body.job_id as string;
      ids.push(id);
      await finished(id);
    }
    expect(new Set(ids).size).toBe(3);
    const page1 = await getJson(`${system.baseUrl}/api/v1/jenkins/downloads?release=listing&limit=2`);
    const jobs1 = page1.body.jobs as Array<{ id: string; release: string }>;
    expect(jobs1.map((job) => job.id)).toEqual([ids[2], ids[1]]);
    expect(page1.body.next).toBeTruthy();
    const page2 = await getJson(`${system.baseUrl}/api/v1/jenkins/downloads?release=listing&limit=2&cursor=${String(page1.body.next)}`);
    expect((page2.body.jobs as Array<{ id: string }>).map((job) => job.id)).toEqual([ids[0]]);
    expect(page2.body.next).toBeNull();
    const failedOnly = await getJson(`${system.baseUrl}/api/v1/jenkins/downloads?status=failed`);
    expect((failedOnly.body.jobs as Array<{ status: string }>).every((job) => job.status === 'failed')).toBe(true);
    expect((failedOnly.body.jobs as unknown[]).length).toBeGreaterThan(0);
    expect((await getJson(`${system.baseUrl}/api/v1/jenkins/downloads?status=bogus`)).status).toBe(400);
  });
});
