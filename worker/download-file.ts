import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { UnrecoverableError } from 'bullmq';
import { AppError } from '../shared/errors.js';
import { displayUrl, type ArtifactResponse, type JenkinsClient } from './jenkins-client.js';
import { RetryableError } from './retry-policy.js';

/** The bytes received do not match the fingerprint Jenkins published. */
export class IntegrityError extends AppError {
  constructor(message: string) {
    super('INTEGRITY_MISMATCH', message);
  }
}

export interface DownloadedFile {
  readonly size: number;
  readonly sha256: string;
}

export const PART_SUFFIX = '.part';

/**
 * The partial file of `target` for one job: `<target>.<job id>.part`. Two jobs writing the same
 * folder never share a partial file, a retry of the same job (on any worker sharing DOWNLOAD_DIR)
 * finds and resumes its own, and a sweeper can tell which job owns a leftover.
 */
export function partPathFor(target: string, jobId: string): string {
  return `${target}.${jobId}${PART_SUFFIX}`;
}

/** What is recorded beside a .part, so a changed artifact restarts instead of splicing two versions. */
interface PartMeta {
  readonly length: number;
  readonly lastModified: string | null;
}

export interface ArtifactDownload {
  readonly url: string;
  readonly target: string;
  readonly partPath: string;
  /** MD5 from Jenkins' fingerprints, when it published an unambiguous one. */
  readonly expectedMd5?: string | undefined;
  readonly maxBytes: number;
  /** Stall detection: fewer than minSpeedBytes per second over stallSeconds aborts the try. */
  readonly minSpeedBytes: number;
  readonly stallSeconds: number;
  readonly signal: AbortSignal;
  /** Called when a try starts writing: the total size when known, and the offset it resumes from. */
  readonly onStart: (total: number | undefined, resumedFrom: number) => void;
  /** Bytes of this file on disk so far (absolute, so a restart from zero is reflected). */
  readonly onProgress: (fileBytes: number) => void;
  readonly onNote: (message: string) => void;
  /**
   * False once this process may no longer write the job's files (its lock lease ran out); checked
   * before every chunk is written and before the final rename. Default: always true.
   */
  readonly canWrite?: () => boolean;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+)$/;

/** `Content-Length` of a response, or undefined when absent or malformed. */
function contentLength(response: ArtifactResponse): number | undefined {
  const header = response.body.headers['content-length'];
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : undefined;
}

async function readMeta(metaPath: string): Promise<PartMeta | null> {
  try {
    const parsed = JSON.parse(await readFile(metaPath, 'utf8')) as Partial<PartMeta>;
    return typeof parsed.length === 'number' ? { length: parsed.length, lastModified: parsed.lastModified ?? null } : null;
  } catch {
    return null;
  }
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

async function hashInto(file: string, hashes: Hash[]): Promise<void> {
  for await (const chunk of createReadStream(file)) for (const hash of hashes) hash.update(chunk as Buffer);
}

async function fsyncPath(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Aborts a transfer that moves fewer than `minSpeed` bytes per second over `seconds` (like curl's
 * --speed-limit/--speed-time): a trickle that would hold a slot for hours is retried instead.
 */
function watchSpeed(minSpeed: number, seconds: number) {
  const controller = new AbortController();
  const buckets: number[] = [];
  let current = 0;
  const timer = setInterval(() => {
    buckets.push(current);
    current = 0;
    if (buckets.length > seconds) buckets.shift();
    const sum = buckets.reduce((total, value) => total + value, 0);
    if (minSpeed > 0 && buckets.length >= seconds && sum < minSpeed * seconds) {
      controller.abort(new RetryableError('TRANSFER_STALLED', `transfer slower than ${minSpeed} B/s for ${seconds} s`));
    }
  }, 1_000);
  timer.unref();
  return { signal: controller.signal, count: (bytes: number) => (current += bytes), stop: () => clearInterval(timer) };
}

/**
 * One try: resume the .part when Jenkins honours the range exactly, else start from zero; stream
 * the body to disk while hashing it. Leaves the .part in place on an interrupted transfer.
 */
async function tryOnce(jenkins: JenkinsClient, job: ArtifactDownload, metaPath: string, wantMd5: boolean): Promise<DownloadedFile & { md5?: string }> {
  const meta = await readMeta(metaPath);
  let partSize = await sizeOf(job.partPath);
  if (partSize > 0 && (!meta || partSize >= meta.length)) {
    await rm(job.partPath, { force: true });
    partSize = 0;
  }
  // Ask Jenkins again on every try: a redirect it answered before may have expired.
  const response = await jenkins.openArtifact(job.url, job.signal, partSize > 0 ? partSize : undefined);
  const lastModified = response.body.headers['last-modified'] ?? null;
  let append = false;
  let total: number | undefined;
  if (response.status === 206) {
    const range = CONTENT_RANGE.exec(response.body.headers['content-range'] ?? '');
    const valid = range && meta && Number(range[1]) === partSize && Number(range[3]) === meta.length && (meta.lastModified ?? null) === lastModified;
    if (!valid) {
      response.body.destroy();
      await rm(job.partPath, { force: true });
      throw new RetryableError('RANGE_MISMATCH', `resume refused: Content-Range "${response.body.headers['content-range'] ?? ''}" does not continue the partial file; restarting it`);
    }
    append = true;
    total = meta.length;
  } else {
    total = contentLength(response);
    if (partSize > 0) job.onNote(`server sent the whole file instead of the range; restarting from zero`);
  }
  if (total !== undefined && total > job.maxBytes) {
    response.body.destroy();
    throw new UnrecoverableError(`${displayUrl(job.url)} is ${total} bytes, more than MAX_ARTIFACT_BYTES (${job.maxBytes})`);
  }
  const needed = (total ?? 0) - (append ? partSize : 0);
  const disk = await statfs(path.dirname(job.partPath));
  if (needed > disk.bavail * disk.bsize) {
    response.body.destroy();
    throw new AppError(
      'DISK_FULL',
      `not enough free disk space for ${displayUrl(job.url)}: ${needed} bytes needed, ${disk.bavail * disk.bsize} free in ${path.dirname(job.partPath)}`,
    );
  }
  if (total !== undefined) await writeFile(metaPath, JSON.stringify({ length: total, lastModified } satisfies PartMeta));

  const sha256 = createHash('sha256');
  const md5 = wantMd5 ? createHash('md5') : undefined;
  const hashes = md5 ? [sha256, md5] : [sha256];
  if (append) await hashInto(job.partPath, hashes);
  let size = append ? partSize : 0;
  job.onStart(total, size);
  job.onProgress(size);

  const speed = watchSpeed(job.minSpeedBytes, job.stallSeconds);
  try {
    await pipeline(
      response.body,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          if (job.canWrite && !job.canWrite()) throw new Error('the job lock lease ran out');
          for (const hash of hashes) hash.update(chunk);
          size += chunk.length;
          speed.count(chunk.length);
          job.onProgress(size);
          yield chunk;
        }
      },
      createWriteStream(job.partPath, { flags: append ? 'a' : 'w' }),
      { signal: AbortSignal.any([job.signal, speed.signal]) },
    );
  } catch (error) {
    if (job.signal.aborted) throw job.signal.reason ?? error;
    if (speed.signal.aborted) throw speed.signal.reason as Error;
    throw new RetryableError('TRANSFER_INTERRUPTED', `transfer of ${displayUrl(job.url)} interrupted at byte ${size}: ${(error as Error).message}`, { cause: error });
  } finally {
    speed.stop();
  }
  if (total !== undefined && size !== total) {
    if (size > total) await rm(job.partPath, { force: true });
    throw new RetryableError('SIZE_MISMATCH', `received ${size} bytes of ${displayUrl(job.url)} but Content-Length announced ${total}`);
  }
  return { size, sha256: sha256.digest('hex'), ...(md5 ? { md5: md5.digest('hex') } : {}) };
}

/**
 * Downloads one artifact to its final path: retried and resumed through the .part file, size
 * checked against Content-Length, MD5 checked against Jenkins' fingerprint when there is one
 * (a mismatch discards the file and tries once more), fsynced, then renamed. A crash never
 * leaves a half file under the final name.
 */
export async function fetchArtifact(jenkins: JenkinsClient, job: ArtifactDownload): Promise<DownloadedFile> {
  await mkdir(path.dirname(job.target), { recursive: true });
  const metaPath = `${job.partPath}.json`;
  const label = displayUrl(job.url);
  for (let integrityTry = 1; ; integrityTry += 1) {
    const result = await jenkins.retry(
      () => jenkins.withConnection(() => tryOnce(jenkins, job, metaPath, job.expectedMd5 !== undefined)),
      job.signal,
      label,
      job.onNote,
    );
    if (job.expectedMd5 !== undefined && result.md5 !== job.expectedMd5.toLowerCase()) {
      await rm(job.partPath, { force: true });
      await rm(metaPath, { force: true });
      const message = `MD5 mismatch for ${label}: expected ${job.expectedMd5}, got ${result.md5 ?? 'none'}`;
      if (integrityTry >= 2) throw new UnrecoverableError(message);
      job.onNote(`${message}; downloading it again`);
      continue;
    }
    await fsyncPath(job.partPath);
    if (job.canWrite && !job.canWrite()) throw job.signal.reason ?? new Error('the job lock lease ran out');
    await rename(job.partPath, job.target);
    await rm(metaPath, { force: true });
    return { size: result.size, sha256: result.sha256 };
  }
}

/** SHA-256 and size of a file on disk, streamed. */
export async function hashFile(file: string): Promise<DownloadedFile> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha256: hash.digest('hex') };
}

/** Human size for log lines: `1.2 MB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}
