import { constants as fsConstants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import type { Config } from '../shared/config.js';

/**
 * How a download's bytes reach its .part file. Measured on the 2-core bench machine (issue 5,
 * scenario 4): a write per 64 KiB chunk through fs.WriteStream costs a thread-pool round trip (two
 * thread wake-ups) per chunk, and buffered writes of a big file cost a copy into the page cache
 * (slow in this VM when the pages are new to it) and then a long fsync before the rename. So a
 * writer works in one of two ways, chosen when it opens:
 *
 * - queue mode (small files, unknown size): chunks are queued as they are and written with one
 *   `writev` once BATCH_BYTES are queued, or FLUSH_DELAY_MS after the first queued byte (a slow
 *   transfer's bytes still reach the file at once).
 * - slot mode (size known and at least SLOT_MODE_MIN_BYTES): bytes go into a few page-aligned
 *   slots, and each full slot is written with O_DIRECT where the file system allows it, straight
 *   from memory to the disk: no page-cache copy, no dirty pages, and the fsync before the rename
 *   only has metadata left to flush. A socket can read straight into the slots (`readBuffer` and
 *   `commit`), so the bytes are not copied at all. The last, unaligned piece goes through a
 *   normal file handle. Where O_DIRECT is refused (EINVAL, EOPNOTSUPP), the slots are written buffered, with
 *   an `fdatasync` in the background every SYNC_EVERY_BYTES so the final fsync stays short.
 *
 * One write is in flight at a time, at an explicit offset, so the file always holds an unbroken
 * prefix of what arrived (even if the process is killed): its size is what a resume may ask for.
 * Slot mode writes every full slot at once, so writes grow when the disk lags. Four 4 MiB slots:
 * with the O_DIRECT write's completion waiting for a busy event loop and a busy CPU, six 1 MiB
 * slots paused the socket ~340 times per GiB and held the bench transfer near 700 MB/s; 16 MiB
 * in all reached ~1 GB/s for ~10 MB more peak RSS. `canWrite` (the job's lock lease)
 * is checked before every write is issued. When the transfer stops for any reason other than a
 * failed write, `abort` still writes what was received (if `canWrite` allows), so a resume starts
 * after every byte that arrived.
 */
const BATCH_BYTES = 1 << 20;
const MAX_QUEUED_BYTES = 4 << 20;
const FLUSH_DELAY_MS = 50;
const SYNC_EVERY_BYTES = 64 << 20;
export const SLOT_MODE_MIN_BYTES = 16 << 20;
const DIRECT_ALIGN = 4096;
/** How file systems refuse O_DIRECT (at open or at a write): the slots are then written buffered. */
const DIRECT_REFUSED = new Set(['EINVAL', 'EOPNOTSUPP', 'ENOTSUP']);
const SLOT_BYTES = 4 << 20;
const SLOT_COUNT = 4;
/** Where socket reads go while no slot has room (they are copied into a slot later). */
const SCRATCH_BYTES = 64 << 10;

export class LeaseLostError extends Error {
  constructor() {
    super('the job lock lease ran out');
  }
}

interface WasmMemoryConstructor {
  new (descriptor: { initial: number; maximum?: number }): { readonly buffer: ArrayBuffer };
}

/**
 * Page-aligned memory for O_DIRECT: Node cannot allocate a Buffer at a chosen alignment, but a
 * WebAssembly memory is mapped whole pages at a time. One set is kept for the next transfer.
 */
const idleSlotSets: Buffer[][] = [];
function takeSlots(): Buffer[] {
  const idle = idleSlotSets.pop();
  if (idle) return idle;
  const Memory = (globalThis as { WebAssembly?: { Memory?: WasmMemoryConstructor } }).WebAssembly?.Memory;
  if (Memory) {
    try {
      const pages = (SLOT_BYTES * SLOT_COUNT) / 65_536;
      const { buffer } = new Memory({ initial: pages, maximum: pages });
      return Array.from({ length: SLOT_COUNT }, (_, index) => Buffer.from(buffer, index * SLOT_BYTES, SLOT_BYTES));
    } catch {
      // No address space for it: ordinary memory, which O_DIRECT may refuse (then writes go buffered).
    }
  }
  return Array.from({ length: SLOT_COUNT }, () => Buffer.allocUnsafeSlow(SLOT_BYTES));
}
function returnSlots(slots: Buffer[]): void {
  if (idleSlotSets.length === 0) idleSlotSets.push(slots);
}

export interface PartWriterOptions {
  readonly path: string;
  /** Where the first byte goes: 0 creates or truncates the file, more resumes it at that size. */
  readonly start: number;
  /** Bytes this transfer will bring, when known (decides slot mode). */
  readonly expectedBytes?: number | undefined;
  /** False once this process may no longer write the file (checked before every write). */
  readonly canWrite: () => boolean;
  /** Sees every byte once, in order, as it arrives (hashing, counting); may throw to stop the transfer. */
  readonly onChunk: (chunk: Buffer) => void;
  /** The file's size after each completed write. */
  readonly onWritten: (fileBytes: number) => void;
  /** 'buffered': slots never use O_DIRECT (DOWNLOAD_WRITE_MODE); default 'direct' where allowed. */
  readonly writeMode?: WriteMode | undefined;
}

/** DOWNLOAD_WRITE_MODE. */
export type WriteMode = Config['transfer']['writeMode'];

interface Slots {
  readonly buffers: Buffer[];
  readonly free: number[];
  /** Full slots waiting to be written, in file order. */
  readonly full: number[];
  /** The slot being filled, or -1 when all are full or being written. */
  current: number;
  fill: number;
  /** O_DIRECT in use: the file system has not refused it. */
  direct: boolean;
}

export class PartWriter {
  readonly #options: PartWriterOptions;
  #handle: FileHandle | undefined;
  /** A handle without O_DIRECT, for the unaligned tail and after a refusal. */
  #plainHandle: Promise<FileHandle> | undefined;
  #slots: Slots | undefined;
  /** #handle was opened with O_DIRECT (even if the slots are now written buffered). */
  #handleIsDirect = false;
  #scratch: Buffer | undefined;
  /** What the last `readBuffer` handed out, so `commit` knows where the bytes went. */
  #readTarget: 'slot' | 'scratch' = 'slot';
  /** Bytes in the file: an unbroken prefix of what arrived. */
  #position: number;
  #queue: Buffer[] = [];
  #queuedBytes = 0;
  #writing: Promise<void> | undefined;
  #flushDue = false;
  #timer: NodeJS.Timeout | undefined;
  /** Slot mode: what is left of a chunk that found no room yet (already seen by onChunk). */
  #held: { chunk: Buffer; offset: number } | undefined;
  #roomWaiter: (() => void) | undefined;
  #finishing: { resolve: () => void; reject: (error: Error) => void } | undefined;
  #failure: Error | undefined;
  #writeFailed = false;
  #onFailure: ((error: Error) => void) | undefined;
  #syncing: Promise<void> | undefined;
  #syncedAt: number;
  #closed = false;
  #aborting: Promise<void> | undefined;
  #settle!: () => void;
  /** Resolves once the file is closed, after `finish` or `abort`; never rejects. */
  readonly settled: Promise<void>;

  private constructor(options: PartWriterOptions) {
    this.#options = options;
    this.#position = options.start;
    this.#syncedAt = options.start;
    this.settled = new Promise((resolve) => (this.#settle = resolve));
  }

  /** Opens (or creates) the file and returns a writer for it. */
  static async open(options: PartWriterOptions): Promise<PartWriter> {
    const writer = new PartWriter(options);
    try {
      await writer.#open();
    } catch (error) {
      writer.#settle();
      throw error;
    }
    return writer;
  }

  async #open(): Promise<void> {
    const { path, start, expectedBytes } = this.#options;
    // O_NOFOLLOW: a symlink planted at the predictable `.part` name is refused, never written through.
    const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_NOFOLLOW | (start === 0 ? fsConstants.O_TRUNC : 0);
    if (expectedBytes === undefined || expectedBytes < SLOT_MODE_MIN_BYTES) {
      this.#handle = await open(path, flags, 0o666);
      return;
    }
    const O_DIRECT = (fsConstants as { O_DIRECT?: number }).O_DIRECT;
    const buffers = takeSlots();
    this.#slots = { buffers, free: buffers.map((_, index) => index).slice(1), full: [], current: 0, fill: 0, direct: false };
    if (O_DIRECT !== undefined && start % DIRECT_ALIGN === 0 && this.#options.writeMode !== 'buffered') {
      try {
        this.#handle = await open(path, flags | O_DIRECT, 0o666);
        this.#handleIsDirect = true;
        this.#slots.direct = true;
        return;
      } catch (error) {
        if (!DIRECT_REFUSED.has((error as NodeJS.ErrnoException).code ?? '')) {
          returnSlots(buffers);
          throw error;
        }
        // This file system does not do O_DIRECT: the slots are written buffered.
      }
    }
    try {
      this.#handle = await open(path, flags, 0o666);
    } catch (error) {
      returnSlots(buffers);
      throw error;
    }
  }

  /** Bytes in the file now (what a resume would ask for). */
  get fileBytes(): number {
    return this.#position;
  }

  /** Whether `readBuffer`/`commit` may be used (slot mode). */
  get acceptsReads(): boolean {
    return this.#slots !== undefined;
  }

  /** 'direct' while O_DIRECT writes are in use. */
  get mode(): 'direct' | 'slots' | 'queue' {
    return this.#slots ? (this.#slots.direct ? 'direct' : 'slots') : 'queue';
  }

  /** Called once if a write fails (the transfer should stop). */
  onFailure(listener: (error: Error) => void): void {
    this.#onFailure = listener;
  }

  /**
   * Takes a chunk (seen by onChunk at once). False when there is no room for more: wait for the
   * callback given to `onRoom` before the next push or read.
   */
  push(chunk: Buffer): boolean {
    if (this.#failure) throw this.#failure;
    this.#options.onChunk(chunk);
    if (this.#slots) return this.#fill(chunk, 0);
    this.#queue.push(chunk);
    this.#queuedBytes += chunk.length;
    if (this.#queuedBytes >= BATCH_BYTES) this.#pump();
    else this.#timer ??= setTimeout(this.#onTimer, FLUSH_DELAY_MS);
    return this.#queuedBytes < MAX_QUEUED_BYTES;
  }

  /** Slot mode: where the next socket read should put its bytes. */
  readBuffer(): Buffer {
    const slots = this.#slots as Slots;
    if (slots.current >= 0 && !this.#held) {
      this.#readTarget = 'slot';
      return (slots.buffers[slots.current] as Buffer).subarray(slots.fill);
    }
    this.#readTarget = 'scratch';
    this.#scratch ??= Buffer.allocUnsafeSlow(SCRATCH_BYTES);
    return this.#scratch;
  }

  /**
   * Slot mode: `bytes` were read into the buffer the last `readBuffer` returned. False when there is
   * no room for another read: wait for `onRoom`.
   */
  commit(bytes: number): boolean {
    if (this.#failure) throw this.#failure;
    const slots = this.#slots as Slots;
    if (this.#readTarget === 'scratch') {
      // Copied into the slots; what does not fit waits in the scratch buffer, which is handed out
      // again only after that (reading is paused until then).
      const chunk = (this.#scratch as Buffer).subarray(0, bytes);
      this.#options.onChunk(chunk);
      return this.#fill(chunk, 0);
    }
    const slot = slots.buffers[slots.current] as Buffer;
    this.#options.onChunk(slot.subarray(slots.fill, slots.fill + bytes));
    slots.fill += bytes;
    if (slots.fill === SLOT_BYTES) this.#rotate();
    return slots.current >= 0;
  }

  /** Calls `listener` once there is room again after `push` or `commit` returned false. */
  onRoom(listener: () => void): void {
    this.#roomWaiter = listener;
    this.#release();
  }

  /** Slot mode: copies `chunk` from `offset` into the slots; false (and the rest held) when they are all full. */
  #fill(chunk: Buffer, offset: number): boolean {
    const slots = this.#slots as Slots;
    let at = offset;
    while (at < chunk.length) {
      if (slots.current < 0) {
        this.#held = { chunk, offset: at };
        return false;
      }
      const copied = chunk.copy(slots.buffers[slots.current] as Buffer, slots.fill, at);
      slots.fill += copied;
      at += copied;
      if (slots.fill === SLOT_BYTES) this.#rotate();
    }
    return slots.current >= 0;
  }

  /** The current slot is full: queue it for writing and take the next free one (if any). */
  #rotate(): void {
    const slots = this.#slots as Slots;
    slots.full.push(slots.current);
    slots.fill = 0;
    slots.current = slots.free.shift() ?? -1;
    this.#pump();
  }

  /** Lets a waiting producer go on once there is room again. */
  #release(): void {
    if (this.#failure) return;
    if (this.#slots) {
      if (this.#held) {
        const { chunk, offset } = this.#held;
        if (this.#slots.current < 0) return;
        this.#held = undefined;
        if (!this.#fill(chunk, offset)) return;
      }
      if (this.#slots.current < 0) return;
    } else if (this.#queuedBytes >= MAX_QUEUED_BYTES / 2) {
      return;
    }
    const waiter = this.#roomWaiter;
    if (!waiter) return;
    this.#roomWaiter = undefined;
    waiter();
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#flushDue = true;
    this.#pump();
  };

  /** Starts the next write when none is in flight and there is something worth writing. */
  #pump(): void {
    if (this.#writing || this.#failure || this.#closed) return;
    const slots = this.#slots;
    let write: () => Promise<number>;
    let bytes: number;
    let done: () => void = () => undefined;
    if (slots) {
      if (slots.full.length === 0) return this.#maybeFinish();
      if (!this.#options.canWrite()) return this.#fail(new LeaseLostError(), false);
      // Every full slot in one write: when the disk lags behind the socket, the writes grow.
      const written = slots.full.splice(0);
      const buffers = written.map((slot) => slots.buffers[slot] as Buffer);
      const position = this.#position;
      bytes = SLOT_BYTES * written.length;
      write = async () => {
        if (!slots.direct) return (await (await this.#plain()).writev(buffers, position)).bytesWritten;
        try {
          return (await (this.#handle as FileHandle).writev(buffers, position)).bytesWritten;
        } catch (error) {
          if (!DIRECT_REFUSED.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
          // O_DIRECT refused after all (this memory, this file system): the same bytes, buffered.
          slots.direct = false;
          return (await (await this.#plain()).writev(buffers, position)).bytesWritten;
        }
      };
      done = () => {
        for (const slot of written) {
          if (slots.current < 0) slots.current = slot;
          else slots.free.push(slot);
        }
      };
    } else {
      if (this.#queuedBytes === 0 || !(this.#queuedBytes >= BATCH_BYTES || this.#flushDue || this.#finishing)) return this.#maybeFinish();
      if (!this.#options.canWrite()) return this.#fail(new LeaseLostError(), false);
      const buffers = this.#queue;
      const position = this.#position;
      bytes = this.#queuedBytes;
      this.#queue = [];
      this.#queuedBytes = 0;
      this.#flushDue = false;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      write = async () => (await (this.#handle as FileHandle).writev(buffers, position)).bytesWritten;
    }
    this.#writing = write()
      .then((written) => {
        if (written !== bytes) throw new Error(`short write to ${this.#options.path}: ${written} of ${bytes} bytes`);
        this.#writing = undefined;
        this.#position += bytes;
        done();
        this.#options.onWritten(this.#position);
        if (!(slots?.direct ?? false) && this.#position - this.#syncedAt >= SYNC_EVERY_BYTES && !this.#syncing) this.#syncInBackground();
        this.#release();
        this.#pump();
      })
      .catch((error: Error) => {
        this.#writing = undefined;
        this.#fail(error, true);
      });
  }

  /** Buffered writes of a big file: flushes them to the disk while the transfer goes on. */
  #syncInBackground(): void {
    const upTo = this.#position;
    this.#syncing = this.#plain()
      .then((handle) => handle.datasync())
      .then(() => {
        this.#syncing = undefined;
        this.#syncedAt = upTo;
        this.#maybeFinish();
      })
      .catch((error: Error) => {
        this.#syncing = undefined;
        this.#fail(error, true);
      });
  }

  #fail(error: Error, writeFailed: boolean): void {
    // A write that fails after the transfer already stopped (abort waiting for it) must still stop
    // abort from writing later bytes at a position that never moved past the failed ones.
    if (writeFailed) this.#writeFailed = true;
    if (this.#failure) return;
    this.#failure = error;
    this.#writeFailed ||= writeFailed;
    this.#roomWaiter = undefined;
    this.#onFailure?.(error);
    const finishing = this.#finishing;
    this.#finishing = undefined;
    finishing?.reject(error);
  }

  /**
   * Everything has arrived: writes what is left (the unaligned tail through a buffered handle),
   * then closes the file. Rejects if a write failed or the lease ran out; the file is closed then too.
   */
  async finish(): Promise<void> {
    try {
      if (this.#failure) throw this.#failure;
      await new Promise<void>((resolve, reject) => {
        this.#finishing = { resolve, reject };
        this.#pump();
        this.#maybeFinish();
      });
    } catch (error) {
      await this.abort(error as Error);
      throw error;
    }
    await this.#close();
  }

  /** At the end: once every full slot or batch is written and no sync runs, the tail, then done. */
  #maybeFinish(): void {
    const finishing = this.#finishing;
    if (!finishing || this.#writing || this.#syncing || this.#failure || this.#held) return;
    const slots = this.#slots;
    if (slots ? slots.full.length > 0 : this.#queuedBytes > 0) return;
    this.#finishing = undefined;
    const tail = slots && slots.current >= 0 && slots.fill > 0 ? [(slots.buffers[slots.current] as Buffer).subarray(0, slots.fill)] : [];
    if (tail.length > 0 && !this.#options.canWrite()) {
      const error = new LeaseLostError();
      this.#fail(error, false);
      return finishing.reject(error);
    }
    // Tracked as the write in flight: an abort arriving meanwhile waits for it instead of writing
    // the same bytes again.
    this.#writing = this.#writeAt(tail).then(
      () => {
        this.#writing = undefined;
        finishing.resolve();
      },
      (error: Error) => {
        this.#writing = undefined;
        this.#fail(error, true);
        finishing.reject(error);
      },
    );
  }

  /** Writes `buffers` at the end of the file through the buffered handle. */
  async #writeAt(buffers: Buffer[]): Promise<void> {
    const bytes = buffers.reduce((sum, buffer) => sum + buffer.length, 0);
    if (bytes === 0) return;
    const { bytesWritten } = await (await this.#plain()).writev(buffers, this.#position);
    if (bytesWritten !== bytes) throw new Error(`short write to ${this.#options.path}: ${bytesWritten} of ${bytes} bytes`);
    this.#position += bytes;
    if (this.#slots) this.#slots.fill = 0;
    this.#options.onWritten(this.#position);
  }

  async #plain(): Promise<FileHandle> {
    if (!this.#handleIsDirect) return this.#handle as FileHandle;
    // The promise is kept, not the handle: two callers at once must not open two handles.
    this.#plainHandle ??= open(this.#options.path, fsConstants.O_WRONLY);
    return this.#plainHandle;
  }

  /**
   * The transfer stopped early (`reason`): waits for the write in flight, then, unless a write
   * failed or the lease ran out, writes everything received so far, and closes the file.
   */
  abort(reason: Error): Promise<void> {
    this.#aborting ??= this.#abort(reason);
    return this.#aborting;
  }

  async #abort(reason: Error): Promise<void> {
    if (this.#closed) return;
    if (!this.#failure) this.#fail(reason, false);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    try {
      await this.#writing;
      await this.#syncing;
      if (!this.#writeFailed && this.#options.canWrite()) {
        const slots = this.#slots;
        const held = this.#held ? [this.#held.chunk.subarray(this.#held.offset)] : [];
        const rest = slots
          ? [
              ...slots.full.map((slot) => slots.buffers[slot] as Buffer),
              ...(slots.current >= 0 ? [(slots.buffers[slots.current] as Buffer).subarray(0, slots.fill)] : []),
              ...held,
            ]
          : this.#queue;
        await this.#writeAt(rest).catch(() => undefined);
      }
    } finally {
      await this.#close();
    }
  }

  async #close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#held = undefined;
    await this.#plainHandle?.then(async (handle) => handle.close()).catch(() => undefined);
    await this.#handle?.close().catch(() => undefined);
    if (this.#slots) returnSlots(this.#slots.buffers);
    this.#slots = undefined;
    this.#settle();
  }
}

/** A Writable over a PartWriter, for a body that arrives as a stream (the `http` module's response). */
export function partWriterStream(writer: PartWriter): Writable {
  const stream = new Writable({
    decodeStrings: false,
    // Above a socket chunk (64 KiB): write() returns true while the callbacks come back at once, so
    // the response is not paused and resumed around every chunk.
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, callback) {
      let roomLeft: boolean;
      try {
        roomLeft = writer.push(chunk);
      } catch (error) {
        return callback(error as Error);
      }
      if (roomLeft) callback();
      else writer.onRoom(() => callback());
    },
    final(callback) {
      writer.finish().then(() => callback(), callback);
    },
    destroy(error, callback) {
      if (!error) return callback(null);
      writer.abort(error).then(
        () => callback(error),
        () => callback(error),
      );
    },
  });
  writer.onFailure((error) => stream.destroy(error));
  return stream;
}
