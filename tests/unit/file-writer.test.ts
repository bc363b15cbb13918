import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFileWriter, THREAD_SOURCE, type FileWriter } from '../../worker/file-writer.js';

/** Waits (up to 2 s) until none of `paths` exists; fails naming the ones left. */
async function waitForGone(paths: readonly string[]): Promise<void> {
  const deadline = Date.now() + 2_000;
  for (;;) {
    const left = (await Promise.all(paths.map(async (file) => ((await stat(file).catch(() => null)) ? file : null)))).filter(Boolean);
    if (left.length === 0) return;
    if (Date.now() > deadline) expect(left).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('createFileWriter: small files written, fsynced and renamed by writer threads', () => {
  let dir: string;
  let writer: FileWriter;
  let n = 0;
  const names = () => {
    n += 1;
    return { part: path.join(dir, `f${n}.job.part`), target: path.join(dir, `f${n}`) };
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-file-writer-'));
    writer = createFileWriter({ threads: 2 });
  });
  afterAll(async () => {
    await writer.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('puts the bytes under the target and leaves nothing at the temporary name', async () => {
    const { part, target } = names();
    const bytes = randomBytes(10_000);
    await writer.writeAndRename(part, bytes, target);
    expect(await readFile(target)).toEqual(bytes);
    await expect(readFile(part)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('writes only the view it is given (a slice of a larger buffer), and an empty file', async () => {
    const whole = randomBytes(8_192);
    const slice = whole.subarray(100, 1_100);
    const first = names();
    await writer.writeAndRename(first.part, slice, first.target);
    expect(await readFile(first.target)).toEqual(Buffer.from(whole.subarray(100, 1_100)));
    const empty = names();
    await writer.writeAndRename(empty.part, Buffer.alloc(0), empty.target);
    expect((await readFile(empty.target)).length).toBe(0);
  });

  it('replaces an existing target whole, and truncates a stale temporary file', async () => {
    const { part, target } = names();
    await writeFile(target, 'old content that is longer than the new one');
    await writeFile(part, 'a stale partial file, longer than the new bytes too');
    await writer.writeAndRename(part, Buffer.from('new'), target);
    expect(await readFile(target, 'utf8')).toBe('new');
  });

  it('200 concurrent writes over two threads all land, each with its own bytes', async () => {
    const files = Array.from({ length: 200 }, () => ({ ...names(), bytes: randomBytes(1 + Math.floor(Math.random() * 20_000)) }));
    await Promise.all(files.map((file) => writer.writeAndRename(file.part, file.bytes, file.target)));
    // Buffer.equals, not toEqual: a deep comparison of 200 buffers byte by byte takes seconds.
    const wrong = [];
    for (const file of files) if (!(await readFile(file.target)).equals(file.bytes)) wrong.push(file.target);
    expect(wrong).toEqual([]);
    expect((await readdir(dir)).filter((name) => name.endsWith('.part'))).toEqual([]);
  });

  it('a rename that fails (a folder in the way) throws its code and syscall, and removes the temporary file', async () => {
    const { part, target } = names();
    await mkdir(path.join(target, 'inside'), { recursive: true });
    const error = await writer.writeAndRename(part, Buffer.from('x'), target).then(() => null, (caught: unknown) => caught);
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ syscall: 'rename' });
    expect(['EISDIR', 'ENOTEMPTY', 'EEXIST']).toContain((error as NodeJS.ErrnoException).code);
    await expect(readFile(part)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(target)).toEqual(['inside']);
  });

  it('an open that fails (no such folder) throws ENOENT from open', async () => {
    const missing = path.join(dir, 'no-such-folder');
    await expect(writer.writeAndRename(path.join(missing, 'a.part'), Buffer.from('x'), path.join(missing, 'a'))).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'open',
    });
  });

  it('close() waits for the writes in flight; a write after it is refused', async () => {
    const own = createFileWriter({ threads: 1 });
    const files = Array.from({ length: 30 }, () => ({ ...names(), bytes: randomBytes(5_000) }));
    const writes = files.map((file) => own.writeAndRename(file.part, file.bytes, file.target));
    await own.close();
    // Every write had finished when close() returned: their files are in place.
    const wrong = [];
    for (const file of files) if (!(await readFile(file.target)).equals(file.bytes)) wrong.push(file.target);
    expect(wrong).toEqual([]);
    await Promise.all(writes);
    const late = names();
    await expect(own.writeAndRename(late.part, Buffer.from('x'), late.target)).rejects.toThrow('the file writer is closed');
    await expect(readFile(late.target)).rejects.toMatchObject({ code: 'ENOENT' });
  });
  it('a thread that dies fails its write and the writes queued behind it; the next write gets a new thread', async () => {
    const handler = "parentPort.on('message', ({ items }) => {";
    expect(THREAD_SOURCE).toContain(handler);
    // The real thread, except that it exits (as a crash would) when asked to write a `.die.part`.
    const dying = THREAD_SOURCE.replace(handler, `${handler}\n  if (items.some((item) => item.partPath.endsWith('.die.part'))) process.exit(3);`);
    const own = createFileWriter({ threads: 1, threadSource: dying });
    try {
      const doomed = names();
      const queued = names();
      const first = own.writeAndRename(`${doomed.target}.die.part`, Buffer.from('a'), doomed.target);
      const second = own.writeAndRename(queued.part, Buffer.from('b'), queued.target);
      await expect(first).rejects.toThrow('the file writer thread stopped (exit code 3)');
      await expect(second).rejects.toThrow('the file writer thread stopped (exit code 3)');
      await expect(readFile(doomed.target)).rejects.toMatchObject({ code: 'ENOENT' });
      const after = names();
      await own.writeAndRename(after.part, Buffer.from('c'), after.target);
      expect(await readFile(after.target, 'utf8')).toBe('c');
    } finally {
      await own.close();
    }
  });

  it('writeAll: the files, then the last one, in one trip; the last is not renamed when a file failed', async () => {
    const [a, b, manifest] = [names(), names(), names()];
    await writer.writeAll(
      [
        { partPath: a.part, bytes: Buffer.from('a'), target: a.target },
        { partPath: b.part, bytes: Buffer.from('b'), target: b.target },
      ],
      { partPath: manifest.part, bytes: Buffer.from('{}'), target: manifest.target },
    );
    expect(await Promise.all([a.target, b.target, manifest.target].map((file) => readFile(file, 'utf8')))).toEqual(['a', 'b', '{}']);

    // The second file's folder does not exist: it fails, the first is placed, the last is not.
    const [c, last] = [names(), names()];
    const missing = path.join(dir, 'no-such-folder', 'd');
    await expect(
      writer.writeAll(
        [
          { partPath: c.part, bytes: Buffer.from('c'), target: c.target },
          { partPath: `${missing}.part`, bytes: Buffer.from('d'), target: missing },
        ],
        { partPath: last.part, bytes: Buffer.from('{}'), target: last.target },
      ),
    ).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    expect(await readFile(c.target, 'utf8')).toBe('c');
    await expect(readFile(last.target)).rejects.toMatchObject({ code: 'ENOENT' });
    await waitForGone([last.part, `${missing}.part`]);

    // A rename that fails (the target is a folder) also keeps the last one back.
    const [e, last2] = [names(), names()];
    await mkdir(e.target);
    await expect(
      writer.writeAll([{ partPath: e.part, bytes: Buffer.from('e'), target: e.target }], { partPath: last2.part, bytes: Buffer.from('{}'), target: last2.target }),
    ).rejects.toMatchObject({ syscall: 'rename' });
    await expect(readFile(last2.target)).rejects.toMatchObject({ code: 'ENOENT' });
    await waitForGone([e.part, last2.part]);
  });

  it('writeAll fsyncs every file but one marked fsync: false (a manifest), which is still renamed last', async () => {
    const head = "const fs = require('node:fs');";
    expect(THREAD_SOURCE).toContain(head);
    // The real thread, except that each fsync first notes the temporary file's name in a log file.
    const log = path.join(dir, 'fsyncs.log');
    const noting = THREAD_SOURCE.replace(
      head,
      `const realFs = require('node:fs');\nconst fs = { ...realFs, fsyncSync: (fd) => { realFs.appendFileSync(${JSON.stringify(log)}, realFs.readlinkSync('/proc/self/fd/' + fd) + '\\n'); realFs.fsyncSync(fd); } };`,
    );
    const own = createFileWriter({ threads: 1, threadSource: noting });
    try {
      const [a, b, manifest] = [names(), names(), names()];
      await own.writeAll(
        [
          { partPath: a.part, bytes: Buffer.from('a'), target: a.target },
          { partPath: b.part, bytes: Buffer.from('b'), target: b.target },
        ],
        { partPath: manifest.part, bytes: Buffer.from('{}'), target: manifest.target, fsync: false },
      );
      expect(await Promise.all([a.target, b.target, manifest.target].map((file) => readFile(file, 'utf8')))).toEqual(['a', 'b', '{}']);
      expect((await readFile(log, 'utf8')).trim().split('\n')).toEqual([a.part, b.part]);
    } finally {
      await own.close();
    }
  });

  it('a thread that dies after creating its temporary files leaves none behind', async () => {
    const phase = "  items.forEach((item, index) => {\n    if (fds[index] === undefined || item.fsync === false) return;\n    try { fs.fsyncSync";
    expect(THREAD_SOURCE).toContain(phase);
    // The real thread, except that it exits once the files of a batch with a `.die` target exist.
    const dying = THREAD_SOURCE.replace(phase, `  if (items.some((item) => item.target.endsWith('.die'))) process.exit(4);\n${phase}`);
    const own = createFileWriter({ threads: 1, threadSource: dying });
    try {
      const [first, second] = [names(), names()];
      const results = await Promise.allSettled([
        own.writeAndRename(first.part, Buffer.from('a'), `${first.target}.die`),
        own.writeAndRename(second.part, Buffer.from('b'), second.target),
      ]);
      expect(results.map((result) => result.status)).toEqual(['rejected', 'rejected']);
      await waitForGone([first.part, second.part]);
      await expect(readFile(second.target)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await own.close();
    }
  });

  it('writes asked for in one turn share a message; one that cannot be sent fails alone', async () => {
    const own = createFileWriter({ threads: 1 });
    try {
      const backing = new ArrayBuffer(16);
      const detached = new Uint8Array(backing);
      structuredClone(backing, { transfer: [backing] });
      const [good, bad, alsoGood] = [names(), names(), names()];
      const results = await Promise.allSettled([
        own.writeAndRename(good.part, Buffer.from('one'), good.target),
        own.writeAndRename(bad.part, detached, bad.target),
        own.writeAndRename(alsoGood.part, Buffer.from('three'), alsoGood.target),
      ]);
      expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect(await readFile(good.target, 'utf8')).toBe('one');
      expect(await readFile(alsoGood.target, 'utf8')).toBe('three');
      await expect(readFile(bad.target)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await own.close();
    }
  }, 5_000);

  it('bytes that cannot be sent to a thread (a detached buffer) are refused, and leave nothing waiting: close() returns', async () => {
    const own = createFileWriter({ threads: 1 });
    const backing = new ArrayBuffer(16);
    const view = new Uint8Array(backing);
    structuredClone(backing, { transfer: [backing] });
    const { part, target } = names();
    await expect(own.writeAndRename(part, view, target)).rejects.toThrow();
    await own.close();
    await expect(readFile(target)).rejects.toMatchObject({ code: 'ENOENT' });
  }, 5_000);
});
