// Baseline of the small-jobs and cold-start scenarios: a bare BullMQ worker, the same kind of
// process as `node dist/worker/main.js` (one ioredis connection made by ferry's createRedis with the
// worker's options, WORKER_CONCURRENCY jobs at once, a keep-alive HTTP agent), that for each job
// reads the build's api/json and writes every artifact to DOWNLOAD_DIR/<release>/<job>/<build>/ with
// http.get piped into a file. No retries, resume, hashing, fsync, rename, folder lock, manifest, log
// or progress: what ferry does on top is the difference the bench measures.
// Env: REDIS_URL, QUEUE_PREFIX, DOWNLOAD_DIR, WORKER_CONCURRENCY.
import { Buffer } from 'node:buffer';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import process from 'node:process';
import { pipeline } from 'node:stream/promises';
import { URL } from 'node:url';
import { Worker } from 'bullmq';
import { createLogger } from '../../../dist/shared/logger.js';
import { createRedis } from '../../../dist/shared/redis.js';

const logger = createLogger({ service: 'bare-worker', level: 'warn' });
const redis = createRedis(process.env.REDIS_URL ?? '', 'worker', logger, 'bare-worker');
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const downloadDir = process.env.DOWNLOAD_DIR ?? './downloads';
// BARE_DURABLE=1: each file goes to a temporary name, is fsynced, then renamed, and a small manifest
// is written last through a temporary name too (not fsynced, as ferry's: it is verified on every
// read): the file-system work ferry cannot skip, without anything else of ferry.
const durable = process.env.BARE_DURABLE === '1';

/** Writes `bytes` to `target` through `<target>.part`: open, write, fsync (unless `sync` is false), close, rename. */
async function writeDurably(target, bytes, sync = true) {
  const part = `${target}.part`;
  const handle = await open(part, 'w');
  try {
    await handle.write(bytes, 0, bytes.length, 0);
    if (sync) await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(part, target);
}

const readAll = async (stream) => {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
};

const get = (url) =>
  new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => (res.statusCode === 200 ? resolve(res) : reject(new Error(`HTTP ${res.statusCode} for ${url}`)))).on('error', reject);
  });

const worker = new Worker(
  'downloads',
  async (job) => {
    const buildUrl = job.data.job_url;
    const chunks = [];
    for await (const chunk of await get(`${buildUrl}api/json?tree=number,artifacts[fileName,relativePath]`)) chunks.push(chunk);
    const build = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const segments = new URL(buildUrl).pathname.split('/').filter(Boolean);
    const dir = path.join(downloadDir, job.data.release, segments.at(-2) ?? 'job', String(build.number));
    await Promise.all(
      build.artifacts.map(async ({ relativePath }) => {
        const target = path.join(dir, relativePath);
        await mkdir(path.dirname(target), { recursive: true });
        if (durable) await writeDurably(target, await readAll(await get(`${buildUrl}artifact/${relativePath}`)));
        else await pipeline(await get(`${buildUrl}artifact/${relativePath}`), createWriteStream(target));
      }),
    );
    if (durable) await writeDurably(path.join(dir, '.manifest.json'), Buffer.from(JSON.stringify({ files: build.artifacts })), false);
    return { files: build.artifacts.length };
  },
  { connection: redis, prefix: process.env.QUEUE_PREFIX ?? '{bare}', concurrency: Number(process.env.WORKER_CONCURRENCY ?? 2) },
);
worker.on('error', (error) => logger.warn('worker error', { error: error.message }));
const stop = () => void worker.close().finally(() => redis.disconnect());
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
