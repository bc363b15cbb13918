// Static checks of docker-compose.yml through `docker-compose config`
// (no Docker engine needed: `config` only parses, validates and interpolates).
// Skipped, visibly, when docker-compose is not on PATH.
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const composeFile = join(repoRoot, 'docker-compose.yml');
const JENKINS_URL = 'https://jenkins.example.com/';
const TIMEOUT_MS = 30_000;

const hasDockerCompose = (() => {
  const r = spawnSync('docker-compose', ['version'], { stdio: 'ignore', timeout: TIMEOUT_MS });
  return r.error === undefined && r.status === 0;
})();

// An empty env file, so a developer's local .env cannot change the outcome.
let tmpDir: string | undefined;
function emptyEnvFile(): string {
  tmpDir ??= mkdtempSync(join(tmpdir(), 'ferry-compose-test-'));
  const file = join(tmpDir, 'empty.env');
  writeFileSync(file, '');
  return file;
}
afterAll(() => {
  if (tmpDir !== undefined) rmSync(tmpDir, { recursive: true, force: true });
});

/** The host environment minus anything the compose file (or compose itself) reads. */
function composeEnv(withJenkinsUrl: boolean): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(COMPOSE_|JENKINS_)/.test(key) || key === 'WORKER_CONCURRENCY' || key === 'LOG_LEVEL') continue;
    env[key] = value;
  }
  if (withJenkinsUrl) env.JENKINS_URL = JENKINS_URL;
  return env;
}

function compose(args: string[], withJenkinsUrl = true): SpawnSyncReturns<string> {
  const r = spawnSync(
    'docker-compose',
    ['--env-file', emptyEnvFile(), '-f', composeFile, ...args],
    { cwd: repoRoot, env: composeEnv(withJenkinsUrl), encoding: 'utf8', timeout: TIMEOUT_MS },
  );
  if (r.error) throw r.error;
  return r;
}

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string | string[];
  container_name?: string;
  environment?: Record<string, string | number | null> | string[];
  ports?: unknown[];
  volumes?: unknown[];
  depends_on?: Record<string, { condition?: string }> | string[];
  healthcheck?: { test?: string | string[] };
  stop_grace_period?: string;
}
interface ComposeConfig {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

function tryParseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

let cachedConfig: ComposeConfig | undefined;
/**
 * The fully resolved configuration as an object. Compose v2 prints JSON with
 * `config --format json`; docker-compose 1.x has no such option (it prints its
 * usage, with exit status 0), so its YAML output is converted with python3 +
 * PyYAML, which docker-compose 1.x itself runs on. No new npm dependency.
 */
function loadConfig(): ComposeConfig {
  if (cachedConfig) return cachedConfig;
  const asJson = compose(['config', '--format', 'json']);
  let parsed = asJson.status === 0 ? tryParseJson(asJson.stdout) : undefined;
  if (parsed === undefined) {
    const asYaml = compose(['config']);
    expect(asYaml.status, asYaml.stderr).toBe(0);
    const conv = spawnSync(
      'python3',
      ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'],
      { input: asYaml.stdout, encoding: 'utf8', timeout: TIMEOUT_MS },
    );
    if (conv.error || conv.status !== 0) {
      throw new Error(
        'cannot parse `docker-compose config` output: this docker-compose has no `--format json` ' +
          `and python3 with PyYAML is unavailable (${conv.error?.message ?? conv.stderr})`,
      );
    }
    parsed = tryParseJson(conv.stdout);
  }
  expect(parsed).toMatchObject({ services: expect.any(Object) });
  cachedConfig = parsed as ComposeConfig;
  return cachedConfig;
}

function service(name: string): ComposeService {
  const svc = loadConfig().services[name];
  if (!svc) throw new Error(`service "${name}" missing from docker-compose.yml`);
  return svc;
}

function commandOf(svc: ComposeService): string {
  return Array.isArray(svc.command) ? svc.command.join(' ') : (svc.command ?? '');
}

function envOf(svc: ComposeService): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  if (Array.isArray(svc.environment)) {
    for (const entry of svc.environment) {
      const i = entry.indexOf('=');
      if (i === -1) out[entry] = null;
      else out[entry.slice(0, i)] = entry.slice(i + 1);
    }
  } else {
    for (const [k, v] of Object.entries(svc.environment ?? {})) out[k] = v === null ? null : String(v);
  }
  return out;
}

/** Named-volume mounts as { source, target }: 1.x prints "src:dst:rw", v2 prints objects. */
function mountsOf(svc: ComposeService): { source: string; target: string }[] {
  return (svc.volumes ?? []).map((v) => {
    if (typeof v === 'string') {
      const [source = '', target = ''] = v.split(':');
      return { source, target };
    }
    const o = v as { source?: string; target?: string };
    return { source: o.source ?? '', target: o.target ?? '' };
  });
}

function healthyDependency(svc: ComposeService, on: string): string | undefined {
  const deps = svc.depends_on;
  if (deps === undefined || Array.isArray(deps)) return undefined;
  return deps[on]?.condition;
}

describe.skipIf(!hasDockerCompose)('docker-compose.yml (requires docker-compose on PATH)', () => {
  it('validates with `docker-compose config -q` when JENKINS_URL is set', { timeout: TIMEOUT_MS }, () => {
    const r = compose(['config', '-q']);
    expect(r.status, r.stderr).toBe(0);
  });

  it('refuses to resolve without JENKINS_URL (required, no silent default)', { timeout: TIMEOUT_MS }, () => {
    const r = compose(['config', '-q'], false);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('JENKINS_URL');
  });

  it('runs Redis with AOF persistence and noeviction, on a named volume, with a healthcheck', { timeout: TIMEOUT_MS }, () => {
    const redis = service('redis');
    expect(redis.image).toMatch(/^redis:7/);
    const cmd = commandOf(redis);
    expect(cmd).toContain('--appendonly yes');
    expect(cmd).toContain('--maxmemory-policy noeviction');
    expect(mountsOf(redis)).toContainEqual({ source: 'redis-data', target: '/data' });
    expect(JSON.stringify(redis.healthcheck?.test)).toContain('redis-cli ping');
  });

  it('configures the api to listen on 0.0.0.0:3000 and gate on /readyz', { timeout: TIMEOUT_MS }, () => {
    const api = service('api');
    expect(commandOf(api)).toBe('node dist/api/main.js');
    const env = envOf(api);
    expect(env.HOST).toBe('0.0.0.0');
    expect(env.REDIS_URL).toBe('redis://redis:6379');
    expect(env.JENKINS_URL).toBe(JENKINS_URL);
    const ports = JSON.stringify(api.ports ?? []);
    expect(ports).toMatch(/"published":"?3000"?/);
    expect(ports).toMatch(/"target":3000/);
    expect(JSON.stringify(api.healthcheck?.test)).toContain('http://127.0.0.1:3000/readyz');
    expect(healthyDependency(api, 'redis')).toBe('service_healthy');
    expect(api.stop_grace_period).toBe('40s');
  });

  it('lets the worker scale: no container_name, no published ports, same image as the api', { timeout: TIMEOUT_MS }, () => {
    const worker = service('worker');
    expect(commandOf(worker)).toBe('node dist/worker/main.js');
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports ?? []).toEqual([]);
    expect(worker.image).toBeDefined();
    expect(worker.image).toBe(service('api').image);
    expect(envOf(worker).REDIS_URL).toBe('redis://redis:6379');
    expect(healthyDependency(worker, 'redis')).toBe('service_healthy');
    expect(worker.stop_grace_period).toBe('40s');
  });

  it('mounts one shared named downloads volume into api and worker at DOWNLOAD_DIR', { timeout: TIMEOUT_MS }, () => {
    const config = loadConfig();
    expect(Object.keys(config.volumes ?? {})).toEqual(expect.arrayContaining(['downloads', 'redis-data']));
    for (const name of ['api', 'worker']) {
      const svc = service(name);
      expect(mountsOf(svc), name).toContainEqual({ source: 'downloads', target: '/data/downloads' });
      expect(envOf(svc).DOWNLOAD_DIR, name).toBe('/data/downloads');
    }
  });
});
