import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashFile } from '../../worker/download-file.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const SIZE = 4_000_000;
const DROP_AFTER = 2_000_000;

describe('a job retried by BullMQ resumes the .part its previous attempt left', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'ci', token: 'resume-secret' });
    // No retry inside an attempt: the dropped connection fails attempt 1, and BullMQ runs attempt 2
    // (after the API's 5 s backoff).
    system = await startSystem(jenkins.url, {
      JENKINS_USER: 'ci',
      JENKINS_API_TOKEN: 'resume-secret',
      DOWNLOAD_RETRIES: '0',
      JOB_ATTEMPTS: '2',
    });
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  const messages = async (id: string) =>
    ((await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`)).body.lines as Array<{ message: string }>).map(
      (line) => line.message,
    );

  it('attempt 2 asks for Range: bytes=<size of the .part>- and completes the file with the right SHA-256', async () => {
    const url = jenkins.addBuild(['QA_Release_5.5', 'resume-run'], 12, { artifacts: [{ relativePath: 'big/image.bin', size: SIZE }] });
    jenkins.setFault('big/image.bin', { kind: 'drop-after', bytes: DROP_AFTER, times: 1 });
    const submitted = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url, release: 'resume', artifacts: ['**'] });
    expect(submitted.status).toBe(202);
    const id = submitted.body.job_id as string;

    // Between the attempts: the job waits for its retry, and the .part of attempt 1 is on disk.
    await waitFor(async () => (await messages(id)).some((line) => line.startsWith('Attempt 1 failed') && line.endsWith('(will retry)')), 'attempt 1 to fail');
    const parts = (await readdir(system.downloadDir, { recursive: true })).map(String).filter((name) => name.endsWith(`.${id}.part`));
    expect(parts).toEqual([path.join('resume', 'resume_run', '12', 'big', `image.bin.${id}.part`)]);
    const leftBehind = (await stat(path.join(system.downloadDir, parts[0] as string))).size;
    expect(leftBehind).toBeGreaterThan(0);
    expect(leftBehind).toBeLessThanOrEqual(DROP_AFTER);

    const done = await waitFor(async () => {
      const { body } = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `job ${id} to finish`, 30_000);
    expect(done.status).toBe('completed');
    expect(done.attempts).toBe(2);

    // Two GETs in all: attempt 1 from zero, attempt 2 from exactly what attempt 1 left.
    const ranges = jenkins.requests.filter((request) => request.path.includes('big/image.bin')).map((request) => request.range);
    expect(ranges).toEqual([undefined, `bytes=${leftBehind}-`]);

    const expected = { size: SIZE, sha256: jenkins.artifactSha256(url, 'big/image.bin') };
    const [file] = done.files as Array<{ path: string; size: number; sha256: string }>;
    expect(file).toMatchObject({ path: 'resume/resume_run/12/big/image.bin', ...expected });
    expect(await hashFile(path.join(system.downloadDir, file?.path as string))).toEqual(expected);
    expect((await readdir(system.downloadDir, { recursive: true })).map(String).filter((name) => name.includes('.part'))).toEqual([]);

    const log = await messages(id);
    expect(log.some((line) => line.startsWith('Attempt 2: downloading'))).toBe(true);
  });
});
