import { readFileSync } from 'node:fs';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import { UnrecoverableError } from 'bullmq';
import { AppError } from '../shared/errors.js';
import { directGet, DirectGetTransportError, type BodyTarget, type ResponseHead } from './direct-get.js';
import { isRetryableStatus, parseRetryAfter, RetryableError, withRetries } from './retry-policy.js';
import { createSemaphore, type Semaphore } from './semaphore.js';

/** Jenkins answered an HTTP status that will not change on retry. The URL never carries credentials. */
export class JenkinsHttpError extends AppError {
  readonly status: number;
  readonly url: string;

  constructor(status: number, url: string) {
    super('JENKINS_HTTP_ERROR', `Jenkins answered HTTP ${status} for ${url}`);
    this.status = status;
    this.url = url;
  }
}

export interface JenkinsClientOptions {
  /** JENKINS_URL: credentials are sent only to this origin. */
  readonly baseUrl: string;
  readonly user?: string | undefined;
  readonly apiToken?: string | undefined;
  /** Requests in flight to Jenkins from this process (JENKINS_MAX_CONNECTIONS). Default 4. */
  readonly maxConnections?: number;
  /** Tries per request after the first (DOWNLOAD_RETRIES). Default 5. */
  readonly retries?: number;
  /** First retry backoff in milliseconds. Default 500. */
  readonly retryBaseDelayMs?: number;
  /** Milliseconds without any data before a request is aborted as timed out. Default 60000. */
  readonly idleTimeoutMs?: number;
  /** Extra PEM CA file trusted for HTTPS (JENKINS_CA_FILE). */
  readonly caFile?: string | undefined;
  /** Turns TLS verification off (JENKINS_TLS_INSECURE). */
  readonly tlsInsecure?: boolean;
  /** Called before each retry, for the job log. */
  readonly onRetry?: (message: string) => void;
}

export interface ArtifactResponse {
  /** 200 or 206. */
  readonly status: number;
  readonly body: IncomingMessage;
  /** Where the bytes came from after redirects (never logged with query strings: they hold signatures). */
  readonly finalUrl: string;
}

export interface JenkinsClient {
  /** GET a JSON document with retries (at most `maxBytes`, default 16 MiB). */
  getJson(url: string, signal: AbortSignal, maxBytes?: number): Promise<unknown>;
  /**
   * One try at an artifact (the caller retries, since a retry may resume): follows up to 5
   * redirects, asking Jenkins again each time, with `Range: bytes=<rangeStart>-` when given.
   */
  openArtifact(url: string, signal: AbortSignal, rangeStart?: number): Promise<ArtifactResponse>;
  /**
   * One GET of `url` exactly (no redirects: give it the `finalUrl` of an {@link openArtifact}
   * answer) on a connection of its own, whose socket reads the body straight into `target` (see
   * direct-get.ts), with `Range: bytes=<rangeStart>-` when given. `accept` sees the head first and
   * throws to refuse it. Resolves once the whole body (framed by Content-Length) is committed.
   * Rejects with the abort reason, an UnrecoverableError for a TLS certificate that is not
   * trusted, DirectGetUnsupported, DirectGetTransportError, or what `accept` or `target` threw.
   */
  readArtifactInto(url: string, signal: AbortSignal, rangeStart: number | undefined, accept: (head: ResponseHead) => void, target: BodyTarget): Promise<ResponseHead>;
  /** Runs `operation` holding one of this process's Jenkins connection slots. */
  withConnection<T>(operation: () => Promise<T>): Promise<T>;
  /** Retries `operation` on retryable failures, with this client's policy; `onRetry` hears each retry. */
  retry<T>(operation: (attempt: number) => Promise<T>, signal: AbortSignal, what: string, onRetry?: (message: string) => void): Promise<T>;
}

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * Error codes Node gives a failed TLS certificate check (OpenSSL's X509_V_ERR names, and the host
 * name check). Trying again cannot change the answer: the trust settings or the certificate must.
 */
const TLS_CERTIFICATE_ERRORS = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** A URL without its query string or credentials, for messages (pre-signed URLs carry secrets). */
export function displayUrl(url: string): string {
  const parsed = new URL(url);
  parsed.username = '';
  parsed.password = '';
  parsed.search = '';
  return parsed.toString();
}

export function createJenkinsClient(options: JenkinsClientOptions): JenkinsClient {
  const origin = new URL(options.baseUrl).origin;
  const authorization =
    options.user !== undefined && options.apiToken !== undefined
      ? `Basic ${Buffer.from(`${options.user}:${options.apiToken}`).toString('base64')}`
      : undefined;
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const retries = options.retries ?? 5;
  const slots: Semaphore = createSemaphore(options.maxConnections ?? 4);
  const ca = options.caFile ? [...tls.rootCertificates, readFileSync(options.caFile, 'utf8')] : undefined;
  const agents = {
    http: new http.Agent({ keepAlive: true }),
    https: new https.Agent({ keepAlive: true, rejectUnauthorized: !options.tlsInsecure, ...(ca ? { ca } : {}) }),
  };

  /** Request headers for `target`: credentials only for the configured Jenkins origin, never for a redirect target elsewhere. */
  const requestHeaders = (target: URL, headers: Record<string, string>): Record<string, string> => {
    const all: Record<string, string> = { 'user-agent': 'ferry', accept: '*/*', ...headers };
    if (authorization && target.origin === origin) all.authorization = authorization;
    return all;
  };

  /** A TLS failure that retrying cannot change, as the UnrecoverableError to report; else undefined. */
  const certificateFailure = (target: URL, error: NodeJS.ErrnoException): UnrecoverableError | undefined =>
    error.code !== undefined && TLS_CERTIFICATE_ERRORS.has(error.code)
      ? new UnrecoverableError(
          `TLS certificate of ${target.origin} not accepted: ${error.message} (${error.code}); ` + 'for a private CA, set JENKINS_CA_FILE to its PEM file',
        )
      : undefined;

  /** One HTTP GET, no redirects followed. Network failures become RetryableError. */
  const get = (url: string, signal: AbortSignal, headers: Record<string, string>): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const target = new URL(url);
      const allHeaders = requestHeaders(target, headers);
      const isHttps = target.protocol === 'https:';
      const req = (isHttps ? https : http).get(target, { headers: allHeaders, signal, agent: isHttps ? agents.https : agents.http }, resolve);
      req.setTimeout(idleTimeoutMs, () => req.destroy(new Error(`no answer for ${idleTimeoutMs} ms`)));
      req.on('error', (error: NodeJS.ErrnoException) => {
        // A certificate failure is not retried: the same certificate meets the same trust settings on every try.
        if (signal.aborted) reject(signal.reason);
        else if (certificateFailure(target, error)) reject(certificateFailure(target, error));
        else reject(new RetryableError('JENKINS_NETWORK_ERROR', `Request to ${displayUrl(url)} failed: ${error.message}`, { cause: error }));
      });
    });

  /** Follows redirects; throws for any final status other than 200/206. */
  const open = async (url: string, signal: AbortSignal, headers: Record<string, string>): Promise<ArtifactResponse> => {
    let current = url;
    for (let hop = 0; ; hop += 1) {
      const response = await get(current, signal, headers);
      const status = response.statusCode ?? 0;
      if (status === 200 || status === 206) return { status, body: response, finalUrl: current };
      response.resume();
      const location = response.headers.location;
      if (REDIRECT_STATUSES.has(status) && location) {
        if (hop >= MAX_REDIRECTS) throw new UnrecoverableError(`More than ${MAX_REDIRECTS} redirects for ${displayUrl(url)}`);
        current = new URL(location, current).toString();
        continue;
      }
      const where = displayUrl(current);
      if (isRetryableStatus(status)) {
        throw new RetryableError('JENKINS_HTTP_ERROR', `Jenkins answered HTTP ${status} for ${where}`, {
          retryAfterMs: parseRetryAfter(response.headers['retry-after']),
        });
      }
      throw new UnrecoverableError(new JenkinsHttpError(status, where).message);
    }
  };

  const client: JenkinsClient = {
    retry(operation, signal, what, onRetry) {
      return withRetries(operation, {
        retries,
        signal,
        ...(options.retryBaseDelayMs !== undefined ? { baseDelayMs: options.retryBaseDelayMs } : {}),
        onRetry: (error, attempt, delayMs) => {
          const message = `${error.message}; retry ${attempt}/${retries} in ${(delayMs / 1000).toFixed(1)} s`;
          // The client's own listener (metrics, process log) hears every retry; the caller's (a job log) too.
          options.onRetry?.(message);
          onRetry?.(message);
        },
      });
    },

    withConnection: (operation) => slots.run(operation),

    async getJson(url, signal, maxBytes = 16 * 1024 * 1024) {
      return client.retry(
        () =>
          slots.run(async () => {
            const { body } = await open(url, signal, { accept: 'application/json' });
            const chunks: Buffer[] = [];
            let size = 0;
            try {
              for await (const chunk of body) {
                size += (chunk as Buffer).length;
                if (size > maxBytes) throw new UnrecoverableError(`Response from ${displayUrl(url)} is larger than ${maxBytes} bytes`);
                chunks.push(chunk as Buffer);
              }
            } catch (error) {
              body.destroy();
              if (error instanceof UnrecoverableError || signal.aborted) throw error;
              throw new RetryableError('JENKINS_NETWORK_ERROR', `Reading ${displayUrl(url)} failed: ${(error as Error).message}`);
            }
            try {
              return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
            } catch {
              throw new UnrecoverableError(`Jenkins answered ${displayUrl(url)} with something that is not JSON`);
            }
          }),
        signal,
        `GET ${displayUrl(url)}`,
      );
    },

    openArtifact(url, signal, rangeStart) {
      return open(url, signal, rangeStart ? { range: `bytes=${rangeStart}-` } : {});
    },

    async readArtifactInto(url, signal, rangeStart, accept, target) {
      const parsed = new URL(url);
      try {
        return await directGet({
          url: parsed,
          headers: requestHeaders(parsed, rangeStart ? { range: `bytes=${rangeStart}-` } : {}),
          signal,
          idleTimeoutMs,
          tls: { rejectUnauthorized: !options.tlsInsecure, ...(ca ? { ca } : {}) },
          accept,
          target,
        });
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        const cause = error instanceof DirectGetTransportError ? (error.cause as NodeJS.ErrnoException | undefined) : undefined;
        throw (cause && certificateFailure(parsed, cause)) ?? error;
      }
    },
  };
  return client;
}
