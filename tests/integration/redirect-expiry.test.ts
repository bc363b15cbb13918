import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';
import { createHash } from 'node:crypto';

describe('a resumed download behind an expiring redirect asks Jenkins again', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'ci', token: 'expiry-secret' });
    system = await startSystem(jenkins.url, {
      JENKINS_USER: 'ci',
      JENKINS_API_TOKEN: 'expiry-secret',
      STALL_SECONDS: '1',
      MIN_SPEED_BYTES: '100000',
    });
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  it('after a stall the retry gets a fresh storage link from Jenkins and resumes with Range there', async () => {
    const url = jenkins.addBuild(['QA_Release_5.5', 'object-storage'], 9, { artifacts: [{ relativePath: 'hapy/large.bin', size: 400_000 }] });
    // Links live 300 ms; the storage server answers 403 to an expired one.
    jenkins.setFault('hapy/large.bin', { kind: 'redirect', ttlMs: 300 });
    // 20 KB/s is below MIN_SPEED_BYTES: the first transfer is aborted as stalled after about 1 s.
    jenkins.setThrottle(20_000);
    try {
      const answer = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url });
      const id = answer.body.job_id as string;
      const lines = async () =>
        ((await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`)).body.lines as Array<{ message: string }>).map(
          (line) => line.message,
        );
      await waitFor(async () => (await lines()).some((line) => line.includes('transfer slower than')), 'the first stall', 20_000);
      jenkins.setThrottle(undefined);
      const done = await waitFor(async () => {
        const { body } = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
        return ['completed', 'failed'].includes(body.status as string) ? body : null;
      }, 'the job to finish', 30_000);
      expect(done.status).toBe('completed');
      const file = (done.files as Array<{ path: string; sha256: string }>)[0];
      const bytes = await readFile(path.join(system.downloadDir, file?.path ?? ''));
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(jenkins.artifactSha256(url, 'hapy/large.bin'));

      const asked = jenkins.requests.filter((request) => request.method === 'GET' && request.path.includes('hapy/large.bin'));
      const fetched = jenkins.storageRequests.filter((request) => request.method === 'GET');
      // Every storage request followed its own redirect from Jenkins: no link was reused.
      expect(asked.length).toBeGreaterThanOrEqual(2);
      expect(fetched.length).toBe(asked.length);
      expect(new Set(fetched.map((request) => new URL(request.path, jenkins.storageOrigin).searchParams.get('expires'))).size).toBe(fetched.length);
      // The retry resumed on the storage server; the credentials went only to Jenkins.
      expect(fetched.slice(1).some((request) => /^bytes=[1-9]\d*-$/.test(request.range ?? ''))).toBe(true);
      expect(fetched.every((request) => request.authorization === undefined)).toBe(true);
      expect(asked.every((request) => request.authorized)).toBe(true);
    } finally {
      jenkins.setFault('hapy/large.bin', undefined);
      jenkins.setThrottle(undefined);
    }
  });
});
