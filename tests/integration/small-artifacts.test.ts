import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchArtifact, partPathFor, RESUME_MIN_BYTES, type ArtifactDownload } from '../../worker/download-file.js';
import { createFileWriter, type FileWriter } from '../../worker/file-writer.js';
import { createJenkinsClient, type JenkinsClient } from '../../worker/jenkins-client.js';
import { LeaseLostError } from '../../worker/part-writer.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';

const md5 = (bytes: Buffer) => createHash('md5').update(bytes).digest('hex');
const JOB_ID = '01a21846-771c-7469-bb64-129f2ad4324d';

/**
 * Artifacts under RESUME_MIN_BYTES: held in memory, checked, then written, fsynced and renamed in
 * one trip to a writer thread (worker/file-writer.ts). fetchArtifact itself, real servers, real files,
 * and the real writer (wrapped only to record what it was asked to write).
 */
describe('small artifacts: checked before the writer thread writes them', () => {
  let dir: string;
  let jenkins: FakeJenkins;
  let client: JenkinsClient;
  let real: FileWriter;
  let writes: Array<{ partPath: string; target: string }>;
  let writer: FileWriter;
  let files = 0;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-small-'));
    jenkins = await startFakeJenkins();
    client = createJenkinsClient({ baseUrl: jenkins.url, retryBaseDelayMs: 1 });
    real = createFileWriter({ threads: 1 });
    writer = {
      writeAndRename: (partPath, bytes, target) => {
        writes.push({ partPath, target });
        return real.writeAndRename(partPath, bytes, target);
      },
      writeAll: (files, last) => {
        for (const file of [...files, ...(last ? [last] : [])]) writes.push({ partPath: file.partPath, target: file.target });
        return real.writeAll(files, last);
      },
      close: () => real.close(),
    };
  });
  afterAll(async () => {
    await real?.close();
    await jenkins?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const job = (url: string, overrides: Partial<ArtifactDownload> = {}): ArtifactDownload => {
    const target = path.join(dir, `small-${(files += 1)}.xml`);
    writes = [];
    return {
      url,
      target,
      partPath: partPathFor(target, JOB_ID),
      maxBytes: 2 ** 30,
      minSpeedBytes: 1,
      stallSeconds: 30,
      signal: new AbortController().signal,
      fresh: true,
      fileWriter: writer,
      onStart: () => undefined,
      onProgress: () => undefined,
      onNote: () => undefined,
      ...overrides,
    };
  };
  const small = (name: string, content: Buffer) => {
    const build = jenkins.addBuild(['small', name], 1, { artifacts: [{ relativePath: `${name}.xml`, content }] });
    return `${build}artifact/${name}.xml`;
  };
  const leftovers = async () => (await readdir(dir)).filter((name) => name.includes('.part'));

  it('one trip to the writer, from a temporary name of its own (nonce, then the job id), to the target', async () => {
    const content = randomBytes(10_000);
    const download = job(small('plain', content));
    const result = await fetchArtifact(client, download);
    expect(result).toEqual({ size: content.length, sha256: createHash('sha256').update(content).digest('hex') });
    expect(await readFile(download.target)).toEqual(content);
    expect(writes).toHaveLength(1);
    const escaped = download.target.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expect(writes[0]?.partPath).toMatch(new RegExp(`^${escaped}\\.[0-9a-f]{12}\\.${JOB_ID}\\.part$`));
    // Still what the part sweeper recognises as this job's.
    expect(writes[0]?.partPath).toMatch(/\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.part$/);
    expect(await leftovers()).toEqual([]);
  });

  it('a body that does not match its MD5 fingerprint is never written: asked twice, then refused', async () => {
    const content = Buffer.from('<testsuite name="x"/>');
    const url = small('badmd5', content);
    const download = job(url, { expectedMd5: '0'.repeat(32) });
    await expect(fetchArtifact(client, download)).rejects.toThrow(`MD5 mismatch for ${url}: expected ${'0'.repeat(32)}, got ${md5(content)}`);
    expect(writes).toEqual([]);
    expect(jenkins.requests.filter((request) => request.path.endsWith('badmd5.xml'))).toHaveLength(2);
    expect((await readdir(dir)).filter((name) => name.startsWith(path.basename(download.target)))).toEqual([]);
  });

  it('a matching MD5 (any case) is written', async () => {
    const content = Buffer.from('<testsuite name="y"/>');
    const download = job(small('goodmd5', content), { expectedMd5: md5(content).toUpperCase() });
    await fetchArtifact(client, download);
    expect(await readFile(download.target)).toEqual(content);
    expect(writes).toHaveLength(1);
  });

  it('a lease lost while the body arrived (the tracker also aborts the job): nothing is written', async () => {
    let leased = true;
    const controller = new AbortController();
    const download = job(small('lease', randomBytes(20_000)), {
      signal: controller.signal,
      canWrite: () => leased,
      onStart: () => {
        leased = false;
        controller.abort(new LeaseLostError());
      },
    });
    await expect(fetchArtifact(client, download)).rejects.toBeInstanceOf(LeaseLostError);
    expect(writes).toEqual([]);
    expect((await readdir(dir)).filter((name) => name.startsWith(path.basename(download.target)))).toEqual([]);
  });

  it("a resume answered with the whole (small) body: placed, and the earlier try's .part and record removed", async () => {
    const content = randomBytes(RESUME_MIN_BYTES - 100);
    // A server that ignores Range, as some proxies in front of Jenkins do.
    const server: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': String(content.length) });
      res.end(content);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const own = createJenkinsClient({ baseUrl: base, retryBaseDelayMs: 1 });
      const download = job(`${base}/job/x/1/artifact/resume.xml`, { fresh: false });
      // What an earlier run left: 100 bytes of the file and its record.
      await writeFile(download.partPath, content.subarray(0, 100));
      await writeFile(`${download.partPath}.json`, JSON.stringify({ length: content.length, lastModified: null }));
      await fetchArtifact(own, download);
      expect(await readFile(download.target)).toEqual(content);
      expect(writes).toHaveLength(1);
      expect(await leftovers()).toEqual([]);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
