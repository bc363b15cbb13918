import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, loadDotEnv } from '../shared/config.js';
import { ConfigError } from '../shared/errors.js';
import { createLogger, redactText } from '../shared/logger.js';

/**
 * The all-in-one runner behind `npm start`: a private Redis (unless REDIS_URL is set), one API and
 * WORKERS workers as child processes, stopped together. Children run in their own process groups so
 * a terminal's Ctrl+C reaches only the runner, which then stops them in a deliberate order.
 */

interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<void>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const alive = (child: Child) => child.proc.exitCode === null && child.proc.signalCode === null;
const children: { redis?: Child; api?: Child; workers: Child[] } = { workers: [] };
const all = () => [children.api, ...children.workers, children.redis].filter((c): c is Child => c !== undefined);
const killAll = () => all().forEach((child) => alive(child) && child.proc.kill('SIGKILL'));
let stopping: Promise<void> | undefined;
let logger = createLogger({ service: 'runner', level: 'info' });
let stopTimeoutMs = 35_000; // SHUTDOWN_TIMEOUT_MS + 5 s once the configuration is read

/** WORKERS: how many worker processes to start (default 2). */
/** WORKERS (the runner's own setting), checked with every other: one message names all bad ones. */
function loadRunnerConfig(env: NodeJS.ProcessEnv): { config: ReturnType<typeof loadConfig>; workers: number } {
  const raw = env.WORKERS?.trim() || '2';
  const badWorkers = !/^\d+$/.test(raw) || Number(raw) < 1 ? `  WORKERS: must be a positive integer (got "${raw}")` : undefined;
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (badWorkers && error instanceof ConfigError) throw new ConfigError(`${error.message}\n${badWorkers}`);
    throw error;
  }
  if (badWorkers) throw new ConfigError(`Invalid configuration:\n${badWorkers}`);
  return { config, workers: Number(raw) };
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => {
    if (dir === '') return false;
    try {
      accessSync(path.join(dir, command), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** A free TCP port on `host`: listen on port 0, note what the OS picked, close. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** True when Redis on `port` answers PING with PONG (false while loading its AOF, or not listening). */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
    socket.once('error', () => done(false));
  });
}

function launch(name: string, command: string, args: string[], env: NodeJS.ProcessEnv): Child {
  const proc = spawn(command, args, { env, stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', () => resolve());
    proc.once('error', (error) => {
      logger.error('could not start child', { child: name, error: error.message });
      resolve();
    });
  });
  const child = { name, proc, exited };
  // A child that dies while the runner is not stopping leaves half a system: stop the rest.
  void exited.then(() => {
    if (stopping) return;
    logger.error('child exited unexpectedly; shutting down', { child: name, code: proc.exitCode, signal: proc.signalCode });
    void shutdown(1);
  });
  return child;
}

async function startRedis(): Promise<string> {
  const install = 'Install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) or set REDIS_URL.';
  if (!onPath('redis-server')) throw new ConfigError(`redis-server was not found on PATH. ${install}`);
  const port = await freePort('127.0.0.1');
  const dir = path.resolve('data');
  await mkdir(dir, { recursive: true });
  const args = ['--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction',
    '--bind', '127.0.0.1', '--port', String(port), '--daemonize', 'no', '--loglevel', 'warning'];
  children.redis = launch('redis', 'redis-server', args, process.env);
  const deadline = Date.now() + 10_000;
  while (!stopping && !(await pings(port))) {
    if (Date.now() > deadline) throw new Error(`private redis-server did not answer PING on port ${port} within 10 s`);
    await sleep(100);
  }
  logger.info('private redis started', { port, dir });
  return `redis://127.0.0.1:${port}`;
}

/** Polls GET /readyz until it answers 200; false after 20 s or once the runner is stopping. */
async function apiReady(baseUrl: string): Promise<boolean> {
  const deadline = Date.now() + 20_000;
  while (!stopping && Date.now() < deadline) {
    const status = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.status, () => 0);
    if (status === 200) return true;
    await sleep(200);
  }
  return false;
}

/** SIGTERM, wait up to `timeoutMs`, then SIGKILL. Resolves true when the child stopped in time. */
async function stop(child: Child, timeoutMs: number): Promise<boolean> {
  if (!alive(child)) return true;
  logger.info('stopping child', { child: child.name });
  child.proc.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), timeoutMs);
  });
  const late = await Promise.race([child.exited.then(() => false), timedOut]);
  clearTimeout(timer);
  if (late) {
    logger.warn('child did not stop in time; killing it', { child: child.name, timeout_ms: timeoutMs });
    child.proc.kill('SIGKILL');
    await child.exited;
  }
  logger.info('child stopped', { child: child.name, code: child.proc.exitCode, signal: child.proc.signalCode });
  return !late;
}

/**
 * Stops the system in order, each step once the previous one has exited: the API first, so no new
 * jobs are accepted (it drains: readiness 503, log streams told to reconnect, requests in flight
 * answered); then the workers, which finish (or hand back) their running jobs; then Redis last,
 * because both of them write job state, logs and the queue itself to it until they have exited.
 * Exits 0 only when all of that went cleanly.
 */
function shutdown(code: number): Promise<void> {
  const timeoutMs = stopTimeoutMs;
  stopping ??= (async () => {
    let clean = true;
    if (children.api) clean = (await stop(children.api, timeoutMs)) && clean;
    clean = (await Promise.all(children.workers.map((w) => stop(w, timeoutMs)))).every(Boolean) && clean;
    if (children.redis) clean = (await stop(children.redis, timeoutMs)) && clean;
    if (all().length > 0) logger.info('runner stopped', { clean });
    process.exit(code !== 0 ? code : clean ? 0 : 1);
  })();
  return stopping;
}

function onSignals(): void {
  let count = 0;
  const handler = (signal: NodeJS.Signals) => {
    count += 1;
    if (count === 1) {
      logger.info('stopping (send the signal again to force)', { signal });
      void shutdown(0);
      return;
    }
    logger.warn('second signal: killing every child', { signal });
    killAll();
    process.exit(1);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  // Children live in their own process groups: never leave one behind, whatever ends the runner.
  process.on('exit', killAll);
}

function urlHost(host: string, connectable: boolean): string {
  const target = connectable && host === '0.0.0.0' ? '127.0.0.1' : connectable && host === '::' ? '::1' : host;
  return target.includes(':') ? `[${target}]` : target;
}

async function main(): Promise<void> {
  loadDotEnv();
  // A private redis-server only when no Redis is configured at all (a URL, a Cluster or Sentinels).
  const privateRedis = !process.env.REDIS_URL && !process.env.REDIS_CLUSTER_NODES && !process.env.REDIS_SENTINELS;
  const { config, workers } = loadRunnerConfig(process.env); // validates everything before anything starts
  logger = createLogger({ service: 'runner', level: config.logLevel });
  stopTimeoutMs = config.shutdownTimeoutMs + 5_000;
  onSignals();

  const redisUrl = privateRedis ? await startRedis() : config.redisUrl;
  // PORT=0 lets the OS choose; the runner chooses instead, so it knows where to find the API.
  const port = config.port === 0 ? await freePort(config.host) : config.port;
  if (stopping) return;
  const env = { ...process.env, REDIS_URL: redisUrl, PORT: String(port) };
  const script = (rel: string) => fileURLToPath(new URL(rel, import.meta.url));
  children.api = launch('api', process.execPath, [script('../api/main.js')], env);
  // Each worker serves its own /metrics: METRICS_PORT, METRICS_PORT+1, ... when set, else free ports.
  const metricsUrls: string[] = [];
  for (let i = 1; i <= workers; i += 1) {
    const metricsPort = config.metricsPort !== undefined && config.metricsPort > 0 ? config.metricsPort + i - 1 : await freePort(config.host);
    metricsUrls.push(`http://${urlHost(config.host, false)}:${metricsPort}/metrics`);
    children.workers.push(launch(`worker-${i}`, process.execPath, [script('../worker/main.js')], { ...env, METRICS_PORT: String(metricsPort) }));
  }

  const api = `http://${urlHost(config.host, false)}:${port}`;
  if (!(await apiReady(`http://${urlHost(config.host, true)}:${port}`))) {
    if (stopping) return;
    logger.error('the API did not become ready within 20 s; shutting down');
    return shutdown(1);
  }
  const dashboard = config.dashboardEnabled ? `${api}/admin/queues` : 'disabled (DASHBOARD_ENABLED=false)';
  // Never a password on the terminal; a Cluster or Sentinels are named as configured.
  const redisShown = process.env.REDIS_CLUSTER_NODES
    ? `cluster ${process.env.REDIS_CLUSTER_NODES}`
    : process.env.REDIS_SENTINELS
      ? `sentinels ${process.env.REDIS_SENTINELS}`
      : redactText(redisUrl);
  process.stdout.write(
    `\nferry is running (1 API, ${workers} worker${workers === 1 ? '' : 's'})\n  API:       ${api}\n  Dashboard: ${dashboard}\n` +
      `  Metrics:   ${api}/metrics, workers ${metricsUrls.join(' ')}\n` +
      `  Redis:     ${redisShown}${privateRedis ? ' (private, data in ./data)' : ''}\nPress Ctrl+C to stop.\n\n`,
  );
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) process.stderr.write(`ferry: ${error.message}\n`);
  else logger.error('runner failed to start', { error });
  void shutdown(1);
});
