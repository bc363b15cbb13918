import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';

/** A free TCP port on 127.0.0.1 (the OS picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Two distinct free loopback ports for a cluster node: its client port and its cluster bus port
 * (passed as `--cluster-port`). Redis's default bus port, port + 10000, is not checked by anyone:
 * it can be taken, or above 65535 for a port from the top of the ephemeral range.
 */
export async function freeClusterPorts(): Promise<{ port: number; busPort: number }> {
  const hold = async () =>
    new Promise<net.Server>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve(server));
    });
  const servers = [await hold(), await hold()];
  const [port, busPort] = servers.map((server) => (server.address() as net.AddressInfo).port) as [number, number];
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return { port, busPort };
}

/** Keeps the last `keep` characters a child process printed (stdout and stderr), for error messages. */
export function recordOutput(child: ChildProcess, keep = 4_000): () => string {
  let output = '';
  const record = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-keep);
  };
  child.stdout?.on('data', record);
  child.stderr?.on('data', record);
  return () => output;
}

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

/** Starts a private redis-server on a free loopback port (never the machine's 6379). */
export async function startRedisServer(extraArgs: string[] = []): Promise<RedisServer> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-redis-'));
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
      '--maxmemory-policy', 'noeviction', ...extraArgs],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `redis://127.0.0.1:${port}`;
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => undefined);
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch (error) {
      probe.disconnect();
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`redis-server did not start: ${String(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  probe.disconnect();
  return {
    url,
    port,
    async stop() {
      child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A private redis-server a test can stop, freeze and start again on the same port with the same
 * data dir (so `--appendonly yes` brings the data back), for outage tests. Never the global one.
 */
export interface RestartableRedisServer {
  readonly url: string;
  readonly port: number;
  /** Its data dir (AOF, dump), kept across restarts and removed by destroy(). */
  readonly dir: string;
  /** True while the process runs (paused included). */
  readonly running: boolean;
  /** Everything redis-server printed, across restarts (for failure messages). */
  readonly output: () => string;
  /**
   * Stops the process, keeping port and dir. SIGTERM is Redis's SHUTDOWN (it writes and fsyncs the
   * AOF first); SIGKILL is a crash. Resolves once it has exited (SIGKILL after 10 s otherwise).
   */
  halt(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** Starts it again with the same arguments; resolves once it answers PING (AOF loaded). */
  start(): Promise<void>;
  /** SIGSTOP: connections stay open but Redis answers nothing, like a cut network. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Stops it if running and removes its data dir. Idempotent; call it in afterAll. */
  destroy(): Promise<void>;
}

/** Resolves once `url` answers PING (not LOADING), or throws after `timeoutMs` or when `gone()`. */
async function waitForPing(url: string, timeoutMs: number, gone: () => boolean, output: () => string): Promise<void> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableReadyCheck: false });
  probe.on('error', () => undefined);
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      try {
        if (probe.status !== 'ready' && probe.status !== 'connect') await probe.connect();
        await probe.ping();
        return;
      } catch (error) {
        probe.disconnect();
        if (Date.now() > deadline || gone()) throw new Error(`redis-server did not answer PING at ${url}: ${String(error)}\n${output()}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  } finally {
    probe.disconnect();
  }
}

export async function startRestartableRedisServer(extraArgs: string[] = []): Promise<RestartableRedisServer> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-redis-own-'));
  const url = `redis://127.0.0.1:${port}`;
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
    '--maxmemory-policy', 'noeviction', '--loglevel', 'notice', ...extraArgs];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let paused = false;
  let output = '';
  const record = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  const isRunning = () => child !== undefined && child.exitCode === null && child.signalCode === null;

  const server: RestartableRedisServer = {
    url,
    port,
    dir,
    get running() {
      return isRunning();
    },
    output: () => output,
    async start() {
      if (isRunning()) throw new Error('redis-server is already running');
      const proc = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      child = proc;
      paused = false;
      exited = new Promise((resolve) => proc.once('exit', () => resolve()));
      proc.stdout?.on('data', record);
      proc.stderr?.on('data', record);
      await waitForPing(url, 15_000, () => proc.exitCode !== null || proc.signalCode !== null, () => output);
    },
    async halt(signal = 'SIGTERM') {
      const proc = child;
      if (!proc || !isRunning()) return;
      if (paused) server.resume();
      proc.kill(signal);
      // Bounded: a SIGTERM that does not end Redis (it should within milliseconds) becomes a SIGKILL.
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
    pause() {
      if (!isRunning()) throw new Error('redis-server is not running');
      child?.kill('SIGSTOP');
      paused = true;
    },
    resume() {
      if (!paused) return;
      child?.kill('SIGCONT');
      paused = false;
    },
    async destroy() {
      await server.halt('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await server.start();
  } catch (error) {
    await server.destroy();
    throw error;
  }
  return server;
}
