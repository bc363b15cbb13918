import { randomUUID } from 'node:crypto';
import { backoffMs, parseRetryAfter, sleep as defaultSleep, type Sleep } from './backoff.js';
import { ApiError, ConnectionError, describeError, isRetryableStatus } from './errors.js';

export interface ApiClientOptions {
  /** The API's base URL (`FERRY_URL`), e.g. `http://127.0.0.1:3000`; a path prefix is kept. */
  readonly baseUrl: string;
  /** Sent as `Authorization: Bearer <token>` when set (`FERRY_TOKEN`). */
  readonly token?: string | undefined;
  readonly fetch?: typeof fetch;
  /** Tries per request when the answer is 429/502/503/504 or there is none (default 6). */
  readonly maxAttempts?: number;
  /** Milliseconds one JSON request may take before it is abandoned and retried (default 30 000). */
  readonly requestTimeoutMs?: number;
  /** Called before each retry, with why and how long until it (the CLI prints it on stderr). */
  readonly onRetry?: (reason: string, delayMs: number) => void;
  readonly sleep?: Sleep;
}

export interface RequestOptions {
  readonly query?: Record<string, string | undefined>;
  readonly body?: unknown;
  /**
   * POST only: send an `Idempotency-Key` (one per call, the same on each retry), so a retried
   * submit whose first answer was lost yields the same job rather than a second one.
   */
  readonly idempotent?: boolean;
  readonly signal?: AbortSignal | undefined;
}

export interface ApiClient {
  /** A JSON request; retries the retryable failures, then throws ApiError or ConnectionError. */
  request<T>(method: 'GET' | 'POST', path: string, options?: RequestOptions): Promise<{ status: number; body: T }>;
  /**
   * Opens a Server-Sent Events stream, resuming after `lastEventId` when given. Does not retry:
   * the log follower owns reconnecting.
   */
  openStream(path: string, lastEventId: string | undefined, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
}

/** The client for ferry's HTTP API: bearer token, JSON errors, `Retry-After`, bounded retries. */
export function createApiClient(options: ApiClientOptions): ApiClient {
  const base = new URL(options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`);
  const doFetch = options.fetch ?? fetch;
  const maxAttempts = options.maxAttempts ?? 6;
  const requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  const sleep = options.sleep ?? defaultSleep;

  const headersFor = (extra: Record<string, string>): Record<string, string> => ({
    ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
    'user-agent': 'ferry-cli',
    ...extra,
  });

  /** fetch, with a network failure turned into a ConnectionError naming its cause. */
  const send = async (url: URL, init: RequestInit, signal: AbortSignal | undefined): Promise<Response> => {
    try {
      return await doFetch(url, init);
    } catch (error) {
      if (signal?.aborted) throw error;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      const why = (error as Error).name === 'TimeoutError' ? 'no answer in time' : (cause?.code ?? cause?.message ?? describeError(error));
      throw new ConnectionError(`cannot reach ${base.origin}: ${why}`, { cause: error });
    }
  };

  return {
    async request<T>(method: 'GET' | 'POST', path: string, request: RequestOptions = {}) {
      const url = new URL(path, base);
      for (const [name, value] of Object.entries(request.query ?? {})) {
        if (value !== undefined) url.searchParams.set(name, value);
      }
      const headers = headersFor({
        accept: 'application/json',
        ...(request.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(request.idempotent ? { 'idempotency-key': `ferry-cli-${randomUUID()}` } : {}),
      });
      const body = request.body === undefined ? undefined : JSON.stringify(request.body);
      for (let attempt = 1; ; attempt++) {
        let failure: ApiError | ConnectionError;
        const timeout = AbortSignal.timeout(requestTimeoutMs);
        const signal = request.signal ? AbortSignal.any([request.signal, timeout]) : timeout;
        try {
          const response = await send(url, { method, headers, body, signal }, request.signal);
          const parsed = await readJson(response);
          if (response.ok) return { status: response.status, body: parsed as T };
          failure = toApiError(response, parsed);
          // 409 IDEMPOTENCY_IN_PROGRESS: our own first try is still running on the server.
          const retryable = isRetryableStatus(response.status) || failure.code === 'IDEMPOTENCY_IN_PROGRESS';
          if (!retryable) throw failure;
        } catch (error) {
          if (!(error instanceof ConnectionError)) throw error;
          failure = error;
        }
        if (attempt >= maxAttempts) throw failure;
        const wait = backoffMs(attempt, failure instanceof ApiError ? failure.retryAfterMs : undefined);
        options.onRetry?.(describeError(failure), wait);
        await sleep(wait, request.signal);
      }
    },

    async openStream(path, lastEventId, signal) {
      const response = await send(
        new URL(path, base),
        {
          headers: headersFor({ accept: 'text/event-stream', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) }),
          ...(signal ? { signal } : {}),
        },
        signal,
      );
      if (!response.ok || !response.body) throw toApiError(response, await readJson(response));
      return response.body;
    },
  };
}

/** The body as JSON, or `{ text }` when it is not JSON (a proxy's HTML error page). */
async function readJson(response: Response): Promise<unknown> {
  const text = await response.text().catch(() => '');
  if (text === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return { text: text.slice(0, 200) };
  }
}

function toApiError(response: Response, body: unknown): ApiError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof error?.code === 'string' ? error.code : `HTTP_${response.status}`;
  const message =
    typeof error?.message === 'string'
      ? error.message
      : (((body as { text?: string } | null)?.text ?? response.statusText) || 'no message');
  return new ApiError(response.status, code, message, parseRetryAfter(response.headers.get('retry-after')));
}
