import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { UnrecoverableError } from 'bullmq';
import { AppError } from '../shared/errors.js';

/** Jenkins answered an HTTP status ferry cannot use. The URL never carries credentials. */
export class JenkinsHttpError extends AppError {
  readonly status: number;
  readonly url: string;

  constructor(status: number, url: string) {
    super('JENKINS_HTTP_ERROR', `Jenkins answered HTTP ${status} for ${url}`);
    this.status = status;
    this.url = url;
  }
}

/** The network failed (reset, refused, timeout) while talking to Jenkins. */
export class JenkinsNetworkError extends AppError {
  constructor(url: string, cause: unknown) {
    super('JENKINS_NETWORK_ERROR', `Request to ${url} failed: ${(cause as Error).message ?? String(cause)}`, { cause });
  }
}

export interface JenkinsClientOptions {
  /** JENKINS_URL: credentials are sent only to this origin. */
  readonly baseUrl: string;
  readonly user?: string | undefined;
  readonly apiToken?: string | undefined;
  /** Milliseconds of socket inactivity before a request is aborted. Default 60000. */
  readonly idleTimeoutMs?: number;
}

export interface JenkinsClient {
  /** GET a JSON document (at most `maxBytes`, default 16 MiB). */
  getJson(url: string, signal: AbortSignal, maxBytes?: number): Promise<unknown>;
  /** GET a body as a stream; the caller must consume or destroy it. Rejects on any non-200 answer. */
  getStream(url: string, signal: AbortSignal): Promise<IncomingMessage>;
}

/** Statuses that will not change on retry: the job fails at once instead of retrying. */
const PERMANENT_STATUSES = new Set([400, 401, 403, 404, 410]);

export function createJenkinsClient(options: JenkinsClientOptions): JenkinsClient {
  const origin = new URL(options.baseUrl).origin;
  const authorization =
    options.user !== undefined && options.apiToken !== undefined
      ? `Basic ${Buffer.from(`${options.user}:${options.apiToken}`).toString('base64')}`
      : undefined;
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const agents = {
    http: new http.Agent({ keepAlive: true, maxSockets: 8 }),
    https: new https.Agent({ keepAlive: true, maxSockets: 8 }),
  };

  const request = (url: string, signal: AbortSignal): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const target = new URL(url);
      const headers: Record<string, string> = { 'user-agent': 'ferry', accept: '*/*' };
      // Credentials go only to the configured Jenkins origin, never to any other host.
      if (authorization && target.origin === origin) headers.authorization = authorization;
      const client = target.protocol === 'https:' ? https : http;
      const req = client.get(
        target,
        { headers, signal, agent: target.protocol === 'https:' ? agents.https : agents.http },
        (response) => {
          const status = response.statusCode ?? 0;
          if (status === 200) {
            resolve(response);
            return;
          }
          response.resume();
          const error = new JenkinsHttpError(status, url);
          reject(PERMANENT_STATUSES.has(status) ? new UnrecoverableError(error.message) : error);
        },
      );
      req.setTimeout(idleTimeoutMs, () => req.destroy(new Error(`no data for ${idleTimeoutMs} ms`)));
      req.on('error', (error) => reject(signal.aborted ? signal.reason : new JenkinsNetworkError(url, error)));
    });

  return {
    async getJson(url, signal, maxBytes = 16 * 1024 * 1024) {
      const response = await request(url, signal);
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of response) {
        size += (chunk as Buffer).length;
        if (size > maxBytes) {
          response.destroy();
          throw new UnrecoverableError(`Response from ${url} is larger than ${maxBytes} bytes`);
        }
        chunks.push(chunk as Buffer);
      }
      try {
        return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      } catch {
        throw new UnrecoverableError(`Jenkins answered ${url} with something that is not JSON`);
      }
    },
    getStream: request,
  };
}
