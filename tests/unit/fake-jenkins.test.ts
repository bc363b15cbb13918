import { createHash } from 'node:crypto';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { startFakeJenkins, DEFAULT_LAST_MODIFIED } from '../helpers/fake-jenkins.js';
import type { FakeJenkins } from '../helpers/fake-jenkins.js';

const AUTH = 'Basic ' + Buffer.from('alice:s3cret').toString('base64');
const JOB = ['QA_Release_6.4', 'main-regression'];
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

describe('fake Jenkins', () => {
  let jenkins: FakeJenkins;
  let build216: string;

  /** fetch with valid credentials; `path` is relative to the server root or absolute. */
  const get = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(new URL(path, jenkins.url), { ...init, headers: { authorization: AUTH, ...init.headers } });
  const bytes = async (res: Response): Promise<Buffer> => Buffer.from(await res.arrayBuffer());

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'alice', token: 's3cret' });
    jenkins.addBuild(JOB, 215, { artifacts: [{ relativePath: 'old.txt', content: 'old' }], result: 'FAILURE' });
    build216 = jenkins.addBuild(JOB, 216, {
      fingerprint: true,
      artifacts: [
        { relativePath: 'build_map.json', content: JSON.stringify({ BUSINESS_POLICY_ESXI: 101 }) },
        { relativePath: 'hapy/reports/junit/a b#1.xml', content: '<testsuite/>' },
        { relativePath: 'logs/big.bin', size: 200_000 },
      ],
    });
  });
  afterAll(async () => {
    await jenkins.close();
  });

  it('returns the build URL with a trailing slash', () => {
    expect(jenkins.url).toBe(`${jenkins.origin}/`);
    expect(build216).toBe(`${jenkins.origin}/job/QA_Release_6.4/job/main-regression/216/`);
  });

  it('requires HTTP Basic auth and records requests', async () => {
    const anonymous = await fetch(`${build216}api/json`);
    expect(anonymous.status).toBe(401);
    await anonymous.text();
    const wrong = await fetch(`${build216}api/json`, {
      headers: { authorization: 'Basic ' + Buffer.from('alice:nope').toString('base64') },
    });
    expect(wrong.status).toBe(401);
    await wrong.text();
    const ok = await get(`${build216}api/json`);
    expect(ok.status).toBe(200);
    await ok.text();

    const recorded = jenkins.requests.slice(-3);
    expect(recorded.map((r) => r.authorized)).toEqual([false, false, true]);
    expect(recorded[2]).toMatchObject({ method: 'GET', path: '/job/QA_Release_6.4/job/main-regression/216/api/json' });
  });

  it('serves the build JSON like Jenkins', async () => {
    const res = await get(`${build216}api/json?tree=number,result,displayName,url,artifacts[fileName,relativePath]`);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toEqual({
      _class: 'hudson.model.FreeStyleBuild',
      number: 216,
      result: 'SUCCESS',
      displayName: '#216',
      url: build216,
      artifacts: [
        { fileName: 'build_map.json', relativePath: 'build_map.json', displayPath: 'build_map.json' },
        { fileName: 'a b#1.xml', relativePath: 'hapy/reports/junit/a b#1.xml', displayPath: 'a b#1.xml' },
        { fileName: 'big.bin', relativePath: 'logs/big.bin', displayPath: 'big.bin' },
      ],
    });
  });

  it('resolves permalinks to the highest build number', async () => {
    for (const link of ['lastBuild', 'lastSuccessfulBuild', 'lastCompletedBuild', 'lastStableBuild']) {
      const res = await get(`job/QA_Release_6.4/job/main-regression/${link}/api/json`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ number: 216, url: build216 });
    }
    const older = await get('job/QA_Release_6.4/job/main-regression/215/api/json');
    expect(await older.json()).toMatchObject({ number: 215, result: 'FAILURE' });
  });

  it('serves an artifact with exact content and Jenkins headers', async () => {
    const res = await get(`${build216}artifact/hapy/reports/junit/a%20b%231.xml`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('content-length')).toBe('12');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('last-modified')).toBe(DEFAULT_LAST_MODIFIED.toUTCString());
    expect((await bytes(res)).toString()).toBe('<testsuite/>');

    const map = await get(`${build216}artifact/build_map.json`);
    expect(await map.json()).toEqual({ BUSINESS_POLICY_ESXI: 101 });
  });

  it('serves generated artifacts matching artifactBytes and artifactSha256', async () => {
    const res = await get(`${build216}artifact/logs/big.bin`);
    const body = await bytes(res);
    expect(body.length).toBe(200_000);
    expect(body.equals(jenkins.artifactBytes(build216, 'logs/big.bin'))).toBe(true);
    expect(sha256(body)).toBe(jenkins.artifactSha256(build216, 'logs/big.bin'));
    // Deterministic per build and path, and not trivially repetitive.
    expect(body.subarray(0, 32).equals(body.subarray(65_536, 65_536 + 32))).toBe(false);
    expect(jenkins.artifactSha256(build216, 'logs/big.bin')).not.toBe(jenkins.artifactSha256(build216, 'build_map.json'));
  });

  it('answers Range requests with 206, 200 or 416', async () => {
    const whole = jenkins.artifactBytes(build216, 'logs/big.bin');

    const open = await get(`${build216}artifact/logs/big.bin`, { headers: { range: 'bytes=70000-' } });
    expect(open.status).toBe(206);
    expect(open.headers.get('content-range')).toBe('bytes 70000-199999/200000');
    expect(open.headers.get('content-length')).toBe('130000');
    expect((await bytes(open)).equals(whole.subarray(70_000))).toBe(true);

    const closed = await get(`${build216}artifact/logs/big.bin`, { headers: { range: 'bytes=65530-65545' } });
    expect(closed.status).toBe(206);
    expect(closed.headers.get('content-range')).toBe('bytes 65530-65545/200000');
    expect((await bytes(closed)).equals(whole.subarray(65_530, 65_546))).toBe(true);

    const garbage = await get(`${build216}artifact/logs/big.bin`, { headers: { range: 'bytes=abc' } });
    expect(garbage.status).toBe(200);
    expect((await bytes(garbage)).length).toBe(200_000);

    const beyond = await get(`${build216}artifact/logs/big.bin`, { headers: { range: 'bytes=200000-' } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get('content-range')).toBe('bytes */200000');
    await beyond.text();

    expect(jenkins.requests.at(-1)?.range).toBe('bytes=200000-');
  });

  it('serves the tail of a 4 GiB artifact without generating the rest', async () => {
    const size = 4 * 1024 ** 3;
    const build = jenkins.addBuild(['huge'], 1, { artifacts: [{ relativePath: 'logs/huge.bin', size }] });
    const head = await get(`${build}artifact/logs/huge.bin`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(size));

    const tail = await get(`${build}artifact/logs/huge.bin`, { headers: { range: `bytes=${size - 100}-` } });
    expect(tail.status).toBe(206);
    expect(tail.headers.get('content-range')).toBe(`bytes ${size - 100}-${size - 1}/${size}`);
    expect((await bytes(tail)).length).toBe(100);
  });

  it('lists fingerprint MD5s when asked for them', async () => {
    const res = await get(`${build216}api/json?tree=fingerprint[fileName,hash]`);
    const json = (await res.json()) as { fingerprint: { fileName: string; hash: string }[] };
    const big = json.fingerprint.find((f) => f.fileName === 'big.bin');
    expect(big?.hash).toBe(md5(jenkins.artifactBytes(build216, 'logs/big.bin')));
    expect(json.fingerprint.find((f) => f.fileName === 'build_map.json')?.hash).toBe(
      md5(Buffer.from(JSON.stringify({ BUSINESS_POLICY_ESXI: 101 }))),
    );

    const without = await get('job/QA_Release_6.4/job/main-regression/215/api/json?tree=fingerprint[fileName,hash]');
    expect(await without.json()).toMatchObject({ fingerprint: [] });
  });

  it('answers 404 for unknown jobs, builds and artifacts', async () => {
    for (const path of [
      'job/nope/1/api/json',
      'job/QA_Release_6.4/job/main-regression/999/api/json',
      'job/QA_Release_6.4/216/api/json',
      `${build216}artifact/missing.txt`,
      `${build216}whatever`,
    ]) {
      const res = await get(path);
      expect(res.status, path).toBe(404);
      await res.text();
    }
  });

  it('forces artifact statuses with setArtifactStatus', async () => {
    jenkins.setArtifactStatus('junit/a b', 500);
    const failing = await get(`${build216}artifact/hapy/reports/junit/a%20b%231.xml`);
    expect(failing.status).toBe(500);
    await failing.text();
    const other = await get(`${build216}artifact/build_map.json`);
    expect(other.status).toBe(200);
    await other.text();

    jenkins.setArtifactStatus('junit/a b', undefined);
    const healed = await get(`${build216}artifact/hapy/reports/junit/a%20b%231.xml`);
    expect(healed.status).toBe(200);
    await healed.text();
  });
});

describe('fake Jenkins throttling and close()', () => {
  it('throttles artifact bodies, and lifting the throttle applies to responses in flight', async () => {
    const jenkins = await startFakeJenkins();
    const build = jenkins.addBuild(['slow'], 1, { artifacts: [{ relativePath: 'slow.bin', size: 1_000_000 }] });
    jenkins.setThrottle(20_000);
    const reader = (await fetch(`${build}artifact/slow.bin`)).body!.getReader();
    let received = 0;
    const started = Date.now();
    while (Date.now() - started < 300) received += (await reader.read()).value?.length ?? 0;
    expect(received).toBeLessThan(20_000);

    jenkins.setThrottle(undefined);
    for (let r = await reader.read(); !r.done; r = await reader.read()) received += r.value.length;
    expect(received).toBe(1_000_000);
    await jenkins.close();
  });


  it('finishes while a throttled response is in flight', async () => {
    const jenkins = await startFakeJenkins();
    const build = jenkins.addBuild(['slow'], 1, { artifacts: [{ relativePath: 'slow.bin', size: 1_000_000 }] });
    jenkins.setThrottle(2_000);

    const res = await fetch(`${build}artifact/slow.bin`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    const rest = (async () => {
      for (;;) if ((await reader.read()).done) return 'ended';
    })().catch(() => 'aborted');

    const started = Date.now();
    await jenkins.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(await rest).toBe('aborted');
    expect(jenkins.requests).toEqual([{ method: 'GET', path: '/job/slow/1/artifact/slow.bin', authorized: true }]);
  });
});
