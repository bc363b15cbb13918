// The all-in-one runner (`npm start` = dist/runner/main.js) as a user runs it: no REDIS_URL, so it
// starts a private redis-server with its data under ./data, one API and one worker; SIGTERM must
// stop all of them, in order (API, worker, Redis), and exit 0, leaving nothing behind.
import { describe, it, expect, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait-for.js';

const runnerScript = fileURLToPath(new URL('../../dist/runner/main.js', import.meta.url));

/** Direct children of `pid`, from /proc (Linux); empty where /proc is not available. */
function childPids(pid: number): number[] {
  if (!existsSync('/proc/self/stat')) return [];
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .flatMap((entry) => {
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        // "pid (comm) state ppid ...": comm may contain spaces, so parse after the last ')'.
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return ppid === pid ? [Number(entry)] : [];
      } catch {
        return [];
      }
    });
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** True when something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('npm start runner', () => {
  let runner: ChildProcess | undefined;
  let tmp: string | undefined;
  let children: number[] = [];

  afterAll(async () => {
    // Whatever happened above, leave no runner and no (detached) child of it running: a test that
    // failed before it listed the children lists them now, before the runner goes.
    if (runner && runner.exitCode === null && runner.signalCode === null) {
      if (children.length === 0) children = childPids(runner.pid as number);
      runner.kill('SIGKILL');
    }
    for (const pid of children) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('starts a private Redis, the API and a worker, and on SIGTERM stops the API, then the worker, then Redis', async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'ferry-runner-'));
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      JENKINS_URL: 'http://127.0.0.1:9/',
      WORKERS: '1',
      // info: the runner's 'stopping child' / 'child stopped' lines show the stop order.
      LOG_LEVEL: 'info',
      DOWNLOAD_DIR: path.join(tmp, 'downloads'),
    };
    delete env.REDIS_URL;

    let output = '';
    const proc = spawn(process.execPath, [runnerScript], { cwd: tmp, env, stdio: ['ignore', 'pipe', 'pipe'] });
    runner = proc;
    proc.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    proc.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));

    const baseUrl = `http://127.0.0.1:${port}`;
    await waitFor(
      async () => {
        if (proc.exitCode !== null) throw new Error(`runner exited with ${proc.exitCode}:\n${output}`);
        const response = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(1_000) });
        return response.status === 200;
      },
      'the runner API /readyz to answer 200',
      30_000,
      200,
    );
    // The banner is written right after /readyz first answers 200.
    await waitFor(() => output.includes('Press Ctrl+C to stop.'), 'the banner with the dashboard URL', 5_000);
    expect(existsSync(path.join(tmp, 'data')), output).toBe(true);
    expect(output).toContain(`${baseUrl}/admin/queues`);
    // Each worker serves its own /metrics.
    const workerMetrics = /workers (.+)\n/.exec(output)?.[1]?.split(' ') ?? [];
    expect(new Set(workerMetrics).size, output).toBe(1);
    for (const url of workerMetrics) {
      await waitFor(async () => (await fetch(url, { signal: AbortSignal.timeout(1_000) }).catch(() => null))?.status === 200, `worker metrics at ${url}`, 10_000);
    }
    const redisPort = Number(/redis:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
    expect(redisPort, output).toBeGreaterThan(0);
    expect(await accepts(redisPort)).toBe(true);

    children = childPids(proc.pid as number);
    if (existsSync('/proc/self/stat')) expect(children, 'redis-server, api and one worker').toHaveLength(3);

    proc.kill('SIGTERM');
    const code = await Promise.race([
      exited,
      new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 20_000).unref()),
    ]);
    expect(code, output).toBe(0);

    expect(children.filter(isRunning), 'children still running after the runner exited').toEqual([]);
    expect(await accepts(redisPort), 'private Redis still accepts connections').toBe(false);
    expect(await accepts(port), 'API port still accepts connections').toBe(false);
    const apiAnswer = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.status, () => 'no answer');
    expect(apiAnswer).toBe('no answer');

    // The order, from the shared output (one pipe, so lines are in the order they were written):
    // the API stops first, the worker is signalled only once the API has exited, Redis only once
    // the worker has exited.
    const lines = output.split('\n');
    const entries = lines.map((line) => {
      try {
        return JSON.parse(line) as { service?: string; message?: string; child?: string };
      } catch {
        return {};
      }
    });
    const at = (what: string, predicate: (entry: { service?: string; message?: string; child?: string }, line: string) => boolean) => {
      const index = entries.findIndex((entry, i) => predicate(entry, lines[i] ?? ''));
      expect(index, `${what} in the runner's output:\n${output}`).toBeGreaterThanOrEqual(0);
      return index;
    };
    const fromRunner = (message: string, child: string) => (entry: { service?: string; message?: string; child?: string }) =>
      entry.service === 'runner' && entry.message === message && entry.child === child;
    const sequence = [
      at('runner stopping the API', fromRunner('stopping child', 'api')),
      at('the API shutting down', (entry) => entry.service === 'api' && entry.message === 'shutting down'),
      at('runner: API stopped', fromRunner('child stopped', 'api')),
      at('runner stopping the worker', fromRunner('stopping child', 'worker-1')),
      at('the worker shutting down', (entry) => entry.service === 'worker' && entry.message === 'shutting down'),
      at('runner: worker stopped', fromRunner('child stopped', 'worker-1')),
      at('runner stopping Redis', fromRunner('stopping child', 'redis')),
      at('Redis exiting', (_entry, line) => line.includes('ready to exit, bye bye')),
      at('runner: Redis stopped', fromRunner('child stopped', 'redis')),
    ];
    expect(sequence).toEqual([...sequence].sort((x, y) => x - y));
  }, 90_000);

  it('names a bad WORKERS together with every other bad variable, and starts nothing', async () => {
    const cwd = await mkdtemp(path.join(os.tmpdir(), 'ferry-runner-bad-'));
    try {
      const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(REDIS_|JENKINS_|PORT$|WORKERS$)/.test(name)));
      const child = spawn(process.execPath, [runnerScript], { cwd, env: { ...env, WORKERS: 'zero', PORT: 'eighty' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).not.toBe(0);
      for (const name of ['WORKERS', 'PORT', 'JENKINS_URL']) expect(stderr).toContain(name);
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

