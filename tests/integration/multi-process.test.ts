import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { logLines, openSse } from '../helpers/sse-client.js';
import { getJson, postJson, testEnv } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

/** Connections a process holds, by the names ferry gives them (CLIENT LIST). */
async function connectionsNamed(redis: Redis, name: string): Promise<number> {
  const list = await redis.client('LIST');
  return String(list).split('\n').filter((line) => line.includes(`name=${name} `)).length;
}

describe('two API processes and two worker processes (real child processes)', () => {
  let jenkins: FakeJenkins;
  let downloadDir: string;
  let redis: Redis;
  const services: ChildService[] = [];
  const apis: string[] = [];
  let buildUrl: string;

  beforeAll(async () => {
    jenkins = await startFakeJenkins({ user: 'ci', token: 'multi-secret' });
    buildUrl = jenkins.addBuild(['QA_Release_7.1', 'nightly-run'], 42, {
      artifacts: Array.from({ length: 8 }, (_, index) => ({ relativePath: `hapy/reports/junit/suite-${index}.xml`, size: 40_000 + index })),
    });
    downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-mp-'));
    const env = testEnv(jenkins.url, downloadDir, { JENKINS_USER: 'ci', JENKINS_API_TOKEN: 'multi-secret', LOG_LEVEL: 'info' });
    redis = new Redis(inject('redisUrl'));
    for (let index = 0; index < 2; index += 1) {
      const port = await freePort();
      const api = startScript('api', { ...env, PORT: String(port) });
      services.push(api);
      apis.push(`http://127.0.0.1:${port}`);
      services.push(startScript('worker', env));
    }
    await Promise.all(apis.map((url, index) => waitReady(url, services[index * 2] as ChildService)));
  });

  afterAll(async () => {
    // LIFO: workers and APIs first, then what they use.
    const codes = await Promise.all(services.map((service) => service.stop()));
    redis?.disconnect();
    await jenkins?.close();
    await rm(downloadDir, { recursive: true, force: true });
    expect(codes).toEqual(services.map(() => 0));
  });

  it('a job submitted to API A is served by API B: status, JSON log, two SSE readers and a Last-Event-ID resume', async () => {
    const [apiA, apiB] = apis as [string, string];
    jenkins.setThrottle(150_000);
    const submitted = await postJson(`${apiA}/api/v1/jenkins/download`, { job_url: buildUrl });
    expect(submitted.status).toBe(202);
    const id = submitted.body.job_id as string;
    const streamUrl = `${apiB}${String(submitted.body.logs_url)}`;

    const readers = await Promise.all([openSse(streamUrl), openSse(streamUrl)]);
    const dropper = await openSse(streamUrl);
    await waitFor(() => logLines(dropper.events).length >= 4, 'four lines before the drop');
    dropper.close();
    const seen = logLines(dropper.events);

    const running = await getJson(`${apiB}/api/v1/jenkins/download/${id}/status`);
    expect(running.status).toBe(200);
    expect(['pending', 'running', 'completed']).toContain(running.body.status);
    jenkins.setThrottle(undefined);

    await Promise.all(readers.map((reader) => reader.closed));
    const resumed = await openSse(streamUrl, { 'last-event-id': seen[seen.length - 1]?.id as string });
    await resumed.closed;

    const status = await getJson(`${apiB}/api/v1/jenkins/download/${id}/status`);
    expect(status.body).toMatchObject({ id, status: 'completed', release: '7.1', error: null, attempts: 1 });
    const statusA = await getJson(`${apiA}/api/v1/jenkins/download/${id}/status`);
    expect(statusA.body).toEqual(status.body);

    const all = logLines((readers[0] as { events: Parameters<typeof logLines>[0] }).events);
    expect(all.length).toBeGreaterThanOrEqual(10);
    expect(logLines(readers[1]?.events ?? [])).toEqual(all);
    expect([...seen, ...logLines(resumed.events)]).toEqual(all);
    const json = await getJson(`${apiB}/api/v1/jenkins/download/${id}/logs?limit=1000`);
    expect((json.body.lines as Array<{ id: string; message: string }>).filter((line) => !('status' in line))).toEqual(all);
    expect(json.body.done).toBe(true);

    const files = status.body.files as Array<{ path: string; size: number; sha256: string }>;
    expect(files).toHaveLength(8);
    for (const file of files) {
      const relative = file.path.split('/').slice(3).join('/');
      expect(file.path.startsWith('7.1/nightly_run/42/')).toBe(true);
      const onDisk = await readFile(path.join(downloadDir, file.path));
      expect(onDisk.equals(jenkins.artifactBytes(buildUrl, relative))).toBe(true);
      expect(file.sha256).toBe(jenkins.artifactSha256(buildUrl, relative));
    }
    // No process logged the Jenkins token.
    for (const service of services) expect(service.output()).not.toContain('multi-secret');
  });

  it('each API process keeps three Redis connections (commands, BullMQ queues, log tail) however many SSE readers it serves', async () => {
    const apiB = apis[1] as string;
    const apiConnections = async () =>
      (await connectionsNamed(redis, 'ferry:api')) + (await connectionsNamed(redis, 'ferry:api-queue')) + (await connectionsNamed(redis, 'ferry:api-log-tail'));
    expect(await connectionsNamed(redis, 'ferry:api-queue')).toBe(2);
    const before = await apiConnections();
    jenkins.setThrottle(20_000);
    try {
      const submitted = await postJson(`${apis[0] as string}/api/v1/jenkins/download`, { job_url: buildUrl, skip_existing: false });
      const streamUrl = `${apiB}${String(submitted.body.logs_url)}`;
      const readers = await Promise.all(Array.from({ length: 40 }, () => openSse(streamUrl)));
      await waitFor(() => readers.every((reader) => logLines(reader.events).length >= 2), 'every reader to get lines');
      const during = await apiConnections();
      expect(before).toBe(6);
      expect(during).toBe(before);
      for (const reader of readers) reader.close();
    } finally {
      jenkins.setThrottle(undefined);
    }
  });
});
