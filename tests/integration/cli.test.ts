// The `ferry` CLI (dist/cli/main.js, run as a child process) against a real API on the test Redis:
// an in-process API and worker (startSystem), an API child process for the shutdown case, a fake
// Jenkins, and a small TCP proxy between the CLI and an API that the tests cut and restore.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApiClient } from '../../cli/api-client.js';
import { followLog, type LogLine } from '../../cli/follow-log.js';
import { readSse, type SseEvent } from '../../cli/sse-reader.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { getJson, startSystem, testEnv, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const CLI = path.join(ROOT, 'dist/cli/main.js');
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
const READ_TOKEN = 'cli-read-token-0123456789';
const WRITE_TOKEN = 'cli-write-token-0123456789';

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface CliRun {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  readonly done: Promise<CliResult>;
}

const running = new Set<ChildProcess>();

/** The environment of a CLI run: this process's, without any FERRY_* the developer may have set. */
function cliEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('FERRY_')));
  return { ...env, ...vars };
}

/** Starts `node dist/cli/main.js <args>`; killed (and failing the test) after `timeoutMs`. */
function startCli(args: string[], vars: Record<string, string>, timeoutMs = 30_000): CliRun {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: cliEnv(vars), stdio: ['ignore', 'pipe', 'pipe'] });
  return track(child, `ferry ${args.join(' ')}`, timeoutMs);
}

function track(child: ChildProcess, what: string, timeoutMs: number): CliRun {
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${what} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, stdout: () => stdout, stderr: () => stderr, done };
}

const cli = (args: string[], vars: Record<string, string>, timeoutMs?: number) => startCli(args, vars, timeoutMs).done;

/** One JSON object per line (`logs --json`, `--follow --json`). */
function records(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** The complete lines written so far (the last one may still be arriving). */
const completeRecords = (run: CliRun) => records(run.stdout().split('\n').slice(0, -1).join('\n'));
const linesSeen = (run: CliRun) => completeRecords(run).filter((record) => record.type === 'line').length;
/** The job id from the `submitted` record that `submit --follow --json` prints first. */
const submittedId = (run: CliRun) =>
  waitFor(() => completeRecords(run)[0]?.job_id as string | undefined, 'the submitted record', 20_000);

interface PageLine {
  id: string;
  message: string;
  status?: string;
}

/** Every entry of a job's log, from the JSON pages (the reference a follower is compared with). */
async function pageLines(baseUrl: string, id: string): Promise<PageLine[]> {
  const all: PageLine[] = [];
  let after: string | undefined;
  for (;;) {
    const query = after ? `?limit=1000&after=${after}` : '?limit=1000';
    const page = (await getJson(`${baseUrl}/api/v1/jenkins/download/${id}/logs${query}`)).body as { lines: PageLine[]; next: string | null; done: boolean };
    all.push(...page.lines);
    if (page.done || page.lines.length === 0 || !page.next) return all;
    after = page.next;
  }
}

/** Follow output (`--json`) equals the JSON pages: every line once, in order, then the end. */
function expectSameLog(followed: Array<Record<string, unknown>>, pages: PageLine[]): void {
  const lines = followed.filter((record) => record.type === 'line').map((record) => ({ id: record.id, message: record.message }));
  const end = followed.filter((record) => record.type === 'end');
  const pageEnd = pages.at(-1);
  expect(pageEnd?.status).toBeDefined();
  expect(lines).toEqual(pages.slice(0, -1).map((line) => ({ id: line.id, message: line.message })));
  expect(end).toHaveLength(1);
  expect(end[0]).toMatchObject({ id: pageEnd?.id, status: pageEnd?.status });
  expect(followed.at(-1)?.type).toBe('end');
}

/** A TCP proxy to 127.0.0.1:<target>; `cut` destroys every connection and stops listening. */
interface Proxy {
  readonly url: string;
  retarget(port: number): void;
  cut(): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

async function startProxy(targetPort: number): Promise<Proxy> {
  let target = targetPort;
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      const created = net.createServer((client) => {
        const upstream = net.connect(target, '127.0.0.1');
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.on('close', () => sockets.delete(socket));
          socket.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream).pipe(client);
      });
      created.once('error', reject);
      created.listen(port, '127.0.0.1', () => resolve((created.address() as net.AddressInfo).port));
      server = created;
    });
  const stop = async () => {
    for (const socket of sockets) socket.destroy();
    const closing = server;
    server = undefined;
    if (closing) await new Promise<void>((resolve) => closing.close(() => resolve()));
  };
  const port = await listen(0);
  return {
    url: `http://127.0.0.1:${port}`,
    retarget(next) {
      target = next;
    },
    cut: stop,
    async restore() {
      await listen(port);
    },
    close: stop,
  };
}

describe('ferry CLI against a real API', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let secured: TestSystem;
  let quickUrl: string;
  let slowUrl: string;
  let cancelUrl: string;
  let brokenUrl: string;
  const proxies: Proxy[] = [];
  const services: ChildService[] = [];
  const env = () => ({ FERRY_URL: system.baseUrl });
  const apiStatus = async (id: string) => (await getJson(`${system.baseUrl}/api/v1/jenkins/download/${id}/status`)).body;
  const release = () => `cli-${randomUUID().slice(0, 8)}`;
  /**
   * `ferry submit <slow job> --follow --json` against `url`: the job is submitted only once the CLI
   * runs, so it follows the log live however slowly processes start on a busy machine.
   */
  const followSlow = (url: string) => startCli(['submit', slowUrl, '--release', release(), '--follow', '--json'], { FERRY_URL: url });

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    quickUrl = jenkins.addBuild(['QA_Release_9.1', 'quick'], 1, {
      artifacts: [
        { relativePath: 'hapy/reports/junit/a.xml', content: '<testsuite name="a"/>' },
        { relativePath: 'hapy/run.order.txt', content: 'a\nb\n' },
      ],
    });
    // Six modules downloaded one after the other, each ~0.6 s (60 kB at 100 kB/s): a log that
    // grows for about 4 s, long enough to cut a connection in the middle of it.
    const modules = ['A', 'B', 'C', 'D', 'E', 'F'];
    for (const name of modules) {
      jenkins.addBuild(['QA_Release_9.1', `SLOW-${name}`], 1, { artifacts: [{ relativePath: `hapy/slow-${name}.bin`, size: 60_000 }] });
    }
    jenkins.setFault('slow-', { kind: 'trickle', bytesPerSecond: 100_000 });
    slowUrl = jenkins.addBuild(['QA_Release_9.1', 'slow-parent'], 10, {
      artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify(Object.fromEntries(modules.map((name) => [`SLOW_${name}`, 1]))) }],
    });
    // 2 MB at 50 kB/s: runs for 40 s unless cancelled.
    cancelUrl = jenkins.addBuild(['QA_Release_9.1', 'cancel-me'], 4, { artifacts: [{ relativePath: 'hapy/cancel-big.bin', size: 2_000_000 }] });
    jenkins.setFault('cancel-big', { kind: 'trickle', bytesPerSecond: 50_000 });
    brokenUrl = jenkins.addBuild(['QA_Release_9.1', 'broken'], 3, { artifacts: [{ relativePath: 'hapy/missing.xml', content: '<x/>' }] });
    jenkins.setArtifactStatus('missing.xml', 404);

    system = await startSystem(jenkins.url);
    await system.startWorker();
    secured = await startSystem(jenkins.url, {
      API_TOKENS: `read:reader:${READ_TOKEN},write:ci:${WRITE_TOKEN}`,
      TOKEN_SECRET: 'cli-stream-secret-0123456789abcdef0123456789',
    });
    await secured.startWorker();
  });

  afterEach(() => {
    // A test that failed half-way may leave a follower running.
    for (const child of running) child.kill('SIGKILL');
    running.clear();
  });

  afterAll(async () => {
    for (const proxy of proxies) await proxy.close();
    for (const service of services) await service.stop();
    await secured?.stop();
    await system?.stop();
    await jenkins?.close();
  });

  it('submit prints the job id (JSON with --json); status, list --status and logs show the job', async () => {
    const human = await cli(['submit', quickUrl, '--release', release()], env());
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^Job ${UUID.source} accepted: Download of ${quickUrl}`));
    const id = UUID.exec(human.stdout)?.[0] as string;

    const json = await cli(['submit', quickUrl, '--release', release(), '--artifacts', 'hapy/**/*.xml', 'hapy/*.txt', '--json'], env());
    expect(json.code).toBe(0);
    const answer = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(answer).toMatchObject({ deduplicated: false, status_url: `/api/v1/jenkins/download/${String(answer.job_id)}/status` });
    const other = answer.job_id as string;

    for (const job of [id, other]) await waitFor(async () => (await apiStatus(job)).status === 'completed', `job ${job} completed`);
    expect(((await apiStatus(other)).files as unknown[]).length).toBe(2);

    const status = await cli(['status', id], env());
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^Job +${id}\\nStatus +completed\\n`));
    expect(status.stdout).toMatch(/Files +2 \(/);
    const statusJson = JSON.parse((await cli(['status', id, '--json'], env())).stdout) as Record<string, unknown>;
    expect(statusJson).toMatchObject({ id, status: 'completed', job_url: quickUrl });

    const listed = JSON.parse((await cli(['list', '--status', 'completed', '--json'], env())).stdout) as { jobs: Array<{ id: string; status: string }> };
    expect(listed.jobs.map((job) => job.id)).toEqual(expect.arrayContaining([id, other]));
    expect(listed.jobs.every((job) => job.status === 'completed')).toBe(true);
    const failedOnly = JSON.parse((await cli(['list', '--status', 'failed', '--json'], env())).stdout) as { jobs: Array<{ id: string }> };
    expect(failedOnly.jobs.map((job) => job.id)).not.toContain(id);
    const table = await cli(['list', '--status', 'completed'], env());
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID +STATUS +RELEASE +PROGRESS +ACCEPTED +JOB$/);
    expect(table.stdout).toMatch(new RegExp(`^${id} +completed +cli-\\S+ +100% +\\S+ +${quickUrl}$`, 'm'));

    const pages = await pageLines(system.baseUrl, id);
    const logs = await cli(['logs', id], env());
    expect(logs.code).toBe(0);
    expect(logs.stdout.trimEnd().split('\n').map((line) => line.replace(/^\d\d:\d\d:\d\d {2}/, ''))).toEqual(pages.map((line) => line.message));
    expect(logs.stdout.trimEnd().split('\n').at(-1)).toMatch(/Job completed$/);
    const logsJson = await cli(['logs', id, '--json'], env());
    expect(logsJson.code).toBe(0);
    expectSameLog(records(logsJson.stdout), pages);
  });

  it('logs --follow prints every line exactly once, in order, and exits 0 when the job completes', async () => {
    const following = followSlow(system.baseUrl);
    const id = await submittedId(following);
    const human = await cli(['logs', id, '--follow'], env());
    const json = await following.done;
    expect(json.code).toBe(0);
    expect(human.code).toBe(0);
    const pages = await pageLines(system.baseUrl, id);
    expect(pages.length).toBeGreaterThan(10);
    expectSameLog(records(json.stdout), pages);
    expect(records(json.stdout).some((record) => record.type === 'progress')).toBe(true);
    // Human output: each line once (with its time), then the end; no progress bar off a terminal.
    const printed = human.stdout.trimEnd().split('\n').map((line) => line.replace(/^\d\d:\d\d:\d\d {2}/, ''));
    expect(printed).toEqual([...pages.slice(0, -1).map((line) => line.message), 'Job completed']);
    expect(human.stdout).not.toContain('\r');

    // submit --follow: the submission, then the same follow.
    const submitted = await cli(['submit', slowUrl, '--release', release(), '--follow'], env());
    expect(submitted.code).toBe(0);
    const followedId = UUID.exec(submitted.stdout)?.[0] as string;
    const followedPages = await pageLines(system.baseUrl, followedId);
    expect(submitted.stdout.trimEnd().split('\n').slice(1).map((line) => line.replace(/^\d\d:\d\d:\d\d {2}/, ''))).toEqual([
      ...followedPages.slice(0, -1).map((line) => line.message),
      'Job completed',
    ]);
  });

  it('logs --follow survives a dropped connection: reconnects with Last-Event-ID, nothing lost or repeated', async () => {
    const apiPort = Number(new URL(system.baseUrl).port);
    const proxy = await startProxy(apiPort);
    proxies.push(proxy);
    const run = followSlow(proxy.url);
    const id = await submittedId(run);
    await waitFor(() => linesSeen(run) >= 3, 'three lines through the proxy', 20_000);
    await proxy.cut();
    const beforeCut = linesSeen(run);
    // Down for a second: the job writes about two more modules' lines meanwhile.
    await sleep(1_000);
    await proxy.restore();
    const result = await run.done;
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/log stream interrupted .*reconnecting in \d+\.\d s, resuming after line 0-\d+/);
    const pages = await pageLines(system.baseUrl, id);
    expect(pages.length - 1).toBeGreaterThan(beforeCut);
    expectSameLog(records(result.stdout), pages);
  });

  it('logs --follow moves to another API when its API process stops (event: shutdown), nothing lost or repeated', async () => {
    const port = await freePort();
    const apiEnv = testEnv(jenkins.url, system.downloadDir, { QUEUE_PREFIX: system.config.queuePrefix, PORT: String(port), SHUTDOWN_TIMEOUT_MS: '4000' });
    const api = startScript('api', apiEnv);
    services.push(api);
    await waitReady(`http://127.0.0.1:${port}`, api);
    const proxy = await startProxy(port);
    proxies.push(proxy);

    const run = followSlow(proxy.url);
    const id = await submittedId(run);
    await waitFor(() => linesSeen(run) >= 3, 'three lines from the API process', 20_000);
    // New connections go to the in-process API; the API process drains and ends its streams.
    proxy.retarget(Number(new URL(system.baseUrl).port));
    expect(await api.stop()).toBe(0);
    const result = await run.done;
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/log stream interrupted \(the API is shutting down\)/);
    expectSameLog(records(result.stdout), await pageLines(system.baseUrl, id));
  });

  it('cancel stops a running job: the follower exits 3, status exits 3, a second cancel says already cancelled', async () => {
    const follower = startCli(['submit', cancelUrl, '--release', release(), '--follow', '--json'], env());
    const id = await submittedId(follower);
    expect(completeRecords(follower)[0]?.type).toBe('submitted');
    await waitFor(async () => (await apiStatus(id)).status === 'running', 'the job running', 20_000);

    const cancelled = await cli(['cancel', id], env());
    expect(cancelled.code).toBe(0);
    expect(cancelled.stdout).toMatch(new RegExp(`^Job ${id} (cancelled|cancelling)`));
    const result = await follower.done;
    expect(result.code).toBe(3);
    expect(records(result.stdout).at(-1)).toMatchObject({ type: 'end', status: 'cancelled' });

    const status = await cli(['status', id], env());
    expect(status.code).toBe(3);
    expect(status.stdout).toMatch(/Status +cancelled/);
    const again = await cli(['cancel', id, '--json'], env());
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ job_id: id, status: 'cancelled' });
    expect((await cli(['logs', id], env())).code).toBe(3);

    // A completed job cannot be cancelled: exit 1, saying so.
    const done = await cli(['submit', quickUrl, '--release', release(), '--follow', '--json'], env());
    expect(done.code).toBe(0);
    const doneId = (records(done.stdout)[0] as { job_id: string }).job_id;
    const refused = await cli(['cancel', doneId], env());
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`job ${doneId} already completed; nothing to cancel`);
  });

  it('a failed job exits 2 from submit --follow, status and logs', async () => {
    const followed = await cli(['submit', brokenUrl, '--release', release(), '--follow'], env());
    expect(followed.code).toBe(2);
    expect(followed.stdout.trimEnd().split('\n').at(-1)).toMatch(/Job failed: .*404/);
    const id = UUID.exec(followed.stdout)?.[0] as string;
    const status = await cli(['status', id, '--json'], env());
    expect(status.code).toBe(2);
    expect(JSON.parse(status.stdout)).toMatchObject({ id, status: 'failed' });
    const logs = await cli(['logs', id, '--json'], env());
    expect(logs.code).toBe(2);
    expect(records(logs.stdout).at(-1)).toMatchObject({ type: 'end', status: 'failed' });
  });

  it('with API_TOKENS: 401 without FERRY_TOKEN (saying to set it), 403 for a read token, works with a write token', async () => {
    const url = { FERRY_URL: secured.baseUrl };
    const anonymous = await cli(['list'], url);
    expect(anonymous.code).toBe(1);
    expect(anonymous.stdout).toBe('');
    expect(anonymous.stderr).toContain('401 UNAUTHORIZED');
    expect(anonymous.stderr).toContain('set FERRY_TOKEN');
    const wrong = await cli(['list'], { ...url, FERRY_TOKEN: 'not-a-token-of-this-api' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('FERRY_TOKEN was not accepted');

    const reader = await cli(['submit', quickUrl, '--release', release()], { ...url, FERRY_TOKEN: READ_TOKEN });
    expect(reader.code).toBe(1);
    expect(reader.stderr).toContain('403 FORBIDDEN');

    const writer = await cli(['submit', quickUrl, '--release', release(), '--follow', '--json'], { ...url, FERRY_TOKEN: WRITE_TOKEN });
    expect(writer.code).toBe(0);
    const followed = records(writer.stdout);
    expect(followed.at(-1)).toMatchObject({ type: 'end', status: 'completed' });
    const id = followed[0]?.job_id as string;
    const status = await cli(['status', id, '--json'], { ...url, FERRY_TOKEN: READ_TOKEN });
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ id, status: 'completed', submitted_by: { role: 'write', label: 'token:ci' } });
    for (const output of [anonymous, wrong, reader, writer, status]) {
      expect(output.stdout + output.stderr).not.toContain(WRITE_TOKEN);
      expect(output.stdout + output.stderr).not.toContain(READ_TOKEN);
    }
  });

  it('usage errors, an unknown job and an unreachable API exit 1 with a message; --help exits 0', async () => {
    const help = await cli(['--help'], env());
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Exit codes:');
    for (const args of [[], ['frobnicate'], ['status'], ['list', '--status', 'bogus'], ['status', 'a', '--follow']]) {
      const result = await cli(args, env());
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr).toContain('ferry --help');
    }
    const unknown = await cli(['status', randomUUID()], env());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('404 NOT_FOUND');
    const closedPort = await freePort();
    // Six tries with backoff (about 6 s) before it gives up on an API that is not there.
    const unreachable = await cli(['list'], { FERRY_URL: `http://127.0.0.1:${closedPort}` });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain(`cannot reach http://127.0.0.1:${closedPort}: ECONNREFUSED`);
  });

  const hasScript = spawnSync('script', ['--version']).status === 0;
  it.skipIf(!hasScript)('draws a progress bar when stdout is a terminal (util-linux script gives it one)', async () => {
    const command = [process.execPath, CLI, 'submit', slowUrl, '--release', release(), '--follow'].map((part) => `'${part}'`).join(' ');
    const child = spawn('script', ['-qec', command, '/dev/null'], { cwd: ROOT, env: cliEnv(env()), stdio: ['ignore', 'pipe', 'pipe'] });
    const result = await track(child, 'ferry logs --follow in a terminal', 30_000).done;
    expect(result.code).toBe(0);
    // The bar is drawn after a carriage return and an erase-line (ESC [2K), here spelled <EL>.
    const shown = result.stdout.replaceAll('\u001b[2K', '<EL>');
    expect(shown).toMatch(/\r<EL>\[#*\.*\] +\d+% {2}modules \d\/6 {2}files \d\/6 {2}\d/);
    // Erased before the end line, which is printed plainly.
    expect(shown.trimEnd()).toMatch(/\r<EL>\d\d:\d\d:\d\d {2}Job completed$/);
  });
});

describe('the CLI\'s SSE reader', () => {
  /** A body delivering `chunks` one by one; `fail` errors the stream after them (a dropped connection). */
  const body = (source: readonly string[], fail = false) => {
    const chunks = [...source];
    return new ReadableStream<Uint8Array>({
      // One chunk per read, then the end or the error (erroring at once would discard queued chunks).
      pull(controller) {
        const chunk = chunks.shift();
        if (chunk !== undefined) controller.enqueue(new TextEncoder().encode(chunk));
        else if (fail) controller.error(new TypeError('terminated'));
        else controller.close();
      },
    });
  };
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const events: SseEvent[] = [];
    let error: unknown;
    try {
      for await (const event of readSse(stream, 5_000)) events.push(event);
    } catch (caught) {
      error = caught;
    }
    return { events, error };
  };

  it('parses CRLF, LF and CR line ends split anywhere, comments and multi-line data', async () => {
    const text = ': ping\r\n\r\nid: 0-1\r\ndata: {"a":1}\r\n\r\nevent: progress\ndata: x\ndata: y\n\nid: 0-2\rdata:z\r\r';
    for (const size of [1, 2, 3, 7, text.length]) {
      const chunks = text.match(new RegExp(`[\\s\\S]{1,${size}}`, 'g')) ?? [];
      const { events, error } = await collect(body(chunks));
      expect(error).toBeUndefined();
      expect(events).toEqual([
        { event: 'message', id: '0-1', data: '{"a":1}' },
        { event: 'progress', data: 'x\ny' },
        { event: 'message', id: '0-2', data: 'z' },
      ]);
    }
  });

  it('never yields an event cut off by a dropped connection, so its id never counts as seen', async () => {
    const { events, error } = await collect(body(['id: 0-1\ndata: {"m":1}\n\n', 'id: 0-2\ndata: {"m":2}\n'], true));
    expect(events).toEqual([{ event: 'message', id: '0-1', data: '{"m":1}' }]);
    expect(error).toBeInstanceOf(TypeError);
  });
});

describe('the CLI\'s log follower against an API that answers 500 once', () => {
  it('tries again after a 5xx (not only 502/503/504) and resumes after the last line it had', async () => {
    const asked: Array<string | undefined> = [];
    const server = createServer((req, res) => {
      asked.push(req.headers['last-event-id'] as string | undefined);
      if (asked.length === 2) {
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'INTERNAL', message: 'Internal server error' } }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (asked.length === 1) {
        // One line, then the connection ends before the job does.
        res.end(`id: 0-1\ndata: ${JSON.stringify({ message: 'first', timestamp: '2026-01-01T00:00:00Z' })}\n\n`);
        return;
      }
      res.end(
        `id: 0-2\ndata: ${JSON.stringify({ message: 'second', timestamp: '2026-01-01T00:00:01Z' })}\n\n` +
          `id: 0-3\ndata: ${JSON.stringify({ status: 'completed', error: null })}\n\nevent: complete\ndata: {"status":"completed"}\n\n`,
      );
    });
    server.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const lines: LogLine[] = [];
      const reasons: string[] = [];
      const end = await followLog({
        client: createApiClient({ baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }),
        jobId: 'job-1',
        onLine: (line) => lines.push(line),
        onReconnect: ({ reason }) => reasons.push(reason),
        sleep: async () => undefined,
      });
      expect(end.status).toBe('completed');
      expect(lines.map((line) => line.message)).toEqual(['first', 'second']);
      expect(asked).toEqual([undefined, '0-1', '0-1']);
      expect(reasons.some((reason) => reason.includes('500'))).toBe(true);
    } finally {
      server.close();
    }
  });
});

