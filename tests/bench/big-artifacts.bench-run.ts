/**
 * Scenario 4, big artifacts: one 1 GiB artifact (256 MiB in quick mode) from the fake Jenkins on
 * loopback, downloaded by a real ferry worker process (`node dist/worker/main.js`, one per run, so
 * its VmHWM is that run's peak RSS) and, in the same run, by `curl -o` (the baseline, hashing
 * nothing), plain Node streaming (http.get into a file), and `curl | tee | sha256sum`. The worker
 * runs twice: a build without fingerprints (SHA-256 only) and one with (SHA-256 and MD5). Then a
 * 4 GiB artifact (1 GiB in quick mode) by curl and the worker, to show memory does not grow with
 * size. Worker speed is size / (job finishedOn - processedOn): everything the job does, its
 * api/json and fingerprint requests, the transfer with hashing, the fsync, the rename, the manifest.
 *
 * Every contender starts from the same page-cache state: right before each run the bench writes
 * and deletes a scratch file as big as the download (up to 1 GiB). On this VM, writing into page
 * cache costs 0.2 s per GiB with pages the guest freed a moment ago but up to 2.5 s per GiB with
 * pages the host has not backed yet (free pages go back to the host a few seconds after they are
 * freed), so without this a contender's speed depended on what ran just before it and how long ago.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { it } from 'vitest';
import { startScenario } from './scenario.js';
import { createKeys } from '../../shared/keys.js';
import { startScript } from '../helpers/processes.js';
import { ferryEnv, startFerryApi, submitDownload } from './ferry-fleet.js';
import { median, processMemory, QUICK, sleep, startNode } from './harness.js';

const MiB = 2 ** 20;
const SIZE = (QUICK ? 256 : 1024) * MiB;
const LARGE = (QUICK ? 512 : 4096) * MiB;
const ROUNDS = QUICK ? 1 : 3;
const sizeLabel = (bytes: number) => (bytes >= 1024 * MiB ? `${bytes / (1024 * MiB)} GiB` : `${bytes / MiB} MiB`);
const mbPerSecond = (bytes: number, seconds: number) => bytes / seconds / 1e6;

/** Runs a command to its end; resolves with its stdout and the wall-clock seconds from spawn to exit. */
function run(command: string, args: string[]): Promise<{ stdout: string; seconds: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const seconds = (performance.now() - started) / 1000;
      if (code === 0) resolve({ stdout, seconds });
      else reject(new Error(`${command} exited ${code}: ${stderr}`));
    });
  });
}

it('big artifacts: worker MB/s vs curl, and worker peak RSS at two sizes', async () => {
  const { redisServer, redis, jenkins, report, stop } = await startScenario(
    'big-artifacts',
    `4. Big artifacts: ${sizeLabel(SIZE)} from a loopback server, ferry worker vs curl -o (same URL, same run); then ${sizeLabel(LARGE)}`,
  );
  const work = await mkdtemp(path.join(os.tmpdir(), 'ferry-bench-big-'));
  const api = await startFerryApi(ferryEnv(redisServer.url, jenkins.url, work));
  const keys = createKeys('{ferry}');
  const plainBuild = jenkins.addBuild(['QA_Release_6.4', 'big-plain'], 1, { artifacts: [{ relativePath: 'big.bin', size: SIZE }] });
  const fingerprintedBuild = jenkins.addBuild(['QA_Release_6.4', 'big-fingerprinted'], 1, {
    artifacts: [{ relativePath: 'big.bin', size: SIZE }],
    fingerprint: true,
  });
  const largeBuild = jenkins.addBuild(['QA_Release_6.4', 'big-large'], 1, { artifacts: [{ relativePath: 'big.bin', size: LARGE }] });
  const warmBuild = jenkins.addBuild(['QA_Release_6.4', 'big-warm-up'], 1, { artifacts: [{ relativePath: 'big.bin', size: 64 * MiB }] });
  const artifact = (build: string) => `${build}artifact/big.bin`;
  const out = (name: string) => path.join(work, name);

  /** Writes and deletes a scratch file of `bytes` (at most SIZE): the pages it frees are warm for whoever writes next. */
  const warmPageCache = async (bytes: number) => {
    const zeros = Buffer.alloc(8 * MiB);
    const handle = await open(out('warm.bin'), 'w');
    try {
      for (let written = 0; written < Math.min(bytes, SIZE); written += zeros.length) await handle.write(zeros);
    } finally {
      await handle.close();
      await rm(out('warm.bin'), { force: true });
    }
  };

  const curl = async (url: string, bytes: number) => {
    const file = out('curl.bin');
    await warmPageCache(bytes);
    const { stdout } = await run('curl', ['-sS', '-o', file, '-w', '%{time_total} %{size_download}', url]);
    const [seconds, size] = stdout.trim().split(' ').map(Number) as [number, number];
    if (size !== bytes) throw new Error(`curl got ${size} bytes, expected ${bytes}`);
    // What ferry's fsync before the rename costs on this disk, for the file curl just wrote.
    const handle = await open(file, 'r+');
    const syncStarted = performance.now();
    await handle.sync();
    const syncSeconds = (performance.now() - syncStarted) / 1000;
    await handle.close();
    await rm(file, { force: true });
    return { mbps: mbPerSecond(bytes, seconds), syncSeconds };
  };

  const plainNode = async (url: string, bytes: number) => {
    await warmPageCache(bytes);
    const child = startNode('tests/bench/baselines/plain-stream.mjs', [url, out('plain.bin')], {});
    const code = await child.exited;
    if (code !== 0) throw new Error(`plain-stream exited ${code}: ${child.output()}`);
    const result = JSON.parse(child.output().trim()) as { bytes: number; ms: number };
    await rm(out('plain.bin'), { force: true });
    if (result.bytes !== bytes) throw new Error(`plain-stream got ${result.bytes} bytes`);
    return mbPerSecond(bytes, result.ms / 1000);
  };

  const teeSha = async (url: string, bytes: number) => {
    await warmPageCache(bytes);
    const { stdout, seconds } = await run('bash', ['-c', 'set -o pipefail; curl -sS "$1" | tee "$2" | sha256sum', 'bash', url, out('tee.bin')]);
    await rm(out('tee.bin'), { force: true });
    return { mbps: mbPerSecond(bytes, seconds), sha256: stdout.split(' ')[0] ?? '' };
  };

  /** One job on a fresh worker process; the worker's peak RSS (VmHWM) is read before it stops. */
  const ferryWorker = async (build: string, bytes: number) => {
    const downloadDir = await mkdtemp(path.join(work, 'downloads-'));
    await warmPageCache(bytes);
    const jobId = await submitDownload(api.url, build);
    const worker = startScript('worker', ferryEnv(redisServer.url, jenkins.url, downloadDir, { WORKER_CONCURRENCY: '1' }));
    const workerPid = worker.child.pid as number;
    try {
      const deadline = Date.now() + 300_000;
      let status: { status?: string; error?: string | null; files?: Array<{ sha256: string }> } = {};
      for (;;) {
        status = (await (await fetch(`${api.url}/api/v1/jenkins/download/${jobId}/status`)).json()) as typeof status;
        if (status.status === 'completed' || status.status === 'failed') break;
        if (Date.now() > deadline || worker.child.exitCode !== null) throw new Error(`job ${jobId} did not finish: ${worker.output()}`);
        await sleep(50);
      }
      if (status.status !== 'completed') throw new Error(`job ${jobId} ${status.status}: ${status.error}`);
      const peakMB = processMemory(workerPid).peakMB;
      const [processedOn, finishedOn] = (await redis.hmget(keys.bullJob(jobId), 'processedOn', 'finishedOn')).map(Number) as [number, number];
      const page = (await (await fetch(`${api.url}/api/v1/jenkins/download/${jobId}/logs?limit=100`)).json()) as {
        lines: Array<{ message: string; timestamp: string }>;
      };
      const at = (pattern: RegExp) => Date.parse(page.lines.find((line) => pattern.test(line.message))?.timestamp ?? '');
      const transferSeconds = (at(/: done$/) - at(/big\.bin \(/)) / 1000;
      return {
        mbps: mbPerSecond(bytes, (finishedOn - processedOn) / 1000),
        transferMbps: mbPerSecond(bytes, transferSeconds),
        peakMB,
        sha256: status.files?.[0]?.sha256 ?? '',
      };
    } finally {
      await worker.stop();
      await rm(downloadDir, { recursive: true, force: true });
    }
  };

  try {
    // The fake computes a fingerprinted artifact's MD5 on the first fingerprint request (seconds
    // per GiB): do it now, so that time is not charged to the worker's planning.
    await fetch(`${fingerprintedBuild}api/json?tree=fingerprint[fileName,hash]`).then((response) => response.text());
    // An untimed transfer first, so the fake server's code is warm for the first measured one.
    await curl(artifact(warmBuild), 64 * MiB);

    const curlRuns: Array<{ mbps: number; syncSeconds: number }> = [];
    const shaRuns: Array<Awaited<ReturnType<typeof ferryWorker>>> = [];
    for (let round = 1; round <= ROUNDS; round += 1) {
      curlRuns.push(await curl(artifact(plainBuild), SIZE));
      report.log(`round ${round} curl -o: ${curlRuns.at(-1)?.mbps.toFixed(0)} MB/s (fsync of its file afterwards ${curlRuns.at(-1)?.syncSeconds.toFixed(2)} s)`);
      shaRuns.push(await ferryWorker(plainBuild, SIZE));
      const last = shaRuns.at(-1);
      report.log(`round ${round} ferry worker, SHA-256: ${last?.mbps.toFixed(0)} MB/s job, ${last?.transferMbps.toFixed(0)} MB/s transfer+fsync, peak RSS ${last?.peakMB.toFixed(0)} MB`);
    }
    const plain = await plainNode(artifact(plainBuild), SIZE);
    report.log(`plain Node streaming: ${plain.toFixed(0)} MB/s`);
    const md5 = await ferryWorker(fingerprintedBuild, SIZE);
    report.log(`ferry worker, SHA-256 + MD5: ${md5.mbps.toFixed(0)} MB/s job, ${md5.transferMbps.toFixed(0)} MB/s transfer+fsync, peak RSS ${md5.peakMB.toFixed(0)} MB`);
    const tee = await teeSha(artifact(plainBuild), SIZE);
    report.log(`curl | tee | sha256sum: ${tee.mbps.toFixed(0)} MB/s`);
    // Quick mode leaves out curl of the large file: its figure is for orientation only.
    const largeCurl = QUICK ? null : await curl(artifact(largeBuild), LARGE);
    if (largeCurl) report.log(`${sizeLabel(LARGE)} curl -o: ${largeCurl.mbps.toFixed(0)} MB/s (fsync ${largeCurl.syncSeconds.toFixed(2)} s)`);
    const large = await ferryWorker(largeBuild, LARGE);
    report.log(`${sizeLabel(LARGE)} ferry worker, SHA-256: ${large.mbps.toFixed(0)} MB/s job, ${large.transferMbps.toFixed(0)} MB/s transfer+fsync, peak RSS ${large.peakMB.toFixed(0)} MB`);

    const curlMbps = median(curlRuns.map((r) => r.mbps));
    const size = sizeLabel(SIZE);
    report.figure(`worker, SHA-256, no fingerprint (${size})`, 'MB/s', median(shaRuns.map((r) => r.mbps)), { baseline: curlMbps, goal: { ratioAtLeast: 0.6 } });
    report.figure(`worker, SHA-256 + MD5, fingerprinted (${size})`, 'MB/s', md5.mbps, { baseline: curlMbps });
    report.figure(`plain Node streaming, no hash (${size})`, 'MB/s', plain, { baseline: curlMbps });
    report.figure(`curl | tee | sha256sum (${size})`, 'MB/s', tee.mbps, { baseline: curlMbps });
    report.figure(`worker transfer + fsync only, SHA-256 (${size})`, 'MB/s', median(shaRuns.map((r) => r.transferMbps)), { baseline: curlMbps });
    report.figure(`fsync of a ${size} file just written`, 's', median(curlRuns.map((r) => r.syncSeconds)));
    report.figure(`worker peak RSS, SHA-256 (${size})`, 'MB', Math.max(...shaRuns.map((r) => r.peakMB)), { goal: { below: 150 } });
    report.figure(`worker peak RSS, SHA-256 + MD5 (${size})`, 'MB', md5.peakMB, { goal: { below: 150 } });
    report.figure(`worker peak RSS, SHA-256 (${sizeLabel(LARGE)})`, 'MB', large.peakMB, {
      baseline: Math.max(...shaRuns.map((r) => r.peakMB)),
      goal: { below: 150 },
    });
    report.figure(`worker, SHA-256 (${sizeLabel(LARGE)})`, 'MB/s', large.mbps, { baseline: largeCurl?.mbps ?? null });
    const sha = shaRuns[0]?.sha256;
    report.figure('worker SHA-256 equals sha256sum of the same bytes', 'files', sha === tee.sha256 ? 1 : 0, {
      goal: { text: '= 1', pass: sha === tee.sha256 },
    });
    report.note(
      `worker MB/s = size / (job finishedOn - processedOn), so it includes api/json, the fingerprint request, hashing, ` +
        `fsync, rename and manifest; curl's is its own time_total without fsync; curl and the SHA-256 worker figures are the median of ${ROUNDS} alternating round(s), ` +
        `peak RSS is VmHWM of a fresh worker process per run; the fake Jenkins (AES-CTR generated content) runs in the bench process; ` +
        `before each run the bench writes and deletes a scratch file of the download's size (at most ${sizeLabel(SIZE)}) so every contender finds the page cache in the same state`,
    );
  } finally {
    await api.service.stop();
    await stop();
    await rm(work, { recursive: true, force: true });
    await report.save();
  }
});
