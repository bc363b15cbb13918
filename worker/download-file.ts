import { createHash, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, realpath, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { UnrecoverableError } from 'bullmq';
import { AppError } from '../shared/errors.js';
import { displayUrl, type ArtifactResponse, type JenkinsClient } from './jenkins-client.js';
import { DirectGetUnsupported, type ResponseHead } from './direct-get.js';
import { sharedFileWriter, type FileWrite, type FileWriter } from './file-writer.js';
import { LeaseLostError, PartWriter, partWriterStream, type WriteMode } from './part-writer.js';
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

/**
 * A temporary name of its own for one small file's one write (`<target>.<nonce>.<job id>.part`,
 * still the sweeper's pattern): a worker that took the job over after a stall uses the job's own
 * `.part` name, so two owners' writes of a small file never share (or truncate) one file.
 */
function uniquePartPath(job: ArtifactDownload): string {
  // 12 random hex digits; randomUUID draws from a cached pool (randomBytes(6) cost ~17 µs a call here).
  const nonce = randomUUID().replaceAll('-', '').slice(0, 12);
  const ownSuffix = job.partPath.startsWith(`${job.target}.`) ? job.partPath.slice(job.target.length) : PART_SUFFIX;
  return `${job.target}.${nonce}${ownSuffix}`;
}

/** The body does not match the MD5 fingerprint Jenkins published (false when there is none). */
function md5Mismatch(job: ArtifactDownload, md5: string | undefined): boolean {
  return job.expectedMd5 !== undefined && md5 !== job.expectedMd5.toLowerCase();
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
  /** Bytes of this file on disk so far (absolute, so a restart from zero is reflected); called after each write. */
  readonly onProgress: (fileBytes: number) => void;
  readonly onNote: (message: string) => void;
  /**
   * False once this process may no longer write the job's files (its lock lease ran out); checked
   * for every chunk as it arrives, again before every write to the file is issued (writes are
   * batched, see part-writer.ts), and before the final rename. Default: always true.
   */
  readonly canWrite?: () => boolean;
  /**
   * True when no earlier try can have left a `.part` of this job (the job's first start, not after a
   * stall): the first try then starts from zero without looking for one.
   */
  readonly fresh?: boolean;
  /** How big files reach the disk (DOWNLOAD_WRITE_MODE, part-writer.ts). Default 'direct'. */
  readonly writeMode?: WriteMode | undefined;
  /** Creates the target's folder; a module passes one that makes each folder once. Default: mkdir -p. */
  readonly ensureDir?: (dir: string) => Promise<unknown>;
  /** Writes small files whole (file-writer.ts). Default: the process-wide one. */
  readonly fileWriter?: FileWriter | undefined;
  /**
   * Takes a small body instead of writing it now: its module writes it later with the others and
   * the manifest, in one trip to a writer thread (download-processor.ts). The file is then not yet
   * under its final name when fetchArtifact returns. Absent: written at once.
   */
  readonly stage?: ((file: FileWrite) => void) | undefined;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+)$/;

/**
 * Files smaller than this are not resumed: no `.part.json` is written for them, so a later try
 * (which finds a `.part` without one) starts them again from zero. Resuming what a couple of socket
 * reads carry saves nothing, and for the many small artifacts of a release the record's write,
 * read and removal were a large share of the worker's file-system calls.
 */
export const RESUME_MIN_BYTES = 64 * 1024;

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

const READ_CHUNK = 1 << 20;

async function hashInto(file: string, hashes: Hash[]): Promise<void> {
  for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK })) for (const hash of hashes) hash.update(chunk as Buffer);
}

async function fsyncPath(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The stall rule's verdict, the same from the streaming and the small-body path. */
const stalled = (minSpeed: number, seconds: number) => new RetryableError('TRANSFER_STALLED', `transfer slower than ${minSpeed} B/s for ${seconds} s`);

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
      controller.abort(stalled(minSpeed, seconds));
    }
  }, 1_000);
  timer.unref();
  return { signal: controller.signal, count: (bytes: number) => (current += bytes), stop: () => clearInterval(timer) };
}

/**
 * The `.part` must hold exactly the `received` bytes (those hashed), or a later try would resume
 * after a hole or after bytes that were never hashed. When it does not (a write failed part way,
 * or any miscount), the partial file and its record are removed so the next try starts from zero;
 * true then. Left alone once this process may no longer write the job's files (another worker may
 * own them now).
 */
async function discardUnlessPrefix(job: ArtifactDownload, metaPath: string, received: number): Promise<boolean> {
  if (job.canWrite && !job.canWrite()) return false;
  if ((await sizeOf(job.partPath)) === received) return false;
  await rm(job.partPath, { force: true });
  await rm(metaPath, { force: true });
  return true;
}

/** Bodies at least this big are read with {@link JenkinsClient.readArtifactInto} (it costs a second request). */
export const DIRECT_GET_MIN_BYTES = 64 << 20;

/** What a try may do, kept across the tries of one file. */
interface TransferState {
  /** False once a direct read was refused: the http module reads the body from then on. */
  directGet: boolean;
  /** Tries made so far. */
  tries: number;
}

/**
 * What a try returns: the file's size and hashes, and whether the file is already fsynced and renamed
 * to its target (`placed`: a small file whose hashes were checked before it was written).
 */
type TryResult = DownloadedFile & { md5?: string; placed?: boolean };

/** The longest delay setTimeout keeps (a longer one fires at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Reads a small body (its Content-Length is `total`) into one buffer, counting each chunk with
 * `onChunk` as it arrives; refuses more bytes than announced, and ends at `signal`. The stall rule
 * of the streaming path (fewer than `minSpeed` bytes per second over `seconds`) is checked once per
 * `seconds` window by one timer, without the streaming path's AbortController and 1 s interval:
 * for a body of a few socket reads those cost more than the read itself.
 */
function readSmallBody(
  body: ArtifactResponse['body'],
  total: number,
  signal: AbortSignal,
  stall: { minSpeed: number; seconds: number },
  onChunk: (chunk: Buffer) => void,
): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const buffer = Buffer.allocUnsafe(total);
    let filled = 0;
    let windowStart = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (error?: Error) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      body.off('data', onData).off('end', onEnd).off('error', finish).off('close', onClose);
      if (error) {
        body.destroy();
        reject(error);
      } else resolve(buffer.subarray(0, filled));
    };
    const onAbort = () => finish(signal.reason as Error);
    const onData = (chunk: Buffer) => {
      if (filled + chunk.length > total) {
        finish(new RetryableError('SIZE_MISMATCH', `received more than the ${total} bytes Content-Length announced`));
        return;
      }
      try {
        onChunk(chunk);
      } catch (error) {
        finish(error as Error);
        return;
      }
      chunk.copy(buffer, filled);
      filled += chunk.length;
    };
    const onEnd = () => finish();
    const onClose = () => finish(new Error('aborted'));
    const watch = () => {
      timer = setTimeout(() => {
        if (filled - windowStart < stall.minSpeed * stall.seconds) {
          finish(stalled(stall.minSpeed, stall.seconds));
          return;
        }
        windowStart = filled;
        watch();
      }, Math.min(stall.seconds * 1_000, MAX_TIMER_MS));
      timer.unref();
    };
    if (signal.aborted) {
      onAbort();
      return;
    }
    if (stall.minSpeed > 0 && stall.seconds > 0) watch();
    signal.addEventListener('abort', onAbort, { once: true });
    body.on('data', onData).once('end', onEnd).once('error', finish).once('close', onClose);
  });
}

/**
 * Writes a whole small body under its final name in one trip to a writer thread (file-writer.ts:
 * open, write, fsync, close, rename), instead of five trips through the thread pool, or hands it
 * to `job.stage` for its module to write later with the others. A failure leaves no `.part`
 * (small files are never resumed). ENOSPC is DISK_FULL, as when the free space check refuses a
 * big file.
 */
async function placeSmallFile(job: ArtifactDownload, bytes: Buffer): Promise<void> {
  const file = { partPath: uniquePartPath(job), bytes, target: job.target };
  if (job.stage) {
    job.stage(file);
    return;
  }
  try {
    await (job.fileWriter ?? sharedFileWriter()).writeAndRename(file.partPath, file.bytes, file.target);
  } catch (error) {
    throw smallWriteError(error, displayUrl(job.url), path.dirname(job.partPath));
  }
}

/**
 * What a failed write of small files is reported as: ENOSPC is DISK_FULL (as when the free space
 * check refuses a big file); a failed rename as it is, not retried here (a folder in the way, no
 * permission; the job's next attempt, if any, starts the file again); anything else can be retried.
 */
export function smallWriteError(error: unknown, what: string, dir: string): Error {
  const { code, syscall } = error as NodeJS.ErrnoException;
  if (code === 'ENOSPC') return new AppError('DISK_FULL', `not enough free disk space for ${what} in ${dir}`);
  if (syscall === 'rename') return error as Error;
  return new RetryableError('TRANSFER_INTERRUPTED', `writing ${what} failed: ${(error as Error).message}`, { cause: error });
}

/** Refuses a second answer that differs from the first in what framed or identified the bytes. */
function sameAnswerAs(first: ArtifactResponse): (head: ResponseHead) => void {
  const fields = ['content-length', 'content-range', 'last-modified', 'etag'] as const;
  return (head) => {
    const changed = head.status !== first.status ? 'status' : fields.find((field) => head.headers[field] !== first.body.headers[field]);
    if (changed) throw new DirectGetUnsupported(`the second answer differs from the first (${changed})`);
  };
}

/**
 * One try: resume the .part when Jenkins honours the range exactly, else start from zero; stream
 * the body to disk while hashing it. Leaves the .part in place on an interrupted transfer.
 */
async function tryOnce(
  jenkins: JenkinsClient,
  job: ArtifactDownload,
  metaPath: string,
  wantMd5: boolean,
  state: TransferState,
): Promise<TryResult> {
  state.tries += 1;
  let partSize = job.fresh === true && state.tries === 1 ? 0 : await sizeOf(job.partPath);
  // Without a partial file there is nothing to resume, and no record to read.
  const meta = partSize > 0 ? await readMeta(metaPath) : null;
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
    throw tooLarge(job, total);
  }
  if (!append && total !== undefined && total < RESUME_MIN_BYTES) return smallTry(job, response, total, wantMd5);
  const needed = (total ?? 0) - (append ? partSize : 0);
  const disk = await statfs(path.dirname(job.partPath));
  if (needed > disk.bavail * disk.bsize) {
    response.body.destroy();
    throw new AppError(
      'DISK_FULL',
      `not enough free disk space for ${displayUrl(job.url)}: ${needed} bytes needed, ${disk.bavail * disk.bsize} free in ${path.dirname(job.partPath)}`,
    );
  }
  if (total !== undefined && total >= RESUME_MIN_BYTES) await writeFile(metaPath, JSON.stringify({ length: total, lastModified } satisfies PartMeta));

  const sha256 = createHash('sha256');
  const md5 = wantMd5 ? createHash('md5') : undefined;
  if (append) await hashInto(job.partPath, md5 ? [sha256, md5] : [sha256]);
  const start = append ? partSize : 0;
  job.onStart(total, start);
  job.onProgress(start);

  const speed = watchSpeed(job.minSpeedBytes, job.stallSeconds);
  const canWrite = job.canWrite ?? (() => true);
  let received = start;
  let writer: PartWriter | undefined;
  /** Set when the body ran past MAX_ARTIFACT_BYTES: its partial file is removed, not kept for a resume. */
  let oversize = false;
  const signal = AbortSignal.any([job.signal, speed.signal]);
  try {
    writer = await PartWriter.open({
      path: job.partPath,
      start,
      expectedBytes: total === undefined ? undefined : total - start,
      writeMode: job.writeMode,
      canWrite,
      // Every byte once, as it arrives (still in the CPU cache): the lease, the hashes, the stall counter.
      onChunk: (chunk) => {
        if (!canWrite()) throw new LeaseLostError();
        // A body without Content-Length (chunked) was not checked against the limit ahead.
        if (received + chunk.length > job.maxBytes) {
          oversize = true;
          throw tooLarge(job, received + chunk.length, true);
        }
        sha256.update(chunk);
        md5?.update(chunk);
        received += chunk.length;
        speed.count(chunk.length);
      },
      onWritten: job.onProgress,
    });
    const framed = contentLength(response) !== undefined && response.body.headers['transfer-encoding'] === undefined;
    // Plain http only: a TLS socket goes on handing decrypted bytes to `onread` after the callback
    // asked it to pause, which the writer's slots cannot take; https bodies use the http module.
    const plainHttp = new URL(response.finalUrl).protocol === 'http:';
    if (state.directGet && plainHttp && writer.acceptsReads && framed && total !== undefined && total - start >= DIRECT_GET_MIN_BYTES) {
      // A big body: not read through the http module (a buffer and a copy per 64 KiB) but asked for
      // again on a connection whose socket reads land in the writer's slots.
      response.body.destroy();
      // A failed write (or the lease running out at one) stops the socket too, even while it waits for room.
      const writeFailed = new AbortController();
      writer.onFailure((error) => writeFailed.abort(error));
      const readSignal = AbortSignal.any([signal, writeFailed.signal]);
      await jenkins.readArtifactInto(response.finalUrl, readSignal, append ? partSize : undefined, sameAnswerAs(response), writer);
      await writer.finish();
    } else {
      await pipeline(response.body, partWriterStream(writer), { signal });
    }
  } catch (error) {
    response.body.destroy();
    await writer?.abort(error as Error);
    if (writer) await discardUnlessPrefix(job, metaPath, received);
    if (job.signal.aborted) throw job.signal.reason ?? error;
    if (speed.signal.aborted) throw speed.signal.reason as Error;
    if (error instanceof UnrecoverableError) {
      if (oversize) await Promise.all([rm(job.partPath, { force: true }), rm(metaPath, { force: true })]);
      throw error;
    }
    if (error instanceof DirectGetUnsupported) {
      state.directGet = false;
      throw new RetryableError('DIRECT_READ_REFUSED', `${displayUrl(job.url)}: ${error.message}; reading it through the http module instead`);
    }
    throw new RetryableError('TRANSFER_INTERRUPTED', `transfer of ${displayUrl(job.url)} interrupted at byte ${writer?.fileBytes ?? start}: ${(error as Error).message}`, {
      cause: error,
    });
  } finally {
    speed.stop();
  }
  await writer.settled;
  // The file on disk, not the writer's count, must hold exactly the bytes received and hashed.
  if (await discardUnlessPrefix(job, metaPath, received)) {
    throw new RetryableError('TRANSFER_INTERRUPTED', `transfer of ${displayUrl(job.url)}: the partial file does not hold the ${received} bytes received; starting it again`);
  }
  const size = received;
  if (total !== undefined && size !== total) {
    if (size > total) await rm(job.partPath, { force: true });
    throw new RetryableError('SIZE_MISMATCH', `received ${size} bytes of ${displayUrl(job.url)} but Content-Length announced ${total}`);
  }
  return { size, sha256: sha256.digest('hex'), ...(md5 ? { md5: md5.digest('hex') } : {}) };
}

/** The failure of an artifact over MAX_ARTIFACT_BYTES (announced, or counted as it arrived). */
function tooLarge(job: ArtifactDownload, bytes: number, counted = false): UnrecoverableError {
  return new UnrecoverableError(
    counted
      ? `${displayUrl(job.url)} sent more than MAX_ARTIFACT_BYTES (${job.maxBytes}) without announcing its size; stopped at ${bytes} bytes`
      : `${displayUrl(job.url)} is ${bytes} bytes, more than MAX_ARTIFACT_BYTES (${job.maxBytes})`,
  );
}

/**
 * A try for a body under RESUME_MIN_BYTES with a Content-Length, from zero: read into memory while
 * hashing (the stall watch and the lease apply as on the streaming path), then checked against its
 * fingerprint, and written, fsynced and renamed in one go. No free-space check ahead (a statfs per
 * file was a large share of the cost of small artifacts): a full disk fails the write itself, as
 * DISK_FULL.
 */
async function smallTry(job: ArtifactDownload, response: ArtifactResponse, total: number, wantMd5: boolean): Promise<TryResult> {
  const sha256 = createHash('sha256');
  const md5 = wantMd5 ? createHash('md5') : undefined;
  const canWrite = job.canWrite ?? (() => true);
  job.onStart(total, 0);
  job.onProgress(0);
  let bytes: Buffer;
  try {
    bytes = await readSmallBody(response.body, total, job.signal, { minSpeed: job.minSpeedBytes, seconds: job.stallSeconds }, (chunk) => {
      if (!canWrite()) throw new LeaseLostError();
      sha256.update(chunk);
      md5?.update(chunk);
    });
  } catch (error) {
    if (job.signal.aborted) throw job.signal.reason ?? error;
    if (error instanceof UnrecoverableError || error instanceof RetryableError) throw error;
    throw new RetryableError('TRANSFER_INTERRUPTED', `transfer of ${displayUrl(job.url)} interrupted: ${(error as Error).message}`, { cause: error });
  }
  if (bytes.length !== total) {
    throw new RetryableError('SIZE_MISMATCH', `received ${bytes.length} bytes of ${displayUrl(job.url)} but Content-Length announced ${total}`);
  }
  const result = { size: bytes.length, sha256: sha256.digest('hex'), ...(md5 ? { md5: md5.digest('hex') } : {}) };
  // A body that does not match its fingerprint is never written: the caller discards it and asks again.
  if (md5Mismatch(job, result.md5)) return result;
  // The lease is checked here, before the one trip that writes and renames, rather than between the
  // fsync and the rename as for a big file. Should the lease run out during the trip (a stuck disk),
  // the file renamed is still complete and verified, under a temporary name no other owner uses
  // (uniquePartPath), and a new owner of the job renames the same bytes over it.
  if (!canWrite()) throw new LeaseLostError();
  await placeSmallFile(job, bytes);
  job.onProgress(bytes.length);
  return { ...result, placed: true };
}

/**
 * Downloads one artifact to its final path: retried and resumed through the .part file, size
 * checked against Content-Length, MD5 checked against Jenkins' fingerprint when there is one
 * (a mismatch discards the file and tries once more), fsynced, then renamed. A crash never
 * leaves a half file under the final name.
 */
export async function fetchArtifact(jenkins: JenkinsClient, job: ArtifactDownload): Promise<DownloadedFile> {
  await (job.ensureDir ?? makeDir)(path.dirname(job.target));
  const metaPath = `${job.partPath}.json`;
  const label = displayUrl(job.url);
  const state: TransferState = { directGet: true, tries: 0 };
  for (let integrityTry = 1; ; integrityTry += 1) {
    const result = await jenkins.retry(
      () => jenkins.withConnection(() => tryOnce(jenkins, job, metaPath, job.expectedMd5 !== undefined, state)),
      job.signal,
      label,
      job.onNote,
    );
    if (md5Mismatch(job, result.md5)) {
      await rm(job.partPath, { force: true });
      await rm(metaPath, { force: true });
      const message = `MD5 mismatch for ${label}: expected ${job.expectedMd5}, got ${result.md5 ?? 'none'}`;
      if (integrityTry >= 2) throw new UnrecoverableError(message);
      job.onNote(`${message}; downloading it again`);
      continue;
    }
    if (result.placed !== true) {
      await fsyncPath(job.partPath);
      if (job.canWrite && !job.canWrite()) throw job.signal.reason ?? new LeaseLostError();
      await rename(job.partPath, job.target);
    }
    // A file small enough to be written in one go never had a resume record (RESUME_MIN_BYTES).
    if (result.size >= RESUME_MIN_BYTES || state.tries > 1 || job.fresh !== true) await rm(metaPath, { force: true });
    // A small file placed from its own temporary name: an earlier try's `.part` (a resume that the
    // server answered with the whole, now small, body) is left over.
    if (result.placed === true && (state.tries > 1 || job.fresh !== true)) await rm(job.partPath, { force: true });
    return { size: result.size, sha256: result.sha256 };
  }
}

const makeDir = (dir: string) => mkdir(dir, { recursive: true });

/** DOWNLOAD_DIR with its own symlinks resolved (it may be one, on purpose), once per process. */
const realRoots = new Map<string, Promise<string>>();

/**
 * Proves `dir` (made already) is inside `root` once symlinks are resolved: a symlink planted in
 * the download folder (a release, module or artifact folder pointing elsewhere) must not take
 * ferry's writes outside it. Paths are checked as text before (safe-path.ts); this is the disk.
 */
async function assertOnDiskInside(root: string, dir: string): Promise<void> {
  let realRoot = realRoots.get(root);
  if (!realRoot) {
    realRoot = realpath(root);
    realRoot.catch(() => realRoots.delete(root));
    realRoots.set(root, realRoot);
  }
  const [inside, real] = await Promise.all([realRoot, realpath(dir)]);
  if (real !== inside && !real.startsWith(`${inside}${path.sep}`)) {
    throw new UnrecoverableError(`${dir} leads outside the download folder (to ${real}) through a symbolic link`);
  }
}

/**
 * A folder maker for one module's files under `root` (DOWNLOAD_DIR): each folder is created once
 * (mkdir -p), however many files it holds, and checked to be inside `root` on disk.
 */
export function folderMaker(root: string): (dir: string) => Promise<unknown> {
  const made = new Map<string, Promise<unknown>>();
  return (dir) => {
    let pending = made.get(dir);
    if (!pending) {
      pending = makeDir(dir).then(async (created) => {
        await assertOnDiskInside(root, dir);
        return created;
      });
      // A failure is not remembered: the next file tries again.
      pending.catch(() => made.delete(dir));
      made.set(dir, pending);
    }
    return pending;
  };
}

/** SHA-256 and size of a file on disk, streamed. */
export async function hashFile(file: string): Promise<DownloadedFile> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK })) {
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
