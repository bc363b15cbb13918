// API graceful shutdown with real processes: two API processes and a worker on the shared test
// Redis; one API gets SIGTERM while a log stream and a request are open on it.
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { logLines, openSse, type SseReader } from '../helpers/sse-client.js';
import { getJson, postJson, testEnv } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const SHUTDOWN_TIMEOUT_MS = 8_000;

interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection (no keep-alive pool), so every request is a new client. */
function rawRequest(url: string, method = 'GET', body?: string): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method,
      agent: false,
      headers: body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    req.setTimeout(5_000, () => req.destroy(new Error(`no answer from ${method} ${url} within 5 s`)));
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Resolves with the exit code, or 'timeout' after `ms`. */
function exitWithin(service: ChildService, ms: number): Promise<number | null | 'timeout'> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return Promise.resolve(service.child.exitCode);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms);
    service.child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('API graceful shutdown on SIGTERM/SIGINT (real processes)', () => {
  let jenkins: FakeJenkins;
  let downloadDir: string;
  let env: Record<string, string>;
  const services: ChildService[] = [];
  const readers: SseReader[] = [];

  const startApi = async (): Promise<{ service: ChildService; url: string }> => {
    const port = await freePort();
    const service = startScript('api', { ...env, PORT: String(port) });
    services.push(service);
    const url = `http://127.0.0.1:${port}`;
    await waitReady(url, service);
    return { service, url };
  };

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    downloadDir = await mkdtemp(path.join(os.tmpdir(), 'ferry-shutdown-'));
    env = testEnv(jenkins.url, downloadDir, { LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) });
    services.push(startScript('worker', env));
  });

  afterAll(async () => {
    jenkins?.setThrottle(undefined);
    for (const reader of readers) reader.close();
    const codes = await Promise.all(services.map((service) => service.stop()));
    await jenkins?.close();
    if (downloadDir) await rm(downloadDir, { recursive: true, force: true });
    expect(codes).toEqual(services.map(() => 0));
  });

  it('SIGTERM: readiness and new requests 503 at once, SSE gets event: shutdown, a request in flight is answered, exit 0 in time; the reader resumes on another API with Last-Event-ID, losing and repeating nothing', async () => {
    const [a, b] = await Promise.all([startApi(), startApi()]);
    const bigBuild = jenkins.addBuild(['QA_Release_8.1', 'shutdown-run'], 7, {
      artifacts: Array.from({ length: 8 }, (_, index) => ({ relativePath: `hapy/reports/junit/s-${index}.xml`, size: 30_000 + index })),
    });
    const smallBuild = jenkins.addBuild(['QA_Release_8.1', 'in-flight'], 1, {
      artifacts: [{ relativePath: 'hapy/order.txt', content: 'a\nb\n' }],
    });
    // 10 KB/s per response: each artifact takes about 3 s, so the job runs through the whole stop.
    jenkins.setThrottle(10_000);

    const submitted = await postJson(`${b.url}/api/v1/jenkins/download`, { job_url: bigBuild });
    expect(submitted.status).toBe(202);
    const jobId = submitted.body.job_id as string;
    const streamPath = String(submitted.body.logs_url);
    const reference = await openSse(`${b.url}${streamPath}`);
    const onA = await openSse(`${a.url}${streamPath}`);
    readers.push(reference, onA);
    await waitFor(() => logLines(onA.events).length >= 2, 'two log lines on API A before its stop', 20_000);

    // A submit whose headers have reached API A but whose body has not: in flight when the signal comes.
    const payload = JSON.stringify({ job_url: smallBuild });
    const inFlight = http.request(`${a.url}/api/v1/jenkins/download`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    });
    const inFlightAnswer = new Promise<RawAnswer>((resolve, reject) => {
      inFlight.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      });
      inFlight.on('error', reject);
    });
    inFlight.flushHeaders();
    inFlight.write(payload.slice(0, 5));
    // Loopback: 300 ms is ample for the headers to reach the server and the request to start.
    await new Promise((resolve) => setTimeout(resolve, 300));

    const exit = exitWithin(a.service, SHUTDOWN_TIMEOUT_MS + 2_000);
    const signalledAt = Date.now();
    process.kill(a.service.child.pid as number, 'SIGTERM');

    // Readiness turns 503 at once (the first probe may beat the signal's delivery by a few ms).
    const ready = await waitFor(
      async () => {
        const answer = await rawRequest(`${a.url}/readyz`);
        return answer.status === 503 ? answer : null;
      },
      'API A /readyz to answer 503',
      1_000,
      10,
    );
    const readyzAfterMs = Date.now() - signalledAt;
    expect(JSON.parse(ready.body)).toEqual({ status: 'unready', reason: 'shutting down' });
    expect((await rawRequest(`${a.url}/healthz`)).status).toBe(200);

    // A new request (new connection) is turned away, with a code, Retry-After and Connection: close.
    const refused = await rawRequest(`${a.url}/api/v1/jenkins/download/${jobId}/status`);
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'SHUTTING_DOWN' } });
    expect(refused.headers.connection).toBe('close');
    expect(refused.headers['retry-after']).toBe('1');
    const refusedSubmit = await rawRequest(`${a.url}/api/v1/jenkins/download`, 'POST', JSON.stringify({ job_url: bigBuild }));
    expect(refusedSubmit.status).toBe(503);
    expect(JSON.parse(refusedSubmit.body)).toMatchObject({ error: { code: 'SHUTTING_DOWN' } });

    // The open log stream ends with event: shutdown naming the last line it got.
    await Promise.race([onA.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('stream on A not closed within 3 s')), 3_000))]);
    const last = onA.events.at(-1);
    expect(last?.event).toBe('shutdown');
    const seenOnA = logLines(onA.events);
    expect(seenOnA.length).toBeGreaterThanOrEqual(2);
    const lastId = (seenOnA.at(-1) as { id: string }).id;
    expect(JSON.parse(last?.data ?? '{}')).toMatchObject({ last_event_id: lastId });
    expect(onA.events.some((event) => event.event === 'complete')).toBe(false);

    // The request in flight is answered after the drain window (2 s here): the server waited for it.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, signalledAt + 2_500 - Date.now())));
    expect(a.service.child.exitCode, 'API A exited before its request in flight was answered').toBeNull();
    inFlight.end(payload.slice(5));
    const answered = await inFlightAnswer;
    expect(answered.status, answered.body).toBe(202);
    expect(answered.headers.connection).toBe('close');
    const inFlightJob = (JSON.parse(answered.body) as { job_id: string }).job_id;

    const code = await exit;
    const exitAfterMs = Date.now() - signalledAt;
    expect(code, a.service.output()).toBe(0);
    expect(exitAfterMs).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    console.log(`api-shutdown: /readyz 503 ${readyzAfterMs} ms after SIGTERM; exit 0 after ${exitAfterMs} ms (SHUTDOWN_TIMEOUT_MS ${SHUTDOWN_TIMEOUT_MS})`);

    // Reconnect elsewhere with Last-Event-ID, as EventSource does after the stream ends.
    const onB = await openSse(`${b.url}${streamPath}`, { 'last-event-id': lastId });
    readers.push(onB);
    jenkins.setThrottle(undefined);
    await Promise.all([onB.closed, reference.closed]);

    const all = logLines(reference.events);
    const resumed = logLines(onB.events);
    expect(resumed.length).toBeGreaterThan(0);
    expect([...seenOnA, ...resumed]).toEqual(all);
    expect(new Set(all.map((line) => line.id)).size).toBe(all.length);
    expect(onB.events.at(-1)?.event).toBe('complete');
    const status = await getJson(`${b.url}/api/v1/jenkins/download/${jobId}/status`);
    expect(status.body).toMatchObject({ status: 'completed', error: null });
    await waitFor(
      async () => (await getJson(`${b.url}/api/v1/jenkins/download/${inFlightJob}/status`)).body.status === 'completed',
      'the job submitted in flight to complete',
      20_000,
      100,
    );
  }, 90_000);

  it('SIGINT with nothing in flight: exits 0 once the drain window has passed', async () => {
    const c = await startApi();
    const exit = exitWithin(c.service, SHUTDOWN_TIMEOUT_MS + 2_000);
    const signalledAt = Date.now();
    process.kill(c.service.child.pid as number, 'SIGINT');
    const ready = await waitFor(
      async () => ((await rawRequest(`${c.url}/readyz`)).status === 503 ? true : null),
      'API C /readyz to answer 503',
      1_000,
      10,
    );
    expect(ready).toBe(true);
    expect(await exit, c.service.output()).toBe(0);
    const elapsed = Date.now() - signalledAt;
    // The drain window is min(2 s, SHUTDOWN_TIMEOUT_MS / 4) = 2 s here; the rest is closing Redis.
    expect(elapsed).toBeGreaterThanOrEqual(1_900);
    expect(elapsed).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    // Nothing listens any more.
    await expect(rawRequest(`${c.url}/healthz`)).rejects.toThrow();
  }, 30_000);
});
