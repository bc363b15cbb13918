import { setTimeout as delay } from 'node:timers/promises';

/** First retry delay in milliseconds; doubles per failure. */
const BASE_MS = 250;
/** Longest delay between two tries: a restarted API is back within seconds. */
const MAX_MS = 5_000;
/** Longest `Retry-After` honoured, so a misconfigured server cannot park the CLI for hours. */
const MAX_RETRY_AFTER_MS = 30_000;

/** Delay before try `failures + 1`: exponential from 250 ms, capped at 5 s, with jitter (50-100 %). */
export function backoffMs(failures: number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  const ceiling = Math.min(BASE_MS * 2 ** Math.max(0, failures - 1), MAX_MS);
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

/** `Retry-After` (seconds or an HTTP date) in milliseconds, or undefined when absent or malformed. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Waits `ms`; rejects with the signal's reason when it aborts. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

export const sleep: Sleep = async (ms, signal) => {
  await delay(ms, undefined, signal ? { signal } : {});
};
