import { Worker } from 'node:worker_threads';

/**
 * Writes small whole files durably, each in one trip to a writer thread: open, write, fsync, close
 * and rename to the final name there, with the thread's synchronous calls.
 *
 * Why a thread and not `fs/promises`: every asynchronous file call is its own trip through libuv's
 * thread pool (a thread woken, the answer handed back to the event loop), and on the 2-core bench
 * VM each trip cost tens of microseconds of CPU on top of the system call itself. A small artifact
 * took five trips (open, write, fsync, close, rename) and a module's manifest five more: in a
 * microbenchmark of one job's files (three 10 kB files and a manifest, four jobs at a time) the
 * thread took 0.97 to 1.04 ms of CPU per job against 1.55 to 1.91 ms for the same calls through
 * `fs/promises` (issue 5, small jobs). The event loop never waits on the disk either way.
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
  /** Waits for the writes in flight, then stops the threads; later writes are refused. */
  close(): Promise<void>;
}

export interface FileWriterOptions {
  /** Writer threads, started on first use (default 2: fsyncs of concurrent jobs overlap). */
  readonly threads?: number;
  /** The threads' code, for tests only (e.g. a thread that dies); default the real one. */
  readonly threadSource?: string;
}

/** The threads' code (exported for tests that build a variant of it). */
export const THREAD_SOURCE = `
const fs = require('node:fs');
const { parentPort } = require('node:worker_threads');
parentPort.on('message', ({ id, partPath, bytes, target }) => {
  let fd;
  try {
    fd = fs.openSync(partPath, 'w');
    let offset = 0;
    while (offset < bytes.length) {
      const written = fs.writeSync(fd, bytes, offset, bytes.length - offset, offset);
      if (written <= 0) throw Object.assign(new Error('write wrote nothing'), { code: 'EIO', syscall: 'write' });
      offset += written;
    }
    fs.fsyncSync(fd);
    const opened = fd;
    fd = undefined;
    fs.closeSync(opened);
    fs.renameSync(partPath, target);
    parentPort.postMessage({ id });
  } catch (error) {
    if (fd !== undefined) {
      try { fs.closeSync(fd); } catch {}
    }
    try { fs.rmSync(partPath, { force: true }); } catch {}
    parentPort.postMessage({ id, error: { message: String(error && error.message), code: error && error.code, syscall: error && error.syscall } });
  }
});
`;

interface Pending {
  resolve(): void;
  reject(error: Error): void;
}

interface Slot {
  readonly thread: Worker;
  readonly pending: Map<number, Pending>;
}

interface ThreadAnswer {
  readonly id: number;
  readonly error?: { readonly message: string; readonly code?: string; readonly syscall?: string };
}

/** The error the thread reported, rebuilt as an ErrnoException-like Error (same message and code). */
function rebuild(reported: NonNullable<ThreadAnswer['error']>): NodeJS.ErrnoException {
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
      const waiting = slot.pending.get(answer.id);
      if (!waiting) return;
      slot.pending.delete(answer.id);
      if (answer.error) waiting.reject(rebuild(answer.error));
      else waiting.resolve();
      settled(slot);
    });
    // A thread that dies fails what it held (the caller's retry writes it again) and is replaced on next use.
    // 'error' is followed by 'exit': the second call finds nothing left to fail.
    const lost = (reason: string) => {
      const index = slots.indexOf(slot);
      if (index >= 0) slots.splice(index, 1);
      for (const waiting of slot.pending.values()) waiting.reject(new Error(`the file writer thread stopped (${reason})`));
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

  return {
    writeAndRename(partPath, bytes, target) {
      if (closed) return Promise.reject(new Error('the file writer is closed'));
      const slot = pick();
      const id = nextId++;
      const write = new Promise<void>((resolve, reject) => {
        slot.pending.set(id, { resolve, reject });
        if (slot.pending.size === 1) slot.thread.ref();
        try {
          // The bytes are copied to the thread (structured clone): the caller's buffer stays its own.
          slot.thread.postMessage({ id, partPath, bytes, target });
        } catch (error) {
          // Not sent (bytes that cannot be cloned, a detached buffer): nothing is left waiting for it.
          slot.pending.delete(id);
          settled(slot);
          reject(error as Error);
        }
      });
      writes.add(write);
      const forget = () => void writes.delete(write);
      write.then(forget, forget);
      return write;
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
 * or writeManifest directly). Its idle threads do not keep the process alive.
 */
export function sharedFileWriter(): FileWriter {
  shared ??= createFileWriter();
  return shared;
}
