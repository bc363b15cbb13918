import { z } from 'zod';
import { ConfigError } from './errors.js';
import type { RedisTarget } from './redis.js';

/** Node's timers hold at most 2^31 - 1 ms (about 24.8 days); a longer one fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** A whole number above zero and at most `max`. */
const positiveInt = (fallback: number, max = Number.MAX_SAFE_INTEGER, tooLarge = `must be at most ${max}`) =>
  z.coerce.number().int().positive().max(max, tooLarge).default(fallback);
/** A duration a timer waits for, in milliseconds. */
const timerMs = (fallback: number) => positiveInt(fallback, MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} (about 24.8 days, the longest timer Node can wait)`);
/** A duration a timer waits for, in seconds. */
const timerSeconds = (fallback: number) =>
  positiveInt(fallback, Math.floor(MAX_TIMER_MS / 1_000), `must be at most ${Math.floor(MAX_TIMER_MS / 1_000)} (about 24.8 days, the longest timer Node can wait)`);

/** The URL, or undefined when the text is not one (a refinement runs even after .url() failed). */
const parsedUrl = (value: string): URL | undefined => {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
};

const booleanString = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'])
    .default(fallback ? 'true' : 'false')
    .transform((value) => value === 'true' || value === '1' || value === 'yes');

const emptyAsUndefined = (value: unknown) => (value === '' ? undefined : value);

/**
 * A number setting's text: empty is unset, and anything but decimal digits is refused here (Number()
 * would take `0x10` as 16 and `1e2` as 100).
 */
const numberText = (value: unknown, ctx: z.RefinementCtx) => {
  if (value === '') return undefined;
  if (typeof value === 'string' && !/^\s*\d+\s*$/.test(value)) {
    ctx.addIssue({ code: 'custom', message: 'must be a whole number written in decimal digits' });
    return z.NEVER;
  }
  return value;
};

const redisUrl = z
  .string()
  .url()
  .refine((value) => /^rediss?:$/.test(parsedUrl(value)?.protocol ?? ''), 'must be a redis:// or rediss:// URL');

/** Comma-separated `host:port` entries (IPv6 as `[::1]:7000`). */
const hostPortList = z
  .string()
  .transform((value) => value.split(',').map((entry) => entry.trim()).filter((entry) => entry.length > 0))
  .refine((entries) => entries.length > 0, 'must list at least one host:port')
  .refine((entries) => entries.every((entry) => /^(\[[0-9A-Fa-f:.]+\]|[^:\s]+):\d{1,5}$/.test(entry)), 'must be comma-separated host:port entries')
  .transform((entries) =>
    entries.map((entry) => {
      const colon = entry.lastIndexOf(':');
      return { host: entry.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(entry.slice(colon + 1)) };
    }),
  );

const jenkinsUrl = z
  .string()
  .url()
  .refine((value) => /^https?:$/.test(parsedUrl(value)?.protocol ?? ''), 'must be an http:// or https:// URL')
  .refine((value) => !parsedUrl(value)?.username && !parsedUrl(value)?.password, {
    message: 'must not contain credentials; use JENKINS_USER and JENKINS_API_TOKEN',
  })
  .transform((value) => {
    const url = new URL(value);
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    url.search = '';
    url.hash = '';
    return url.toString();
  });

const globList = z
  .string()
  .default('')
  .transform((value) =>
    value
      .split(',')
      .map((glob) => glob.trim())
      .filter((glob) => glob.length > 0),
  );

export const ROLES = ['read', 'write', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** One API token: its role, a label safe to log and store (never the token), and the token. */
export interface ApiToken {
  readonly role: Role;
  readonly label: string;
  readonly token: string;
}

/** `role:token` or `role:label:token` entries, comma-separated. */
const apiTokens = z
  .string()
  .default('')
  .transform((value, context): ApiToken[] => {
    const entries = value.split(',').map((entry) => entry.trim()).filter((entry) => entry.length > 0);
    const tokens: ApiToken[] = [];
    for (const [index, entry] of entries.entries()) {
      const parts = entry.split(':');
      const role = parts[0] as Role;
      const token = parts.at(-1) ?? '';
      const label = parts.length === 3 ? (parts[1] as string) : `${role}-${index + 1}`;
      // Never echo the token in the message: it would land in a log.
      if (parts.length < 2 || parts.length > 3) context.addIssue({ code: 'custom', message: `entry ${index + 1} is not role:token or role:label:token` });
      else if (!ROLES.includes(role)) context.addIssue({ code: 'custom', message: `entry ${index + 1} has role "${role}"; roles are read, write, admin` });
      else if (token.length < 16) context.addIssue({ code: 'custom', message: `entry ${index + 1}: tokens must be at least 16 characters` });
      else if (!/^[0-9A-Za-z._~+/=-]+$/.test(label)) context.addIssue({ code: 'custom', message: `entry ${index + 1}: the label may only hold letters, digits and . _ ~ + / = -` });
      else if (tokens.some((other) => other.token === token)) context.addIssue({ code: 'custom', message: `entry ${index + 1} repeats a token` });
      else tokens.push({ role, label, token });
    }
    return tokens;
  });

const originList = z
  .string()
  .default('')
  .transform((value) => value.split(',').map((origin) => origin.trim()).filter((origin) => origin.length > 0))
  .refine((origins) => origins.every((origin) => /^https?:\/\/[^/]+$/.test(origin)), 'must be origins like https://tracker.example.com (no path)');

/** Every environment variable ferry reads, with its default. Documented in .env.example. */
const ConfigSchema = z
  .object({
    NODE_ENV: z.preprocess(emptyAsUndefined, z.string().default('development')),
    /** Redis to use; `npm start` starts a private one when unset. */
    REDIS_URL: z.preprocess(emptyAsUndefined, redisUrl.default('redis://127.0.0.1:6379')),
    /** Redis Cluster seed nodes (`host:port`, comma-separated); set: Cluster mode. */
    REDIS_CLUSTER_NODES: z.preprocess(emptyAsUndefined, hostPortList.optional()),
    /** Redis Sentinels (`host:port`, comma-separated); set: Sentinel mode (with REDIS_SENTINEL_NAME). */
    REDIS_SENTINELS: z.preprocess(emptyAsUndefined, hostPortList.optional()),
    /** The master name the sentinels monitor. */
    REDIS_SENTINEL_NAME: z.preprocess(emptyAsUndefined, z.string().min(1).optional()),
    /** Cluster and Sentinel modes: ACL user and password of the Redis nodes (REDIS_URL carries its own). */
    REDIS_USERNAME: z.preprocess(emptyAsUndefined, z.string().optional()),
    REDIS_PASSWORD: z.preprocess(emptyAsUndefined, z.string().optional()),
    /** Password of the sentinels themselves, when they require one. */
    REDIS_SENTINEL_PASSWORD: z.preprocess(emptyAsUndefined, z.string().optional()),
    /** Cluster and Sentinel modes: speak TLS to the Redis nodes (as `rediss://` does for REDIS_URL). */
    REDIS_TLS: z.preprocess(emptyAsUndefined, booleanString(false)),
    /** PEM file of the CA that signed the Redis servers' certificates (all modes, with TLS). */
    REDIS_CA_FILE: z.preprocess(emptyAsUndefined, z.string().optional()),
    /** Replicas that must hold a new job (Redis WAIT) before the API answers 202; 0: do not wait. */
    REDIS_WAIT_REPLICAS: z.preprocess(numberText, z.coerce.number().int().min(0).max(16).default(0)),
    /** Milliseconds the API waits for those replicas before answering 503. */
    REDIS_WAIT_TIMEOUT_MS: z.preprocess(numberText, z.coerce.number().int().min(1).max(1_500, 'must be at most 1500 (API commands time out after 2000 ms)').default(1_000)),
    /** Address the API listens on. */
    HOST: z.preprocess(emptyAsUndefined, z.string().min(1).default('127.0.0.1')),
    /** Port the API listens on (0 picks a free one). */
    PORT: z.preprocess(numberText, z.coerce.number().int().min(0).max(65535).default(3000)),
    /** Root under which every downloaded file lands. */
    DOWNLOAD_DIR: z.preprocess(emptyAsUndefined, z.string().min(1).default('./downloads')),
    /** The one Jenkins origin (and path prefix) jobs may point at. */
    JENKINS_URL: z.preprocess(emptyAsUndefined, jenkinsUrl),
    JENKINS_USER: z.preprocess(emptyAsUndefined, z.string().optional()),
    JENKINS_API_TOKEN: z.preprocess(emptyAsUndefined, z.string().optional()),
    /** Jobs one worker process runs at once. */
    WORKER_CONCURRENCY: z.preprocess(numberText, positiveInt(2)),
    /** Comma-separated globs of artifact paths to download; empty means every artifact. */
    ARTIFACT_INCLUDE: z.preprocess(emptyAsUndefined, globList),
    /** How long a finished job stays readable, in seconds. */
    JOB_TTL_SECONDS: z.preprocess(numberText, positiveInt(86_400)),
    /** How long a finished job's log stays readable, in seconds (default: JOB_TTL_SECONDS). */
    LOG_TTL_SECONDS: z.preprocess(numberText, z.coerce.number().int().positive().optional()),
    /** Log lines kept per job; older lines are trimmed. */
    MAX_LOG_LINES: z.preprocess(numberText, positiveInt(10_000)),
    LOG_LEVEL: z.preprocess(
      emptyAsUndefined,
      z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),
    ),
    /** BullMQ key prefix; hash-tagged so one queue's keys share a Redis Cluster slot. */
    QUEUE_PREFIX: z.preprocess(emptyAsUndefined, z.string().min(1).default('{ferry}')),
    /** Milliseconds a worker's job lock lasts without renewal before another worker may take the job. */
    JOB_LOCK_MS: z.preprocess(numberText, timerMs(30_000)),
    /** Times a job may lose its worker (killed, paused past its lock) before it fails. */
    JOB_MAX_STALLS: z.preprocess(numberText, z.coerce.number().int().min(0).max(100).default(3)),
    /** A job running longer than this many seconds fails, freeing its worker. */
    JOB_TIMEOUT_SECONDS: z.preprocess(numberText, timerSeconds(6 * 60 * 60)),
    /** `.part` files no live job owns are removed once older than this many seconds. */
    PART_TTL_SECONDS: z.preprocess(numberText, positiveInt(24 * 60 * 60)),
    /** How often each worker looks for such `.part` files, in seconds. */
    PART_SWEEP_INTERVAL_SECONDS: z.preprocess(numberText, timerSeconds(60 * 60)),
    /** Attempts per job (BullMQ retries with exponential backoff). */
    JOB_ATTEMPTS: z.preprocess(numberText, positiveInt(3)),
    /** Milliseconds a process waits for running work when asked to stop. */
    SHUTDOWN_TIMEOUT_MS: z.preprocess(numberText, timerMs(30_000)),
    /** Tries per Jenkins request for timeouts, resets, 408, 429 and 5xx. */
    DOWNLOAD_RETRIES: z.preprocess(numberText, z.coerce.number().int().min(0).max(50).default(5)),
    /** A transfer slower than this many bytes per second for STALL_SECONDS is aborted and retried. */
    MIN_SPEED_BYTES: z.preprocess(numberText, z.coerce.number().int().min(0).default(1_024)),
    STALL_SECONDS: z.preprocess(numberText, timerSeconds(60)),
    /** Requests in flight to Jenkins per worker process. */
    JENKINS_MAX_CONNECTIONS: z.preprocess(numberText, positiveInt(4)),
    /** PEM file with an extra CA to trust for Jenkins (private PKI). */
    JENKINS_CA_FILE: z.preprocess(emptyAsUndefined, z.string().optional()),
    /** Turns TLS verification off. Only by explicit choice; a warning is logged at start. */
    JENKINS_TLS_INSECURE: z.preprocess(emptyAsUndefined, booleanString(false)),
    /**
     * How big artifacts (16 MiB and more, size known) reach the disk: `direct` writes them with
     * O_DIRECT where the file system allows it (no page-cache copy, a short final fsync); `buffered`
     * through the page cache with an fdatasync every 64 MiB. Which is faster depends on the disk:
     * compare with `npm run bench -- big` (README, Benchmarks). Both are durable before the rename.
     */
    DOWNLOAD_WRITE_MODE: z.preprocess(emptyAsUndefined, z.enum(['direct', 'buffered']).default('direct')),
    /**
     * Threads per worker process that write small artifacts (under 64 KiB) and manifests whole
     * (open, write, fsync, close, rename; a module's small files and manifest in one trip), started
     * on first use, ~9 MB each. More overlap more fsyncs, for disks where an fsync takes long.
     */
    DOWNLOAD_WRITER_THREADS: z.preprocess(numberText, z.coerce.number().int().min(1).max(16).default(2)),
    /** Largest artifact accepted, in bytes; a larger one fails the job before anything is written. */
    MAX_ARTIFACT_BYTES: z.preprocess(numberText, positiveInt(20 * 1024 ** 3)),
    /** Module jobs of one batch pending or running at once, across the whole fleet. */
    BATCH_PARALLELISM: z.preprocess(numberText, positiveInt(5)),
    /** Batches one worker process coordinates at once (a coordinator mostly waits; it holds no download slot). */
    BATCH_COORDINATORS: z.preprocess(numberText, positiveInt(10)),
    /** API tokens (`role:token` or `role:label:token`, comma-separated); unset: open on loopback only. */
    API_TOKENS: z.preprocess(emptyAsUndefined, apiTokens),
    /** Signs stream tokens; required with API_TOKENS, the same on every API instance. */
    TOKEN_SECRET: z.preprocess(emptyAsUndefined, z.string().min(32, 'must be at least 32 characters').optional()),
    /** Run without API tokens on a non-loopback address, knowingly. */
    AUTH_DISABLED: z.preprocess(emptyAsUndefined, booleanString(false)),
    /** The tracker's admin PIN: `X-Admin-PIN` with this value is worth the admin role. */
    ADMIN_PIN: z.preprocess(emptyAsUndefined, z.string().min(4, 'must be at least 4 characters').optional()),
    /** Role of requests without credentials (`read` or `write`); unset: none. */
    ANONYMOUS_ROLE: z.preprocess(emptyAsUndefined, z.enum(['read', 'write']).optional()),
    /** Serve /metrics without a token. */
    METRICS_PUBLIC: z.preprocess(emptyAsUndefined, booleanString(false)),
    /** Mount Bull Board read-only. */
    DASHBOARD_READ_ONLY: z.preprocess(emptyAsUndefined, booleanString(false)),
    /** Submissions per minute per token (or per address when open), across all API instances. */
    RATE_LIMIT_PER_MINUTE: z.preprocess(numberText, positiveInt(120)),
    /** Proxies in front of the API whose X-Forwarded-For to trust for the client address. */
    TRUST_PROXY: z.preprocess(numberText, z.coerce.number().int().min(0).max(10).default(0)),
    /** Browser origins allowed to call the API (CORS), comma-separated; empty: none. */
    CORS_ORIGINS: z.preprocess(emptyAsUndefined, originList),
    /** Worker only: serve Prometheus metrics on this port (unset: none). */
    METRICS_PORT: z.preprocess(numberText, z.coerce.number().int().min(0).max(65_535).optional()),
    /** Serve Bull Board at /admin/queues. */
    DASHBOARD_ENABLED: z.preprocess(emptyAsUndefined, booleanString(true)),
  })
  .superRefine((env, context) => {
    if (env.REDIS_CLUSTER_NODES && env.REDIS_SENTINELS) {
      context.addIssue({ code: 'custom', path: ['REDIS_SENTINELS'], message: 'set either REDIS_CLUSTER_NODES or REDIS_SENTINELS, not both' });
    }
    if (env.REDIS_CLUSTER_NODES && !/^\{[^{}]+\}/.test(env.QUEUE_PREFIX)) {
      // BullMQ's keys of a queue must share a slot: a prefix without a hash tag fails with CROSSSLOT at run time.
      context.addIssue({ code: 'custom', path: ['QUEUE_PREFIX'], message: 'must begin with a hash tag in braces, e.g. {ferry}, with REDIS_CLUSTER_NODES' });
    }
    if (env.REDIS_CLUSTER_NODES && env.REDIS_WAIT_REPLICAS > 0) {
      // WAIT answers for the node it is sent to, and a Cluster client sends it to any node.
      context.addIssue({ code: 'custom', path: ['REDIS_WAIT_REPLICAS'], message: 'is not supported with REDIS_CLUSTER_NODES (one server or Sentinel only)' });
    }
    if (env.REDIS_SENTINELS && !env.REDIS_SENTINEL_NAME) {
      context.addIssue({ code: 'custom', path: ['REDIS_SENTINEL_NAME'], message: 'is required with REDIS_SENTINELS' });
    }
  })
  .transform((env) => ({
    nodeEnv: env.NODE_ENV,
    redisUrl: env.REDIS_URL,
    redis: redisTarget(env),
    /** Replicas a new job must reach before the API answers 202 (REDIS_WAIT_REPLICAS), and how long to wait. */
    redisWait: { replicas: env.REDIS_WAIT_REPLICAS, timeoutMs: env.REDIS_WAIT_TIMEOUT_MS },
    host: env.HOST,
    port: env.PORT,
    downloadDir: env.DOWNLOAD_DIR,
    jenkins: {
      url: env.JENKINS_URL,
      user: env.JENKINS_USER,
      apiToken: env.JENKINS_API_TOKEN,
    },
    workerConcurrency: env.WORKER_CONCURRENCY,
    artifactInclude: env.ARTIFACT_INCLUDE,
    jobTtlSeconds: env.JOB_TTL_SECONDS,
    logTtlSeconds: env.LOG_TTL_SECONDS ?? env.JOB_TTL_SECONDS,
    maxLogLines: env.MAX_LOG_LINES,
    logLevel: env.LOG_LEVEL,
    queuePrefix: env.QUEUE_PREFIX,
    jobLockMs: env.JOB_LOCK_MS,
    jobAttempts: env.JOB_ATTEMPTS,
    jobMaxStalls: env.JOB_MAX_STALLS,
    jobTimeoutMs: env.JOB_TIMEOUT_SECONDS * 1_000,
    partTtlMs: env.PART_TTL_SECONDS * 1_000,
    partSweepIntervalMs: env.PART_SWEEP_INTERVAL_SECONDS * 1_000,
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
    dashboardEnabled: env.DASHBOARD_ENABLED,
    batch: { parallelism: env.BATCH_PARALLELISM, coordinators: env.BATCH_COORDINATORS },
    auth: {
      tokens: env.API_TOKENS,
      tokenSecret: env.TOKEN_SECRET,
      disabled: env.AUTH_DISABLED,
      adminPin: env.ADMIN_PIN,
      anonymousRole: env.ANONYMOUS_ROLE,
      metricsPublic: env.METRICS_PUBLIC,
    },
    dashboardReadOnly: env.DASHBOARD_READ_ONLY,
    metricsPort: env.METRICS_PORT,
    rateLimitPerMinute: env.RATE_LIMIT_PER_MINUTE,
    trustProxy: env.TRUST_PROXY,
    corsOrigins: env.CORS_ORIGINS,
    transfer: {
      retries: env.DOWNLOAD_RETRIES,
      minSpeedBytes: env.MIN_SPEED_BYTES,
      stallSeconds: env.STALL_SECONDS,
      maxConnections: env.JENKINS_MAX_CONNECTIONS,
      caFile: env.JENKINS_CA_FILE,
      tlsInsecure: env.JENKINS_TLS_INSECURE,
      maxArtifactBytes: env.MAX_ARTIFACT_BYTES,
      writeMode: env.DOWNLOAD_WRITE_MODE,
      writerThreads: env.DOWNLOAD_WRITER_THREADS,
    },
  }));

export type Config = z.output<typeof ConfigSchema>;

interface RedisEnv {
  readonly REDIS_URL: string;
  readonly REDIS_CLUSTER_NODES?: Array<{ host: string; port: number }> | undefined;
  readonly REDIS_SENTINELS?: Array<{ host: string; port: number }> | undefined;
  readonly REDIS_SENTINEL_NAME?: string | undefined;
  readonly REDIS_USERNAME?: string | undefined;
  readonly REDIS_PASSWORD?: string | undefined;
  readonly REDIS_SENTINEL_PASSWORD?: string | undefined;
  readonly REDIS_TLS: boolean;
  readonly REDIS_CA_FILE?: string | undefined;
}

/** Which Redis deployment to use: Cluster, Sentinel, or one server by URL. */
function redisTarget(env: RedisEnv): RedisTarget {
  const auth = { username: env.REDIS_USERNAME, password: env.REDIS_PASSWORD, tls: env.REDIS_TLS, caFile: env.REDIS_CA_FILE };
  if (env.REDIS_CLUSTER_NODES) return { mode: 'cluster', nodes: env.REDIS_CLUSTER_NODES, ...auth };
  if (env.REDIS_SENTINELS) {
    return { mode: 'sentinel', sentinels: env.REDIS_SENTINELS, name: env.REDIS_SENTINEL_NAME ?? '', sentinelPassword: env.REDIS_SENTINEL_PASSWORD, ...auth };
  }
  return { mode: 'url', url: env.REDIS_URL, caFile: env.REDIS_CA_FILE };
}

/**
 * Parses the configuration from `env` once. Throws a ConfigError whose message names every bad
 * variable and why; never falls back silently on a malformed value.
 */
export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const result = ConfigSchema.safeParse(env);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const name = issue.path.join('.') || '(environment)';
    const message = issue.code === 'invalid_type' && env[name] === undefined ? 'is required' : issue.message;
    return `  ${name}: ${message}`;
  });
  return raise(`Invalid configuration:\n${problems.join('\n')}`);
}

function raise(message: string): never {
  throw new ConfigError(message);
}

/** Loads `.env` from the working directory into process.env when the file exists (real env wins). */
export function loadDotEnv(path = '.env'): void {
  try {
    process.loadEnvFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
