import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort, recordOutput } from '../helpers/redis-server.js';
import { withFreshPorts } from './harness.js';
import { logLines, openSse } from '../helpers/sse-client.js';
import { getJson, postJson } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const run = promisify(execFile);
const PASSWORD = 'tls-test-password';

interface Pki {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly ca: Buffer;
}

/** A throwaway CA and a server certificate for the IP 127.0.0.1 (IP SAN), made with the openssl CLI. */
async function makePki(dir: string): Promise<Pki> {
  const file = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', '-new', ...ec, '-keyout', file('ca.key'), '-out', file('ca.crt'), '-days', '2',
    '-subj', '/CN=ferry redis test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  await run('openssl', ['req', '-new', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', '/CN=127.0.0.1']);
  // Redis uses the same certificate as a client towards other nodes (cluster bus, replication).
  await writeFile(file('server.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n');
  await run('openssl', ['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'),
    '-set_serial', '1', '-days', '2', '-extfile', file('server.ext'), '-out', file('server.crt')]);
  return { caFile: file('ca.crt'), certFile: file('server.crt'), keyFile: file('server.key'), ca: await readFile(file('ca.crt')) };
}

interface TlsRedis {
  readonly port: number;
  readonly child: ChildProcess;
  kill(): Promise<void>;
}

/** TLS-only server arguments (`--port 0`): the same certificate for clients, the cluster bus and replication. */
function tlsArgs(pki: Pki, port: number): string[] {
  return ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--tls-cert-file', pki.certFile, '--tls-key-file', pki.keyFile,
    '--tls-ca-cert-file', pki.caFile, '--tls-auth-clients', 'no'];
}

/**
 * One redis-server listening on TLS only, ready once a verified TLS PING answers. A cluster node
 * (`cluster`) gets its bus port explicitly; either way a start that fails is retried on fresh ports.
 */
async function spawnTlsRedis(pki: Pki, extra: string[], password: string, clusterDir?: string): Promise<TlsRedis> {
  return withFreshPorts(({ port, busPort }) => {
    const cluster = clusterDir
      ? ['--cluster-enabled', 'yes', '--cluster-port', String(busPort), '--cluster-config-file', path.join(clusterDir, `nodes-${port}.conf`)]
      : [];
    return spawnTls(pki, [...tlsArgs(pki, port), ...cluster, '--requirepass', password, '--save', '', '--maxmemory-policy', 'noeviction', ...extra], port, password);
  });
}

async function spawnTls(pki: Pki, args: string[], port: number, password: string | undefined): Promise<TlsRedis> {
  if (port === 6379) throw new Error('refusing to use port 6379');
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = recordOutput(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGKILL');
    await exited;
  };
  try {
    // Bounded: a redis-server that cannot start within 10 s will not.
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`redis-server ${args.join(' ')} exited with ${child.exitCode}: ${output()}`);
      const probe = new Redis({ host: '127.0.0.1', port, ...(password ? { password } : {}), tls: { ca: [pki.ca] }, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      probe.on('error', () => undefined);
      try {
        await probe.connect();
        return (await probe.ping()) === 'PONG';
      } catch {
        return false;
      } finally {
        probe.disconnect();
      }
    }, `TLS redis on port ${port}`, 10_000, 50);
  } catch (error) {
    await kill();
    throw error;
  }
  return { port, child, kill };
}

describe('ferry over TLS to real Redis servers (rediss://, REDIS_TLS, REDIS_CA_FILE, passwords)', () => {
  let dir: string;
  let pki: Pki;
  let jenkins: FakeJenkins;
  let downloadDir: string;
  const redisNodes: TlsRedis[] = [];
  const services: ChildService[] = [];
  let buildIndex = 0;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-redis-tls-'));
    pki = await makePki(dir);
    downloadDir = path.join(dir, 'downloads');
    jenkins = await startFakeJenkins();
  }, 60_000);

  afterAll(async () => {
    await Promise.all(services.map((service) => service.stop()));
    await jenkins?.close();
    await Promise.all(redisNodes.map((node) => node.kill()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const baseEnv = () => ({
    REDIS_URL: '',
    JENKINS_URL: jenkins.url,
    DOWNLOAD_DIR: downloadDir,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    JOB_ATTEMPTS: '2',
    WORKER_CONCURRENCY: '2',
    RATE_LIMIT_PER_MINUTE: '1000',
  });

  /** One API and one worker with `env`; one job runs to completion, seen by the status endpoint and one SSE follower. */
  async function runOneJob(env: Record<string, string>): Promise<void> {
    const port = await freePort();
    const api = startScript('api', { ...env, PORT: String(port) });
    const worker = startScript('worker', env);
    services.push(api, worker);
    const url = `http://127.0.0.1:${port}`;
    await waitReady(url, api);
    buildIndex += 1;
    const buildUrl = jenkins.addBuild(['QA_Release_8.2', `tls-run-${buildIndex}`], buildIndex, {
      artifacts: Array.from({ length: 3 }, (_, file) => ({ relativePath: `hapy/reports/junit/suite-${file}.xml`, size: 10_000 + file })),
    });
    const answer = await postJson(`${url}/api/v1/jenkins/download`, { job_url: buildUrl });
    expect(answer.status).toBe(202);
    const id = answer.body.job_id as string;
    const reader = await openSse(`${url}${String(answer.body.logs_url)}`);
    // Bounded: three small files on loopback.
    await waitFor(async () => {
      const status = await getJson(`${url}/api/v1/jenkins/download/${id}/status`);
      return status.body.status === 'completed' || status.body.status === 'failed' ? status.body : null;
    }, `job ${id} to finish`, 60_000, 200);
    await Promise.race([reader.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('SSE stream not closed within 15 s')), 15_000))]);
    const status = await getJson(`${url}/api/v1/jenkins/download/${id}/status`);
    expect(status.body).toMatchObject({ id, status: 'completed', error: null });
    expect((status.body.files as unknown[]).length).toBe(3);
    const json = await getJson(`${url}/api/v1/jenkins/download/${id}/logs?limit=1000`);
    const expected = (json.body.lines as Array<{ id: string; message: string }>).filter((line) => !('status' in line));
    expect(expected.length).toBeGreaterThan(2);
    expect(logLines(reader.events)).toEqual(expected);
    expect(reader.events.some((event) => event.event === 'complete')).toBe(true);
    const codes = await Promise.all([api.stop(), worker.stop()]);
    expect(codes).toEqual([0, 0]);
    for (const service of [api, worker]) expect(service.output()).not.toContain(PASSWORD);
  }

  it('single server: rediss:// with a password and REDIS_CA_FILE runs a job to completion', async () => {
    const server = await spawnTlsRedis(pki, ['--dir', dir], PASSWORD);
    redisNodes.push(server);
    await runOneJob({ ...baseEnv(), REDIS_URL: `rediss://:${PASSWORD}@127.0.0.1:${server.port}`, REDIS_CA_FILE: pki.caFile });
  }, 120_000);

  it('single server: without REDIS_CA_FILE the certificate is refused; the API runs but /readyz never answers 200', async () => {
    const server = redisNodes[0] as TlsRedis;
    const port = await freePort();
    const api = startScript('api', { ...baseEnv(), REDIS_URL: `rediss://:${PASSWORD}@127.0.0.1:${server.port}`, PORT: String(port) });
    services.push(api);
    // What the code does: it logs the refused certificate, waits a few seconds for Redis ("not
    // reachable yet; starting anyway"), listens, and reports not ready. Bounded: 20 s to listen.
    const first = await waitFor(async () => {
      if (api.child.exitCode !== null) throw new Error(`the API exited: ${api.output()}`);
      const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null);
      return response ? response.status : null;
    }, 'the API to listen', 20_000, 200);
    const statuses = [first];
    for (let index = 0; index < 5; index += 1) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      statuses.push((await fetch(`http://127.0.0.1:${port}/readyz`)).status);
    }
    expect(statuses).toEqual(statuses.map(() => 503));
    expect(api.child.exitCode).toBeNull();
    expect(api.output()).toContain('"error":"self-signed certificate in certificate chain","level":"warn","message":"redis connection error"');
    expect(api.output()).not.toContain(PASSWORD);
    expect(await api.stop()).toBe(0);
  }, 60_000);

  it('cluster: 3 masters + 3 replicas over TLS (tls-cluster, tls-replication) with REDIS_TLS, REDIS_CA_FILE and REDIS_PASSWORD', async () => {
    const clusterDir = path.join(dir, 'cluster');
    await run('mkdir', ['-p', clusterDir]);
    const nodes: TlsRedis[] = [];
    for (let index = 0; index < 6; index += 1) {
      const node = await spawnTlsRedis(pki, ['--dir', clusterDir,
        '--cluster-node-timeout', '2000', '--tls-cluster', 'yes', '--tls-replication', 'yes', '--masterauth', PASSWORD], PASSWORD, clusterDir);
      redisNodes.push(node);
      nodes.push(node);
    }
    await run('redis-cli', ['--tls', '--cacert', pki.caFile, '-a', PASSWORD, '--no-auth-warning', '--cluster', 'create', ...nodes.map((node) => `127.0.0.1:${node.port}`),
      '--cluster-replicas', '1', '--cluster-yes'], { timeout: 30_000 });
    // Bounded: a fresh 6-node cluster on loopback converges in a few seconds.
    await waitFor(async () => {
      for (const node of nodes) {
        const client = new Redis({ host: '127.0.0.1', port: node.port, password: PASSWORD, tls: { ca: [pki.ca] }, maxRetriesPerRequest: 0, retryStrategy: () => null });
        client.on('error', () => undefined);
        try {
          if (!String(await client.cluster('INFO')).includes('cluster_state:ok')) return false;
        } catch {
          return false;
        } finally {
          client.disconnect();
        }
      }
      return true;
    }, 'cluster_state:ok on every TLS node', 30_000, 200);
    await runOneJob({
      ...baseEnv(),
      REDIS_CLUSTER_NODES: nodes.map((node) => `127.0.0.1:${node.port}`).join(','),
      REDIS_TLS: 'true',
      REDIS_CA_FILE: pki.caFile,
      REDIS_PASSWORD: PASSWORD,
    });
  }, 150_000);

  it('sentinel: master, replica and 3 sentinels all TLS-only (tls-replication) with REDIS_TLS, REDIS_CA_FILE and REDIS_PASSWORD', async () => {
    const sentinelDir = path.join(dir, 'sentinel');
    await run('mkdir', ['-p', sentinelDir]);
    const name = 'ferry-tls';
    const common = ['--dir', sentinelDir, '--tls-replication', 'yes', '--masterauth', PASSWORD];
    const master = await spawnTlsRedis(pki, common, PASSWORD);
    redisNodes.push(master);
    const replica = await spawnTlsRedis(pki, [...common, '--replicaof', '127.0.0.1', String(master.port)], PASSWORD);
    redisNodes.push(replica);
    const sentinels: TlsRedis[] = [];
    for (let index = 0; index < 3; index += 1) {
      const port = await freePort();
      const file = path.join(sentinelDir, `sentinel-${port}.conf`);
      await writeFile(file, [
        'port 0', `tls-port ${port}`, 'bind 127.0.0.1', `tls-cert-file ${pki.certFile}`, `tls-key-file ${pki.keyFile}`, `tls-ca-cert-file ${pki.caFile}`,
        'tls-auth-clients no', 'tls-replication yes', `dir ${sentinelDir}`, `sentinel monitor ${name} 127.0.0.1 ${master.port} 2`,
        `sentinel auth-pass ${name} ${PASSWORD}`, `sentinel down-after-milliseconds ${name} 1000`, `sentinel failover-timeout ${name} 5000`, '',
      ].join('\n'));
      const sentinel = await spawnTls(pki, [file, '--sentinel'], port, undefined);
      redisNodes.push(sentinel);
      sentinels.push(sentinel);
    }
    // Bounded: the replica syncs over TLS and the sentinels find each other within seconds on loopback.
    const probe = new Redis({ host: '127.0.0.1', port: replica.port, password: PASSWORD, tls: { ca: [pki.ca] }, maxRetriesPerRequest: 0 });
    probe.on('error', () => undefined);
    const sentinelProbe = new Redis({ host: '127.0.0.1', port: (sentinels[0] as TlsRedis).port, tls: { ca: [pki.ca] }, maxRetriesPerRequest: 0 });
    sentinelProbe.on('error', () => undefined);
    try {
      await waitFor(async () => String(await probe.info('replication')).includes('master_link_status:up'), 'replica in sync over TLS', 15_000, 100);
      await waitFor(async () => /sentinels=3/.test(String(await sentinelProbe.info('sentinel'))), 'three TLS sentinels know each other', 20_000, 200);
    } finally {
      probe.disconnect();
      sentinelProbe.disconnect();
    }
    await runOneJob({
      ...baseEnv(),
      REDIS_SENTINELS: sentinels.map((node) => `127.0.0.1:${node.port}`).join(','),
      REDIS_SENTINEL_NAME: name,
      REDIS_TLS: 'true',
      REDIS_CA_FILE: pki.caFile,
      REDIS_PASSWORD: PASSWORD,
    });
  }, 150_000);
});
