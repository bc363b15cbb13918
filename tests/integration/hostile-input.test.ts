import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)));
}

const finishedOn = (system: TestSystem) => (id: string) =>
  waitFor(async () => {
    const { body } = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
    return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
  }, `job ${id} to finish`, 20_000);

const logOf = async (system: TestSystem, id: string) =>
  ((await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`)).body.lines as Array<{ message: string }>).map(
    (line) => line.message,
  );

describe('hostile input from Jenkins: nothing is written outside DOWNLOAD_DIR', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    system = await startSystem(jenkins.url);
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  const cases: Array<[string, string, RegExp]> = [
    ['a parent-directory escape', '../../escape.xml', /"\.\." component/],
    ['an absolute path', '/tmp/ferry-absolute.xml', /absolute|empty/],
    ['a backslash', 'hapy\\..\\..\\escape.xml', /backslash/],
    ['a NUL byte', 'hapy/nul\0.xml', /NUL byte/],
    ['an empty segment', 'hapy//double.xml', /empty/],
  ];

  for (const [what, relativePath, reason] of cases) {
    it(`an artifact path with ${what} fails the job with a log line and writes nothing`, async () => {
      const jobName = `hostile-${what.replaceAll(/\W+/g, '-')}`;
      const url = jenkins.addBuild(['QA_Release_4.2', jobName], 1, {
        artifacts: [
          { relativePath: 'hapy/good.xml', content: '<ok/>' },
          { relativePath, content: 'evil' },
        ],
      });
      const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url, artifacts: ['**'] });
      expect(answer.status).toBe(202);
      const id = answer.body.job_id as string;
      const done = await finishedOn(system)(id);
      expect(done.status).toBe('failed');
      expect(String(done.error)).toMatch(reason);
      expect((await logOf(system, id)).some((line) => line.startsWith('Attempt 1 failed: Planning failed') && reason.test(line))).toBe(true);
      // Not even the good file: the plan is refused before anything is written.
      expect(await listFiles(system.downloadDir)).toEqual([]);
      // Nor anywhere the name would have led (the module folder is <release>/<module>/<build>).
      const moduleDir = path.join(system.downloadDir, '4.2', jobName.replaceAll('-', '_'), '1');
      for (const candidate of [path.resolve(moduleDir, relativePath), path.resolve(system.downloadDir, relativePath), path.resolve('/', relativePath)]) {
        expect(await stat(candidate).then(() => candidate, () => null)).toBeNull();
      }
      // Only the build JSON was asked for: no artifact was fetched.
      expect(jenkins.requests.some((request) => request.path.includes(`${encodeURIComponent(jobName)}/1/artifact/`))).toBe(false);
    });
  }

  it('a symbolic link inside DOWNLOAD_DIR that leads outside it fails the job; nothing is written through it', async () => {
    const outside = await mkdtemp(path.join(os.tmpdir(), 'ferry-outside-'));
    try {
      const jobName = 'hostile-symlink';
      const moduleDir = path.join(system.downloadDir, '4.2', 'hostile_symlink', '1');
      await mkdir(moduleDir, { recursive: true });
      // Planted before the job: the artifact folder 'reports' is a link to a folder elsewhere, and
      // the predictable partial-file name of a big artifact is a link to a file elsewhere.
      await symlink(outside, path.join(moduleDir, 'reports'));
      const url = jenkins.addBuild(['QA_Release_4.2', jobName], 1, { artifacts: [{ relativePath: 'reports/a.xml', content: '<written-outside/>' }] });
      const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url, artifacts: ['**'] });
      expect(answer.status).toBe(202);
      const done = await finishedOn(system)(answer.body.job_id as string);
      expect(done.status).toBe('failed');
      expect(String(done.error)).toMatch(/outside the download folder .* symbolic link/);
      expect(await readdir(outside)).toEqual([]);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('a symbolic link planted at a big artifact\'s partial-file name is not written through', async () => {
    const outside = await mkdtemp(path.join(os.tmpdir(), 'ferry-outside-'));
    try {
      const victim = path.join(outside, 'victim.txt');
      await writeFile(victim, 'precious');
      const url = jenkins.addBuild(['QA_Release_4.2', 'hostile-part'], 1, { artifacts: [{ relativePath: 'big.bin', size: 200_000 }] });
      const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url, artifacts: ['**'] });
      expect(answer.status).toBe(202);
      const jobId = answer.body.job_id as string;
      // The job id is in every answer, so the '.part' name is predictable: plant the link before the
      // worker gets there (it may already have; then the download simply completes).
      const moduleDir = path.join(system.downloadDir, '4.2', 'hostile_part', '1');
      await mkdir(moduleDir, { recursive: true });
      await symlink(victim, path.join(moduleDir, `big.bin.${jobId}.part`)).catch(() => undefined);
      await finishedOn(system)(jobId);
      expect(await readFile(victim, 'utf8')).toBe('precious');
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('a build_map.json listed at a path that climbs out of the build fails the job, and nothing outside the build is fetched', async () => {
    const url = jenkins.addBuild(['QA_Release_4.2', 'hostile-map'], 1, {
      artifacts: [{ relativePath: '../../../../other-app/secret/build_map.json', content: '{"ROUTING_MODULE": 1}' }],
    });
    const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url });
    expect(answer.status).toBe(202);
    const done = await finishedOn(system)(answer.body.job_id as string);
    expect(done.status).toBe('failed');
    expect(String(done.error)).toMatch(/build_map\.json .* unsafe path/);
    // Without the check, the URL climbed to /other-app/... on Jenkins's host, with its credentials.
    expect(jenkins.requests.some((request) => request.path.includes('other-app'))).toBe(false);
  });
});

describe('a build JSON that is not what the Jenkins API returns', () => {
  let server: Server;
  let system: TestSystem;
  const bodies = new Map<string, string>([
    ['html', '<html><body>Please sign in</body></html>'],
    ['number', JSON.stringify({ number: '../../etc', artifacts: [] })],
    ['artifacts', JSON.stringify({ number: 3, artifacts: 'everything' })],
    ['negative', JSON.stringify({ number: -1, artifacts: [] })],
  ]);

  beforeAll(async () => {
    // A stand-in Jenkins that answers every build JSON request with the body named by the job.
    server = createServer((req, res) => {
      const job = /\/job\/([^/]+)\/\d+\/api\/json/.exec(req.url ?? '')?.[1] ?? '';
      const body = bodies.get(job);
      res.writeHead(body ? 200 : 404, { 'content-type': job === 'html' ? 'text/html' : 'application/json' });
      res.end(body ?? '{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const { port } = server.address() as AddressInfo;
    system = await startSystem(`http://127.0.0.1:${port}/`, { DOWNLOAD_RETRIES: '0' });
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  for (const job of ['html', 'number', 'artifacts', 'negative']) {
    it(`fails the job with a clear message (${job})`, async () => {
      const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, {
        job_url: `${system.config.jenkins.url}job/${job}/3/`,
        release: 'odd',
      });
      expect(answer.status).toBe(202);
      const done = await finishedOn(system)(answer.body.job_id as string);
      expect(done.status).toBe('failed');
      expect(done.attempts).toBe(1);
      expect(String(done.error)).toMatch(/Unexpected build JSON|not valid JSON|JSON/);
      expect(await listFiles(system.downloadDir)).toEqual([]);
    });
  }
});
