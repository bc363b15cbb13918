import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex');

describe('downloads that survive a real Jenkins (faults switched on in the fake Jenkins)', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let builds = 0;

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'ci', token: 'fault-secret' });
    system = await startSystem(jenkins.url, {
      JENKINS_USER: 'ci',
      JENKINS_API_TOKEN: 'fault-secret',
      WORKER_CONCURRENCY: '4',
      STALL_SECONDS: '2',
      MIN_SPEED_BYTES: '2000',
      MAX_ARTIFACT_BYTES: '5000000',
      JENKINS_MAX_CONNECTIONS: '2',
    });
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  /** A fresh single-module build with the given artifacts. */
  const build = (artifacts: Parameters<FakeJenkins['addBuild']>[2]['artifacts'], fingerprint = false) => {
    builds += 1;
    return jenkins.addBuild(['QA_Release_3.1', `fault-job-${builds}`], 1, { artifacts, fingerprint });
  };
  const submit = async (body: Record<string, unknown>) => (await postJson(`${system.baseUrl}/api/v1/jenkins/download`, body)).body.job_id as string;
  const finished = (id: string, timeoutMs = 30_000) =>
    waitFor(async () => {
      const { body } = await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `job ${id} to finish`, timeoutMs);
  const messages = async (id: string) =>
    ((await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`)).body.lines as Array<{ message: string }>).map((line) => line.message);
  const expectFilesMatch = async (done: Record<string, unknown>, buildUrl: string) => {
    for (const file of done.files as Array<{ path: string }>) {
      const relative = file.path.split('/').slice(3).join('/');
      expect((await readFile(path.join(system.downloadDir, file.path))).equals(jenkins.artifactBytes(buildUrl, relative))).toBe(true);
    }
  };

  it('one writer per folder: a second job for the same module waits for the first, then writes it again', async () => {
    // One file: the first job holds one of the two Jenkins connections, the second plans with the other.
    const url = build([{ relativePath: 'r/a.xml', size: 120_000 }]);
    jenkins.setThrottle(40_000);
    try {
      const first = await submit({ job_url: url, skip_existing: false });
      await waitFor(async () => (await messages(first)).some((line) => line.includes('r/a.xml')), 'the first job to start writing');
      // Other globs, so the submission is not deduplicated into the first job, but the same folder.
      const second = await submit({ job_url: url, skip_existing: false, artifacts: ['r/*.xml'] });
      expect(second).not.toBe(first);
      const [a, b] = await Promise.all([finished(first), finished(second)]);
      expect(a.status).toBe('completed');
      expect(b.status).toBe('completed');
      expect(await messages(second)).toContain(`[1/1] fault_job_${builds}: waiting for job ${first}, which is writing 3.1/fault_job_${builds}/1`);
      await expectFilesMatch(b, url);
    } finally {
      jenkins.setThrottle(undefined);
    }
  });

  it('a small file (under RESUME_MIN_BYTES) dropped mid-body or cut short starts again from zero and leaves no partial file', async () => {
    const url = build([
      { relativePath: 'r/dropped.xml', size: 30_000 },
      { relativePath: 'r/short.xml', size: 20_000 },
    ]);
    jenkins.setFault('r/dropped.xml', { kind: 'drop-after', bytes: 10_000, times: 1 });
    jenkins.setFault('r/short.xml', { kind: 'short-body', times: 1 });
    const id = await submit({ job_url: url, release: 'small-drop', artifacts: ['**'] });
    const done = await finished(id);
    expect(done.status).toBe('completed');
    await expectFilesMatch(done, url);
    for (const name of ['r/dropped.xml', 'r/short.xml']) {
      const ranges = jenkins.requests.filter((request) => request.path.includes(name)).map((request) => request.range);
      expect(ranges, name).toEqual([undefined, undefined]);
    }
    const log = await messages(id);
    expect(log.some((line) => line.includes('r/dropped.xml') && line.includes('interrupted') && line.includes('retry 1/5'))).toBe(true);
    expect(log.some((line) => line.includes('r/short.xml') && line.includes('retry 1/5'))).toBe(true);
    const left = (await readdir(system.downloadDir, { recursive: true })).map(String).filter((name) => name.includes('.part'));
    expect(left).toEqual([]);
  });

  it('a connection dropped mid-body resumes from the .part with a Range request', async () => {
    const url = build([{ relativePath: 'big/drop.bin', size: 400_000 }]);
    jenkins.setFault('big/drop.bin', { kind: 'drop-after', bytes: 150_000, times: 1 });
    const id = await submit({ job_url: url, release: 'drop', artifacts: ['**'] });
    const done = await finished(id);
    expect(done.status).toBe('completed');
    await expectFilesMatch(done, url);
    // The server sent 150,000 bytes before the reset; what reached the file is what gets resumed.
    const ranges = jenkins.requests.filter((request) => request.path.includes('big/drop.bin')).map((request) => request.range);
    expect(ranges).toHaveLength(2);
    expect(ranges[0]).toBeUndefined();
    const offset = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? '')?.[1]);
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(150_000);
    const log = await messages(id);
    expect(log.some((line) => line.includes(`interrupted at byte ${offset}`) && line.includes('retry 1/5'))).toBe(true);
    expect(log.some((line) => line.startsWith(`[1/1] fault_job_${builds}: big/drop.bin: resuming at`))).toBe(true);
  });

  it('only files of RESUME_MIN_BYTES or more keep a resume record (.part.json) beside their .part; smaller ones are written whole', async () => {
    const url = build([
      { relativePath: 'r/small.bin', size: 60_000 },
      { relativePath: 'r/large.bin', size: 100_000 },
    ]);
    jenkins.setThrottle(20_000);
    try {
      const id = await submit({ job_url: url, release: 'record', artifacts: ['**'] });
      const names = async () => (await readdir(system.downloadDir, { recursive: true })).map(String);
      // Both transfers under way (two Jenkins connections), the throttle keeps them there for seconds.
      const during = await waitFor(async () => {
        const all = await names();
        const smallAsked = jenkins.requests.some((request) => request.path.includes('r/small.bin'));
        return smallAsked && all.some((name) => name.includes('large.bin.') && name.endsWith('.part')) ? all : null;
      }, 'the large .part file, and the small file asked for');
      await new Promise((resolve) => setTimeout(resolve, 500));
      const later = await names();
      expect(during.some((name) => name.includes('large.bin.') && name.endsWith('.part.json'))).toBe(true);
      // The small body is held in memory until it is complete, then written, fsynced and renamed at once.
      expect([...during, ...later].filter((name) => name.includes('small.bin.'))).toEqual([]);
      jenkins.setThrottle(undefined);
      const done = await finished(id);
      expect(done.status).toBe('completed');
      await expectFilesMatch(done, url);
      expect((await names()).filter((name) => name.includes('.part'))).toEqual([]);
    } finally {
      jenkins.setThrottle(undefined);
    }
  });

  it('503 with Retry-After is retried after the time the server asked for', async () => {
    const url = build([{ relativePath: 'r/busy.xml', content: '<busy/>' }]);
    jenkins.setFault('r/busy.xml', { kind: 'status', status: 503, retryAfter: '1', times: 2 });
    const started = Date.now();
    const done = await finished(await submit({ job_url: url, release: 'busy', artifacts: ['**'] }));
    expect(done.status).toBe('completed');
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
    expect(jenkins.requests.filter((request) => request.path.includes('r/busy.xml'))).toHaveLength(3);
  });

  it('the build JSON answering 503 is retried too', async () => {
    const url = build([{ relativePath: 'r/j.xml', content: '<j/>' }]);
    jenkins.setFault(`fault-job-${builds}/1/api/json`, { kind: 'status', status: 503, times: 2 });
    const done = await finished(await submit({ job_url: url, release: 'json503', artifacts: ['**'] }));
    expect(done.status).toBe('completed');
  });

  it('retries run out: a persistent 500 fails the job naming the status and URL, without credentials', async () => {
    const url = build([{ relativePath: 'r/broken.xml', content: 'x' }]);
    jenkins.setFault('r/broken.xml', { kind: 'status', status: 500 });
    try {
      const done = await finished(await submit({ job_url: url, release: 'broken', artifacts: ['**'] }));
      expect(done.status).toBe('failed');
      expect(done.error).toContain(`HTTP 500 for ${url}artifact/r/broken.xml`);
      expect(done.error).not.toContain('fault-secret');
      expect(jenkins.requests.filter((request) => request.path.includes('r/broken.xml'))).toHaveLength(6);
    } finally {
      jenkins.setFault('r/broken.xml', undefined);
    }
  });

  for (const status of [401, 403, 404]) {
    it(`HTTP ${status} fails the job at once, naming the status and the URL, without retrying`, async () => {
      const url = build([{ relativePath: `r/denied-${status}.xml`, content: 'x' }]);
      jenkins.setFault(`r/denied-${status}.xml`, { kind: 'status', status });
      try {
        const done = await finished(await submit({ job_url: url, release: `denied${status}`, artifacts: ['**'] }));
        expect(done.status).toBe('failed');
        expect(done.attempts).toBe(1);
        expect(done.error).toContain(`HTTP ${status} for ${url}artifact/r/denied-${status}.xml`);
        expect(done.error).not.toContain('fault-secret');
        expect(jenkins.requests.filter((request) => request.path.includes(`r/denied-${status}.xml`))).toHaveLength(1);
      } finally {
        jenkins.setFault(`r/denied-${status}.xml`, undefined);
      }
    });
  }

  for (const status of [408, 429, 502]) {
    it(`HTTP ${status} is retried and the job completes`, async () => {
      const url = build([{ relativePath: `r/again-${status}.xml`, content: `<again ${status}/>` }]);
      jenkins.setFault(`r/again-${status}.xml`, { kind: 'status', status, times: 2 });
      const done = await finished(await submit({ job_url: url, release: `again${status}`, artifacts: ['**'] }));
      expect(done.status).toBe('completed');
      expect(jenkins.requests.filter((request) => request.path.includes(`r/again-${status}.xml`))).toHaveLength(3);
    });
  }

  it('a 206 whose Content-Range does not continue the .part restarts the file instead of splicing', async () => {
    const url = build([{ relativePath: 'big/range.bin', size: 300_000 }]);
    // Two match strings, so both faults stay set: the first request is dropped, the resume gets a bad 206.
    jenkins.setFault('big/range.bin', { kind: 'drop-after', bytes: 200_000, times: 1 });
    jenkins.setFault('range.bin', { kind: 'wrong-content-range', times: 1 });
    const id = await submit({ job_url: url, release: 'range', artifacts: ['**'] });
    const done = await finished(id);
    expect(done.status).toBe('completed');
    await expectFilesMatch(done, url);
    expect((await messages(id)).some((line) => line.includes('resume refused'))).toBe(true);
  });

  it('an artifact changed between tries (new Last-Modified) restarts from zero', async () => {
    const url = build([{ relativePath: 'big/changed.bin', size: 300_000 }]);
    const changed = Buffer.alloc(300_000, 7); // same length: only Last-Modified tells the versions apart
    const requestsFor = () => jenkins.requests.filter((request) => request.path.includes('big/changed.bin'));
    // The order is fixed by the fake, not by timing: the first response is dropped after 200,000 bytes
    // (throttled, so its first pieces reach the .part), then every try answers 503 until the artifact changed.
    jenkins.setThrottle(1_000_000);
    jenkins.setFault('big/changed.bin', { kind: 'drop-after', bytes: 200_000, times: 1 });
    jenkins.setFault('changed.bin', { kind: 'status', status: 503, retryAfter: '1' });
    try {
      const id = await submit({ job_url: url, release: 'changed', artifacts: ['**'] });
      await waitFor(() => requestsFor().length >= 2, 'the first resume request (answered 503)');
      jenkins.setThrottle(undefined);
      jenkins.setArtifactContent(url, 'big/changed.bin', changed, new Date('2026-01-01T00:00:00Z'));
      jenkins.setFault('changed.bin', undefined);
      const done = await finished(id);
      expect(done.status).toBe('completed');
      const file = (done.files as Array<{ path: string }>)[0]?.path as string;
      expect((await readFile(path.join(system.downloadDir, file))).equals(changed)).toBe(true);
      // The resume asked for the rest of the old .part; the 206 carried the new Last-Modified, so it
      // was refused and the file fetched again from zero instead of splicing two versions.
      const ranges = requestsFor().map((request) => request.range);
      expect(ranges[0]).toBeUndefined();
      const offset = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? '')?.[1]);
      expect(offset).toBeGreaterThan(0);
      expect(ranges.slice(1, -1).every((range) => range === `bytes=${offset}-`)).toBe(true);
      expect(ranges[ranges.length - 1]).toBeUndefined();
      expect((await messages(id)).some((line) => line.includes('resume refused'))).toBe(true);
    } finally {
      jenkins.setThrottle(undefined);
      jenkins.setFault('big/changed.bin', undefined);
      jenkins.setFault('changed.bin', undefined);
    }
  });

  it('a slow trickle is aborted as stalled and retried', async () => {
    const url = build([{ relativePath: 'big/slow.bin', size: 60_000 }]);
    jenkins.setFault('big/slow.bin', { kind: 'trickle', bytesPerSecond: 500, times: 1 });
    const id = await submit({ job_url: url, release: 'slow', artifacts: ['**'] });
    const done = await finished(id);
    expect(done.status).toBe('completed');
    await expectFilesMatch(done, url);
    expect((await messages(id)).some((line) => line.includes('transfer slower than 2000 B/s for 2 s'))).toBe(true);
  });

  it('redirects to another origin are followed without the Jenkins credentials', async () => {
    const url = build([{ relativePath: 'r/s3.xml', size: 5_000 }]);
    jenkins.setFault('r/s3.xml', { kind: 'redirect' });
    try {
      const done = await finished(await submit({ job_url: url, release: 's3', artifacts: ['**'] }));
      expect(done.status).toBe('completed');
      await expectFilesMatch(done, url);
      const storage = jenkins.storageRequests.filter((request) => request.path.includes('r/s3.xml'));
      expect(storage.length).toBeGreaterThan(0);
      expect(storage.every((request) => request.authorization === undefined)).toBe(true);
      expect(jenkins.requests.filter((request) => request.path.includes('r/s3.xml')).every((request) => request.authorized)).toBe(true);
    } finally {
      jenkins.setFault('r/s3.xml', undefined);
    }
  });

  it('more than 5 redirects fail the job', async () => {
    const url = build([{ relativePath: 'r/loop.xml', content: 'x' }]);
    jenkins.setFault('r/loop.xml', { kind: 'redirect', hops: 7 });
    const done = await finished(await submit({ job_url: url, release: 'loop', artifacts: ['**'] }));
    expect(done.status).toBe('failed');
    expect(done.error).toContain('More than 5 redirects');
  });

  it('an MD5 mismatch is downloaded once more, then fails the job naming the file and both hashes', async () => {
    const url = build([{ relativePath: 'x/bad.xml', content: '<bad/>' }], true);
    jenkins.setFingerprintOverride(url, 'x/bad.xml', '0'.repeat(32));
    const done = await finished(await submit({ job_url: url, release: 'md5bad', artifacts: ['**'] }));
    expect(done.status).toBe('failed');
    expect(done.error).toContain(`MD5 mismatch for ${url}artifact/x/bad.xml: expected ${'0'.repeat(32)}, got ${md5(Buffer.from('<bad/>'))}`);
    expect(jenkins.requests.filter((request) => request.path.includes('x/bad.xml') && request.method === 'GET')).toHaveLength(2);
    const leftovers = (await readdir(system.downloadDir, { recursive: true })).filter((name) => String(name).includes('bad.xml'));
    expect(leftovers).toEqual([]);
  });

  it('a malformed build_map.json fails the job with a clear message', async () => {
    builds += 1;
    const url = jenkins.addBuild(['QA_Release_3.1', `fault-job-${builds}`], 1, {
      artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify({ GOOD: 1, BAD: -2 }) }],
    });
    const done = await finished(await submit({ job_url: url }));
    expect(done.status).toBe('failed');
    expect(done.error).toContain('build_map.json');
    expect(done.error).toContain('not a map of job keys to build numbers');
  });

  it('a build_map.json key that would leave the folder fails the job and writes nothing', async () => {
    builds += 1;
    const url = jenkins.addBuild(['QA_Release_3.1', `fault-job-${builds}`], 1, {
      artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify({ '..': 3 }) }],
    });
    jenkins.addBuild(['QA_Release_3.1', '..'], 3, { artifacts: [{ relativePath: 'a.xml', content: 'x' }] });
    const done = await finished(await submit({ job_url: url, release: 'mapevil' }));
    expect(done.status).toBe('failed');
    expect((await readdir(system.downloadDir)).includes('mapevil')).toBe(false);
  });

  it('at most JENKINS_MAX_CONNECTIONS artifact requests are in flight per worker process', async () => {
    const url = build(Array.from({ length: 6 }, (_, index) => ({ relativePath: `p/${index}.bin`, size: 30_000 })));
    jenkins.setThrottle(60_000);
    jenkins.resetStats();
    try {
      const done = await finished(await submit({ job_url: url, release: 'polite', artifacts: ['**'] }));
      expect(done.status).toBe('completed');
      expect(jenkins.peakConcurrentArtifactRequests).toBe(2);
    } finally {
      jenkins.setThrottle(undefined);
    }
  });

  it('refuses an artifact larger than MAX_ARTIFACT_BYTES before writing it', async () => {
    const url = build([{ relativePath: 'huge.bin', size: 6_000_000 }]);
    const done = await finished(await submit({ job_url: url, release: 'huge', artifacts: ['**'] }));
    expect(done.status).toBe('failed');
    expect(done.error).toContain('MAX_ARTIFACT_BYTES');
    const written = await readdir(system.downloadDir, { recursive: true });
    expect(written.filter((name) => String(name).startsWith('huge'))).toEqual(['huge', path.join('huge', `fault_job_${builds}`), path.join('huge', `fault_job_${builds}`, '1')]);
  });

  it('stops an artifact sent without Content-Length once it passes MAX_ARTIFACT_BYTES, and keeps no partial file', async () => {
    const url = build([{ relativePath: 'unannounced.bin', size: 6_000_000 }]);
    jenkins.setFault('unannounced.bin', { kind: 'chunked' });
    try {
      const done = await finished(await submit({ job_url: url, release: 'unannounced', artifacts: ['**'] }));
      expect(done.status).toBe('failed');
      expect(done.error).toMatch(/without announcing its size; stopped at \d+ bytes/);
      // The response really was unframed (no Content-Length) and was cut short: not 6 MB on disk.
      const written = (await readdir(system.downloadDir, { recursive: true })).map(String).filter((name) => name.startsWith('unannounced'));
      expect(written.filter((name) => name.endsWith('.bin') || name.includes('.part'))).toEqual([]);
    } finally {
      jenkins.setFault('unannounced.bin', undefined);
    }
  });

  it('a fingerprinted build has its MD5 checked; a matching file completes', async () => {
    const url = build([{ relativePath: 'x/f.xml', content: '<f/>' }], true);
    const done = await finished(await submit({ job_url: url, release: 'md5ok', artifacts: ['**'] }));
    expect(done.status).toBe('completed');
    expect(md5(jenkins.artifactBytes(url, 'x/f.xml'))).toHaveLength(32);
  });
});
