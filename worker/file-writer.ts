import { rm } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';

/**
 * Writes small whole files durably in trips to a writer thread: open, write, fsync, close and
 * rename to the final name there, with the thread's synchronous calls.
 *
 * Why a thread and not `fs/promises`: every asynchronous file call is its own trip through libuv's
 * thread pool (a thread woken, the answer handed back to the event loop), and on the 2-core bench
 * VM each trip cost tens of microseconds of CPU on top of the system call itself. A small artifact
 * took five trips (open, write, fsync, close, rename) and a module's manifest five more: in a
 * microbenchmark of one job's files (three 10 kB files and a manifest, four jobs at a time) the
 * thread took 0.97 to 1.04 ms of CPU per job against 1.55 to 1.91 ms for the same calls through
 * `fs/promises` (issue 5, small jobs). The event loop never waits on the disk either way.
 *
 * Writes asked for in the same turn of the event loop go to a thread in one message (sent on
 * setImmediate, so nothing waits longer than that turn), and the thread writes them all before it
 * fsyncs, closes and renames them. Measured with the small-jobs load (one worker, 2,000 jobs, 3
 * alternating rounds): 1.18 writes per message, 4.49 against 4.68 ms of worker CPU per job; a 1 ms
 * gathering timer saved as much CPU again but cost throughput (each write waited), so it was not kept.
 *
 * The thread's code is a string (`eval: true`) so that the worker's bundle (bundle.mjs), tsc's
 * output and the TypeScript sources under test all start the same thread without a file to find.
 */
export interface FileWriter {
  /**
   * Writes `bytes` to a new file `partPath` (truncating any file there), fsyncs it, closes it and
   * renames it to `target`. On any failure the `partPath` file is removed and the error is thrown
   * with its `code` (ENOSPC, EACCES...) and `syscall`; `target` is then untouched.
   */
  writeAndRename(partPath: string, bytes: Uint8Array, target: string): Promise<void>;
  /**
   * Writes `files`, then `last`, in one trip to a thread (all written, then all fsynced, then
   * renamed in order): `last` (a module's manifest) is renamed only after every one of `files` was,
   * and is not renamed at all when any of them failed. Rejects with the first failure, in order,
   * once the trip is over; each file that failed left no temporary file.
   */
  writeAll(files: readonly FileWrite[], last?: FileWrite): Promise<void>;
  /** Waits for the writes in flight, then stops the threads; later writes are refused. */
  close(): Promise<void>;
}

/** One whole file to write: its bytes go to `partPath`, which is renamed to `target`. */
export interface FileWrite {
  readonly partPath: string;
  readonly bytes: Uint8Array;
  readonly target: string;
  /**
   * False: renamed without an fsync first. Only for a file every reader verifies before trusting it
   * (a module's manifest: manifest.ts), whose loss to a power cut costs a download, never a wrong file.
   */
  readonly fsync?: boolean;
}

export interface FileWriterOptions {
  /** Writer threads, started on first use (default 2: fsyncs of concurrent jobs overlap). */
  readonly threads?: number;
  /** The threads' code, for tests only (e.g. a thread that dies); default the real one. */
  readonly threadSource?: string;
}

/**
 * The threads' code (exported for tests that build a variant of it). A message carries every write
 * asked for in one turn of the caller's event loop: all are written first, then fsynced, closed and
 * renamed, so the writes of concurrent jobs share the thread's trip and the file system's sync work
 * (a folder's new entries are synced once for all its files rather than once per file).
 */
export const THREAD_SOURCE = `
const fs = require('node:fs');
const { parentPort } = require('node:worker_threads');
const described = (error) => ({ message: String(error && error.message), code: error && error.code, syscall: error && error.syscall });
const writeOne = ({ partPath, bytes }) => {
  const fd = fs.openSync(partPath, 'w');
  try {
    let offset = 0;
    while (offset < bytes.length) {
      const written = fs.writeSync(fd, bytes, offset, bytes.length - offset, offset);
      if (written <= 0) throw Object.assign(new Error('write wrote nothing'), { code: 'EIO', syscall: 'write' });
      offset += written;
    }
  } catch (error) {
    try { fs.closeSync(fd); } catch {}
    throw error;
  }
  return fd;
};
parentPort.on('message', ({ items }) => {
  const results = items.map(({ id }) => ({ id }));
  const fds = items.map(() => undefined);
  const fail = (index, error) => {
    results[index].error = described(error);
    if (fds[index] !== undefined) {
      try { fs.closeSync(fds[index]); } catch {}
      fds[index] = undefined;
    }
    try { fs.rmSync(items[index].partPath, { force: true }); } catch {}
  };
  items.forEach((item, index) => {
    try { fds[index] = writeOne(item); } catch (error) { fail(index, error); }
  });
  items.forEach((item, index) => {
    if (fds[index] === undefined || item.fsync === false) return;
    try { fs.fsyncSync(fds[index]); } catch (error) { fail(index, error); }
  });
  const renamed = new Set();
  items.forEach((item, index) => {
    if (fds[index] === undefined) return;
    const fd = fds[index];
    fds[index] = undefined;
    try {
      fs.closeSync(fd);
      // An item written after others (a manifest after its module's files) is renamed only once all of them were.
      const missing = (item.after || []).find((id) => !renamed.has(id));
      if (missing !== undefined) throw Object.assign(new Error('not renamed: a file written with it failed'), { code: 'EDEPENDENCY', syscall: 'rename' });
      fs.renameSync(item.partPath, item.target);
      renamed.add(item.id);
    } catch (error) {
      fail(index, error);
    }
  });
  parentPort.postMessage({ results });
});
`;

interface Pending {
  resolve(): void;
  reject(error: Error): void;
}

interface Slot {
  readonly thread: Worker;
  readonly pending: Map<number, Pending & { readonly partPath: string }>;
}

interface ThreadAnswer {
  readonly results: ReadonlyArray<{ readonly id: number; readonly error?: { readonly message: string; readonly code?: string; readonly syscall?: string } }>;
}

/** One write waiting for the next message to a thread. */
interface Outgoing extends Pending {
  readonly id: number;
  readonly partPath: string;
  readonly bytes: Uint8Array;
  readonly target: string;
  /** Renamed only after these writes (of the same message) were. */
  readonly after?: readonly number[];
  /** False: not fsynced (FileWrite.fsync). */
  readonly fsync?: boolean;
}

/** The error the thread reported, rebuilt as an ErrnoException-like Error (same message and code). */
function rebuild(reported: NonNullable<ThreadAnswer['results'][number]['error']>): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(reported.message);
  if (reported.code !== undefined) error.code = reported.code;
  if (reported.syscall !== undefined) error.syscall = reported.syscall;
  return error;
}

export function createFileWriter(options: FileWriterOptions = {}): FileWriter {
  const size = Math.max(1, options.threads ?? 2);
  const slots: Slot[] = [];
  let nextId = 0;
  let closed = false;
  /** Every write not yet answered, for close() to wait on. */
  const writes = new Set<Promise<void>>();
  // An idle thread does not keep the process alive; one with writes in flight does.
  const settled = (slot: Slot) => {
    if (slot.pending.size === 0) slot.thread.unref();
  };

  const start = (): Slot => {
    const thread = new Worker(options.threadSource ?? THREAD_SOURCE, { eval: true, name: 'ferry-file-writer' });
    const slot: Slot = { thread, pending: new Map() };
    thread.unref();
    thread.on('message', (answer: ThreadAnswer) => {
      for (const result of answer.results) {
        const waiting = slot.pending.get(result.id);
        if (!waiting) continue;
        slot.pending.delete(result.id);
        if (result.error) waiting.reject(rebuild(result.error));
        else waiting.resolve();
      }
      settled(slot);
    });
    // A thread that dies fails what it held (the caller's retry writes it again) and is replaced on next use.
    // 'error' is followed by 'exit': the second call finds nothing left to fail.
    const lost = (reason: string) => {
      const index = slots.indexOf(slot);
      if (index >= 0) slots.splice(index, 1);
      for (const waiting of slot.pending.values()) {
        // The thread may have died between creating a temporary file and renaming it.
        rm(waiting.partPath, { force: true }).catch(() => undefined);
        waiting.reject(new Error(`the file writer thread stopped (${reason})`));
      }
      slot.pending.clear();
      settled(slot);
    };
    thread.on('error', (error) => lost(error.message));
    thread.on('exit', (code) => lost(`exit code ${code}`));
    slots.push(slot);
    return slot;
  };

  /** The least busy thread, or a new one while fewer than `size` run. */
  const pick = (): Slot => {
    let best: Slot | undefined;
    for (const slot of slots) if (!best || slot.pending.size < best.pending.size) best = slot;
    if (!best || (best.pending.size > 0 && slots.length < size)) return start();
    return best;
  };

  /** Writes asked for in this turn of the event loop, sent together on the next (setImmediate). */
  let outgoing: Outgoing[] = [];
  const send = (slot: Slot, items: readonly Outgoing[]) => {
    for (const item of items) slot.pending.set(item.id, item);
    if (slot.pending.size === items.length) slot.thread.ref();
    // The bytes are copied to the thread (structured clone): the callers' buffers stay their own.
    slot.thread.postMessage({ items: items.map(({ id, partPath, bytes, target, after, fsync }) => ({ id, partPath, bytes, target, after, fsync })) });
  };
  const flush = () => {
    const items = outgoing;
    outgoing = [];
    if (items.length === 0) return;
    let slot: Slot;
    try {
      slot = pick();
    } catch (error) {
      // No thread could be started (out of memory or threads): these writes fail, nothing hangs.
      for (const item of items) item.reject(error as Error);
      return;
    }
    try {
      send(slot, items);
    } catch {
      // Something in the batch cannot be sent (bytes that cannot be cloned, a detached buffer):
      // send each alone, so only that write fails and nothing is left waiting for it.
      for (const item of items) slot.pending.delete(item.id);
      for (const item of items) {
        try {
          send(slot, [item]);
        } catch (error) {
          slot.pending.delete(item.id);
          item.reject(error as Error);
        }
      }
      settled(slot);
    }
  };

  /** Queues one write for this turn's message; `after` as in Outgoing. */
  const queue = (file: FileWrite, id: number, after?: readonly number[]): Promise<void> => {
    const write = new Promise<void>((resolve, reject) => {
      if (outgoing.length === 0) setImmediate(flush);
      outgoing.push({ id, partPath: file.partPath, bytes: file.bytes, target: file.target, resolve, reject, fsync: file.fsync, ...(after ? { after } : {}) });
    });
    writes.add(write);
    const forget = () => void writes.delete(write);
    write.then(forget, forget);
    return write;
  };

  return {
    writeAndRename(partPath, bytes, target) {
      if (closed) return Promise.reject(new Error('the file writer is closed'));
      return queue({ partPath, bytes, target }, nextId++);
    },
    async writeAll(files, last) {
      if (closed) throw new Error('the file writer is closed');
      // Queued in one synchronous run: they share this turn's message, `last` after the files.
      const ids = files.map(() => nextId++);
      const all = files.map((file, index) => queue(file, ids[index] as number));
      if (last) all.push(queue(last, nextId++, ids));
      const results = await Promise.allSettled(all);
      const failed = results.find((result) => result.status === 'rejected');
      if (failed) throw failed.reason;
    },
    async close() {
      closed = true;
      await Promise.allSettled([...writes]);
      await Promise.all(slots.splice(0).map((slot) => slot.thread.terminate()));
    },
  };
}

let shared: FileWriter | undefined;

/**
 * A process-wide writer for callers that were not given one (tests and tools calling fetchArtifact
 * or downloading a module without a runtime). Its idle threads do not keep the process alive.
 */
export function sharedFileWriter(): FileWriter {
  shared ??= createFileWriter();
  return shared;
}
