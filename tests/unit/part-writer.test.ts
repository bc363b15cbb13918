import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeaseLostError, PartWriter, SLOT_MODE_MIN_BYTES } from '../../worker/part-writer.js';

const MiB = 2 ** 20;

describe('PartWriter: what reaches the .part file', () => {
  let dir: string;
  let data: Buffer;
  let n = 0;
  const file = () => path.join(dir, `part-${(n += 1)}`);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-part-writer-'));
    data = randomBytes(SLOT_MODE_MIN_BYTES + 3 * MiB + 12_345);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Options that record what onChunk and onWritten saw. */
  const recorder = (partPath: string, start: number, expectedBytes: number | undefined, canWrite: () => boolean = () => true) => {
    const seen: Buffer[] = [];
    const written: number[] = [];
    return {
      seen,
      written,
      options: {
        path: partPath,
        start,
        expectedBytes,
        canWrite,
        onChunk: (chunk: Buffer) => void seen.push(Buffer.from(chunk)),
        onWritten: (bytes: number) => void written.push(bytes),
      },
    };
  };

  /** Feeds `bytes` with push() in chunks of varying size, waiting for room when asked to. */
  const pushAll = async (writer: PartWriter, bytes: Buffer) => {
    const sizes = [1, 65_536, 4_095, 300_000, 17];
    for (let offset = 0, index = 0; offset < bytes.length; index += 1) {
      const chunk = bytes.subarray(offset, offset + (sizes[index % sizes.length] as number));
      offset += chunk.length;
      if (!writer.push(chunk)) await new Promise<void>((resolve) => writer.onRoom(resolve));
    }
  };

  /** Feeds `bytes` the way a socket does: reads of varying size into readBuffer(), then commit(). */
  const readAll = async (writer: PartWriter, bytes: Buffer) => {
    const sizes = [65_536, 1, 200_000, 4_096, 999];
    for (let offset = 0, index = 0; offset < bytes.length; index += 1) {
      const target = writer.readBuffer();
      const size = Math.min(target.length, sizes[index % sizes.length] as number, bytes.length - offset);
      bytes.copy(target, 0, offset, offset + size);
      offset += size;
      if (!writer.commit(size)) await new Promise<void>((resolve) => writer.onRoom(resolve));
    }
  };

  it('a big file goes through the slots (O_DIRECT where the file system allows it), byte for byte, with an unaligned tail', async () => {
    const partPath = file();
    const { seen, written, options } = recorder(partPath, 0, data.length);
    const writer = await PartWriter.open(options);
    expect(writer.acceptsReads).toBe(true);
    expect(['direct', 'slots']).toContain(writer.mode);
    await readAll(writer, data);
    await writer.finish();
    expect((await readFile(partPath)).equals(data)).toBe(true);
    expect(Buffer.concat(seen).equals(data)).toBe(true);
    expect(written.at(-1)).toBe(data.length);
    expect(writer.fileBytes).toBe(data.length);
  });

  it("writeMode 'buffered' (DOWNLOAD_WRITE_MODE) keeps a big file out of O_DIRECT: slots through the page cache, byte for byte", async () => {
    const partPath = file();
    const { seen, options } = recorder(partPath, 0, data.length);
    const writer = await PartWriter.open({ ...options, writeMode: 'buffered' });
    expect(writer.mode).toBe('slots');
    await readAll(writer, data);
    await writer.finish();
    expect((await readFile(partPath)).equals(data)).toBe(true);
    expect(Buffer.concat(seen).equals(data)).toBe(true);
  });

  it('push() copies into the slots just the same, and a resume at an unaligned offset appends after it', async () => {
    const partPath = file();
    const split = 1_000_001; // not a multiple of 4096: no O_DIRECT for the second writer
    await writeFile(partPath, data.subarray(0, split));
    const { options } = recorder(partPath, split, data.length - split);
    const writer = await PartWriter.open(options);
    expect(writer.mode).toBe('slots');
    await pushAll(writer, data.subarray(split));
    await writer.finish();
    expect((await readFile(partPath)).equals(data)).toBe(true);
  });

  it('a small file is queued and written in batches; a slow one still reaches the disk within the flush delay', async () => {
    const partPath = file();
    const { options } = recorder(partPath, 0, undefined);
    const writer = await PartWriter.open(options);
    expect(writer.mode).toBe('queue');
    writer.push(data.subarray(0, 1_000));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await stat(partPath)).size).toBe(1_000);
    await pushAll(writer, data.subarray(1_000, 3 * MiB));
    await writer.finish();
    expect((await readFile(partPath)).equals(data.subarray(0, 3 * MiB))).toBe(true);
  });

  it('an interrupted transfer keeps every byte that arrived, as an unbroken prefix', async () => {
    for (const expectedBytes of [data.length, undefined]) {
      const partPath = file();
      const { options } = recorder(partPath, 0, expectedBytes);
      const writer = await PartWriter.open(options);
      const received = 7 * MiB + 333;
      await readAllOrPush(writer, data.subarray(0, received));
      await writer.abort(new Error('connection reset'));
      expect(writer.fileBytes).toBe(received);
      expect((await readFile(partPath)).equals(data.subarray(0, received))).toBe(true);
    }
  });

  it('once the lease runs out, no further write is issued and finish() fails', async () => {
    const partPath = file();
    let leased = true;
    const { options } = recorder(partPath, 0, data.length, () => leased);
    let writtenWhenLost = -1;
    const writer = await PartWriter.open({
      ...options,
      onWritten: (bytes) => {
        if (bytes >= 3 * MiB && leased) {
          leased = false;
          writtenWhenLost = bytes;
        }
      },
    });
    const failure = new Promise<Error>((resolve) => writer.onFailure(resolve));
    await readAll(writer, data.subarray(0, 8 * MiB)).catch(() => undefined);
    expect(await failure).toBeInstanceOf(LeaseLostError);
    await expect(writer.finish()).rejects.toBeInstanceOf(LeaseLostError);
    await writer.settled;
    expect(writtenWhenLost).toBeGreaterThan(0);
    expect((await stat(partPath)).size).toBe(writtenWhenLost);
    expect(writer.fileBytes).toBe(writtenWhenLost);
  });

  /** Slot mode writers take socket-style reads, queue mode ones pushes. */
  const readAllOrPush = (writer: PartWriter, bytes: Buffer) => (writer.acceptsReads ? readAll(writer, bytes) : pushAll(writer, bytes));
});
