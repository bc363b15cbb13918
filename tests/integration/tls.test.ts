import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, type ChildService } from '../helpers/processes.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const run = promisify(execFile);

/**
 * A throwaway private PKI in `dir`, made with the openssl CLI: a CA (ca.pem) and a server
 * certificate for the IP address 127.0.0.1 (server.pem, server.key) signed by it.
 */
async function makePki(dir: string): Promise<{ caFile: string; key: Buffer; cert: Buffer }> {
  try {
    await run('openssl', ['version']);
  } catch (error) {
    throw new Error(`the TLS tests need the openssl CLI on PATH (apt-get install openssl): ${(error as Error).message}`);
  }
  const file = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', '-new', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2',
    '-subj', '/CN=ferry test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  await run('openssl', ['req', '-new', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=127.0.0.1']);
  await writeFile(
    file('server.ext'),
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n',
  );
  await run('openssl', ['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
    '-set_serial', '1', '-days', '2', '-extfile', file('server.ext'), '-out', file('server.pem')]);
  return { caFile: file('ca.pem'), key: await readFile(file('server.key')), cert: await readFile(file('server.pem')) };
}

describe('TLS to Jenkins: verified by default, JENKINS_CA_FILE for a private CA, JENKINS_TLS_INSECURE by choice', () => {
  let pkiDir: string;
  let caFile: string;
  let jenkins: FakeJenkins;
  let buildUrl: string;
  let system: TestSystem | undefined;
  let worker: ChildService | undefined;
  const credentials = { JENKINS_USER: 'ci', JENKINS_API_TOKEN: 'tls-secret' };
  const artifacts = ['hapy/reports/junit/a.xml', 'logs/run.bin'];

  beforeAll(async () => {
    pkiDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-pki-'));
    const pki = await makePki(pkiDir);
    caFile = pki.caFile;
    jenkins = await startFakeJenkins({ user: 'ci', token: 'tls-secret', tls: { key: pki.key, cert: pki.cert } });
    buildUrl = jenkins.addBuild(['QA_Release_8.2', 'tls-run'], 7, {
      artifacts: [
        { relativePath: artifacts[0] as string, content: '<testsuite name="tls"/>' },
        { relativePath: artifacts[1] as string, size: 300_000 },
      ],
    });
  });

  afterEach(async () => {
    await worker?.stop();
    worker = undefined;
    await system?.stop();
    system = undefined;
  });

  afterAll(async () => {
    await jenkins?.close();
    if (pkiDir) await rm(pkiDir, { recursive: true, force: true });
  });

  const submit = async (running: TestSystem) => {
    const { status, body } = await postJson(`${running.baseUrl}/api/v1/jenkins/download`, { job_url: buildUrl, release: 'tls' });
    expect(status).toBe(202);
    return body.job_id as string;
  };
  const finished = (running: TestSystem, id: string) =>
    waitFor(async () => {
      const { body } = await getJson(`${running.baseUrl}/api/v1/jenkins/download/${id}/status`);
      return ['completed', 'failed', 'cancelled'].includes(body.status as string) ? body : null;
    }, `job ${id} to finish`, 30_000);
  const messages = async (running: TestSystem, id: string) =>
    ((await getJson(`${running.baseUrl}/api/v1/jenkins/download/${id}/logs?limit=1000`)).body.lines as Array<{ message: string }>).map(
      (line) => line.message,
    );
  /** Every file the job reports has the bytes the fake Jenkins serves. */
  const expectFilesMatch = async (running: TestSystem, done: Record<string, unknown>) => {
    const files = (done.files as Array<{ path: string }>).map((file) => file.path).sort();
    expect(files).toEqual(artifacts.map((relative) => `tls/tls_run/7/${relative}`).sort());
    for (const file of files) {
      const relative = file.split('/').slice(3).join('/');
      expect((await readFile(path.join(running.downloadDir, file))).equals(jenkins.artifactBytes(buildUrl, relative))).toBe(true);
    }
  };

  it('the fake Jenkins really speaks HTTPS', () => {
    expect(jenkins.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/$/);
  });

  it('without JENKINS_CA_FILE a private CA is refused: the job fails naming the certificate, sends nothing, writes nothing', async () => {
    system = await startSystem(jenkins.url, credentials);
    await system.startWorker();
    const before = jenkins.requests.length;
    const id = await submit(system);
    const done = await finished(system, id);
    expect(done.status).toBe('failed');
    expect(done.error).toContain(`TLS certificate of ${jenkins.origin} not accepted`);
    expect(done.error).toContain('unable to verify the first certificate');
    expect(done.error).toContain('JENKINS_CA_FILE');
    // Refused at the handshake: no HTTP request (so no credentials) reached the server, and no retry was made.
    expect(jenkins.requests.length).toBe(before);
    expect((await messages(system, id)).some((line) => line.includes('retry'))).toBe(false);
    expect(await readdir(system.downloadDir, { recursive: true })).toEqual([]);
  });

  it('with JENKINS_CA_FILE pointing at the CA the job completes with the right files', async () => {
    system = await startSystem(jenkins.url, { ...credentials, JENKINS_CA_FILE: caFile });
    await system.startWorker();
    const before = jenkins.requests.length;
    const done = await finished(system, await submit(system));
    expect(done.status).toBe('completed');
    await expectFilesMatch(system, done);
    const served = jenkins.requests.slice(before);
    expect(served.some((request) => request.path.includes('/artifact/logs/run.bin'))).toBe(true);
    expect(served.every((request) => request.authorized)).toBe(true);
  });

  it('with JENKINS_TLS_INSECURE=true a worker process warns at start, then downloads without verifying', async () => {
    // The API in this process; the worker is the built `node dist/worker/main.js`, so its real start-up log is read.
    system = await startSystem(jenkins.url, credentials);
    worker = startScript('worker', {
      ...credentials,
      REDIS_URL: system.config.redisUrl,
      QUEUE_PREFIX: system.config.queuePrefix,
      DOWNLOAD_DIR: system.downloadDir,
      JENKINS_URL: jenkins.url,
      JENKINS_TLS_INSECURE: 'true',
      JOB_ATTEMPTS: '1',
      LOG_LEVEL: 'info',
    });
    const running = worker;
    await waitFor(() => {
      if (running.child.exitCode !== null) throw new Error(`worker exited: ${running.output()}`);
      return running.output().includes('"worker started"');
    }, 'the worker to start');
    const lines = running
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as { level: string; message: string });
    const warning = lines.findIndex((line) => line.level === 'warn' && line.message.includes('JENKINS_TLS_INSECURE=true'));
    expect(warning).toBeGreaterThanOrEqual(0);
    expect(lines[warning]?.message).toContain('NOT verified');
    expect(warning).toBeLessThan(lines.findIndex((line) => line.message === 'worker started'));

    const done = await finished(system, await submit(system));
    expect(done.status).toBe('completed');
    await expectFilesMatch(system, done);
    expect(await running.stop()).toBe(0);
  });
});
