/**
 * CPU per job of one worker process alone (no API, no other worker): `npx vitest run --config
 * tests/bench/profile/vitest.config.ts`. Fills the queue with ROUNDS x JOBS small jobs (three 10 kB
 * artifacts each, as the small-jobs scenario) before the worker starts, then reads the worker's and
 * Redis's CPU from /proc and this process's (the fake Jenkins) until every job is done. Each round
 * runs every contender once, alternating: WORKERS is a comma-separated list of worker entry points
 * (default `dist/worker/main.js`; an older build copied to `.cmp/<name>/dist` compares two builds),
 * plus the bare BullMQ worker of the bench; one run of the first contender before them warms up
 * the fake Jenkins and is not counted. Loopback only; bounded by JOBS and ROUNDS.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { it } from 'vitest';
import { createKeys } from '../../../shared/keys.js';
import { fillQueue, ferryEnv } from '../ferry-fleet.js';
import { median, processCpuSeconds, ROOT, sleep, startCommand, startNode } from '../harness.js';
import { startScenario } from '../scenario.js';

const JOBS = Number(process.env.JOBS ?? 1000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 2);
const WORKERS = (process.env.WORKERS ?? 'dist/worker/main.js').split(',').filter(Boolean);
/** The bare worker as is, and with BARE_DURABLE=1 (BARE=plain or BARE=durable for one of them). */
const BARE = [false, true].filter((durable) => !process.env.BARE || process.env.BARE === (durable ? 'durable' : 'plain'));


/** CPU seconds the whole machine spent busy so far (/proc/stat: all but idle and iowait), every process and the kernel's own work. */
function machineBusySeconds(): number {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / 100;
}

/**
 * Redis's read events so far (INFO stats total_reads_processed): one per write a client's socket
 * delivered, so, per job, the writes to Redis (this process's polling included).
 */
async function redisReads(redis: Redis): Promise<number> {
  return Number(/total_reads_processed:(\d+)/.exec(await redis.info('stats'))?.[1]);
}

/** TCP connections this machine opened so far (/proc/net/snmp ActiveOpens): all loopback here. */
function tcpActiveOpens(): number {
  const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((line) => line.startsWith('Tcp:'));
  const [names, values] = lines.map((line) => line.split(/\s+/));
  return Number(values?.[names?.indexOf('ActiveOpens') ?? -1]);
}

it('worker CPU per job', async () => {
  const { redisServer, redis, jenkins, stop } = await startScenario('worker-cpu', 'worker CPU per job');
  const work = await mkdtemp(path.join(os.tmpdir(), 'ferry-worker-cpu-'));
  const redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1]);
  const results = new Map<string, Array<{ worker: number; redis: number; bench: number; machine: number; seconds: number; connections: number; reads: number }>>();
  let build = 0;
  const newBuilds = () =>
    Array.from({ length: JOBS }, () =>
      jenkins.addBuild(['QA_Release_6.4', 'small-suite'], (build += 1), {
        artifacts: Array.from({ length: 3 }, (_, file) => ({ relativePath: `hapy/reports/junit/suite-${file}.xml`, size: 10_000 })),
      }),
    );
  /** Starts the worker, lets it boot, then fills its queue with `fill` and measures until every job is done. */
  const measure = async (name: string, prefix: string, start: () => ReturnType<typeof startNode>, fill: () => Promise<unknown>, counted = true) => {
    const bull = `${prefix}:downloads`;
    const worker = start();
    await sleep(1_500);
    const cpu0 = { worker: processCpuSeconds(worker.pid), redis: processCpuSeconds(redisPid), bench: process.cpuUsage(), machine: machineBusySeconds() };
    const opens0 = tcpActiveOpens();
    const reads0 = await redisReads(redis);
    // MONITOR=<file>: every command Redis runs while this worker measures, with the name of the
    // connection that sent it (`lua` for commands run inside scripts), written to <file>.<name>.
    // MONITOR costs Redis and this process CPU: the CPU figures of such a run are marked.
    const names = new Map<string, string>();
    for (const line of String(await redis.call('CLIENT', 'LIST')).split('\n')) {
      const addr = /addr=(\S+)/.exec(line)?.[1];
      if (addr) names.set(addr, /name=(\S*)/.exec(line)?.[1] || '-');
    }
    const monitored: string[] = [];
    const requests0 = jenkins.requests.length;
    const monitor = process.env.MONITOR ? await redis.monitor() : undefined;
    monitor?.on('monitor', (_time: string, args: string[], source: string) => {
      monitored.push(`${names.get(source) ?? source} ${args.slice(0, 3).join(' ')}`);
    });
    const started = Date.now();
    await fill();
    for (;;) {
      if ((await redis.zcard(`${bull}:completed`)) + (await redis.zcard(`${bull}:failed`)) >= JOBS) break;
      if (worker.child.exitCode !== null) throw new Error(worker.output());
      if (Date.now() - started > 300_000) throw new Error(`${name}: not done in 300 s`);
      await sleep(20);
    }
    const seconds = (Date.now() - started) / 1000;
    const bench = process.cpuUsage(cpu0.bench);
    if (monitor) {
      monitor.disconnect();
      const file = `${process.env.MONITOR}.${name.replace(/[^\w.-]+/g, '_')}`;
      writeFileSync(file, `${monitored.join('\n')}\n`);
      const counts = new Map<string, number>();
      for (const line of monitored) {
        const [connection, command] = line.split(' ');
        const key = `${connection} ${command}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      const kinds = new Map<string, number>();
      for (const request of jenkins.requests.slice(requests0)) {
        const kind = `${request.method} ${request.path.includes('/api/json') ? 'api/json' : request.path.includes('/artifact/') ? 'artifact' : 'other'}`;
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
      console.log(`${name}: Jenkins requests per job: ${[...kinds].map(([kind, count]) => `${kind} ${(count / JOBS).toFixed(2)}`).join(', ')}`);
      console.log(`${name}: commands per job by connection (${file}):`);
      for (const [key, count] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`  ${(count / JOBS).toFixed(2).padStart(6)}  ${key}`);
    }
    const row = {
      worker: ((processCpuSeconds(worker.pid) - cpu0.worker) / JOBS) * 1000,
      redis: ((processCpuSeconds(redisPid) - cpu0.redis) / JOBS) * 1000,
      bench: (bench.user + bench.system) / 1000 / JOBS,
      machine: ((machineBusySeconds() - cpu0.machine) / JOBS) * 1000,
      seconds,
      connections: (tcpActiveOpens() - opens0) / JOBS,
      reads: ((await redisReads(redis)) - reads0) / JOBS,
    };
    await worker.stop();
    const failed = await redis.zcard(`${bull}:failed`);
    if (failed > 0) throw new Error(`${name}: ${failed} jobs failed`);
    await redis.del(`${bull}:completed`, `${bull}:failed`);
    if (counted) (results.get(name) ?? results.set(name, []).get(name))?.push(row);
    console.log(`${process.env.MONITOR ? '(under MONITOR, CPU inflated) ' : ''}${counted ? '' : 'warm-up, not counted: '}${name}: worker ${row.worker.toFixed(2)} ms/job, Redis ${row.redis.toFixed(2)}, fake Jenkins ${row.bench.toFixed(2)}, machine ${row.machine.toFixed(2)}, ${(JOBS / seconds).toFixed(0)} jobs/s, ${row.connections.toFixed(2)} TCP connections opened per job, ${row.reads.toFixed(2)} writes to Redis per job`);
  };
  try {
    // Round -1 warms up the fake Jenkins and this process with the first contender, not counted: the
    // first run was the slowest before (2,000 jobs: 3.23 ms/job, then 2.47 and 2.60 for the same build).
    for (let round = -1; round < ROUNDS; round += 1) {
      for (const [index, main] of WORKERS.entries()) {
        if (round < 0 && index > 0) break;
        const prefix = `{w${index}}`;
        const builds = newBuilds();
        // An entry may carry node flags after its script ('dist/worker/main.js --max-semi-space-size=32'):
        // node gets them first; and settings before it ('DOWNLOAD_WRITER_THREADS=1 dist/worker/main.js').
        const settings: Record<string, string> = {};
        const [script = '', ...flags] = main.split(' ').filter((word) => {
          const setting = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(word);
          if (setting) settings[setting[1] as string] = setting[2] as string;
          return !setting;
        });
        const env = ferryEnv(redisServer.url, jenkins.url, path.join(work, `w${index}-${round}`), { QUEUE_PREFIX: prefix, WORKER_CONCURRENCY: String(CONCURRENCY), ...settings });
        await measure(main, createKeys(prefix).queuePrefix, () => startCommand(process.execPath, [...flags, script], env), () => fillQueue(redis, prefix, JOBS, (i) => builds[i] as string), round >= 0);
      }
      if (round < 0) continue;
      for (const durable of BARE) {
        const builds = newBuilds();
        const bare = new Queue('downloads', { connection: redis, prefix: '{bare}' });
        const env = {
          REDIS_URL: redisServer.url,
          QUEUE_PREFIX: '{bare}',
          DOWNLOAD_DIR: path.join(work, `bare-${durable}-${round}`),
          WORKER_CONCURRENCY: String(CONCURRENCY),
          BARE_DURABLE: durable ? '1' : '0',
          // Profiled like ferry's workers when BENCH_CPU_PROF is set.
          ...(process.env.BENCH_CPU_PROF ? { NODE_OPTIONS: `--import=${ROOT}tests/bench/cpu-profile.mjs` } : {}),
        };
        await measure(
          durable ? 'bare + fsync, rename, manifest' : 'bare',
          '{bare}',
          () => startNode('tests/bench/baselines/bare-worker.mjs', [], env),
          () => bare.addBulk(builds.map((url) => ({ name: 'download', data: { job_url: url, release: '6.4' } }))),
        );
        await bare.close();
      }
    }
    for (const [name, rows] of results) {
      const m = (pick: (row: (typeof rows)[number]) => number) => (median(rows.map(pick)) as number).toFixed(2);
      console.log(`median of ${rows.length}: ${name}: worker ${m((r) => r.worker)} ms/job, Redis ${m((r) => r.redis)}, fake Jenkins ${m((r) => r.bench)}, machine ${m((r) => r.machine)}, jobs/s ${m((r) => JOBS / r.seconds)}`);
    }
  } finally {
    await stop();
    // KEEP_WORK=1 leaves the files: deleting thousands slows file creation for minutes on this ext4
    // (see the small-jobs scenario), which would skew the next measurement.
    if (process.env.KEEP_WORK) process.stdout.write(`KEEP_WORK: left ${work}\n`);
    else await rm(work, { recursive: true, force: true });
  }
});
