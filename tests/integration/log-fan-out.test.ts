import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJobLog } from '../../shared/job-log.js';
import { createKeys } from '../../shared/keys.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { logLines, openSse, type SseReader } from '../helpers/sse-client.js';
import { postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

/**
 * The API parses and encodes each live tail batch once and writes it to every up-to-date follower
 * as one buffer (api/log-stream.ts). Bursts of lines arrive as multi-entry batches: every follower,
 * including one that joins in the middle with Last-Event-ID, must still get each line once, in order.
 */
describe('live log fan-out of burst batches', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  const readers: SseReader[] = [];

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    system = await startSystem(jenkins.url);
  });

  afterAll(async () => {
    for (const reader of readers) reader.close();
    await system?.stop();
    await jenkins?.close();
  });

  it('every follower gets every line of bursts once, in order, and the end', async () => {
    const buildUrl = jenkins.addBuild(['QA_Release_6.4', 'fan-out'], 1, { artifacts: [] });
    // No worker runs: the job stays pending and this test writes its log as a worker would.
    const submitted = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: buildUrl });
    expect(submitted.status).toBe(202);
    const jobId = String(submitted.body.job_id);
    const jobLog = createJobLog({ redis: system.redis, keys: createKeys(system.config.queuePrefix), maxLines: 10_000, ttlSeconds: 600 });
    const streamUrl = `${system.baseUrl}/api/v1/jenkins/download/${jobId}`;

    for (let index = 0; index < 3; index += 1) readers.push(await openSse(streamUrl));
    const burst = async (from: number) => {
      // Issued together, so they reach Redis in one pipeline and the tail reads them as one batch.
      const ids = await Promise.all(Array.from({ length: 100 }, (_, offset) => jobLog.append(jobId, `line ${from + offset}`)));
      return ids;
    };
    const firstIds = [...(await burst(0)), ...(await burst(100)), ...(await burst(200))];
    await waitFor(() => readers.every((reader) => logLines(reader.events).length >= 300) || null, 'the first 300 lines at every follower', 10_000);
    // A follower that joins now, resuming after line 149.
    const late = await openSse(streamUrl, { 'last-event-id': firstIds[149] as string });
    readers.push(late);
    for (const from of [300, 400, 500]) await burst(from);
    await jobLog.end(jobId, 'completed', null);
    await Promise.all(readers.map(async (reader) => reader.closed));

    const expected = (from: number) => Array.from({ length: 600 - from }, (_, index) => `line ${from + index}`);
    for (const reader of readers.slice(0, 3)) expect(logLines(reader.events).map((line) => line.message)).toEqual(expected(0));
    expect(logLines(late.events).map((line) => line.message)).toEqual(expected(150));
    for (const reader of readers) {
      const ids = logLines(reader.events).map((line) => line.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(reader.events.at(-1)?.event).toBe('complete');
    }
  });
});
