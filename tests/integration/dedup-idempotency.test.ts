import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { v7 as uuidv7 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApi, type Api } from '../../api/create-api.js';
import { dedupFingerprint } from '../../api/dedup.js';
import { createKeys, type Keys } from '../../shared/keys.js';
import { createLogger } from '../../shared/logger.js';
import { createRedis, waitForRedis } from '../../shared/redis.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { getJson, postJson, startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const SUBMIT = '/api/v1/jenkins/download';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

/** POST with extra headers (and optionally from another loopback address), via node:http. */
function post(url: string, body: unknown, headers: Record<string, string> = {}, localAddress?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const req = httpRequest(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': String(payload.length), ...headers },
        ...(localAddress ? { localAddress } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
          } catch (error) {
            reject(error as Error);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A second API instance on the same Redis and queue prefix, as another process would be. */
async function startSecondApi(system: TestSystem): Promise<{ baseUrl: string; api: Api; stop(): Promise<void> }> {
  const logger = createLogger({ service: 'test-b', level: system.config.logLevel, json: true });
  const redis = createRedis(system.config.redisUrl, 'api', logger, 'test-api-b');
  const blockingRedis = createRedis(system.config.redisUrl, 'worker', logger, 'test-tail-b');
  await waitForRedis(redis, 10_000);
  const api = createApi({ config: system.config, logger, redis, blockingRedis });
  const server: Server = api.app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    api,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await api.close();
      redis.disconnect();
      blockingRedis.disconnect();
    },
  };
}

describe('submission dedup and Idempotency-Key (no worker: jobs stay pending)', () => {
  // Port 80 on purpose, so that ":80" is a default port to drop. Nothing ever connects to it.
  const JENKINS = 'http://jenkins.example.invalid/';
  const build = (job: string, number = 1, release = '7.1') => `${JENKINS}job/QA_Release_${release}/job/${job}/${number}/`;
  let system: TestSystem;
  let keys: Keys;

  beforeAll(async () => {
    system = await startSystem(JENKINS);
    keys = createKeys(system.config.queuePrefix);
  });

  afterAll(async () => {
    await system?.stop();
  });

  const submit = (body: unknown) => postJson(`${system.baseUrl}${SUBMIT}`, body);
  const jobsOfRelease = async (release: string) =>
    ((await getJson(`${system.baseUrl}/api/v1/jenkins/downloads?release=${release}&limit=200`)).body.jobs as Array<{ id: string; status: string }>);

  it('the same download submitted while the first is pending answers 200 with that job', async () => {
    const first = await submit({ job_url: build('twice'), release: 'twice' });
    expect(first.status).toBe(202);
    expect(first.body.deduplicated).toBe(false);
    const id = first.body.job_id as string;

    // skip_existing is not part of the key.
    const second = await submit({ job_url: build('twice'), release: 'twice', skip_existing: false });
    expect(second.status).toBe(200);
    expect(second.body).toEqual({
      job_id: id,
      deduplicated: true,
      message: expect.stringContaining(`already pending as job ${id}`) as unknown,
      logs_url: `${SUBMIT}/${id}`,
      status_url: `${SUBMIT}/${id}/status`,
    });
    expect((await jobsOfRelease('twice')).map((job) => job.id)).toEqual([id]);
  });

  it('URL variants (host case, scheme case, :80, no trailing slash, query) and glob order are the same download', async () => {
    const first = await submit({ job_url: build('variants', 5), artifacts: ['b/**/*.xml', 'a/**'] });
    expect(first.status).toBe(202);
    const id = first.body.job_id as string;
    const path = 'job/QA_Release_7.1/job/variants/5';
    for (const jobUrl of [
      `http://JENKINS.Example.INVALID/${path}/`,
      `HTTP://jenkins.example.invalid:80/${path}/`,
      `http://jenkins.example.invalid/${path}`,
      `http://jenkins.example.invalid:80/${path}?delay=0#top`,
    ]) {
      const again = await submit({ job_url: jobUrl, artifacts: ['a/**', 'b/**/*.xml', 'a/**'] });
      expect({ jobUrl, status: again.status, id: again.body.job_id, deduplicated: again.body.deduplicated }).toEqual({
        jobUrl,
        status: 200,
        id,
        deduplicated: true,
      });
    }
    expect(await jobsOfRelease('7.1').then((jobs) => jobs.filter((job) => job.id === id))).toHaveLength(1);
  });

  it('a different release, different globs, default globs or another build is a new job', async () => {
    const base = { job_url: build('distinct', 3), release: 'distinct-a', artifacts: ['x/**'] };
    const ids = new Set<string>();
    for (const body of [
      base,
      { ...base, release: 'distinct-b' },
      { ...base, artifacts: ['y/**'] },
      { ...base, artifacts: ['x/**', 'y/**'] },
      { job_url: base.job_url, release: base.release }, // no globs: the workers' default
      { ...base, job_url: build('distinct', 4) },
    ]) {
      const answer = await submit(body);
      expect(answer.status).toBe(202);
      expect(answer.body.deduplicated).toBe(false);
      ids.add(answer.body.job_id as string);
    }
    expect(ids.size).toBe(6);
  });

  it('20 concurrent identical submits to two API instances create exactly one job', async () => {
    const other = await startSecondApi(system);
    try {
      const body = { job_url: build('stampede', 9), release: 'stampede' };
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, index) => postJson(`${index % 2 === 0 ? system.baseUrl : other.baseUrl}${SUBMIT}`, body)),
      );
      const ids = new Set(answers.map((answer) => answer.body.job_id));
      expect(ids.size).toBe(1);
      expect(answers.filter((answer) => answer.status === 202)).toHaveLength(1);
      expect(answers.filter((answer) => answer.status === 200 && answer.body.deduplicated === true)).toHaveLength(19);
      expect((await jobsOfRelease('stampede')).map((job) => job.id)).toEqual([...ids]);
    } finally {
      await other.stop();
    }
  });

  it('a pointer left by a crashed claimer is replaced after the grace; a fresh claim is waited for, then 409', async () => {
    const body = { job_url: build('crashed', 2), release: 'crashed' };
    const pointer = keys.dedup(dedupFingerprint({ ...body, artifacts: [] }));

    // A claim 60 s old whose job never reached BullMQ: the claimer died between claim and add.
    await system.redis.set(pointer, `claimed:${uuidv7({ msecs: Date.now() - 60_000 })}`, 'PX', 60_000);
    const recovered = await submit(body);
    expect(recovered.status).toBe(202);
    const id = recovered.body.job_id as string;
    expect(await system.redis.get(pointer)).toBe(`claimed:${id}`);
    expect(await system.redis.pttl(pointer)).toBeGreaterThan(60_000);

    // A claim 11 s old (past the 10 s grace) whose job is gone (removed in Bull Board) is stale.
    const goneBody = { job_url: build('crashed', 5), release: 'crashed' };
    const gonePointer = keys.dedup(dedupFingerprint({ ...goneBody, artifacts: [] }));
    await system.redis.set(gonePointer, `claimed:${uuidv7({ msecs: Date.now() - 11_000 })}`, 'PX', 60_000);
    expect((await submit(goneBody)).status).toBe(202);

    // A queued pointer (written by earlier versions) whose job is gone is stale at once.
    const removedBody = { job_url: build('crashed', 3), release: 'crashed' };
    const removedPointer = keys.dedup(dedupFingerprint({ ...removedBody, artifacts: [] }));
    await system.redis.set(removedPointer, `queued:${uuidv7()}`);
    expect((await submit(removedBody)).status).toBe(202);

    // A claim made just now by another request: the submit waits for its job, then gives up with
    // a 409 that an Idempotency-Key does not keep, so the retry runs once the key is free.
    const busyBody = { job_url: build('crashed', 4), release: 'crashed' };
    const busyPointer = keys.dedup(dedupFingerprint({ ...busyBody, artifacts: [] }));
    await system.redis.set(busyPointer, `claimed:${uuidv7()}`, 'PX', 60_000);
    const started = Date.now();
    const busy = await post(`${system.baseUrl}${SUBMIT}`, busyBody, { 'idempotency-key': 'crash-retry' });
    expect(busy.status).toBe(409);
    expect((busy.body.error as { code: string }).code).toBe('CONFLICT');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_500);
    await system.redis.del(busyPointer);
    const retried = await post(`${system.baseUrl}${SUBMIT}`, busyBody, { 'idempotency-key': 'crash-retry' });
    expect(retried.status).toBe(202);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
  });

  it('Idempotency-Key: a retry gets the first status and body with Idempotent-Replayed, whatever its body', async () => {
    const first = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('idem', 1), release: 'idem-1' }, { 'Idempotency-Key': 'order-42' });
    expect(first.status).toBe(202);
    expect(first.headers['idempotent-replayed']).toBeUndefined();

    const retry = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('idem', 2), release: 'idem-2' }, { 'Idempotency-Key': 'order-42' });
    expect(retry.status).toBe(202);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.body).toEqual(first.body);
    expect(await jobsOfRelease('idem-2')).toEqual([]);

    // A dedup answer (200) is an answer like any other.
    const dup = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('idem', 1), release: 'idem-1' }, { 'Idempotency-Key': 'order-43' });
    expect(dup.status).toBe(200);
    const dupRetry = await post(`${system.baseUrl}${SUBMIT}`, {}, { 'Idempotency-Key': 'order-43' });
    expect({ status: dupRetry.status, body: dupRetry.body, replayed: dupRetry.headers['idempotent-replayed'] }).toEqual({
      status: 200,
      body: dup.body,
      replayed: 'true',
    });

    // A validation answer is kept too: the corrected request needs a new key.
    const invalid = await post(`${system.baseUrl}${SUBMIT}`, { job_url: 'nope' }, { 'Idempotency-Key': 'order-44' });
    expect(invalid.status).toBe(400);
    const corrected = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('idem', 3), release: 'idem-3' }, { 'Idempotency-Key': 'order-44' });
    expect({ status: corrected.status, body: corrected.body, replayed: corrected.headers['idempotent-replayed'] }).toEqual({
      status: 400,
      body: invalid.body,
      replayed: 'true',
    });
    expect(await jobsOfRelease('idem-3')).toEqual([]);
  });

  it('Idempotency-Key is scoped to the caller: another client address with the same key is not a replay', async ({ skip }) => {
    const key = 'shared-key-between-callers';
    const mine = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('scope', 1), release: 'scope-1' }, { 'idempotency-key': key }, '127.0.0.1');
    // Linux routes all of 127.0.0.0/8 to loopback; elsewhere (macOS) 127.0.0.2 may not exist.
    const theirs = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('scope', 2), release: 'scope-2' }, { 'idempotency-key': key }, '127.0.0.2').catch(
      (error: NodeJS.ErrnoException) => {
        if (error.code === 'EADDRNOTAVAIL') skip('127.0.0.2 is not a local address here');
        throw error;
      },
    );
    expect(mine.status).toBe(202);
    expect(theirs.status).toBe(202);
    expect(theirs.headers['idempotent-replayed']).toBeUndefined();
    expect(theirs.body.job_id).not.toBe(mine.body.job_id);
  });

  it.each([
    ['empty', ''],
    ['201 characters', 'k'.repeat(201)],
    ['a tab inside', 'a\tb'],
    ['a non-ASCII character', 'caf\u00e9'],
  ])('an Idempotency-Key that is %s answers 400 and enqueues nothing', async (_name, key) => {
    const release = `badkey-${key.length}`;
    const answer = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('badkey'), release }, { 'Idempotency-Key': key });
    expect(answer.status).toBe(400);
    expect((answer.body.error as { code: string; message: string }).code).toBe('VALIDATION_FAILED');
    expect((answer.body.error as { message: string }).message).toContain('Idempotency-Key');
    expect(await jobsOfRelease(release)).toEqual([]);
  });

  it('an Idempotency-Key of 200 printable characters, spaces included, is accepted', async () => {
    const key = `${'~ !'.repeat(66)}zz`;
    expect(key).toHaveLength(200);
    const first = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('longkey'), release: 'longkey' }, { 'Idempotency-Key': key });
    expect(first.status).toBe(202);
    const again = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('longkey'), release: 'longkey' }, { 'Idempotency-Key': key });
    expect(again.headers['idempotent-replayed']).toBe('true');
  });

  it('concurrent requests with one Idempotency-Key enqueue once; the others get the replay or 409', async () => {
    const other = await startSecondApi(system);
    try {
      // Different bodies, so that dedup cannot be what keeps them to one job.
      const answers = await Promise.all(
        Array.from({ length: 12 }, (_, index) =>
          post(
            `${index % 2 === 0 ? system.baseUrl : other.baseUrl}${SUBMIT}`,
            { job_url: build('race'), release: `race-${index}` },
            { 'Idempotency-Key': 'one-shot' },
          ),
        ),
      );
      const original = answers.filter((answer) => answer.status === 202 && answer.headers['idempotent-replayed'] === undefined);
      expect(original).toHaveLength(1);
      const jobId = original[0]?.body.job_id;
      for (const answer of answers) {
        if (answer.status === 409) {
          expect((answer.body.error as { code: string }).code).toBe('IDEMPOTENCY_IN_PROGRESS');
          expect(answer.headers['retry-after']).toBe('1');
        } else {
          expect(answer.status).toBe(202);
          expect(answer.body.job_id).toBe(jobId);
        }
      }
      const created = await Promise.all(Array.from({ length: 12 }, (_, index) => jobsOfRelease(`race-${index}`)));
      expect(created.flat().map((job) => job.id)).toEqual([jobId]);
      // Once answered, every retry replays.
      const late = await post(`${system.baseUrl}${SUBMIT}`, { job_url: build('race'), release: 'race-late' }, { 'Idempotency-Key': 'one-shot' });
      expect({ status: late.status, id: late.body.job_id, replayed: late.headers['idempotent-replayed'] }).toEqual({ status: 202, id: jobId, replayed: 'true' });
    } finally {
      await other.stop();
    }
  });
});

describe('submission dedup against running and finished jobs (fake Jenkins, in-process worker)', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    system = await startSystem(jenkins.url);
    await system.startWorker();
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  const submit = (body: unknown) => postJson(`${system.baseUrl}${SUBMIT}`, body);
  const status = async (id: string) => (await getJson(`${system.baseUrl}${SUBMIT}/${id}/status`)).body;

  it('dedups while the job runs; once it has finished, the same submit creates a new job', async () => {
    const url = jenkins.addBuild(['QA_Release_8.0', 'slow-dedup'], 12, {
      artifacts: [{ relativePath: 'hapy/reports/junit/slow.xml', size: 400_000 }],
    });
    jenkins.setThrottle(40_000);
    let first: string;
    try {
      const submitted = await submit({ job_url: url });
      expect(submitted.status).toBe(202);
      first = submitted.body.job_id as string;
      const running = await waitFor(async () => {
        const body = await status(first);
        return body.status === 'pending' ? null : body;
      }, 'the job to start');
      expect(running).toMatchObject({ status: 'running' });

      const again = await submit({ job_url: url.replace(/\/$/, ''), skip_existing: false });
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ job_id: first, deduplicated: true });
      expect(again.body.message).toContain('already running');
    } finally {
      jenkins.setThrottle(undefined);
    }
    const done = await waitFor(async () => {
      const body = await status(first);
      return ['completed', 'failed'].includes(body.status as string) ? body : null;
    }, 'the job to finish');
    expect(done.status).toBe('completed');

    const next = await submit({ job_url: url });
    expect(next.status).toBe(202);
    expect(next.body.deduplicated).toBe(false);
    expect(next.body.job_id).not.toBe(first);
    const nextDone = await waitFor(async () => {
      const body = await status(next.body.job_id as string);
      return ['completed', 'failed'].includes(body.status as string) ? body : null;
    }, 'the new job to finish');
    expect(nextDone).toMatchObject({ status: 'completed', error: null });
  });
});
