import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOG_GROUPS, logGroup } from '../../shared/keys.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { logLines, openSse, type SseReader } from '../helpers/sse-client.js';
import { getJson, postJson } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';
import { startRedisCluster, type RedisCluster } from './harness.js';

const MASTERS = 3;

/** Connections named `name` on every master of the cluster (CLIENT LIST per node). */
async function connectionsNamed(cluster: RedisCluster, name: string): Promise<number> {
  const masters = await cluster.masters();
  try {
    let count = 0;
    for (const master of masters) {
      const list = String(await master.client('LIST'));
      count += list.split('\n').filter((line) => line.includes(`name=${name} `)).length;
    }
    return count;
  } finally {
    for (const master of masters) master.disconnect();
  }
}

describe('ferry on a real Redis Cluster (3 masters, 3 replicas): several APIs, workers and SSE followers', () => {
  let cluster: RedisCluster;
  let jenkins: FakeJenkins;
  let downloadDir: string;
  const services: ChildService[] = [];
  const apis: string[] = [];
  const buildUrls: string[] = [];
  let batchUrl: string;

  beforeAll(async () => {
    cluster = await startRedisCluster(MASTERS);
    jenkins = await startFakeJenkins();
    for (let index = 0; index < 8; index += 1) {
      buildUrls.push(
        jenkins.addBuild(['QA_Release_8.2', `cluster-run-${index}`], 10 + index, {
          artifacts: Array.from({ length: 6 }, (_, file) => ({ relativePath: `hapy/reports/junit/suite-${file}.xml`, size: 20_000 + file * 100 + index })),
        }),
      );
    }
    for (const [name, number] of [['MOD-A', 1], ['MOD-B', 2], ['MOD-C', 3]] as const) {
      jenkins.addBuild(['QA_Release_8.2', name], number, { artifacts: [{ relativePath: `hapy/reports/junit/${name}.xml`, content: `<testsuite name="${name}"/>` }] });
    }
    batchUrl = jenkins.addBuild(['QA_Release_8.2', 'main-regression'], 77, {
      artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify({ MOD_A: 1, MOD_B: 2, MOD_C: 3 }) }],
    });
    downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-cluster-dl-'));
    const env = {
      REDIS_URL: '',
      REDIS_CLUSTER_NODES: cluster.seeds,
      // Every node requires a password: ferry must pass it to each node it discovers.
      REDIS_PASSWORD: cluster.password,
      JENKINS_URL: jenkins.url,
      DOWNLOAD_DIR: downloadDir,
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      JOB_ATTEMPTS: '2',
      WORKER_CONCURRENCY: '3',
      BATCH_PARALLELISM: '2',
      RATE_LIMIT_PER_MINUTE: '1000',
    };
    for (let index = 0; index < 3; index += 1) {
      const port = await freePort();
      const api = startScript('api', { ...env, PORT: String(port) });
      services.push(api);
      apis.push(`http://127.0.0.1:${port}`);
    }
    for (let index = 0; index < 2; index += 1) services.push(startScript('worker', env));
    await Promise.all(apis.map((url, index) => waitReady(url, services[index] as ChildService)));
  }, 120_000);

  afterAll(async () => {
    const codes = await Promise.all(services.map((service) => service.stop()));
    await jenkins?.close();
    await cluster?.stop();
    if (downloadDir) await rm(downloadDir, { recursive: true, force: true });
    expect(codes).toEqual(services.map(() => 0));
  });

  it('jobs submitted to any API complete; every API answers their status; every SSE follower gets every line', async () => {
    jenkins.setThrottle(200_000);
    const submitted: Array<{ id: string; logsUrl: string }> = [];
    for (const [index, url] of buildUrls.entries()) {
      const answer = await postJson(`${apis[index % apis.length] as string}/api/v1/jenkins/download`, { job_url: url });
      expect(answer.status).toBe(202);
      submitted.push({ id: answer.body.job_id as string, logsUrl: String(answer.body.logs_url) });
    }
    // The jobs' logs land in several log groups, so in several slots (and mostly on several shards).
    expect(new Set(submitted.map(({ id }) => logGroup(id))).size).toBeGreaterThan(1);
    // Three followers per job, one on each API.
    const followers: Array<{ id: string; reader: SseReader }> = [];
    for (const { id, logsUrl } of submitted) {
      for (const api of apis) followers.push({ id, reader: await openSse(`${api}${logsUrl}`) });
    }
    jenkins.setThrottle(undefined);
    // Bounded by waitFor and the test timeout: 8 jobs of 6 small files each.
    for (const { id } of submitted) {
      await waitFor(async () => {
        const status = await getJson(`${apis[0] as string}/api/v1/jenkins/download/${id}/status`);
        return status.body.status === 'completed' || status.body.status === 'failed' ? status.body : null;
      }, `job ${id} to finish`, 90_000, 200);
    }
    await Promise.all(followers.map(({ reader }) => reader.closed));

    for (const { id } of submitted) {
      const views = await Promise.all(apis.map((api) => getJson(`${api}/api/v1/jenkins/download/${id}/status`)));
      expect(views[0]?.body).toMatchObject({ id, status: 'completed', error: null });
      for (const view of views) expect(view.body).toEqual(views[0]?.body);
      expect((views[0]?.body.files as unknown[]).length).toBe(6);
      const json = await getJson(`${apis[1] as string}/api/v1/jenkins/download/${id}/logs?limit=1000`);
      const expected = (json.body.lines as Array<{ id: string; message: string }>).filter((line) => !('status' in line));
      expect(json.body.done).toBe(true);
      expect(expected.length).toBeGreaterThan(5);
      for (const follower of followers.filter((item) => item.id === id)) {
        expect(logLines(follower.reader.events)).toEqual(expected);
        expect(follower.reader.events.some((event) => event.event === 'complete')).toBe(true);
      }
    }
  }, 180_000);

  it('a batch (coordinator and module jobs) runs to completion on the cluster', async () => {
    const answer = await postJson(`${apis[2] as string}/api/v1/jenkins/download-selected`, {
      jobs: [{ key: 'main-regression', release: '8.2', build_url: batchUrl }],
    });
    expect(answer.status).toBe(202);
    const id = answer.body.job_id as string;
    const reader = await openSse(`${apis[0] as string}${String(answer.body.logs_url)}`);
    const done = await waitFor(async () => {
      const status = await getJson(`${apis[1] as string}/api/v1/jenkins/download/${id}/status`);
      return status.body.status === 'completed' || status.body.status === 'failed' ? status.body : null;
    }, 'the batch to finish', 90_000, 200);
    await reader.closed;
    expect(done).toMatchObject({ id, kind: 'batch', status: 'completed', error: null });
    expect((done.modules as unknown[]).length).toBe(3);
    expect(logLines(reader.events).some((line) => line.message.startsWith('[3/3]'))).toBe(true);
  }, 120_000);

  it("an API process's Redis connections stay bounded by the log groups, not by the number of followers", async () => {
    const api = apis[0] as string;
    jenkins.setThrottle(5_000);
    const readers: SseReader[] = [];
    try {
      const jobs: string[] = [];
      for (const url of buildUrls.slice(0, 4)) {
        const answer = await postJson(`${api}/api/v1/jenkins/download`, { job_url: url, skip_existing: false });
        expect(answer.status).toBe(202);
        jobs.push(String(answer.body.logs_url));
      }
      const count = async () => (await connectionsNamed(cluster, 'ferry:api')) + (await connectionsNamed(cluster, 'ferry:api-log-tail'));
      for (const logsUrl of jobs) for (let index = 0; index < 10; index += 1) readers.push(await openSse(`${api}${logsUrl}`));
      await waitFor(() => readers.every((reader) => logLines(reader.events).length >= 2), 'every follower to get lines', 30_000);
      const with40 = await count();
      for (const logsUrl of jobs) for (let index = 0; index < 30; index += 1) readers.push(await openSse(`${api}${logsUrl}`));
      await waitFor(() => readers.every((reader) => logLines(reader.events).length >= 2), 'every follower to get lines', 30_000);
      const with160 = await count();
      // Three APIs; each holds at most one command connection per master, and at most one tail
      // lane per log group (a lane may keep a second connection from the cluster's ready check).
      const bound = apis.length * (MASTERS + 2 * LOG_GROUPS);
      expect(with40).toBeLessThanOrEqual(bound);
      expect(with160).toBe(with40);
      process.stdout.write(`cluster: ${with40} API connections with 40 followers, ${with160} with 160 (bound ${bound})\n`);
    } finally {
      jenkins.setThrottle(undefined);
      for (const reader of readers) reader.close();
    }
  }, 120_000);

  it('no process met a CROSSSLOT (or any cross-slot) error, and none printed the Redis password', async () => {
    // Let the last jobs finish so their end writes are in the output too.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    for (const service of services) {
      expect(service.output()).not.toMatch(/CROSSSLOT|Keys in request don't hash to the same slot|All keys in the pipeline should belong to the same slot/i);
      expect(service.output()).not.toContain(cluster.password);
    }
  });
});
