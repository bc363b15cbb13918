import type { JobStatus, Progress } from '../shared/job-contract.js';
import type { ApiClient } from './api-client.js';
import { backoffMs, sleep as defaultSleep, type Sleep } from './backoff.js';
import { ApiError, describeError, FollowGaveUpError, isRetryableStatus } from './errors.js';
import { readSse, type SseEvent } from './sse-reader.js';

/** One log line. `id` is its cursor; null only for the API's "lines were dropped" notice. */
export interface LogLine {
  readonly id: string | null;
  readonly timestamp: string;
  readonly message: string;
}

/** The end of a job's log: its final status. */
export interface LogEnd {
  readonly id: string | null;
  readonly status: JobStatus;
  readonly error: string | null;
}

export interface FollowOptions {
  readonly client: ApiClient;
  readonly jobId: string;
  /** Start after this cursor (`--after`); default: the first line. */
  readonly after?: string | undefined;
  /** Called once per line, in order; never twice for one line, across any number of reconnects. */
  readonly onLine: (line: LogLine) => void;
  readonly onProgress?: (progress: Progress) => void;
  /** Called before each reconnect: why, the cursor it resumes after, and the delay. */
  readonly onReconnect?: (info: { reason: string; lastEventId: string | undefined; delayMs: number }) => void;
  readonly signal?: AbortSignal | undefined;
  /**
   * Milliseconds without a byte (not even the API's `: ping`, every 15 s) before the connection is
   * taken for dead and replaced (default 45 000: three missed pings).
   */
  readonly idleTimeoutMs?: number;
  /** Milliseconds of failed reconnects, with nothing received, before giving up (default 300 000). */
  readonly giveUpAfterMs?: number;
  readonly sleep?: Sleep;
}

/**
 * Follows a job's log over Server-Sent Events until its end, and returns the end. After a dropped
 * connection, a stopping API (`event: shutdown`), a 5xx or a silent connection it reconnects with
 * `Last-Event-ID` set to the last line delivered, so the server resumes exactly after it: nothing
 * lost, nothing repeated. Reconnects back off from 250 ms to 5 s (a `Retry-After` wins); 4xx
 * answers (bad token, unknown job) are not retried.
 */
export async function followLog(options: FollowOptions): Promise<LogEnd> {
  const { client, jobId, signal } = options;
  const sleep = options.sleep ?? defaultSleep;
  const idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
  const giveUpAfterMs = options.giveUpAfterMs ?? 300_000;
  const path = `api/v1/jenkins/download/${encodeURIComponent(jobId)}`;
  let lastEventId = options.after;
  let failures = 0;
  let lastContact = Date.now();

  for (;;) {
    let reason = 'the stream ended before the job did';
    let retryAfterMs: number | undefined;
    let shutdown = false;
    try {
      const body = await client.openStream(path, lastEventId, signal);
      for await (const event of readSse(body, idleTimeoutMs)) {
        failures = 0;
        lastContact = Date.now();
        if (event.event === 'shutdown') {
          reason = 'the API is shutting down';
          shutdown = true;
          break;
        }
        const end = handle(event);
        if (end) return end;
      }
    } catch (error) {
      if (signal?.aborted) throw error;
      // Any 5xx is worth another try for a follower (README "Command line"); a 4xx is not.
      if (error instanceof ApiError && !isRetryableStatus(error.status) && error.status < 500) throw error;
      // Malformed event data would come back the same on every reconnect.
      if (error instanceof SyntaxError) throw error;
      // undici ends a body whose connection broke with TypeError('terminated').
      reason = error instanceof TypeError && error.message === 'terminated' ? 'connection lost' : describeError(error);
      if (error instanceof ApiError) retryAfterMs = error.retryAfterMs;
    }
    if (Date.now() - lastContact > giveUpAfterMs) {
      throw new FollowGaveUpError(
        `gave up following job ${jobId} after ${Math.round(giveUpAfterMs / 1000)} s without a connection (${reason}); ` +
          `resume with: ferry logs ${jobId} --follow${lastEventId ? ` --after ${lastEventId}` : ''}`,
      );
    }
    failures++;
    // A stopping API hands over at once: another instance (or the restarted one) takes the stream.
    const delayMs = shutdown && failures === 1 ? 0 : backoffMs(failures, retryAfterMs);
    options.onReconnect?.({ reason, lastEventId, delayMs });
    await sleep(delayMs, signal);
  }

  /** Delivers one event; returns the end when it is the end of the log. */
  function handle(event: SseEvent): LogEnd | undefined {
    if (event.event === 'progress') {
      options.onProgress?.(JSON.parse(event.data) as Progress);
      return undefined;
    }
    if (event.event === 'complete') {
      // Only reached when the end's own data event was missed; it carries no error text.
      const { status } = JSON.parse(event.data) as { status: JobStatus };
      return { id: lastEventId ?? null, status, error: null };
    }
    if (event.event !== 'message') return undefined;
    const data = JSON.parse(event.data) as { message?: string; timestamp?: string; status?: JobStatus; error?: string | null };
    if (typeof data.message !== 'string' && typeof data.status === 'string') {
      return { id: event.id ?? lastEventId ?? null, status: data.status, error: data.error ?? null };
    }
    options.onLine({ id: event.id ?? null, timestamp: data.timestamp ?? new Date().toISOString(), message: data.message ?? '' });
    // Moved only after the line is out: a reconnect asks for what follows the last line delivered.
    if (event.id !== undefined) lastEventId = event.id;
    return undefined;
  }
}
