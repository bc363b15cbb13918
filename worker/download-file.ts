import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { AppError } from '../shared/errors.js';

/** The bytes received do not match what Jenkins announced. */
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
 * folder never share a partial file, a retry of the same job finds its own, and a sweeper can tell
 * which job owns a leftover.
 */
export function partPathFor(target: string, jobId: string): string {
  return `${target}.${jobId}${PART_SUFFIX}`;
}

/** `Content-Length` of a response, or undefined when absent or malformed. */
export function contentLength(response: IncomingMessage): number | undefined {
  const header = response.headers['content-length'];
  if (header === undefined || !/^\d+$/.test(header)) return undefined;
  return Number(header);
}

/**
 * Streams a response body into its partial file (see partPathFor), hashing it with SHA-256 on the way (memory stays
 * flat whatever the size), checks the size against `Content-Length`, fsyncs, and only then renames
 * it to `target`: a crash never leaves a half file under the final name.
 */
export async function downloadToFile(
  response: IncomingMessage,
  target: string,
  partPath: string,
  signal: AbortSignal,
  onBytes: (bytes: number) => void,
): Promise<DownloadedFile> {
  await mkdir(path.dirname(target), { recursive: true });
  const hash = createHash('sha256');
  let size = 0;
  try {
    await pipeline(
      response,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          size += chunk.length;
          onBytes(chunk.length);
          yield chunk;
        }
      },
      createWriteStream(partPath),
      { signal },
    );
    const expected = contentLength(response);
    if (expected !== undefined && expected !== size) {
      throw new IntegrityError(`received ${size} bytes but Content-Length announced ${expected}`);
    }
    await fsyncPath(partPath);
    await rename(partPath, target);
  } catch (error) {
    await rm(partPath, { force: true });
    throw error;
  }
  return { size, sha256: hash.digest('hex') };
}

async function fsyncPath(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
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
