/**
 * The chaos run: a whole ferry fleet (APIs and workers as real processes, a persistent Redis, the
 * fake Jenkins with faults) under worker SIGKILLs, a Redis restart and an API SIGTERM, then a
 * count of what happened to every accepted job. Used by `npm run chaos` (full size) and by a
 * short run in `npm test`.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, waitReady, type ChildService } from '../helpers/processes.js';
import { freePort, startRestartableRedisServer } from '../helpers/redis-server.js';

export interface ChaosOptions {
  readonly jobs: number;
  readonly apis: number;
  readonly workers: number;
  /** Milliseconds between worker SIGKILLs (each killed worker is restarted). */
  readonly killEveryMs: number;
  /** Milliseconds over which the jobs are submitted. */
  readonly submitOverMs: number;
  /** When Redis is restarted, and when one API gets SIGTERM, in ms from the start. */
  readonly redisRestartAtMs: number;
  readonly apiStopAtMs: number;
  /** Give up waiting for the queue to drain after this long. */
  readonly drainTimeoutMs: number;
  readonly log?: (line: string) => void;
}

export interface ChaosFigures {
  submitted: number;
  accepted: number;
  refused: number;
  completed: number;
  failed: number;
  failedReasons: Record<string, number>;
  lost: number;
  wrongChecksum: number;
  partFilesLeft: number;
  stuckRunning: number;
  workerKills: number;
  redisRestarts: number;
  apiStops: number;
  durationMs: number;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

export async function runChaos(options: ChaosOptions): Promise<ChaosFigures> {
  const log = options.log ?? (() => undefined);
  const started = Date.now();
  const root = await mkdtemp(path.join(os.tmpdir(), 'ferry-chaos-'));
  const downloadDir = path.join(root, 'downloads');
  // Append-only persistence, restartable on the same port and data (SIGTERM: Redis flushes the AOF).
  const redis = await startRestartableRedisServer(['--appendonly', 'yes', '--appendfsync', 'everysec']);
  const jenkins: FakeJenkins = await startFakeJenkins();
  const env: Record<string, string> = {
    REDIS_URL: redis.url,
    JENKINS_URL: jenkins.url,
    DOWNLOAD_DIR: downloadDir,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    QUEUE_PREFIX: '{chaos}',
    JOB_LOCK_MS: '3000',
    JOB_ATTEMPTS: '5',
    JOB_MAX_STALLS: '20',
    SHUTDOWN_TIMEOUT_MS: '2000',
    WORKER_CONCURRENCY: '3',
    DOWNLOAD_RETRIES: '5',
    STALL_SECONDS: '5',
  };

  const apis: Array<{ url: string; service: ChildService; stopped: boolean }> = [];
  for (let index = 0; index < options.apis; index += 1) {
    const port = await freePort();
    const service = startScript('api', { ...env, PORT: String(port) });
    apis.push({ url: `http://127.0.0.1:${port}`, service, stopped: false });
  }
  await Promise.all(apis.map((api) => waitReady(api.url, api.service)));
  const workers: ChildService[] = Array.from({ length: options.workers }, () => startScript('worker', env));
  const figures: ChaosFigures = {
    submitted: 0,
    accepted: 0,
    refused: 0,
    completed: 0,
    failed: 0,
    failedReasons: {},
    lost: 0,
    wrongChecksum: 0,
    partFilesLeft: 0,
    stuckRunning: 0,
    workerKills: 0,
    redisRestarts: 0,
    apiStops: 0,
    durationMs: 0,
  };

  // Builds of varied sizes; a few artifacts with faults that clear themselves.
  const builds: string[] = [];
  for (let index = 0; index < options.jobs; index += 1) {
    const files = 1 + (index % 3);
    const artifacts = Array.from({ length: files }, (_, file) => ({
      relativePath: `hapy/reports/junit/r${file}.xml`,
      size: [2_000, 60_000, 400_000, 1_500_000][(index + file) % 4] as number,
    }));
    builds.push(jenkins.addBuild(['QA_Release_9.9', `chaos-${index}`], 1, { artifacts }));
    if (index % 10 === 3) jenkins.setFault(`chaos-${index}/`, { kind: 'drop-after', bytes: 10_000, times: 1 });
    if (index % 10 === 7) jenkins.setFault(`chaos-${index}/`, { kind: 'status', status: 503, retryAfter: '1', times: 2 });
  }
  jenkins.setThrottle(3_000_000);

  const accepted = new Map<string, string>();
  const liveApis = () => apis.filter((api) => !api.stopped);
  const submitAll = async () => {
    const gap = options.submitOverMs / options.jobs;
    for (const [index, url] of builds.entries()) {
      figures.submitted += 1;
      const api = liveApis()[index % liveApis().length] as (typeof apis)[number];
      try {
        const response = await fetch(`${api.url}/api/v1/jenkins/download`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ job_url: url }),
          signal: AbortSignal.timeout(5_000),
        });
        const body = (await response.json()) as { job_id?: string };
        if (response.status === 202 && body.job_id) {
          figures.accepted += 1;
          accepted.set(body.job_id, url);
        } else {
          figures.refused += 1;
        }
      } catch {
        figures.refused += 1;
      }
      await new Promise((resolve) => setTimeout(resolve, gap));
    }
  };

  let chaosOn = true;
  const killer = (async () => {
    while (chaosOn) {
      await new Promise((resolve) => setTimeout(resolve, options.killEveryMs));
      if (!chaosOn) break;
      const index = Math.floor(Math.random() * workers.length);
      const victim = workers[index] as ChildService;
      victim.child.kill('SIGKILL');
      figures.workerKills += 1;
      log(`chaos: SIGKILL worker ${index} (pid ${victim.child.pid ?? '?'})`);
      await new Promise((resolve) => victim.child.once('exit', resolve));
      workers[index] = startScript('worker', env);
    }
  })();
  const redisRestart = (async () => {
    await new Promise((resolve) => setTimeout(resolve, options.redisRestartAtMs));
    log('chaos: restarting Redis');
    await redis.halt('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await redis.start();
    figures.redisRestarts += 1;
    log('chaos: Redis back');
  })();
  const apiStop = (async () => {
    await new Promise((resolve) => setTimeout(resolve, options.apiStopAtMs));
    const victim = apis[0];
    if (!victim || apis.length < 2) return;
    victim.stopped = true;
    log('chaos: SIGTERM api 0');
    const code = await victim.service.stop(15_000);
    figures.apiStops += 1;
    log(`chaos: api 0 exited with ${String(code)}`);
  })();

  await submitAll();
  await Promise.all([redisRestart, apiStop]);
  chaosOn = false;
  await killer;
  log(`chaos: ${figures.accepted} accepted; waiting for the queue to drain`);

  // Drain: every accepted job must reach a final status.
  const api = liveApis()[0] as (typeof apis)[number];
  const final = new Map<string, Record<string, unknown>>();
  const deadline = Date.now() + options.drainTimeoutMs;
  while (final.size < accepted.size && Date.now() < deadline) {
    for (const id of accepted.keys()) {
      if (final.has(id)) continue;
      const response = await fetch(`${api.url}/api/v1/jenkins/download/${id}/status`).catch(() => null);
      if (!response || response.status !== 200) continue;
      const body = (await response.json()) as Record<string, unknown>;
      if (['completed', 'failed', 'cancelled'].includes(body.status as string)) final.set(id, body);
    }
    if (final.size < accepted.size) await new Promise((resolve) => setTimeout(resolve, 500));
  }

  for (const [id, url] of accepted) {
    const body = final.get(id);
    if (!body) {
      const response = await fetch(`${api.url}/api/v1/jenkins/download/${id}/status`).catch(() => null);
      const status = response?.status === 200 ? ((await response.json()) as { status: string }).status : 'unknown';
      if (status === 'running') figures.stuckRunning += 1;
      figures.lost += 1;
      log(`chaos: job ${id} not finished (${status})`);
      continue;
    }
    if (body.status === 'completed') {
      figures.completed += 1;
      for (const file of body.files as Array<{ path: string; sha256: string }>) {
        const relative = file.path.split('/').slice(3).join('/');
        const bytes = await readFile(path.join(downloadDir, file.path)).catch(() => Buffer.alloc(0));
        if (sha256(bytes) !== jenkins.artifactSha256(url, relative) || file.sha256 !== sha256(bytes)) figures.wrongChecksum += 1;
      }
    } else {
      figures.failed += 1;
      const reason = String(body.error ?? body.status).replace(/[0-9a-f-]{36}/g, '<id>').slice(0, 120);
      figures.failedReasons[reason] = (figures.failedReasons[reason] ?? 0) + 1;
    }
  }
  const entries = await readdir(downloadDir, { recursive: true, withFileTypes: true }).catch(() => []);
  figures.partFilesLeft = entries.filter((entry) => entry.isFile() && /\.part(\.json)?$/.test(entry.name)).length;
  figures.durationMs = Date.now() - started;

  await Promise.all([...workers, ...apis.filter((entry) => !entry.stopped).map((entry) => entry.service)].map((service) => service.stop(10_000)));
  await redis.destroy();
  await jenkins.close();
  await rm(root, { recursive: true, force: true });
  return figures;
}

/** One line per figure, as `npm run chaos` prints them. */
export function formatFigures(figures: ChaosFigures): string[] {
  const reasons = Object.entries(figures.failedReasons).map(([reason, count]) => `${count}x ${reason}`);
  return [
    `submitted         ${figures.submitted}`,
    `accepted          ${figures.accepted} (refused ${figures.refused})`,
    `completed         ${figures.completed}`,
    `failed            ${figures.failed}${reasons.length > 0 ? `: ${reasons.join('; ')}` : ''}`,
    `lost              ${figures.lost}   (goal 0)`,
    `wrong checksum    ${figures.wrongChecksum}   (goal 0)`,
    `.part files left  ${figures.partFilesLeft}`,
    `stuck running     ${figures.stuckRunning}   (goal 0)`,
    `chaos             ${figures.workerKills} worker SIGKILLs, ${figures.redisRestarts} Redis restart, ${figures.apiStops} API SIGTERM`,
    `duration          ${(figures.durationMs / 1_000).toFixed(1)} s`,
  ];
}
