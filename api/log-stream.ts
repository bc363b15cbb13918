import type { Request, Response } from 'express';
import { NotFoundError, ValidationError } from '../shared/errors.js';
import { parseLogEntry, type JobLog, type LogEntry } from '../shared/job-log.js';
import { parseProgress } from '../shared/job-progress.js';
import type { Keys } from '../shared/keys.js';
import { compareCursors, isCursor, START_CURSOR } from '../shared/log-cursor.js';
import type { Logger } from '../shared/logger.js';
import type { Drain } from './drain.js';
import type { JobStore } from './job-store.js';
import type { LogTail, TailBatch } from './log-tail.js';

export interface LogStreamOptions {
  readonly jobStore: JobStore;
  readonly jobLog: JobLog;
  readonly tail: LogTail;
  readonly keys: Keys;
  readonly logger: Logger;
  /** The API's graceful stop: when it starts, each stream gets `event: shutdown` and ends. */
  readonly drain?: Drain;
  /** Milliseconds between heartbeats (`: ping`); also how often a finished job's end is checked. */
  readonly heartbeatMs?: number;
  /** Entries per XRANGE while replaying. */
  readonly replayBatch?: number;
  /** Bytes buffered for one slow client before it is disconnected (it resumes with Last-Event-ID). */
  readonly maxBufferedBytes?: number;
  /** Told when a stream opens (+1) and ends (-1): the SSE clients gauge. */
  readonly onClient?: (delta: 1 | -1) => void;
}

/** Milliseconds a finished job's worker gets to write the end of its log before an API does. */
const END_GRACE_MS = 5_000;

export const formatLine = (id: string, message: string, timestamp: string) =>
  `id: ${id}\ndata: ${JSON.stringify({ message, timestamp })}\n\n`;

export const formatEnd = (id: string | undefined, status: string, error: string | null) =>
  `${id ? `id: ${id}\n` : ''}data: ${JSON.stringify({ status, error })}\n\nevent: complete\ndata: ${JSON.stringify({ status })}\n\n`;

/**
 * Sent when this API process stops: the client reconnects (to another instance) with Last-Event-ID
 * set to the last line it got, which EventSource does by itself. Carries no `id`, so it does not
 * move the client's cursor.
 */
export const formatShutdown = (lastEventId: string) =>
  `event: shutdown\ndata: ${JSON.stringify({
    message: 'This server is shutting down; reconnect with Last-Event-ID to continue',
    last_event_id: lastEventId,
  })}\n\n`;

const formatProgress = (fields: string[] | undefined) => `event: progress\ndata: ${JSON.stringify(parseProgress(fields))}\n\n`;

/** A log entry parsed once per tail batch, with its SSE bytes as a line. */
interface ParsedEntry {
  readonly entry: LogEntry;
  readonly chunk: Buffer;
}

const WHOLE_BATCH = Symbol('whole batch');

/** The entry parsed and encoded, once per batch when a `memo` shared by the batch's followers is given. */
function parsedEntry(id: string, fields: string[], memo: Map<string | symbol, unknown> | undefined): ParsedEntry {
  let parsed = memo?.get(id) as ParsedEntry | undefined;
  if (parsed === undefined) {
    const entry = parseLogEntry(id, fields);
    parsed = {
      entry,
      chunk: Buffer.from(entry.kind === 'line' ? formatLine(id, entry.message, entry.timestamp) : formatLine(id, endAsLine(entry), entry.timestamp)),
    };
    memo?.set(id, parsed);
  }
  return parsed;
}

/**
 * A live batch of lines as one buffer, built once for all its followers; undefined when it holds an
 * end entry (those are delivered one by one: an end may finish the stream).
 */
function wholeBatch(entries: ReadonlyArray<readonly [string, string[]]>, memo: Map<string | symbol, unknown>): Buffer | undefined {
  if (memo.has(WHOLE_BATCH)) return memo.get(WHOLE_BATCH) as Buffer | undefined;
  const parsed = entries.map(([id, fields]) => parsedEntry(id, fields, memo));
  const whole = parsed.every(({ entry }) => entry.kind === 'line') ? Buffer.concat(parsed.map(({ chunk }) => chunk)) : undefined;
  memo.set(WHOLE_BATCH, whole);
  return whole;
}

/** The message of an end entry that is not the last one (a job retried after it had ended). */
const endAsLine = (entry: Extract<LogEntry, { kind: 'end' }>) =>
  `Attempt ended: ${entry.status}${entry.error ? `: ${entry.error}` : ''}`;

/** The starting cursor: `Last-Event-ID` (EventSource reconnects) or `?last_event_id=`. */
function startCursor(req: Request): string {
  const header = req.get('last-event-id');
  const query = typeof req.query.last_event_id === 'string' ? req.query.last_event_id : undefined;
  const value = header ?? query;
  if (value === undefined || value === '') return START_CURSOR;
  if (!isCursor(value)) throw new ValidationError('Last-Event-ID is not a cursor this server issued');
  return value;
}

/**
 * `GET /api/v1/jenkins/download/:id`: the job's log as Server-Sent Events. Replays history with
 * XRANGE, then follows through the process-wide log tail; every line goes out once, in order,
 * to every reader, and a reconnect with Last-Event-ID resumes exactly after that line.
 */
export function createLogStreamHandler(options: LogStreamOptions) {
  const { jobStore, jobLog, tail, keys, logger } = options;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const replayBatch = options.replayBatch ?? 500;
  const maxBufferedBytes = options.maxBufferedBytes ?? 8 * 1024 * 1024;

  return async (req: Request, res: Response): Promise<void> => {
    const jobId = String(req.params.id);
    let lastSent = startCursor(req);
    const [view, newestEntry] = await Promise.all([jobStore.get(jobId), jobLog.lastEntry(jobId)]);
    if (!view && !newestEntry) throw new NotFoundError(`No job ${jobId}`);
    // A cursor past the newest entry (made up, or kept from a log a Redis restart rebuilt) resumes
    // at the newest: this process's tail of the log reads on from its first reader's cursor, so
    // one reader's cursor from the future would hold back the lines of every other.
    const newest = newestEntry?.id ?? START_CURSOR;
    if (compareCursors(lastSent, newest) > 0) lastSent = newest;

    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();

    let done = false;
    const cleanups: Array<() => void> = [];
    options.onClient?.(1);
    cleanups.push(() => options.onClient?.(-1));
    const finish = () => {
      if (done) return;
      done = true;
      for (const cleanup of cleanups.splice(0)) cleanup();
      res.end();
    };
    /** Runs `cleanup` when the stream ends, or now when it already has (ended during an await). */
    const onFinish = (cleanup: () => void) => {
      if (done) cleanup();
      else cleanups.push(cleanup);
    };
    req.on('close', finish);
    const write = (chunk: string | Buffer) => {
      if (done) return;
      res.write(chunk);
      if (res.writableLength > maxBufferedBytes) {
        logger.warn('SSE client too slow; disconnecting it', { job_id: jobId });
        res.destroy();
        finish();
      }
    };
    onFinish(
      options.drain?.onDrain(() => {
        write(formatShutdown(lastSent));
        finish();
      }) ?? (() => undefined),
    );

    /**
     * Sends entries after lastSent. `newest` says the last entry is the newest in the stream; an
     * end entry ends the stream only then (a later entry means the job was retried), and at the end
     * of a replay page it is left for the next read to decide.
     */
    const deliver = (entries: ReadonlyArray<readonly [string, string[]]>, newestKnown: boolean, memo?: Map<string | symbol, unknown>) => {
      // A follower that is up to date takes the whole live batch as one write of shared bytes.
      const whole = memo && entries.length > 1 ? wholeBatch(entries, memo) : undefined;
      const first = entries[0];
      const last = entries[entries.length - 1];
      if (whole && first && last && compareCursors(first[0], lastSent) > 0) {
        write(whole);
        lastSent = last[0];
        return;
      }
      for (const [index, [id, fields]] of entries.entries()) {
        if (done) return;
        if (compareCursors(id, lastSent) <= 0) continue;
        // A live batch reaches every follower of the job: parse and encode each entry once, and
        // write the same bytes to all of them.
        const { entry, chunk } = parsedEntry(id, fields, memo);
        const isLast = index === entries.length - 1;
        if (entry.kind === 'end' && isLast && !newestKnown) return;
        if (entry.kind === 'end' && isLast) {
          write(formatEnd(id, entry.status, entry.error));
          lastSent = id;
          finish();
          return;
        }
        write(chunk);
        lastSent = id;
      }
    };

    /** Reads pages of history after lastSent until the newest entry; false once finished. */
    const replay = async (reportDropped: boolean) => {
      for (;;) {
        const page = await jobLog.read(jobId, lastSent, replayBatch);
        if (reportDropped && page.dropped > 0) {
          write(`data: ${JSON.stringify({
            message: `${page.dropped} earlier log line(s) were dropped (MAX_LOG_LINES); continuing with the oldest kept line`,
            timestamp: new Date().toISOString(),
          })}\n\n`);
        }
        reportDropped = false;
        const raw = page.entries.map((entry) => [entry.id, toFields(entry)] as const);
        const full = raw.length >= replayBatch;
        deliver(raw, !full);
        if (!full || done) return;
      }
    };

    // Progress snapshots: the current one now, then each new one.
    const progressKey = keys.progress(jobId);
    const latest = (await jobStore.progressEntry(jobId)) ?? undefined;
    write(formatProgress(latest?.[1]));
    if (done) return;
    onFinish(
      tail.subscribe(progressKey, latest?.[0] ?? '0-0', (batch) => {
        const last = batch.entries[batch.entries.length - 1];
        if (!last) return;
        const memoKey = `progress ${last[0]}`;
        let chunk = batch.memo.get(memoKey) as Buffer | undefined;
        if (chunk === undefined) {
          chunk = Buffer.from(formatProgress(last[1]));
          batch.memo.set(memoKey, chunk);
        }
        write(chunk);
      }),
    );

    // A reader that already had the end (an EventSource reconnects with the end's own id) gets the
    // same ending again, rather than a stream that never ends.
    if (newestEntry?.kind === 'end' && lastSent === newest) {
      write(formatEnd(newestEntry.id, newestEntry.status, newestEntry.error));
      finish();
      return;
    }

    await replay(true);
    if (done) return;

    // Follow: subscribe first and hold live batches, catch up with XRANGE (covers anything the
    // tail's position skips), then release the held batches, dropping what was already sent.
    let held: TailBatch[] | null = [];
    onFinish(
      tail.subscribe(keys.log(jobId), lastSent, (batch) => {
        if (held) held.push(batch);
        else deliver(batch.entries, true, batch.memo);
      }),
    );
    await replay(false);
    const pending = held;
    held = null;
    for (const batch of pending) deliver(batch.entries, true, batch.memo);
    if (done) return;

    const heartbeat = setInterval(() => {
      write(': ping\n\n');
      void reconcileEnd().catch((error: unknown) => logger.debug('end check failed', { job_id: jobId, error }));
    }, heartbeatMs);
    onFinish(() => clearInterval(heartbeat));
    await reconcileEnd();

    /**
     * A job can end without its worker writing the end entry (the worker died after BullMQ
     * recorded the outcome, or it was removed in Bull Board). Write it here; it is idempotent and
     * reaches every follower through the tail.
     */
    async function reconcileEnd() {
      const current = await jobStore.get(jobId);
      if (!current) {
        await jobLog.end(jobId, 'cancelled', 'The job was removed');
        return;
      }
      // Leave a just-finished job to its worker, which writes its last line with the end.
      const endedAt = current.completed_at ? Date.parse(current.completed_at) : Number.NaN;
      if (current.status !== 'pending' && current.status !== 'running' && Date.now() - endedAt > END_GRACE_MS) {
        await jobLog.end(jobId, current.status, current.error);
      }
    }
  };
}

function toFields(entry: LogEntry): string[] {
  return entry.kind === 'line'
    ? ['m', entry.message, 't', entry.timestamp]
    : ['s', entry.status, 'e', entry.error ?? '', 't', entry.timestamp];
}
