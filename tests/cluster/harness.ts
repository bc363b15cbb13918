import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freeClusterPorts, freePort, recordOutput } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait-for.js';

const run = promisify(execFile);

/** One redis-server (or sentinel) process on a loopback port (never the machine's 6379). */
export interface RedisProcess {
  readonly port: number;
  readonly child: ChildProcess;
  /** SIGKILL: a crash, no final write. */
  kill(): Promise<void>;
  /** Starts it again with the same arguments (same port, same data directory). */
  restart(): Promise<RedisProcess>;
}

async function spawnRedis(args: string[], port: number, password?: string): Promise<RedisProcess> {
  if (port === 6379) throw new Error('refusing to use port 6379');
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = recordOutput(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const probe = new Redis({ host: '127.0.0.1', port, password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => undefined);
  // Bounded: a redis-server that cannot start within 10 s will not.
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`redis-server ${args.join(' ')} exited with ${child.exitCode}: ${output()}`);
    try {
      await probe.connect();
      await probe.ping();
      return true;
    } catch {
      probe.disconnect();
      return false;
    }
  }, `redis on port ${port}`, 10_000, 50);
  probe.disconnect();
  return {
    port,
    child,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    restart: () => spawnRedis(args, port, password),
  };
}

/**
 * Starts a cluster node on fresh free ports, up to three times: between freeClusterPorts closing
 * its probe sockets and redis-server binding, another process can take a port (CI saw a node exit
 * at start). A node that fails three times fails the test with its own output.
 */
export async function withFreshPorts<T>(start: (ports: { port: number; busPort: number }) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await start(await freeClusterPorts());
    } catch (error) {
      if (attempt >= 3) throw error;
    }
  }
}

export interface RedisCluster {
  readonly nodes: readonly RedisProcess[];
  /** `127.0.0.1:p1,...` for REDIS_CLUSTER_NODES. */
  readonly seeds: string;
  /** The password every node requires (`requirepass`, `masterauth`). */
  readonly password: string;
  /** A plain connection to each master (for CLIENT LIST), current at the time of the call. */
  masters(): Promise<Redis[]>;
  stop(): Promise<void>;
}

/**
 * A real Redis Cluster on loopback: `masters` masters with one replica each, made by
 * `redis-cli --cluster create`, ready once every node says `cluster_state:ok`.
 */
export async function startRedisCluster(masters = 3, password = 'cluster-test-password'): Promise<RedisCluster> {
  const auth = ['--requirepass', password, '--masterauth', password];
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-cluster-'));
  const nodes: RedisProcess[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.kill()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let index = 0; index < masters * 2; index += 1) {
      nodes.push(
        await withFreshPorts(async ({ port, busPort }) =>
          spawnRedis(
            ['--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
              '--cluster-config-file', path.join(dir, `nodes-${port}.conf`), '--dir', dir, '--appendonly', 'yes', '--appendfilename', `appendonly-${port}.aof`,
              '--appenddirname', `aof-${port}`, '--save', '', '--maxmemory-policy', 'noeviction', '--cluster-node-timeout', '2000', ...auth],
            port,
            password,
          ),
        ),
      );
    }
    await run('redis-cli', ['-a', password, '--no-auth-warning', '--cluster', 'create', ...nodes.map((node) => `127.0.0.1:${node.port}`), '--cluster-replicas', '1', '--cluster-yes'], { timeout: 30_000 });
    // Bounded: a fresh 6-node cluster on loopback converges in a few seconds.
    await waitFor(async () => {
      for (const node of nodes) {
        const client = new Redis({ host: '127.0.0.1', port: node.port, password, maxRetriesPerRequest: 0 });
        client.on('error', () => undefined);
        try {
          const info = await client.cluster('INFO');
          if (!String(info).includes('cluster_state:ok')) return false;
        } finally {
          client.disconnect();
        }
      }
      return true;
    }, 'cluster_state:ok on every node', 30_000, 200);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    nodes,
    seeds: nodes.map((node) => `127.0.0.1:${node.port}`).join(','),
    password,
    async masters() {
      const first = new Redis({ host: '127.0.0.1', port: (nodes[0] as RedisProcess).port, password });
      const text = String(await first.cluster('NODES'));
      first.disconnect();
      return text
        .split('\n')
        .filter((line) => {
          const flags = line.split(' ')[2]?.split(',') ?? [];
          return flags.includes('master') && !flags.includes('fail');
        })
        .map((line) => {
          const address = (line.split(' ')[1] as string).split('@')[0] as string;
          const port = Number(address.split(':')[1]);
          return new Redis({ host: '127.0.0.1', port, password });
        });
    },
    stop,
  };
}

export interface SentinelSet {
  readonly master: RedisProcess;
  readonly replica: RedisProcess;
  readonly sentinels: readonly RedisProcess[];
  /** `127.0.0.1:p1,...` for REDIS_SENTINELS. */
  readonly seeds: string;
  readonly name: string;
  /** The password the master and replica require (the sentinels require none). */
  readonly password: string;
  /** Restarts a killed node with its arguments; stop() then stops the new process too. */
  restart(node: RedisProcess): Promise<RedisProcess>;
  /** The master's port as the first sentinel currently reports it. */
  masterPort(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * One master, one replica and three sentinels on loopback. Failover is quick (down after 1 s,
 * quorum 2) so a test can watch it happen.
 */
export async function startSentinelSet(name = 'ferry-test', password = 'sentinel-test-password'): Promise<SentinelSet> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-sentinel-'));
  const started: RedisProcess[] = [];
  const stop = async () => {
    await Promise.all(started.map((node) => node.kill()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // Both data nodes require the password and use it towards each other (the old master rejoins as a replica).
    const common = ['--bind', '127.0.0.1', '--dir', dir, '--save', '', '--maxmemory-policy', 'noeviction', '--requirepass', password, '--masterauth', password];
    const masterPort = await freePort();
    const master = await spawnRedis(['--port', String(masterPort), ...common, '--appendonly', 'yes', '--appendfilename', `m-${masterPort}.aof`, '--appenddirname', `aof-${masterPort}`], masterPort, password);
    started.push(master);
    const replicaPort = await freePort();
    const replica = await spawnRedis(
      ['--port', String(replicaPort), ...common, '--appendonly', 'yes', '--appendfilename', `r-${replicaPort}.aof`, '--appenddirname', `aof-${replicaPort}`, '--replicaof', '127.0.0.1', String(masterPort)],
      replicaPort,
      password,
    );
    started.push(replica);
    const sentinels: RedisProcess[] = [];
    for (let index = 0; index < 3; index += 1) {
      const port = await freePort();
      const file = path.join(dir, `sentinel-${port}.conf`);
      await writeFile(
        file,
        [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor ${name} 127.0.0.1 ${masterPort} 2`, `sentinel auth-pass ${name} ${password}`, `sentinel down-after-milliseconds ${name} 1000`,
          `sentinel failover-timeout ${name} 5000`, `sentinel parallel-syncs ${name} 1`, ''].join('\n'),
      );
      const sentinel = await spawnRedis([file, '--sentinel'], port);
      started.push(sentinel);
      sentinels.push(sentinel);
    }
    // Bounded: the replica syncs and the sentinels find each other within seconds on loopback.
    const probe = new Redis({ host: '127.0.0.1', port: replicaPort, password });
    await waitFor(async () => String(await probe.info('replication')).includes('master_link_status:up'), 'replica in sync', 15_000, 100);
    probe.disconnect();
    const sentinelProbe = new Redis({ host: '127.0.0.1', port: (sentinels[0] as RedisProcess).port });
    await waitFor(async () => {
      const info = String(await sentinelProbe.info('sentinel'));
      return /sentinels=3/.test(info);
    }, 'three sentinels know each other', 20_000, 200);
    sentinelProbe.disconnect();
    return {
      master,
      replica,
      sentinels,
      seeds: sentinels.map((node) => `127.0.0.1:${node.port}`).join(','),
      name,
      password,
      async restart(node) {
        const again = await node.restart();
        started.push(again);
        return again;
      },
      async masterPort() {
        const client = new Redis({ host: '127.0.0.1', port: (sentinels[0] as RedisProcess).port });
        try {
          const reply = (await client.call('SENTINEL', 'get-master-addr-by-name', name)) as [string, string];
          return Number(reply[1]);
        } finally {
          client.disconnect();
        }
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
