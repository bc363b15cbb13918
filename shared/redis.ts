import { readFileSync } from 'node:fs';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from './logger.js';
import { redactText } from './logger.js';

export type RedisRole =
  /** API requests: fail fast while Redis is down so the request gets a 503 instead of hanging. */
  | 'api'
  /** Workers and blocking reads: wait and reconnect (BullMQ requires maxRetriesPerRequest: null). */
  | 'worker';

/**
 * Milliseconds one command on an API connection may take. A command already written when Redis
 * dies is not failed by ioredis (it waits to be re-sent after the reconnect), and a Redis that stops
 * answering (paused, network cut) never closes the socket: without a bound such a request would
 * hang. Generous next to the microseconds a command takes; api/redis-guard.ts keeps the one-second
 * promise to clients, this only frees the request's resources.
 */
export const API_COMMAND_TIMEOUT_MS = 2_000;

/** A `host:port` pair of a Cluster seed or a Sentinel. */
export interface RedisNode {
  readonly host: string;
  readonly port: number;
}

interface RedisAuth {
  /** ACL user and password of the Redis nodes. */
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** Speak TLS to the Redis nodes. */
  readonly tls: boolean;
  /** PEM file of an extra CA to trust for the Redis servers' TLS. */
  readonly caFile?: string | undefined;
}

/** Which Redis deployment a process talks to (see shared/config.ts). */
export type RedisTarget =
  /** One server (`redis://` or `rediss://`, credentials in the URL). */
  | { readonly mode: 'url'; readonly url: string; readonly caFile?: string | undefined }
  /** Redis Cluster: seed nodes; the rest of the cluster is discovered from them. */
  | ({ readonly mode: 'cluster'; readonly nodes: readonly RedisNode[] } & RedisAuth)
  /** Sentinel: the sentinels and the master name they monitor; follows failovers. */
  | ({
      readonly mode: 'sentinel';
      readonly sentinels: readonly RedisNode[];
      readonly name: string;
      readonly sentinelPassword?: string | undefined;
    } & RedisAuth);

/** A short description of the target for logs (never a password). */
export function describeRedisTarget(target: RedisTarget): string {
  if (target.mode === 'url') return redactText(target.url);
  if (target.mode === 'cluster') return `cluster ${target.nodes.map((node) => `${node.host}:${node.port}`).join(',')}`;
  return `sentinel ${target.name} via ${target.sentinels.map((node) => `${node.host}:${node.port}`).join(',')}`;
}

/** True when `redis` is an ioredis Cluster client (createRedis returns one in Cluster mode). */
export function isCluster(redis: Redis | Cluster): boolean {
  return (redis as { isCluster?: boolean }).isCluster === true;
}

function tlsOptions(tls: boolean, caFile: string | undefined): RedisOptions['tls'] | undefined {
  if (!tls) return undefined;
  return caFile ? { ca: [readFileSync(caFile)] } : {};
}

/**
 * Creates one Redis connection with an error listener (an unhandled 'error' event would crash the
 * process) and reconnection with a capped backoff. `target` is a URL or a RedisTarget; in Cluster
 * mode the result is an ioredis `Cluster` (typed as `Redis`: it has the same command methods, and
 * ferry sends only commands whose keys share one slot, see shared/keys.ts), in Sentinel mode a
 * `Redis` that asks the sentinels for the current master on every (re)connect.
 */
export interface CreateRedisOptions {
  /**
   * ioredis auto-pipelining (default: on for 'api'): commands of one tick leave in one write. Off
   * for a connection that carries BullMQ's commands: every auto-pipeline copies each script defined
   * on the connection (BullMQ defines about fifty) onto a new Pipeline object.
   */
  readonly autoPipelining?: boolean;
}

export function createRedis(target: string | RedisTarget, role: RedisRole, logger: Logger, name: string, extra: CreateRedisOptions = {}): Redis {
  const resolved: RedisTarget = typeof target === 'string' ? { mode: 'url', url: target } : target;
  // Reconnect forever with a capped backoff: Redis restarts must not kill the process. The cap
  // bounds how long a process stays away after Redis is back (a connect attempt a second is cheap).
  const retryStrategy = (attempt: number) => Math.min(100 * 2 ** Math.min(attempt, 4), 1_000);
  const options: RedisOptions = {
    connectionName: `ferry:${name}`,
    maxRetriesPerRequest: role === 'api' ? 1 : null,
    enableOfflineQueue: role !== 'api',
    ...(role === 'api' ? { commandTimeout: API_COMMAND_TIMEOUT_MS } : {}),
    retryStrategy,
    lazyConnect: false,
    // A master demoted by a failover answers writes with READONLY until the connection moves to the
    // new one: reconnect (which asks the sentinels again) and resend the command.
    reconnectOnError: (error) => (error.message.startsWith('READONLY') ? 2 : false),
    enableAutoPipelining: extra.autoPipelining ?? role === 'api',
  };
  let redis: Redis;
  if (resolved.mode === 'cluster') {
    const tls = tlsOptions(resolved.tls, resolved.caFile);
    const clusterOptions: ClusterOptions = {
      redisOptions: {
        ...options,
        ...(resolved.username ? { username: resolved.username } : {}),
        ...(resolved.password ? { password: resolved.password } : {}),
        ...(tls ? { tls } : {}),
      },
      // The API fails fast while the cluster is unreachable, as with one server.
      enableOfflineQueue: role !== 'api',
      // A Cluster client reads this option of its own, not its nodes' (redisOptions).
      enableAutoPipelining: options.enableAutoPipelining ?? false,
      clusterRetryStrategy: retryStrategy,
      // TLS certificates name the host the seed was given as; keep it rather than the resolved IP.
      ...(tls ? { dnsLookup: (address: string, callback: (error: null, address: string) => void) => callback(null, address) } : {}),
      slotsRefreshTimeout: 2_000,
    };
    // Why the cast: Cluster has Redis's command methods but not its type; every ferry module takes `Redis`.
    redis = new Cluster(resolved.nodes.map((node) => ({ ...node })), clusterOptions) as unknown as Redis;
  } else if (resolved.mode === 'sentinel') {
    const tls = tlsOptions(resolved.tls, resolved.caFile);
    redis = new Redis({
      ...options,
      sentinels: resolved.sentinels.map((node) => ({ ...node })),
      name: resolved.name,
      ...(resolved.username ? { username: resolved.username } : {}),
      ...(resolved.password ? { password: resolved.password } : {}),
      ...(resolved.sentinelPassword ? { sentinelPassword: resolved.sentinelPassword } : {}),
      // `tls` with enableTLSForSentinelMode covers the master/replica connections only: ioredis
      // speaks to the sentinels themselves with `sentinelTLS`. REDIS_TLS means both (README).
      ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
      sentinelRetryStrategy: retryStrategy,
      // Also listen to the sentinels' +switch-master, so a failover is followed at once rather than
      // when the old master's socket finally errors.
      failoverDetector: true,
    });
  } else {
    const tls = resolved.caFile && resolved.url.startsWith('rediss:') ? tlsOptions(true, resolved.caFile) : undefined;
    redis = new Redis(resolved.url, { ...options, ...(tls ? { tls } : {}) });
  }
  let lastError = '';
  redis.on('error', (error: Error) => {
    const message = redactText(error.message);
    // Log each distinct error once per outage instead of once per reconnect attempt.
    if (message === lastError) return;
    lastError = message;
    logger.warn('redis connection error', { connection: name, error: message });
  });
  redis.on('ready', () => {
    if (lastError) logger.info('redis connection restored', { connection: name });
    lastError = '';
  });
  return redis;
}

/**
 * Closes a connection with QUIT (a disconnect when that fails). QUIT does not wait for commands
 * still queued for the next auto-pipeline (such as a folder lock's release nobody awaits) and may
 * overtake them: an auto-pipelined connection makes one round trip through its pipeline first.
 */
export async function closeRedis(connection: Redis): Promise<void> {
  if (connection.options.enableAutoPipelining && connection.status === 'ready') await connection.ping().catch(() => undefined);
  await connection.quit().catch(() => connection.disconnect());
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export async function waitForRedis(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off('ready', onReady);
    };
    redis.on('ready', onReady);
  });
}

/**
 * The error, its causes, and the errors of the commands a failed MULTI discarded (ioredis puts them
 * in `previousErrors` of the EXECABORT error): BullMQ and ioredis wrap errors now and then.
 */
function errorChain(error: unknown): Error[] {
  const chain: Error[] = [];
  const pending: unknown[] = [error];
  while (pending.length > 0 && chain.length < 10) {
    const current = pending.shift();
    if (!(current instanceof Error)) continue;
    chain.push(current);
    pending.push(current.cause);
    const previous = (current as { previousErrors?: unknown }).previousErrors;
    if (Array.isArray(previous)) pending.push(...previous.slice(0, 3));
  }
  return chain;
}

/** ioredis errors that mean "Redis cannot be reached right now" rather than a bug. */
export function isRedisConnectionError(error: unknown): boolean {
  return errorChain(error).some((item) => {
    const code = (item as NodeJS.ErrnoException).code;
    return (
      item.name === 'MaxRetriesPerRequestError' ||
      // Redis Cluster: no node reachable, or the cluster is failing over a shard.
      item.name === 'ClusterAllFailedError' ||
      /^(CLUSTERDOWN|TRYAGAIN) |Failed to refresh slots cache|Cluster isn't ready/.test(item.message) ||
      code === 'ECONNREFUSED' ||
      code === 'ECONNRESET' ||
      code === 'ETIMEDOUT' ||
      code === 'EPIPE' ||
      /enableOfflineQueue|Connection is closed|Stream isn't writeable|connect ETIMEDOUT|Command timed out|^LOADING /.test(item.message)
    );
  });
}

/**
 * Redis refused a command because it is full: `maxmemory` reached under `noeviction` ("OOM command
 * not allowed when used memory > 'maxmemory'"), also when raised inside a script, or for a MULTI,
 * whose every queued command (reads included) Redis refuses while full.
 */
export function isRedisFullError(error: unknown): boolean {
  return errorChain(error).some((item) => item.message.includes('OOM command not allowed'));
}

export type RedisHealth =
  | { readonly state: 'up' }
  /** Redis answers but refuses writes: used memory is above `maxmemory` (see isRedisFullError). */
  | { readonly state: 'full'; readonly usedMemoryBytes: number; readonly maxmemoryBytes: number }
  | { readonly state: 'down'; readonly error: string };

function parseInfo(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

/**
 * Whether Redis answers and accepts writes, within `timeoutMs`. "Full" uses Redis's own rule for
 * refusing a write: used memory, less what eviction does not count (AOF and replication buffers),
 * above `maxmemory`. Falls back to PING when INFO is disabled.
 */
export async function readRedisHealth(redis: Redis, timeoutMs: number): Promise<RedisHealth> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<RedisHealth>((resolve) => {
    timer = setTimeout(() => resolve({ state: 'down', error: `no answer within ${timeoutMs} ms` }), timeoutMs);
  });
  const probe = (async (): Promise<RedisHealth> => {
    let info: string;
    try {
      info = await redis.info('memory');
    } catch (error) {
      if (isRedisConnectionError(error)) throw error;
      await redis.ping();
      return { state: 'up' };
    }
    const fields = parseInfo(info);
    const used = Number(fields.get('used_memory') ?? 0);
    const max = Number(fields.get('maxmemory') ?? 0);
    const notCounted = Number(fields.get('mem_not_counted_for_evict') ?? 0);
    return max > 0 && used > max && used - notCounted > max ? { state: 'full', usedMemoryBytes: used, maxmemoryBytes: max } : { state: 'up' };
  })().catch((error: unknown): RedisHealth => ({ state: 'down', error: redactText((error as Error).message) }));
  try {
    return await Promise.race([probe, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export type MaxmemoryPolicyCheck =
  | { readonly ok: true; readonly policy: 'noeviction' }
  /** Another policy: a full Redis deletes keys instead of refusing writes. */
  | { readonly ok: false; readonly policy: string }
  /** CONFIG is disabled or renamed (common on managed Redis), or answered nothing usable. */
  | { readonly ok: false; readonly policy: null; readonly reason: string };

async function readMaxmemoryPolicy(redis: Redis): Promise<MaxmemoryPolicyCheck> {
  try {
    const reply = (await redis.config('GET', 'maxmemory-policy')) as unknown;
    const policy = Array.isArray(reply) ? reply[1] : undefined;
    if (typeof policy !== 'string') return { ok: false, policy: null, reason: 'CONFIG GET maxmemory-policy answered nothing' };
    return policy === 'noeviction' ? { ok: true, policy } : { ok: false, policy };
  } catch (error) {
    if (isRedisConnectionError(error)) throw error;
    return { ok: false, policy: null, reason: `CONFIG GET failed: ${redactText((error as Error).message)}` };
  }
}

/**
 * Reads Redis's `maxmemory-policy` once the connection is ready, and again after every reconnect (a
 * restarted Redis may run another configuration), and warns loudly when it is not `noeviction`:
 * under any other policy a full Redis silently deletes keys, and an evicted key is a lost job, log
 * or lock. When CONFIG is disabled or renamed it warns that the policy could not be checked. Logs
 * only when the outcome changes. Resolves with the first outcome (never, if Redis never answers).
 */
export function checkMaxmemoryPolicy(redis: Redis, logger: Logger): Promise<MaxmemoryPolicyCheck> {
  return new Promise((resolve) => {
    let lastLogged = '';
    const check = async () => {
      const outcome = await readMaxmemoryPolicy(redis);
      resolve(outcome); // only the first call settles the promise
      const signature = JSON.stringify(outcome);
      if (signature === lastLogged) return;
      lastLogged = signature;
      if (outcome.ok) {
        logger.info('Redis maxmemory-policy is noeviction', { maxmemory_policy: outcome.policy });
      } else if (outcome.policy === null) {
        logger.warn(
          `Could not check Redis maxmemory-policy (${outcome.reason}). Make sure it is "noeviction": ` +
            'under any other policy a full Redis evicts keys, and an evicted key is a lost job',
          { maxmemory_policy: 'unknown' },
        );
      } else {
        logger.warn(
          `UNSAFE REDIS CONFIGURATION: maxmemory-policy is "${outcome.policy}", not "noeviction". When Redis fills up ` +
            'it will silently evict keys, and an evicted key is a lost job, log or lock. Set maxmemory-policy noeviction ' +
            '(redis.conf, or CONFIG SET maxmemory-policy noeviction)',
          { maxmemory_policy: outcome.policy },
        );
      }
    };
    // A connection error means "not now": the next 'ready' checks again.
    const run = () => void check().catch(() => undefined);
    redis.on('ready', run);
    if (redis.status === 'ready') run();
  });
}
