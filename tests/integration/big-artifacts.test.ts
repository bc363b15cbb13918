import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIRECT_GET_MIN_BYTES, fetchArtifact, hashFile, partPathFor, type ArtifactDownload } from '../../worker/download-file.js';
import { createJenkinsClient, type JenkinsClient } from '../../worker/jenkins-client.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';

/**
 * Bodies of at least DIRECT_GET_MIN_BYTES: after the http module's answer, the worker asks again on
 * a connection whose socket reads go straight into the .part writer's slots (worker/direct-get.ts).
 * These run fetchArtifact itself against real servers and real files.
 */
const SIZE = DIRECT_GET_MIN_BYTES + 6 * 2 ** 20 + 4_321;
const run = promisify(execFile);

describe('big artifacts: the direct read path', () => {
  let dir: string;
  let jenkins: FakeJenkins;
  let client: JenkinsClient;
  let builds = 0;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-big-'));
    jenkins = await startFakeJenkins({ user: 'ci', token: 'big-secret' });
    client = createJenkinsClient({ baseUrl: jenkins.url, user: 'ci', apiToken: 'big-secret', retryBaseDelayMs: 1 });
  });
  afterAll(async () => {
    await jenkins?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const download = (jenkinsClient: JenkinsClient, url: string, overrides: Partial<ArtifactDownload> = {}) => {
    const target = path.join(dir, `file-${(builds += 1)}.bin`);
    const notes: string[] = [];
    let progress = 0;
    const job: ArtifactDownload = {
      url,
      target,
      partPath: partPathFor(target, 'job1'),
      maxBytes: 2 ** 40,
      minSpeedBytes: 1,
      stallSeconds: 30,
      signal: new AbortController().signal,
      onStart: () => undefined,
      onProgress: (bytes) => (progress = bytes),
      onNote: (message) => notes.push(message),
      ...overrides,
    };
    return { job, target, notes, progress: () => progress, result: () => fetchArtifact(jenkinsClient, job) };
  };
  const artifact = (name: string) => {
    const build = jenkins.addBuild(['big', name], 1, { artifacts: [{ relativePath: `${name}.bin`, size: SIZE }] });
    return { build, url: `${build}artifact/${name}.bin`, sha256: jenkins.artifactSha256(build, `${name}.bin`) };
  };
  const rangesOf = (name: string) => jenkins.requests.filter((request) => request.path.endsWith(`${name}.bin`)).map((request) => request.range);

  it('asks twice (the second answer, with the credentials, read into the slots), and the file is complete and verified', async () => {
    const { url, sha256 } = artifact('whole');
    const run1 = download(client, url);
    expect(await run1.result()).toEqual({ size: SIZE, sha256 });
    expect(await hashFile(run1.target)).toEqual({ size: SIZE, sha256 });
    expect(run1.progress()).toBe(SIZE);
    expect(rangesOf('whole')).toEqual([undefined, undefined]);
    expect(jenkins.requests.filter((request) => request.path.endsWith('whole.bin')).every((request) => request.authorized)).toBe(true);
    expect((await readdir(dir)).filter((name) => name.includes('.part'))).toEqual([]);
  });

  it('a direct connection dropped mid-body resumes from exactly what reached the .part, directly again', async () => {
    const { url, sha256 } = artifact('dropped');
    // The first answer (left unread) and the direct one are cut after 4,000,000 bytes.
    jenkins.setFault('dropped.bin', { kind: 'drop-after', bytes: 4_000_000, times: 2 });
    const run1 = download(client, url);
    expect(await run1.result()).toEqual({ size: SIZE, sha256 });
    const ranges = rangesOf('dropped');
    expect(ranges.slice(0, 2)).toEqual([undefined, undefined]);
    const offset = Number(/^bytes=(\d+)-$/.exec(ranges[2] ?? '')?.[1]);
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(4_000_000);
    // What is left is still big: read directly too, with the same Range.
    expect(ranges.slice(2)).toEqual([`bytes=${offset}-`, `bytes=${offset}-`]);
    expect(run1.notes.some((note) => note.includes(`interrupted at byte ${offset}:`))).toBe(true);
  });

  it('a lost lease stops the writes: the .part ends where the last write under the lease ended', async () => {
    const { url } = artifact('lease');
    jenkins.setThrottle(40_000_000);
    try {
      const controller = new AbortController();
      let leased = true;
      let lastWrite = -1;
      const run1 = download(client, url, {
        signal: controller.signal,
        canWrite: () => leased,
        onProgress: (bytes) => {
          if (bytes >= 8 * 2 ** 20 && leased) {
            leased = false; // as the lease tracker does, which also aborts the job
            lastWrite = bytes;
            controller.abort(new Error('job lock lost'));
          }
        },
      });
      await expect(run1.result()).rejects.toThrow('job lock lost');
      expect(lastWrite).toBeGreaterThan(0);
      expect((await stat(run1.job.partPath)).size).toBe(lastWrite);
      await expect(stat(run1.target)).rejects.toThrow();
    } finally {
      jenkins.setThrottle(undefined);
    }
  });

  it('over HTTPS with a private CA, a big body is read through the http module (one request), verified', async () => {
    const pki = await makePki(dir);
    const secure = await startFakeJenkins({ tls: { key: pki.key, cert: pki.cert } });
    try {
      const build = secure.addBuild(['big', 'tls'], 1, { artifacts: [{ relativePath: 'tls.bin', size: SIZE }] });
      const sha256 = secure.artifactSha256(build, 'tls.bin');
      const trusting = createJenkinsClient({ baseUrl: secure.url, caFile: pki.caFile, retryBaseDelayMs: 1 });
      const run1 = download(trusting, `${build}artifact/tls.bin`);
      expect(await run1.result()).toEqual({ size: SIZE, sha256 });
      // No direct read over TLS: a TLS socket hands over decrypted bytes after `onread` asked it to
      // pause, which the writer's slots cannot take (see worker/download-file.ts).
      expect(secure.requests.filter((request) => request.path.endsWith('tls.bin'))).toHaveLength(1);
    } finally {
      await secure.close();
    }
  });

  it('a second answer it cannot read directly (chunked, or changed) makes the next try read through the http module', async () => {
    const body = randomBytes(SIZE);
    const sha256 = createHash('sha256').update(body).digest('hex');
    for (const second of ['chunked', 'changed'] as const) {
      let requests = 0;
      const server: Server = createServer((req, res) => {
        requests += 1;
        const lastModified = second === 'changed' && requests === 2 ? 'Thu, 01 Jan 2026 00:00:00 GMT' : 'Wed, 01 Jan 2025 00:00:00 GMT';
        res.setHeader('Last-Modified', lastModified);
        if (second === 'chunked' && requests === 2) {
          res.write(body); // no Content-Length: Node sends it chunked
          res.end();
          return;
        }
        res.setHeader('Content-Length', body.length);
        res.end(body);
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      try {
        const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
        const run1 = download(createJenkinsClient({ baseUrl: origin, retryBaseDelayMs: 1 }), `${origin}/job/x/1/artifact/a.bin`);
        expect(await run1.result()).toEqual({ size: SIZE, sha256 });
        expect(requests).toBe(3);
        expect(run1.notes.some((note) => note.includes('reading it through the http module instead'))).toBe(true);
      } finally {
        server.closeAllConnections();
        server.close();
      }
    }
  });
});

/** A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl CLI), as in tls.test.ts. */
async function makePki(dir: string): Promise<{ caFile: string; key: Buffer; cert: Buffer }> {
  const file = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', '-new', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2',
    '-subj', '/CN=ferry big test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  await run('openssl', ['req', '-new', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=127.0.0.1']);
  await writeFile(file('server.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n');
  await run('openssl', ['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
    '-set_serial', '1', '-days', '2', '-extfile', file('server.ext'), '-out', file('server.pem')]);
  return { caFile: file('ca.pem'), key: await readFile(file('server.key')), cert: await readFile(file('server.pem')) };
}
