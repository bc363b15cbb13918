import { UnrecoverableError } from 'bullmq';
import { AppError } from '../shared/errors.js';

/** A failure worth another try of the same request: timeouts, resets, 408, 429, 5xx, stalls. */
export class RetryableError extends AppError {
  /** Milliseconds the server asked us to wait (Retry-After), when it said. */
  readonly retryAfterMs: number | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; retryAfterMs?: number | undefined }) {
    super(code, message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** HTTP statuses that may succeed later. */
/**
 * Waits between the tries of a Redis write the server refused (a failover, a full Redis): about 8 s
 * in all. A job log's last burst and a job's end entry get it.
 */
export const REDIS_WRITE_RETRY_DELAYS_MS: readonly number[] = [100, 250, 500, 1_000, 2_000, 4_000];

/** Runs `operation`, and again after each of `delaysMs` while it fails (telling `onRetry`); throws the last failure. */
export async function retryOnSchedule<T>(operation: () => Promise<T>, delaysMs: readonly number[], onRetry: (error: unknown) => void): Promise<T> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await operation();
    } catch (error) {
      const wait = delaysMs[attempt];
      if (wait === undefined) throw error;
      onRetry(error);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status <= 599);
}

/** `Retry-After` in milliseconds: delta-seconds or an HTTP date; undefined when absent or invalid. */
export function parseRetryAfter(header: string | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1_000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export interface RetryOptions {
  /** Retries after the first try (DOWNLOAD_RETRIES). */
  readonly retries: number;
  /** First backoff in milliseconds; doubles each retry. */
  readonly baseDelayMs?: number;
  /** Longest wait between tries, including a server's Retry-After. */
  readonly maxDelayMs?: number;
  readonly signal: AbortSignal;
  readonly onRetry?: (error: Error, attempt: number, delayMs: number) => void;
}

/** Exponential backoff with full jitter, or the server's Retry-After when it gave one. */
export function backoffDelay(attempt: number, baseDelayMs: number, maxDelayMs: number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, maxDelayMs);
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Runs `operation` until it succeeds, fails with something not retryable, or the retries are used
 * up. Permanent failures (UnrecoverableError, 4xx other than 408/429) pass straight through.
 */
export async function withRetries<T>(operation: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const baseDelayMs = options.baseDelayMs ?? 500;
  const maxDelayMs = options.maxDelayMs ?? 60_000;
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await operation(attempt);
    } catch (error) {
      if (options.signal.aborted) throw options.signal.reason ?? error;
      if (!(error instanceof RetryableError) || error instanceof UnrecoverableError || attempt >= options.retries) throw error;
      const delay = backoffDelay(attempt, baseDelayMs, maxDelayMs, error.retryAfterMs);
      options.onRetry?.(error, attempt + 1, delay);
      await sleep(delay, options.signal);
    }
  }
}
