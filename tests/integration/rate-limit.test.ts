// The per-caller submit budget (RATE_LIMIT_PER_MINUTE): a single submit spends its point inside its
// dedup claim script, a batch (and a bulk submit) once it is valid and not a replay; one counter.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startSystem, type TestSystem } from '../helpers/system.js';

interface Answer {
  readonly status: number;
  readonly remaining: string | null;
  readonly body: Record<string, unknown>;
  readonly retryAfter: string | null;
}

describe('submit rate limit: single and batch submits spend one budget', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  const builds: string[] = [];

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    for (let index = 0; index < 6; index += 1) {
      builds.push(jenkins.addBuild(['QA_Release_4.4', `budget-${index}`], 1, { artifacts: [{ relativePath: 'a.xml', content: '<a/>' }] }));
    }
    // No worker: jobs stay pending, so a second submit of a build is deduplicated.
    system = await startSystem(jenkins.url, { RATE_LIMIT_PER_MINUTE: '5' });
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  const post = async (path: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> => {
    const response = await fetch(`${system.baseUrl}/api/v1/jenkins/${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return {
      status: response.status,
      remaining: response.headers.get('ratelimit-remaining'),
      body: (await response.json()) as Record<string, unknown>,
      retryAfter: response.headers.get('retry-after'),
    };
  };
  const single = (build: string, headers: Record<string, string> = {}) => post('download', { job_url: build }, headers);
  const batch = (build: string, headers: Record<string, string> = {}) => post('download-selected', { jobs: [{ key: 'k', release: '4.4', build_url: build }] }, headers);

  it('counts new, deduplicated and batch submits alike; a refused or replayed request spends nothing; then 429 on both routes', async () => {
    const first = await single(builds[0] as string, { 'idempotency-key': 'budget-key-1' });
    expect([first.status, first.remaining]).toEqual([202, '4']);
    // Malformed: refused before any point is spent.
    const invalid = await post('download', { job_url: 'not a url' });
    expect(invalid.status).toBe(400);
    // The same Idempotency-Key: the stored answer again, no point spent.
    const replay = await single(builds[0] as string, { 'idempotency-key': 'budget-key-1' });
    expect(replay.status).toBe(202);
    expect(replay.body.job_id).toBe(first.body.job_id);
    // The same for a batch: a malformed one is refused before any point is spent.
    expect((await post('download-selected', { jobs: 'nope' })).status).toBe(400);

    const second = await single(builds[1] as string);
    expect([second.status, second.remaining]).toEqual([202, '3']);
    const grouped = await batch(builds[2] as string, { 'idempotency-key': 'budget-batch-1' });
    expect([grouped.status, grouped.remaining]).toEqual([202, '2']);
    const groupedAgain = await batch(builds[2] as string, { 'idempotency-key': 'budget-batch-1' });
    expect([groupedAgain.status, groupedAgain.body.job_id]).toEqual([202, grouped.body.job_id]);
    const again = await single(builds[1] as string);
    expect([again.status, again.remaining, again.body.deduplicated]).toEqual([200, '1', true]);
    const last = await single(builds[3] as string);
    expect([last.status, last.remaining]).toEqual([202, '0']);

    for (const refused of [await single(builds[4] as string), await batch(builds[5] as string)]) {
      expect(refused.status).toBe(429);
      expect(refused.body).toMatchObject({ error: { code: 'RATE_LIMITED' } });
      expect(Number(refused.retryAfter)).toBeGreaterThan(0);
    }
    // A refused single submit claimed nothing: no job, no dedup pointer for that build.
    const listed = await fetch(`${system.baseUrl}/api/v1/jenkins/downloads`).then((response) => response.json() as Promise<{ jobs: Array<{ job_url: string }> }>);
    expect(listed.jobs.some((job) => job.job_url === builds[4])).toBe(false);
    expect(listed.jobs.filter((job) => job.job_url !== null)).toHaveLength(3);
  });
});
