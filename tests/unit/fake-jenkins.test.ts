import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
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

  it('answers a tree naming build fields and fingerprints with both, as Jenkins does', async () => {
    const res = await get(`${build216}api/json?tree=number,result,displayName,artifacts[fileName,relativePath],fingerprint[fileName,hash]`);
    const json = (await res.json()) as { number: number; artifacts: { relativePath: string }[]; fingerprint: { fileName: string; hash: string }[] };
    expect(json.number).toBe(216);
    expect(json.artifacts.map((a) => a.relativePath)).toContain('logs/big.bin');
    expect(json.fingerprint.find((f) => f.fileName === 'big.bin')?.hash).toBe(md5(jenkins.artifactBytes(build216, 'logs/big.bin')));
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

/** What a node:http client saw: the body bytes received, and the error if the response broke off. */
interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  error?: Error;
}

/** GET with node:http, resolving (not rejecting) when the connection breaks mid-body. */
function rawGet(url: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      const done = (error?: Error): void => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ...(error && { error }) });
      };
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => done());
      res.on('error', done);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('fake Jenkins faults', () => {
  let jenkins: FakeJenkins;
  let build: string;
  let whole: Buffer;

  const get = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(new URL(path, jenkins.url), { ...init, headers: { authorization: AUTH, ...init.headers } });
  const bytes = async (res: Response): Promise<Buffer> => Buffer.from(await res.arrayBuffer());
  const big = (): string => `${build}artifact/logs/big.bin`;

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'alice', token: 's3cret' });
    build = jenkins.addBuild(JOB, 216, {
      fingerprint: true,
      artifacts: [
        { relativePath: 'logs/big.bin', size: 200_000 },
        { relativePath: 'small.txt', content: 'hello' },
        ...[1, 2, 3].map((n) => ({ relativePath: `par/${n}.txt`, content: 'x'.repeat(300) })),
      ],
    });
    whole = jenkins.artifactBytes(build, 'logs/big.bin');
  });
  afterEach(() => {
    for (const match of ['big.bin', 'small.txt', 'par/', 'api/json', 'nothing']) jenkins.setFault(match, undefined);
  });
  afterAll(async () => {
    await jenkins.close();
  });

  it('drop-after sends the full Content-Length, some bytes, then destroys the socket', async () => {
    jenkins.setFault('big.bin', { kind: 'drop-after', bytes: 70_000, times: 2 });

    const raw = await rawGet(big(), { authorization: AUTH });
    expect(raw.status).toBe(200);
    expect(raw.headers['content-length']).toBe('200000');
    expect(raw.body.length).toBe(70_000);
    expect(raw.body.equals(whole.subarray(0, 70_000))).toBe(true);
    expect(raw.error).toBeInstanceOf(Error);

    // With a Range, `bytes` counts from the start of the range; fetch rejects reading the body.
    const res = await get(big(), { headers: { range: 'bytes=100000-' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-length')).toBe('100000');
    const reader = res.body!.getReader();
    let received = 0;
    await expect(
      (async () => {
        for (let r = await reader.read(); !r.done; r = await reader.read()) received += r.value.length;
      })(),
    ).rejects.toThrow();
    expect(received).toBe(70_000);

    // `times` used up: served normally again.
    const healed = await rawGet(big(), { authorization: AUTH });
    expect(healed.error).toBeUndefined();
    expect(healed.body.equals(whole)).toBe(true);
  });

  it('status answers the given status with Retry-After, `times` times', async () => {
    jenkins.setFault('big.bin', { kind: 'status', status: 503, retryAfter: '2', times: 2 });
    for (let i = 0; i < 2; i++) {
      const res = await get(big());
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('2');
      await res.text();
    }
    const ok = await get(big());
    expect(ok.status).toBe(200);
    expect(ok.headers.get('retry-after')).toBeNull();
    expect((await bytes(ok)).equals(whole)).toBe(true);

    // Non-matching artifacts and the build JSON are not affected by an artifact fault.
    jenkins.setFault('big.bin', { kind: 'status', status: 429 });
    const other = await get(`${build}artifact/small.txt`);
    expect(other.status).toBe(200);
    await other.text();
    const json = await get(`${build}api/json`);
    expect(json.status).toBe(200);
    await json.text();
    const head = await get(big(), { method: 'HEAD' });
    expect(head.status).toBe(429);
  });

  it('status can make the build JSON answer 503 when `match` contains api/json', async () => {
    jenkins.setFault('216/api/json', { kind: 'status', status: 503, retryAfter: '1', times: 1 });
    const failing = await get(`${build}api/json`);
    expect(failing.status).toBe(503);
    expect(failing.headers.get('retry-after')).toBe('1');
    await failing.text();
    expect((await get(`${build}api/json`)).status).toBe(200);

    // Matched against path and decoded query: only the fingerprint call fails.
    jenkins.setFault('api/json?tree=fingerprint', { kind: 'status', status: 500 });
    const plain = await get(`${build}api/json?tree=number`);
    expect(plain.status).toBe(200);
    await plain.text();
    const prints = await get(`${build}api/json?tree=fingerprint%5BfileName,hash%5D`);
    expect(prints.status).toBe(500);
    await prints.text();
    jenkins.setFault('api/json?tree=fingerprint', undefined);

    // Other kinds never apply to api/json.
    jenkins.setFault('api/json', { kind: 'drop-after', bytes: 0 });
    const json = await get(`${build}api/json`);
    expect(await json.json()).toMatchObject({ number: 216 });
  });

  it('trickle slows only matching responses until the fault is cleared', async () => {
    jenkins.setFault('big.bin', { kind: 'trickle', bytesPerSecond: 20_000 });
    const fast = await get(`${build}artifact/small.txt`);
    expect(await fast.text()).toBe('hello');

    const reader = (await get(big())).body!.getReader();
    let received = 0;
    const started = Date.now();
    while (Date.now() - started < 300) received += (await reader.read()).value?.length ?? 0;
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(20_000);

    jenkins.setFault('big.bin', undefined); // the response in flight speeds up
    for (let r = await reader.read(); !r.done; r = await reader.read()) received += r.value.length;
    expect(received).toBe(200_000);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('wrong-content-range answers a Range request with a Content-Range starting at 0', async () => {
    jenkins.setFault('big.bin', { kind: 'wrong-content-range', times: 2 });

    // Requests without a Range (or starting at 0) are served correctly and do not count.
    const plain = await get(big());
    expect(plain.status).toBe(200);
    await bytes(plain);

    const open = await get(big(), { headers: { range: 'bytes=70000-' } });
    expect(open.status).toBe(206);
    expect(open.headers.get('content-range')).toBe('bytes 0-199999/200000');
    expect((await bytes(open)).equals(whole)).toBe(true);

    const closed = await get(big(), { headers: { range: 'bytes=100-199' } });
    expect(closed.status).toBe(206);
    expect(closed.headers.get('content-range')).toBe('bytes 0-199/200000');
    expect((await bytes(closed)).equals(whole.subarray(0, 200))).toBe(true);

    const healed = await get(big(), { headers: { range: 'bytes=100-199' } });
    expect(healed.headers.get('content-range')).toBe('bytes 100-199/200000');
    expect((await bytes(healed)).equals(whole.subarray(100, 200))).toBe(true);
  });

  it('ignore-range answers 200 with the whole file', async () => {
    jenkins.setFault('big.bin', { kind: 'ignore-range', times: 1 });
    const res = await get(big(), { headers: { range: 'bytes=70000-' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-range')).toBeNull();
    expect(res.headers.get('content-length')).toBe('200000');
    expect((await bytes(res)).equals(whole)).toBe(true);

    const healed = await get(big(), { headers: { range: 'bytes=70000-' } });
    expect(healed.status).toBe(206);
    await bytes(healed);
  });

  it('redirect sends the client to another origin with an expiring link and no auth needed', async () => {
    jenkins.setFault('big.bin', { kind: 'redirect' });
    const before = Date.now();
    const res = await get(big(), { redirect: 'manual' });
    expect(res.status).toBe(302);
    await res.text();
    const location = new URL(res.headers.get('location')!);
    expect(location.origin).toBe(jenkins.storageOrigin);
    expect(location.origin).not.toBe(jenkins.origin);
    expect(location.pathname).toBe(new URL(big()).pathname);
    const expires = Number(location.searchParams.get('expires'));
    expect(expires).toBeGreaterThanOrEqual(before + 60_000);
    expect(expires).toBeLessThanOrEqual(Date.now() + 60_000);

    // Without credentials: served, and recorded without Authorization.
    const anonymous = await fetch(location);
    expect(anonymous.status).toBe(200);
    expect(anonymous.headers.get('last-modified')).toBe(DEFAULT_LAST_MODIFIED.toUTCString());
    expect((await bytes(anonymous)).equals(whole)).toBe(true);
    expect(jenkins.storageRequests.at(-1)).toEqual({ method: 'GET', path: location.pathname + location.search, authorized: true });

    // With credentials (a client leaking them): recorded as received; Range works too.
    const leaky = await fetch(location, { headers: { authorization: AUTH, range: 'bytes=199990-' } });
    expect(leaky.status).toBe(206);
    expect(leaky.headers.get('content-range')).toBe('bytes 199990-199999/200000');
    expect((await bytes(leaky)).equals(whole.subarray(199_990))).toBe(true);
    expect(jenkins.storageRequests.at(-1)).toMatchObject({ authorization: AUTH, range: 'bytes=199990-' });

    // Following the redirect gets the same bytes.
    const followed = await get(big());
    expect(followed.url.startsWith(jenkins.storageOrigin)).toBe(true);
    expect((await bytes(followed)).equals(whole)).toBe(true);
  });

  it('redirect links expire, and hops chain redirects on the storage server', async () => {
    jenkins.setFault('big.bin', { kind: 'redirect', ttlMs: -1, times: 1 });
    const res = await get(big(), { redirect: 'manual' });
    await res.text();
    const expired = await fetch(res.headers.get('location')!);
    expect(expired.status).toBe(403);
    await expired.text();
    const tampered = await fetch(`${jenkins.storageOrigin}${new URL(big()).pathname}`);
    expect(tampered.status).toBe(403);
    await tampered.text();

    jenkins.setFault('big.bin', { kind: 'redirect', hops: 3 });
    const stored = jenkins.storageRequests.length;
    const followed = await get(big());
    expect(followed.status).toBe(200);
    expect((await bytes(followed)).equals(whole)).toBe(true);
    expect(jenkins.storageRequests.length - stored).toBe(3); // 302, 302, 200

    jenkins.setFault('big.bin', { kind: 'redirect', hops: 25 });
    await expect(get(big())).rejects.toThrow(); // fetch follows at most 20 redirects
  });

  it('short-body announces one byte more than it sends', async () => {
    jenkins.setFault('small.txt', { kind: 'short-body', times: 1 });
    const raw = await rawGet(`${build}artifact/small.txt`, { authorization: AUTH });
    expect(raw.status).toBe(200);
    expect(raw.headers['content-length']).toBe('6');
    expect(raw.body.toString()).toBe('hello');
    expect(raw.error).toBeInstanceOf(Error);

    const healed = await rawGet(`${build}artifact/small.txt`, { authorization: AUTH });
    expect(healed.headers['content-length']).toBe('5');
    expect(healed.error).toBeUndefined();
  });

  it('rejects invalid faults', () => {
    expect(() => jenkins.setFault('nothing', { kind: 'drop-after', bytes: -1 })).toThrow(/bytes/);
    expect(() => jenkins.setFault('nothing', { kind: 'trickle', bytesPerSecond: 0 })).toThrow(/bytesPerSecond/);
    expect(() => jenkins.setFault('nothing', { kind: 'ignore-range', times: 0 })).toThrow(/times/);
    expect(() => jenkins.setFault('nothing', { kind: 'redirect', hops: 0 })).toThrow(/hops/);
  });

  it('tracks the peak number of concurrent artifact requests', async () => {
    jenkins.resetStats();
    expect(jenkins.peakConcurrentArtifactRequests).toBe(0);
    jenkins.setFault('par/', { kind: 'trickle', bytesPerSecond: 1_000 }); // 300 bytes: about 300 ms each
    const bodies = await Promise.all([1, 2, 3].map(async (n) => (await get(`${build}artifact/par/${n}.txt`)).text()));
    expect(bodies).toEqual(['x'.repeat(300), 'x'.repeat(300), 'x'.repeat(300)]);
    expect(jenkins.peakConcurrentArtifactRequests).toBe(3);

    await sleep(50); // let the server see the responses close
    jenkins.resetStats();
    expect(jenkins.peakConcurrentArtifactRequests).toBe(0);
    for (const n of [1, 2]) await (await get(`${build}artifact/par/${n}.txt`)).text();
    await (await get(`${build}api/json`)).text(); // not an artifact request
    expect(jenkins.peakConcurrentArtifactRequests).toBe(1);
  });

  it('setArtifactContent replaces bytes and Last-Modified', async () => {
    const url = jenkins.addBuild(['rebuilt'], 1, { artifacts: [{ relativePath: 'out/a.txt', content: 'first' }] });
    const when = new Date('2025-02-03T04:05:06Z');
    jenkins.setArtifactContent(url, 'out/a.txt', Buffer.from('second!'), when);
    const res = await get(`${url}artifact/out/a.txt`);
    expect(res.headers.get('last-modified')).toBe(when.toUTCString());
    expect(await res.text()).toBe('second!');
    expect(jenkins.artifactBytes(url, 'out/a.txt').toString()).toBe('second!');
    expect(jenkins.artifactSha256(url, 'out/a.txt')).toBe(sha256(Buffer.from('second!')));

    const before = Date.now() - 1_000;
    jenkins.setArtifactContent(url, 'out/a.txt', 'third');
    const now = await get(`${url}artifact/out/a.txt`);
    expect(Date.parse(now.headers.get('last-modified')!)).toBeGreaterThanOrEqual(before);
    expect(await now.text()).toBe('third');
    expect(() => jenkins.setArtifactContent(url, 'out/missing.txt', 'x')).toThrow(/no artifact/);
  });

  it('setFingerprintOverride lists another MD5 until cleared', async () => {
    const fingerprint = async (url: string): Promise<{ fileName: string; hash: string }[]> => {
      const res = await get(`${url}api/json?tree=fingerprint[fileName,hash]`);
      return ((await res.json()) as { fingerprint: { fileName: string; hash: string }[] }).fingerprint;
    };
    const wrong = 'f'.repeat(32);
    jenkins.setFingerprintOverride(build, 'small.txt', wrong);
    expect((await fingerprint(build)).find((f) => f.fileName === 'small.txt')?.hash).toBe(wrong);
    jenkins.setFingerprintOverride(build, 'small.txt', undefined);
    expect((await fingerprint(build)).find((f) => f.fileName === 'small.txt')?.hash).toBe(md5(Buffer.from('hello')));

    // Without `fingerprint: true`, only overridden artifacts are listed; the override survives new content.
    const plain = jenkins.addBuild(['plain'], 1, {
      artifacts: [
        { relativePath: 'a.txt', content: 'a' },
        { relativePath: 'b.txt', content: 'b' },
      ],
    });
    jenkins.setFingerprintOverride(plain, 'b.txt', wrong);
    jenkins.setArtifactContent(plain, 'b.txt', 'bb');
    expect(await fingerprint(plain)).toEqual([{ fileName: 'b.txt', hash: wrong }]);
  });
});

describe('fake Jenkins close() with faults', () => {
  it('closes both servers promptly while trickled responses are open', async () => {
    const jenkins = await startFakeJenkins();
    const build = jenkins.addBuild(['slow'], 1, { artifacts: [{ relativePath: 'slow.bin', size: 1_000_000 }] });
    jenkins.setFault('slow.bin', { kind: 'trickle', bytesPerSecond: 1_000 });
    const res = await fetch(`${build}artifact/slow.bin`);
    const reader = res.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    const rest = (async () => {
      for (;;) if ((await reader.read()).done) return 'ended';
    })().catch(() => 'aborted');

    const started = Date.now();
    await jenkins.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(await rest).toBe('aborted');
    await expect(fetch(`${jenkins.storageOrigin}/`)).rejects.toThrow();
  });
});
