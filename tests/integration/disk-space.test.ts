import { readdir, statfs } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

describe('free disk space is checked against the announced length before anything is written', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    // MAX_ARTIFACT_BYTES out of the way, so only the free-space check can refuse the artifact.
    system = await startSystem(jenkins.url, { MAX_ARTIFACT_BYTES: String(Number.MAX_SAFE_INTEGER), DOWNLOAD_RETRIES: '0' });
    await system.startWorker();
  });

  afterAll(async () => {
    // Jenkins first: should the check ever be missing, the transfer in flight breaks off and the
    // worker can close instead of writing a disk's worth of bytes.
    await jenkins?.close();
    await system?.stop();
  });

  it('an artifact larger than the free space of DOWNLOAD_DIR fails the job with a clear message and writes no file', async () => {
    const disk = await statfs(system.downloadDir);
    const free = disk.bavail * disk.bsize;
    // Generated artifacts are produced as they are read: announcing this many bytes costs nothing.
    const size = 2 * free + 1024 ** 3;
    const url = jenkins.addBuild(['QA_Release_9.9', 'disk-run'], 3, { artifacts: [{ relativePath: 'dumps/core.bin', size }] });
    // A slow body as well, so a missing check would write kilobytes, not fill the disk.
    jenkins.setThrottle(64_000);
    try {
      const id = (await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: url, release: 'disk', artifacts: ['**'] })).body
        .job_id as string;
      const files = async () =>
        (await readdir(system.downloadDir, { recursive: true, withFileTypes: true })).filter((entry) => !entry.isDirectory()).map((entry) => entry.name);
      // Done waiting when the job ends, or as soon as it writes a file (which already fails the test).
      const done = await waitFor(async () => {
        const { body } = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
        if (['completed', 'failed', 'cancelled'].includes(body.status as string)) return body;
        return (await files()).length > 0 ? body : null;
      }, `job ${id} to finish`, 30_000);
      // Only the module folder was created: no .part, no .part.json, no manifest.
      expect(await files()).toEqual([]);
      expect(done.status).toBe('failed');
      expect(done.error).toContain(`not enough free disk space for ${url}artifact/dumps/core.bin: ${size} bytes needed`);
      expect(done.error).not.toContain('MAX_ARTIFACT_BYTES');
      expect(jenkins.requests.filter((request) => request.path.includes('dumps/core.bin'))).toHaveLength(1);
    } finally {
      jenkins.setThrottle(undefined);
    }
  });
});
