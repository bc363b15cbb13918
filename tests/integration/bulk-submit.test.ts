// POST /api/v1/jenkins/downloads: several downloads in one request, each validated and deduplicated
// as the single submit does, the new jobs added together; then a worker runs them to the end.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeys, type Keys } from '../../shared/keys.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const BULK = '/api/v1/jenkins/downloads';
const SUBMIT = '/api/v1/jenkins/download';

/** POST JSON with extra headers; the answer's status, headers and JSON body. */
async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: response.status, headers: Object.fromEntries(response.headers), body: (await response.json()) as Record<string, unknown> };
}

interface JobAnswer {
  job_url: string;
  job_id: string;
  deduplicated: boolean;
  message: string;
  logs_url: string;
  status_url: string;
}

describe('bulk submit (POST /api/v1/jenkins/downloads)', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let keys: Keys;
  let queue: Queue;
  const build = (job: string, number: number) => `${jenkins.url}job/QA_Release_8.2/job/${job}/${number}/`;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    for (let number = 1; number <= 4; number += 1) {
      jenkins.addBuild(['QA_Release_8.2', 'bulk'], number, { artifacts: [{ relativePath: `hapy/reports/junit/suite-${number}.xml`, size: 2_000 }] });
    }
    for (let number = 1; number <= 5; number += 1) {
      jenkins.addBuild(['QA_Release_8.2', 'over'], number, { artifacts: [{ relativePath: 'hapy/reports/junit/suite.xml', size: 1_000 }] });
    }
    // Its own small budget, to see one point spent per download.
    system = await startSystem(jenkins.url, { RATE_LIMIT_PER_MINUTE: '12' });
    keys = createKeys(system.config.queuePrefix);
    queue = new Queue(keys.queueName, { connection: system.redis, prefix: keys.queuePrefix });
  });

  afterAll(async () => {
    await queue?.close();
    await system?.stop();
    await jenkins?.close();
  });

  const bulk = (body: unknown, headers: Record<string, string> = {}) => postJson(`${system.baseUrl}${BULK}`, body, headers);
  const queued = async () => (await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed', 'prioritized'));
  const total = async () => Object.values(await queued()).reduce((sum, n) => sum + n, 0);

  it('refuses a body with any bad download (400 naming each by its place) and enqueues nothing', async () => {
    const before = await total();
    const answer = await bulk({
      downloads: [{ job_url: build('bulk', 1) }, { job_url: 'http://elsewhere.invalid/job/x/1/' }, { job_url: build('bulk', 2), extra: true }, { job_url: `${jenkins.url}job/no-release/3/` }],
    });
    expect(answer.status).toBe(400);
    expect(answer.body.error).toMatchObject({ code: 'VALIDATION_FAILED' });
    const message = String((answer.body.error as { message: string }).message);
    expect(message).toContain('downloads.1.job_url: must be on the configured Jenkins');
    expect(message).toContain('downloads.2: unknown field(s): extra');
    expect(message).toContain('downloads.3.release: required');
    expect(message).not.toContain('downloads.0');
    for (const body of [{}, { downloads: [] }, { downloads: Array.from({ length: 101 }, (_, n) => ({ job_url: build('bulk', n + 1) })) }, { downloads: 'x' }]) {
      expect((await bulk(body)).status).toBe(400);
    }
    expect(await total()).toBe(before);
  });

  it('makes one job per download, in order; a repeat inside the request and a pending job answer deduplicated', async () => {
    const earlier = await postJson(`${system.baseUrl}${SUBMIT}`, { job_url: build('bulk', 3) });
    expect(earlier.status).toBe(202);
    const before = await total();

    const answer = await bulk({
      downloads: [
        { job_url: build('bulk', 1) },
        { job_url: build('bulk', 2) },
        { job_url: build('bulk', 3) },
        // The same download as the first (URL spelled differently): the same job.
        { job_url: build('bulk', 1).replace(/\/$/, ''), skip_existing: false },
      ],
    });
    expect(answer.status).toBe(202);
    expect(answer.headers['ratelimit-remaining']).toBe(String(12 - 1 - 4));
    const jobs = answer.body.jobs as JobAnswer[];
    expect(jobs.map((job) => [job.job_url, job.deduplicated])).toEqual([
      [build('bulk', 1), false],
      [build('bulk', 2), false],
      [build('bulk', 3), true],
      [build('bulk', 1).replace(/\/$/, ''), true],
    ]);
    expect(jobs[2]?.job_id).toBe(earlier.body.job_id);
    expect(jobs[3]?.job_id).toBe(jobs[0]?.job_id);
    expect(jobs[0]?.job_id).not.toBe(jobs[1]?.job_id);
    expect(jobs[0]).toMatchObject({ logs_url: `${SUBMIT}/${jobs[0]?.job_id}`, status_url: `${SUBMIT}/${jobs[0]?.job_id}/status` });
    expect(jobs[2]?.message).toContain(`already pending as job ${earlier.body.job_id}`);
    expect(await total()).toBe(before + 2);

    // Every answered id is a job any instance can read; all listed.
    for (const job of jobs) expect((await getJson(`${system.baseUrl}${job.status_url}`)).body).toMatchObject({ id: job.job_id, status: 'pending' });
    const listed = (await getJson(`${system.baseUrl}${BULK}?release=8.2&limit=200`)).body.jobs as Array<{ id: string }>;
    expect(new Set(listed.map((job) => job.id))).toEqual(new Set([jobs[0]?.job_id, jobs[1]?.job_id, earlier.body.job_id]));

    // Everything already pending: 200, nothing new.
    const again = await bulk({ downloads: [{ job_url: build('bulk', 2) }, { job_url: build('bulk', 3) }] });
    expect(again.status).toBe(200);
    expect((again.body.jobs as JobAnswer[]).map((job) => [job.job_id, job.deduplicated])).toEqual([
      [jobs[1]?.job_id, true],
      [earlier.body.job_id, true],
    ]);
    expect(await total()).toBe(before + 2);
  });

  it('replays an answer for the same Idempotency-Key, on this route only; over the budget answers 429 and spends nothing', async () => {
    const body = { downloads: [{ job_url: build('bulk', 4) }] };
    const first = await bulk(body, { 'idempotency-key': 'bulk-4' });
    expect(first.status).toBe(202);
    const replay = await bulk(body, { 'idempotency-key': 'bulk-4' });
    expect(replay.status).toBe(202);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toEqual(first.body);
    // The same key on the single submit is that route's own: no replay of the bulk answer (the
    // download is pending, so it answers 200 with the same job).
    const single = await postJson(`${system.baseUrl}${SUBMIT}`, { job_url: build('bulk', 4) }, { 'idempotency-key': 'bulk-4' });
    expect(single.status).toBe(200);
    expect(single.headers['idempotent-replayed']).toBeUndefined();
    expect(single.body).toMatchObject({ job_id: (first.body.jobs as JobAnswer[])[0]?.job_id, deduplicated: true });

    // More downloads than a minute's budget could never fit: 400, nothing spent.
    const thirteen = { downloads: Array.from({ length: 13 }, (_, n) => ({ job_url: build('never', n + 1) })) };
    const tooMany = await bulk(thirteen);
    expect(tooMany.status).toBe(400);
    expect(String((tooMany.body.error as { message: string }).message)).toContain('at most 12 in one request');

    // 12 points a minute: 1 + 4 + 2 + 1 + 1 spent above, 3 left. Five downloads are refused whole.
    const before = await total();
    const five = { downloads: Array.from({ length: 5 }, (_, n) => ({ job_url: build('over', n + 1) })) };
    const refused = await bulk(five);
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'RATE_LIMITED' });
    expect(await total()).toBe(before);
    // The refused requests spent nothing: three downloads still fit, then not one more.
    const three = await bulk({ downloads: five.downloads.slice(0, 3) });
    expect(three.status).toBe(202);
    expect(three.headers['ratelimit-remaining']).toBe('0');
    expect((await bulk({ downloads: five.downloads.slice(3, 4) })).status).toBe(429);
  });

  it('a worker runs the jobs a bulk submit made to completion', async () => {
    await system.startWorker();
    const listed = (await getJson(`${system.baseUrl}${BULK}?release=8.2&limit=200`)).body.jobs as Array<{ id: string }>;
    const bulkIds = listed.map((job) => job.id);
    // bulk 1-4 (3 by the single submit) and over 1-3.
    expect(bulkIds).toHaveLength(7);
    await waitFor(async () => {
      const views = await Promise.all(bulkIds.map(async (id) => (await getJson(`${system.baseUrl}${SUBMIT}/${id}/status`)).body.status));
      return views.every((status) => status === 'completed') || undefined;
    }, 'every job completed');
    const files = await readdir(path.join(system.downloadDir, '8.2'), { recursive: true });
    expect(files.filter((file) => file.endsWith('.xml'))).toHaveLength(7);
  });
});
