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

  /** A pending job (no worker runs) whose log this test writes as a worker would. */
  const pendingJob = async (name: string) => {
    const buildUrl = jenkins.addBuild(['QA_Release_6.4', name], 1, { artifacts: [] });
    const submitted = await postJson(`${system.baseUrl}/api/v1/jenkins/download`, { job_url: buildUrl });
    expect(submitted.status).toBe(202);
    const jobId = String(submitted.body.job_id);
    const jobLog = createJobLog({ redis: system.redis, keys: createKeys(system.config.queuePrefix), maxLines: 10_000, ttlSeconds: 600 });
    return { jobId, jobLog, streamUrl: `${system.baseUrl}/api/v1/jenkins/download/${jobId}` };
  };
  const closedWithin = (reader: SseReader, ms: number) =>
    Promise.race([reader.closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms))]);

  it('a reader whose Last-Event-ID is past the newest line resumes at the newest, and holds back no other reader', async () => {
    const { jobId, jobLog, streamUrl } = await pendingJob('future-cursor');
    await jobLog.append(jobId, 'line 1');
    await jobLog.append(jobId, 'line 2');
    // The first reader of this log on the API process: its cursor is where the process's tail starts.
    const ahead = await openSse(streamUrl, { 'last-event-id': '0-1000' });
    const other = await openSse(streamUrl);
    readers.push(ahead, other);
    await waitFor(() => logLines(other.events).length >= 2 || null, 'the history at the other reader', 5_000);
    for (const n of [3, 4, 5]) await jobLog.append(jobId, `line ${n}`);
    await jobLog.end(jobId, 'completed', null);
    expect(await closedWithin(other, 5_000)).toBe(true);
    expect(await closedWithin(ahead, 5_000)).toBe(true);
    expect(logLines(other.events).map((line) => line.message)).toEqual(['line 1', 'line 2', 'line 3', 'line 4', 'line 5']);
    expect(logLines(ahead.events).map((line) => line.message)).toEqual(['line 3', 'line 4', 'line 5']);
    for (const reader of [ahead, other]) expect(reader.events.at(-1)?.event).toBe('complete');
  });

  it('a reader that resumes with the end entry\'s own id gets the same ending again, and the stream closes', async () => {
    const { jobId, jobLog, streamUrl } = await pendingJob('resume-at-end');
    await jobLog.append(jobId, 'only line');
    await jobLog.end(jobId, 'completed', null);
    const first = await openSse(streamUrl);
    readers.push(first);
    expect(await closedWithin(first, 5_000)).toBe(true);
    // The end: its entry (with the id an EventSource resumes from), then the complete event.
    const ending = first.events.slice(-2);
    expect(ending.map((event) => event.event)).toEqual(['message', 'complete']);
    const endId = ending[0]?.id as string;
    expect(endId).toMatch(/^0-\d+$/);
    const again = await openSse(streamUrl, { 'last-event-id': endId });
    readers.push(again);
    expect(await closedWithin(again, 5_000)).toBe(true);
    expect(logLines(again.events)).toEqual([]);
    expect(again.events.slice(-2)).toEqual(ending);
  });
});
