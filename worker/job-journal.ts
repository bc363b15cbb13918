import { randomUUID } from 'node:crypto';
import type { Progress } from '../shared/job-contract.js';
import type { JobLog, PendingLine } from '../shared/job-log.js';
import { REDIS_WRITE_RETRY_DELAYS_MS, retryOnSchedule } from './retry-policy.js';

/**
 * What one job attempt writes to Redis besides its files: its log lines (and a batch's copy of
 * them) and its progress snapshot, written in bursts rather than one round trip per line.
 *
 * A line is queued and written with the ones that follow it within `delayMs`, in one atomic
 * script per log (see JobLog.appendBatch), so every line reaches Redis once and in order. A burst
 * Redis refuses (full, say), or whose answer is lost, is sent again as it was, before newer lines;
 * each burst carries this journal's writer id and a number, so Redis applies it once. The
 * processor awaits {@link JobJournal.close} before it returns or throws, so a job's log is
 * complete before BullMQ records its outcome and the end entry is written after it. A worker that
 * dies loses at most the lines of its last `delayMs`; the job itself is taken over as before.
 */
export interface JobJournal {
  /** Queues a log line (timestamped now). */
  line(message: string): void;
  /** Queues a progress snapshot; only the newest one queued is written. */
  progress(snapshot: Progress): void;
  /** Writes everything queued now; resolves once Redis has it, rejects (keeping it queued) if Redis refused it. */
  flush(): Promise<void>;
  /** Flushes, trying again for a while if Redis refuses; rejects if it never takes the lines. */
  close(): Promise<void>;
}

export interface JobJournalOptions {
  readonly jobLog: JobLog;
  readonly jobId: string;
  /**
   * A batch's module job: every line is also appended to the batch's log, as `format` words it
   * (numbered over the batch).
   */
  readonly batch?: { readonly id: string; readonly format: (message: string) => string } | undefined;
  /** Milliseconds a queued line may wait for more before the burst is written. */
  readonly delayMs: number;
  /** Waits between the tries of {@link JobJournal.close} (milliseconds). */
  readonly closeRetryDelaysMs?: readonly number[];
  /** A burst Redis refused (it stays queued and is tried again). */
  readonly onError: (error: unknown) => void;
  /**
   * False once this process may no longer act for the job (its lease ran out: job-controls.ts). From
   * then on nothing queued is written: the job belongs to another worker, whose lines and end entry
   * are in the log already or on their way, and a stale burst would land after them.
   */
  readonly canWrite?: () => boolean;
  /**
   * Lines kept queued per log while Redis refuses them (default 10,000): past it the oldest queued
   * lines are dropped and a line saying how many takes their place, so a long job under a long
   * refusal does not grow the worker's memory without bound.
   */
  readonly maxQueuedLines?: number;
}


/** A burst as it was sent: sent again exactly so (same number) until Redis has taken it. */
interface Burst {
  readonly seq: number;
  readonly lines: readonly PendingLine[];
  readonly progress: Progress | undefined;
  readonly keep: boolean;
}

/** One log the journal writes to: its queued lines, and for the job's own log the snapshot. */
interface Target {
  readonly jobId: string;
  readonly format: (message: string) => string;
  readonly withProgress: boolean;
  lines: PendingLine[];
  /** The last burst number formed for this log. */
  seq: number;
  /** A burst sent but not confirmed (refused, or its answer lost): the next write sends it again first. */
  unsent: Burst | undefined;
  /** Queued lines dropped (oldest first) since the last burst was formed, over maxQueuedLines. */
  dropped: number;
}

export function createJobJournal(options: JobJournalOptions): JobJournal {
  const { jobLog, delayMs } = options;
  const own: Target = { jobId: options.jobId, format: (message) => message, withProgress: true, lines: [], seq: 0, unsent: undefined, dropped: 0 };
  const targets: Target[] = options.batch
    ? [own, { jobId: options.batch.id, format: options.batch.format, withProgress: false, lines: [], seq: 0, unsent: undefined, dropped: 0 }]
    : [own];
  const maxQueued = Math.max(1, options.maxQueuedLines ?? 10_000);
  const droppedNotice = (target: Target): PendingLine => ({
    message: target.format(`${target.dropped} log line(s) dropped here: Redis refused writes while they were queued`),
    timestamp: target.lines[0]?.timestamp ?? new Date().toISOString(),
  });
  /** This journal's identity as a log writer: Redis applies each of its bursts once (JobLog.appendBatch). */
  const writer = randomUUID();
  let snapshot: Progress | undefined;
  /** The first write of an attempt makes the log and snapshot live again (a retried job's log had an expiry). */
  let keep = true;
  let timer: NodeJS.Timeout | undefined;
  /** The write in flight: writes go one at a time, so a refused burst is retried before newer lines. */
  let chain: Promise<void> = Promise.resolve();
  let failures = 0;
  /** Set by close(): from then on only close() writes, so nothing lands after it returns or gives up. */
  let closed = false;

  /** Set once the lease is found lost: everything queued is dropped and nothing more is written. */
  let stale = false;
  const dropAll = () => {
    stale = true;
    snapshot = undefined;
    for (const target of targets) {
      target.lines = [];
      target.unsent = undefined;
      target.dropped = 0;
    }
  };

  const writeTarget = async (target: Target) => {
    for (;;) {
      if (stale || (options.canWrite && !options.canWrite())) {
        dropAll();
        return;
      }
      if (!target.unsent) {
        const progress = target.withProgress ? snapshot : undefined;
        const keepNow = target.withProgress && keep;
        if (target.lines.length === 0 && progress === undefined && !keepNow) return;
        target.seq += 1;
        const lines = target.dropped > 0 ? [droppedNotice(target), ...target.lines] : target.lines;
        target.unsent = { seq: target.seq, lines, progress, keep: keepNow };
        target.lines = [];
        target.dropped = 0;
        if (target.withProgress) snapshot = undefined;
      }
      const burst = target.unsent;
      // Refused, or sent and its answer lost: the burst stays unsent and goes again as it is (same
      // number, so Redis skips it if it had run it), before anything queued since.
      await jobLog.appendBatch(target.jobId, burst.lines, { progress: burst.progress, keep: burst.keep, burst: { writer, seq: burst.seq } });
      target.unsent = undefined;
      if (burst.keep) keep = false;
    }
  };

  const writeAll = async () => {
    const results = await Promise.allSettled(targets.map(writeTarget));
    const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) throw failed.reason;
  };

  const flush = (): Promise<void> => {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    const run = chain.then(writeAll, writeAll);
    chain = run.catch(() => undefined);
    return run;
  };

  const schedule = (wait = delayMs) => {
    if (closed) return;
    timer ??= setTimeout(() => {
      timer = undefined;
      flush().then(
        () => {
          failures = 0;
        },
        (error: unknown) => {
          options.onError(error);
          failures += 1;
          // Back off while Redis refuses, up to a few seconds between tries.
          schedule(Math.min(delayMs * 2 ** failures, 5_000));
        },
      );
    }, wait);
  };

  return {
    line(message) {
      if (stale) return;
      const timestamp = new Date().toISOString();
      for (const target of targets) {
        target.lines.push({ message: target.format(message), timestamp });
        if (target.lines.length > maxQueued) {
          target.lines.shift();
          target.dropped += 1;
        }
      }
      schedule();
    },
    progress(next) {
      snapshot = next;
      schedule();
    },
    flush,
    async close() {
      closed = true;
      try {
        await retryOnSchedule(flush, options.closeRetryDelaysMs ?? REDIS_WRITE_RETRY_DELAYS_MS, options.onError);
      } finally {
        // A timed flush that failed while close() ran may have scheduled a retry: none may outlive it.
        clearTimeout(timer);
        timer = undefined;
      }
    },
  };
}
