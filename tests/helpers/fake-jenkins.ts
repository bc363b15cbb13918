/**
 * A fake Jenkins HTTP server for tests: build JSON (`api/json`), fingerprints,
 * permalinks, folder jobs, Basic auth, and artifact downloads with Range, HEAD,
 * throttling and forced error statuses. Listens on 127.0.0.1 on a random port, over HTTP, or over
 * HTTPS when given a key and certificate ({@link FakeJenkinsOptions.tls}).
 *
 * Generated artifacts (`size` instead of `content`) are produced on the fly from
 * an AES-256-CTR keystream (key = sha256 of job path, build number and relative
 * path), so any byte range can be served without holding the file in memory.
 *
 * Switchable faults ({@link FakeJenkins.setFault}) exercise a downloader's retries,
 * resume, integrity checks and redirects: dropped connections, error statuses with
 * Retry-After, slow bodies, broken Range handling, short bodies, and 302 redirects
 * to a second "storage" server (another origin, expiring links, no auth).
 */
import { createCipheriv, createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingMessage, RequestListener, Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** One artifact of a fake build. Give either `content` or `size` (neither = empty file). */
export interface FakeArtifactSpec {
  /** Path below the build's `artifact/`, e.g. 'hapy/reports/junit/a.xml'. */
  relativePath: string;
  /** Exact bytes to serve. */
  content?: string | Buffer;
  /** Size of deterministic pseudo-random content, generated in chunks (any size, e.g. 4 GiB). */
  size?: number;
  /** Served as Last-Modified; defaults to {@link DEFAULT_LAST_MODIFIED}. */
  lastModified?: Date;
}

/** A fake build as registered with {@link FakeJenkins.addBuild}. */
export interface FakeBuildSpec {
  artifacts: FakeArtifactSpec[];
  /** Default 'SUCCESS'. */
  result?: string;
  /** Default '#<number>'. */
  displayName?: string;
  /**
   * When true, `api/json?tree=fingerprint[...]` lists the MD5 of each artifact (computed on first
   * request, about 2-3 s per GiB of generated content: avoid with multi-GiB artifacts).
   */
  fingerprint?: boolean;
}

export interface FakeJenkinsOptions {
  /** When both are set, every request needs HTTP Basic `user:token`, otherwise 401. */
  user?: string;
  token?: string;
  /**
   * Serve HTTPS with this PEM key and certificate (both servers: Jenkins and its storage origin), so
   * `url`, `origin` and `storageOrigin` start with 'https://'. Default: plain HTTP.
   */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

/** One request as seen by the fake server (or by its storage server). */
export interface RecordedRequest {
  method: string;
  /** Path and query exactly as received (still URL-encoded). */
  path: string;
  /** True when the credentials were valid, or when the server requires none (always true on the storage server). */
  authorized: boolean;
  /** The Range header, if any. */
  range?: string;
  /** The raw Authorization header, if any. */
  authorization?: string;
}

/**
 * A fault injected with {@link FakeJenkins.setFault}. Every kind takes `times`: how many matching
 * requests it applies to before it clears itself (default: until cleared). Only requests a fault
 * actually changes count: e.g. `ignore-range` skips requests without a Range header, and the body
 * faults (`drop-after`, `trickle`, `short-body`) skip HEAD requests and 416 answers.
 */
export type FakeFault =
  /** Send the response headers (full Content-Length) and `bytes` bytes of the body, then destroy the socket. */
  | { kind: 'drop-after'; bytes: number; times?: number }
  /** Answer this status instead (e.g. 503, 429, 408, 500), with an optional Retry-After header value. */
  | { kind: 'status'; status: number; retryAfter?: string; times?: number }
  /** Serve the body at this rate (bytes per second), like setThrottle but only for matching requests. */
  | { kind: 'trickle'; bytesPerSecond: number; times?: number }
  /** Answer a Range request with 206 but a Content-Range that starts at 0 (and the body from 0). */
  | { kind: 'wrong-content-range'; times?: number }
  /** Ignore the Range header: answer 200 with the whole file. */
  | { kind: 'ignore-range'; times?: number }
  /**
   * Answer 302 to the same artifact on a second HTTP server on another origin (127.0.0.1:<other port>),
   * with a query `?expires=<epoch ms>` (now + ttlMs, default 60000) that the second server checks (403 when expired).
   * The second server serves the same bytes with the same Range/Last-Modified support, records every request
   * (including the raw Authorization header it received) in `storageRequests`. `hops` (default 1) chains that many
   * redirects (302 → 302 → ... → content) so a test can exceed a redirect limit.
   */
  | { kind: 'redirect'; ttlMs?: number; hops?: number; times?: number }
  /** A Content-Length header one byte larger than the body actually sent (then the response ends normally). */
  | { kind: 'short-body'; times?: number }
  /** No Content-Length: the body goes chunked (Transfer-Encoding: chunked), its size unannounced. */
  | { kind: 'chunked'; times?: number };

export interface FakeJenkins {
  /** 'http://127.0.0.1:<port>/' (trailing slash; 'https://' with the `tls` option). */
  readonly url: string;
  /** 'http://127.0.0.1:<port>' ('https://' with the `tls` option). */
  readonly origin: string;
  /** Every request received, in order. */
  readonly requests: RecordedRequest[];
  /**
   * Adds (or replaces) build `number` of the job at folder path `jobPath`, e.g.
   * ['QA_Release_6.4', 'main-regression'], and returns its URL
   * 'http://127.0.0.1:<port>/job/QA_Release_6.4/job/main-regression/216/'.
   * Permalinks (lastBuild, lastSuccessfulBuild, lastCompletedBuild, lastStableBuild)
   * resolve to the job's highest build number.
   */
  addBuild(jobPath: string[], number: number, build: FakeBuildSpec): string;
  /** The exact bytes served for an artifact (generated ones are limited to 512 MiB here). */
  artifactBytes(buildUrl: string, relativePath: string): Buffer;
  /** sha256 hex of the served artifact, computed by streaming (works for any size; cached). */
  artifactSha256(buildUrl: string, relativePath: string): string;
  /**
   * At most this many artifact body bytes per second per response (0/undefined = unlimited). Applies to
   * in-flight responses too, and to the storage server.
   */
  setThrottle(bytesPerSecond: number | undefined): void;
  /** Artifact requests whose decoded path contains `match` answer `status` until cleared with `undefined`. */
  setArtifactStatus(match: string, status: number | undefined): void;
  /**
   * Applies `fault` to artifact requests whose decoded path contains `match` (undefined clears it).
   * `times` (default: unlimited) counts matching requests the fault applies to, then it clears itself.
   *
   * Faults apply to artifact GET/HEAD requests on Jenkins (after {@link setArtifactStatus}), never to the
   * storage server. A `status` fault whose `match` contains 'api/json' also applies to build JSON requests,
   * matched against the decoded path and query (e.g. 'api/json?tree=fingerprint' hits only the fingerprint
   * call). When several faults match, the oldest one that applies wins. Setting or clearing a `trickle`
   * fault makes responses already trickled by it fall back to {@link setThrottle} (running out of `times`
   * does not).
   */
  setFault(match: string, fault: FakeFault | undefined): void;
  /**
   * Replaces an artifact's content (and Last-Modified, default now) of an existing build, e.g. to simulate a
   * rebuilt artifact between attempts. Responses already in flight keep serving the old bytes. A fingerprint
   * override ({@link setFingerprintOverride}) is kept.
   */
  setArtifactContent(buildUrl: string, relativePath: string, content: string | Buffer, lastModified?: Date): void;
  /**
   * Makes the fingerprint API list this MD5 (hex) for the artifact's base name instead of the true one
   * (undefined restores it). Overridden artifacts are listed even for builds added without `fingerprint: true`.
   */
  setFingerprintOverride(buildUrl: string, relativePath: string, md5: string | undefined): void;
  /** Requests the storage (redirect target) server received, in order. */
  readonly storageRequests: RecordedRequest[];
  /** The storage server's origin, e.g. 'http://127.0.0.1:<port>'. */
  readonly storageOrigin: string;
  /**
   * Highest number of artifact requests (on Jenkins itself, including HEAD and error answers) that were in
   * flight at the same time since the last {@link resetStats}.
   */
  readonly peakConcurrentArtifactRequests: number;
  /** Restarts {@link peakConcurrentArtifactRequests} from the number of artifact requests now in flight. */
  resetStats(): void;
  /** Closes both servers, destroying open sockets (also throttled or trickled responses in flight). */
  close(): Promise<void>;
}

/** Last-Modified of artifacts that do not set `lastModified`. */
export const DEFAULT_LAST_MODIFIED = new Date('2024-01-15T10:30:00Z');

const CHUNK = 64 * 1024;
const ZEROS = Buffer.alloc(CHUNK);
const PERMALINKS = new Set(['lastBuild', 'lastSuccessfulBuild', 'lastCompletedBuild', 'lastStableBuild']);
const MAX_ARTIFACT_BYTES = 512 * 1024 * 1024;
const DEFAULT_REDIRECT_TTL_MS = 60_000;

interface Artifact {
  relativePath: string;
  size: number;
  lastModified: Date;
  content?: Buffer;
  key?: Buffer; // AES key for generated content
  sha256?: string;
  md5?: string;
  /** MD5 listed by the fingerprint API instead of the true one. */
  fingerprintOverride?: string;
}

interface Build {
  number: number;
  result: string;
  displayName: string;
  fingerprint: boolean;
  artifacts: Map<string, Artifact>;
}

interface Job {
  path: string[];
  builds: Map<number, Build>;
}

interface FaultEntry {
  match: string;
  fault: FakeFault;
  /** Matching requests it still applies to (Infinity = until cleared). */
  remaining: number;
  /** False once replaced or cleared with setFault (not when `times` runs out). */
  active: boolean;
}

/** How a response honours the request's Range header for an artifact. */
type RangePlan =
  /** No (usable) Range: 200 with the whole file. */
  | { kind: 'whole' }
  /** 206 with bytes [start, end). */
  | { kind: 'partial'; start: number; end: number }
  /** 416. */
  | { kind: 'unsatisfiable' };

/** How to send an artifact body. */
interface BodyOptions {
  /** Current rate limit in bytes per second, read again before each piece (undefined = unlimited). */
  rate: () => number | undefined;
  /** Destroy the socket after this many body bytes (`drop-after`). */
  dropAfter?: number;
  /** Announce a Content-Length this many bytes larger than the body, then close the connection (`short-body`). */
  extraLength?: number;
  /** Send no Content-Length (`chunked`). */
  unframed?: boolean;
}

const baseName = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

/** Yields the bytes [start, end) of an artifact in chunks of at most 64 KiB. */
function* artifactChunks(a: Artifact, start = 0, end = a.size): Generator<Buffer> {
  if (a.content) {
    for (let off = start; off < end; off += CHUNK) yield a.content.subarray(off, Math.min(end, off + CHUNK));
    return;
  }
  // CTR mode: the keystream block for byte offset o uses counter o / 16, so start at an aligned chunk.
  const first = Math.floor(start / CHUNK);
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(first) * BigInt(CHUNK / 16), 8);
  const cipher = createCipheriv('aes-256-ctr', a.key as Buffer, iv);
  for (let off = first * CHUNK; off < end; off += CHUNK) {
    const block = cipher.update(ZEROS.subarray(0, Math.min(CHUNK, a.size - off)));
    yield block.subarray(Math.max(0, start - off), Math.min(block.length, end - off));
  }
}

function digest(a: Artifact, algorithm: 'sha256' | 'md5'): string {
  const hash = createHash(algorithm);
  for (const chunk of artifactChunks(a)) hash.update(chunk);
  return hash.digest('hex');
}

/** Like {@link digest}, but yields to the event loop every 16 MiB so the server stays responsive. */
async function digestAsync(a: Artifact, algorithm: 'sha256' | 'md5'): Promise<string> {
  const hash = createHash(algorithm);
  let n = 0;
  for (const chunk of artifactChunks(a)) {
    hash.update(chunk);
    if (++n % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  return hash.digest('hex');
}

/** Decodes URL path segments and joins them with '/'; undefined when an escape is malformed. */
function decodeSegments(segments: string[]): string | undefined {
  try {
    return segments.map((s) => decodeURIComponent(s)).join('/');
  } catch {
    return undefined;
  }
}

/** Throws when a fault has out-of-range parameters. */
function validateFault(fault: FakeFault): void {
  const bad = (what: string): never => {
    throw new Error(`fake-jenkins: ${fault.kind} fault: bad ${what}`);
  };
  if (fault.times !== undefined && !(Number.isSafeInteger(fault.times) && fault.times >= 1)) bad('times');
  switch (fault.kind) {
    case 'drop-after':
      if (!(Number.isSafeInteger(fault.bytes) && fault.bytes >= 0)) bad('bytes');
      break;
    case 'status':
      if (!(Number.isInteger(fault.status) && fault.status >= 100 && fault.status <= 599)) bad('status');
      break;
    case 'trickle':
      if (!(Number.isFinite(fault.bytesPerSecond) && fault.bytesPerSecond > 0)) bad('bytesPerSecond');
      break;
    case 'redirect':
      if (fault.hops !== undefined && !(Number.isSafeInteger(fault.hops) && fault.hops >= 1)) bad('hops');
      if (fault.ttlMs !== undefined && !Number.isFinite(fault.ttlMs)) bad('ttlMs');
      break;
    default:
      break;
  }
}

/** Whether `fault` changes the answer to this artifact request (only then does it count towards `times`). */
function faultApplies(fault: FakeFault, method: string, plan: RangePlan | undefined): boolean {
  if (fault.kind === 'status') return true; // even for a missing artifact
  if (plan === undefined) return false; // missing artifact: 404
  switch (fault.kind) {
    case 'redirect':
      return true;
    case 'drop-after':
    case 'trickle':
    case 'short-body':
    case 'chunked':
      return method === 'GET' && plan.kind !== 'unsatisfiable';
    case 'ignore-range':
      return plan.kind !== 'whole';
    case 'wrong-content-range':
      return plan.kind === 'partial' && plan.start > 0;
  }
}

/** Parses a `bytes=first-[last]` Range header (anything else is ignored, like Jenkins does). */
function planRange(header: string | undefined, size: number): RangePlan {
  const m = /^bytes=(\d+)-(\d*)$/.exec(header ?? '');
  if (!m) return { kind: 'whole' };
  const first = Number(m[1]);
  const last = m[2] ? Number(m[2]) : Infinity;
  if (first >= size) return { kind: 'unsatisfiable' };
  if (last < first) return { kind: 'whole' };
  return { kind: 'partial', start: first, end: Math.min(size, last + 1) };
}

function recordRequest(req: IncomingMessage, authorized: boolean): RecordedRequest {
  const { range, authorization } = req.headers;
  return {
    method: req.method ?? 'GET',
    path: req.url ?? '/',
    authorized,
    ...(range !== undefined && { range }),
    ...(authorization !== undefined && { authorization }),
  };
}

function send(res: ServerResponse, status: number, body: string, contentType = 'text/plain;charset=utf-8'): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function sendForcedStatus(res: ServerResponse, status: number, retryAfter?: string): void {
  if (retryAfter !== undefined) res.setHeader('Retry-After', retryAfter);
  send(res, status, `Forced status ${status}\n`);
}

function sendRedirect(res: ServerResponse, location: string): void {
  res.setHeader('Location', location);
  send(res, 302, `Found: ${location}\n`);
}

/**
 * Writes bytes [start, end) of `a` at `rate()` bytes per second. Returns false (and destroys the
 * response) when the client went away or the server is closing.
 */
async function streamBody(
  res: ServerResponse,
  a: Artifact,
  start: number,
  end: number,
  rate: () => number | undefined,
): Promise<boolean> {
  const abort = new AbortController();
  const onClose = (): void => abort.abort();
  res.on('close', onClose);
  let left = end - start;
  try {
    for (const chunk of artifactChunks(a, start, end)) {
      for (let off = 0; off < chunk.length; ) {
        const bps = rate();
        const n = bps ? Math.min(chunk.length - off, Math.max(1, Math.floor(bps / 10))) : chunk.length - off;
        const piece = chunk.subarray(off, off + n);
        off += n;
        left -= n;
        if (abort.signal.aborted) return false;
        if (!res.write(piece)) await once(res, 'drain', { signal: abort.signal });
        // No pause after the last piece: the response ends as soon as the client has every byte.
        if (bps && left > 0) await sleep((n / bps) * 1000, undefined, { signal: abort.signal });
      }
    }
    return true;
  } catch {
    res.destroy(); // client went away or server closing
    return false;
  } finally {
    res.off('close', onClose);
  }
}

/** Hands the headers and everything written so far to the kernel, then destroys the TCP socket mid-response. */
async function destroyAfterFlush(res: ServerResponse): Promise<void> {
  res.flushHeaders();
  const socket = res.socket;
  if (socket && !socket.destroyed) {
    await new Promise<void>((resolve) => socket.write(Buffer.alloc(0), () => resolve()));
  }
  res.destroy();
}

/** Answers an artifact GET/HEAD with Last-Modified, Accept-Ranges and the given Range plan. */
async function serveArtifact(
  req: IncomingMessage,
  res: ServerResponse,
  a: Artifact,
  plan: RangePlan,
  body: BodyOptions,
): Promise<void> {
  const headers: Record<string, string | number> = {
    'Content-Type': 'application/octet-stream',
    'Last-Modified': a.lastModified.toUTCString(),
    'Accept-Ranges': 'bytes',
  };
  if (plan.kind === 'unsatisfiable') {
    res.writeHead(416, { ...headers, 'Content-Range': `bytes */${a.size}`, 'Content-Length': 0 });
    res.end();
    return;
  }
  const { start, end } = plan.kind === 'partial' ? plan : { start: 0, end: a.size }; // end exclusive
  if (plan.kind === 'partial') headers['Content-Range'] = `bytes ${start}-${end - 1}/${a.size}`;
  if (!body.unframed) headers['Content-Length'] = end - start + (body.extraLength ?? 0);
  if (body.extraLength) headers['Connection'] = 'close'; // the client must not wait for the missing bytes
  res.writeHead(plan.kind === 'partial' ? 206 : 200, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const stop = body.dropAfter === undefined ? end : Math.min(end, start + body.dropAfter);
  if (!(await streamBody(res, a, start, stop, body.rate))) return;
  if (body.dropAfter !== undefined) await destroyAfterFlush(res);
  else res.end();
}

type Server = HttpServer | HttpsServer;

/** An HTTP server, or an HTTPS one when given a key and certificate. */
function createFakeServer(tls: FakeJenkinsOptions['tls'], listener: RequestListener): Server {
  return tls ? createHttpsServer({ key: tls.key, cert: tls.cert }, listener) : createServer(listener);
}

/** Listens on 127.0.0.1 with a random free port and returns '<scheme>://127.0.0.1:<port>'. */
async function listen(server: Server, scheme: 'http' | 'https'): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Closes a server and destroys its open connections (idempotent). */
async function closeServer(server: Server): Promise<void> {
  if (!server.listening) return;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}

/** Starts a fake Jenkins (and its storage server) on 127.0.0.1 with random free ports. */
export async function startFakeJenkins(options: FakeJenkinsOptions = {}): Promise<FakeJenkins> {
  const jobs = new Map<string, Job>();
  const requests: RecordedRequest[] = [];
  const storageRequests: RecordedRequest[] = [];
  const statusOverrides = new Map<string, number>();
  const faults = new Map<string, FaultEntry>();
  let throttle: number | undefined;
  let inFlight = 0;
  let peak = 0;
  const expectedAuth =
    options.user !== undefined && options.token !== undefined
      ? Buffer.from('Basic ' + Buffer.from(`${options.user}:${options.token}`).toString('base64'))
      : undefined;
  const globalRate = (): number | undefined => throttle;

  const server = createFakeServer(options.tls, (req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  const storage = createFakeServer(options.tls, (req, res) => {
    handleStorage(req, res).catch(() => res.destroy());
  });
  const scheme = options.tls ? 'https' : 'http';
  const [origin, storageOrigin] = await Promise.all([listen(server, scheme), listen(storage, scheme)]);

  const buildUrl = (job: Job, number: number): string =>
    `${origin}/${job.path.map((name) => `job/${encodeURIComponent(name)}/`).join('')}${number}/`;

  /** Resolves '/job/A/job/B/<number|permalink>/rest...' (raw pathname) to a build. */
  function route(pathname: string): { job: Job; build: Build; rest: string[] } | undefined {
    const segs = pathname.split('/').slice(1);
    const names: string[] = [];
    let i = 0;
    try {
      while (segs[i] === 'job' && segs[i + 1]) {
        names.push(decodeURIComponent(segs[i + 1] as string));
        i += 2;
      }
    } catch {
      return undefined;
    }
    const job = jobs.get(JSON.stringify(names));
    const selector = segs[i] ?? '';
    if (!job || job.builds.size === 0) return undefined;
    const number = PERMALINKS.has(selector)
      ? Math.max(...job.builds.keys())
      : /^\d+$/.test(selector)
        ? Number(selector)
        : NaN;
    const build = job.builds.get(number);
    return build && { job, build, rest: segs.slice(i + 1) };
  }

  function findBuild(url: string): Build {
    const build = route(new URL(url, origin).pathname)?.build;
    if (!build) throw new Error(`fake-jenkins: no build at ${url}`);
    return build;
  }

  function findArtifact(url: string, relativePath: string): Artifact {
    const artifact = route(new URL(url, origin).pathname)?.build.artifacts.get(relativePath);
    if (!artifact) throw new Error(`fake-jenkins: no artifact ${relativePath} in ${url}`);
    return artifact;
  }

  /** The oldest fault matching `path` that `applies`; counts it against its `times`. */
  function takeFault(path: string, applies: (fault: FakeFault, match: string) => boolean): FaultEntry | undefined {
    for (const entry of faults.values()) {
      if (!path.includes(entry.match) || !applies(entry.fault, entry.match)) continue;
      if (--entry.remaining <= 0) faults.delete(entry.match);
      return entry;
    }
    return undefined;
  }

  /** Counts an artifact request as in flight until its response closes. */
  function trackInFlight(res: ServerResponse): void {
    inFlight++;
    peak = Math.max(peak, inFlight);
    res.once('close', () => inFlight--);
  }

  /** A storage-server URL for the artifact at Jenkins `pathname`, after `redirects` more 302s. */
  function storageLink(pathname: string, expires: number, redirects: number): string {
    const query = new URLSearchParams({ expires: String(expires) });
    if (redirects > 0) query.set('redirects', String(redirects));
    return `${storageOrigin}${pathname}?${query}`;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const header = req.headers.authorization;
    const given = header === undefined ? undefined : Buffer.from(header);
    const authorized =
      !expectedAuth || (given !== undefined && given.length === expectedAuth.length && timingSafeEqual(given, expectedAuth));
    requests.push(recordRequest(req, authorized));
    if (!authorized) {
      res.setHeader('WWW-Authenticate', 'Basic realm="Jenkins"');
      return send(res, 401, 'Authentication required\n');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'Method not allowed\n');

    const url = new URL(req.url ?? '/', origin);
    const found = route(url.pathname);
    if (!found) return send(res, 404, 'Not found\n');
    const { job, build, rest } = found;

    if (rest.length === 0 || (rest.length === 1 && rest[0] === '')) {
      return send(res, 200, `<html><body>${build.displayName}</body></html>`, 'text/html;charset=utf-8');
    }
    if (rest[0] === 'api' && rest[1] === 'json' && rest.length <= 3 && (rest[2] ?? '') === '') {
      return handleApiJson(res, url, job, build);
    }
    if (rest[0] !== 'artifact' || rest.length < 2) return send(res, 404, 'Not found\n');
    trackInFlight(res);
    return handleArtifact(req, res, url, build, rest.slice(1));
  }

  async function handleApiJson(res: ServerResponse, url: URL, job: Job, build: Build): Promise<void> {
    const decoded = (decodeSegments([url.pathname]) ?? url.pathname) + (decodeSegments([url.search]) ?? url.search);
    const fault = takeFault(decoded, (f, match) => f.kind === 'status' && match.includes('api/json'))?.fault;
    if (fault?.kind === 'status') return sendForcedStatus(res, fault.status, fault.retryAfter);

    const all = [...build.artifacts.values()];
    // Like Jenkins' tree filter: `tree=fingerprint[...]` alone gives only the fingerprints; a tree
    // naming build fields too gives both.
    const tree = url.searchParams.get('tree') ?? '';
    const prints = tree.includes('fingerprint') ? { fingerprint: await fingerprints(build) } : {};
    const body = tree.includes('fingerprint') && !/(^|,)(number|artifacts)\b/.test(tree)
      ? { _class: 'hudson.model.FreeStyleBuild', ...prints }
      : {
          _class: 'hudson.model.FreeStyleBuild',
          ...prints,
          number: build.number,
          result: build.result,
          displayName: build.displayName,
          url: buildUrl(job, build.number),
          artifacts: all.map((a) => ({
            fileName: baseName(a.relativePath),
            relativePath: a.relativePath,
            displayPath: baseName(a.relativePath),
          })),
        };
    return send(res, 200, JSON.stringify(body), 'application/json;charset=utf-8');
  }

  /** The fingerprint list: overrides, plus true MD5s when the build has `fingerprint: true`. */
  async function fingerprints(build: Build): Promise<{ fileName: string; hash: string }[]> {
    const list: { fileName: string; hash: string }[] = [];
    for (const a of build.artifacts.values()) {
      let hash = a.fingerprintOverride;
      if (hash === undefined && build.fingerprint) hash = a.md5 ??= await digestAsync(a, 'md5');
      if (hash !== undefined) list.push({ fileName: baseName(a.relativePath), hash });
    }
    return list;
  }

  async function handleArtifact(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    build: Build,
    segments: string[],
  ): Promise<void> {
    const relativePath = decodeSegments(segments);
    const decodedPath = decodeSegments(url.pathname.split('/'));
    if (relativePath === undefined || decodedPath === undefined) return send(res, 400, 'Bad path encoding\n');
    for (const [match, status] of statusOverrides) {
      if (decodedPath.includes(match)) return sendForcedStatus(res, status);
    }
    const artifact = build.artifacts.get(relativePath);
    const plan = artifact && planRange(req.headers.range, artifact.size);
    const entry = takeFault(decodedPath, (f) => faultApplies(f, req.method ?? 'GET', plan));
    const fault = entry?.fault;
    if (fault?.kind === 'status') return sendForcedStatus(res, fault.status, fault.retryAfter);
    if (!artifact || !plan) return send(res, 404, 'Not found\n');

    switch (fault?.kind) {
      case 'redirect': {
        const expires = Date.now() + (fault.ttlMs ?? DEFAULT_REDIRECT_TTL_MS);
        return sendRedirect(res, storageLink(url.pathname, expires, (fault.hops ?? 1) - 1));
      }
      case 'ignore-range':
        return serveArtifact(req, res, artifact, { kind: 'whole' }, { rate: globalRate });
      case 'wrong-content-range': {
        const fromZero: RangePlan = plan.kind === 'partial' ? { ...plan, start: 0 } : plan;
        return serveArtifact(req, res, artifact, fromZero, { rate: globalRate });
      }
      case 'drop-after':
        return serveArtifact(req, res, artifact, plan, { rate: globalRate, dropAfter: fault.bytes });
      case 'short-body':
        return serveArtifact(req, res, artifact, plan, { rate: globalRate, extraLength: 1 });
      case 'chunked':
        return serveArtifact(req, res, artifact, plan, { rate: globalRate, unframed: true });
      case 'trickle': {
        const trickled = entry as FaultEntry;
        const rate = (): number | undefined => (trickled.active ? fault.bytesPerSecond : throttle);
        return serveArtifact(req, res, artifact, plan, { rate });
      }
      default:
        return serveArtifact(req, res, artifact, plan, { rate: globalRate });
    }
  }

  /** The redirect target: checks `expires`, follows `redirects`, serves the artifact without auth. */
  async function handleStorage(req: IncomingMessage, res: ServerResponse): Promise<void> {
    storageRequests.push(recordRequest(req, true));
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'Method not allowed\n');
    const url = new URL(req.url ?? '/', storageOrigin);
    const expires = Number(url.searchParams.get('expires'));
    if (!(expires > Date.now())) return send(res, 403, 'Link expired or invalid\n');
    const redirects = Number(url.searchParams.get('redirects') ?? '0');
    if (redirects > 0) return sendRedirect(res, storageLink(url.pathname, expires, redirects - 1));

    const found = route(url.pathname);
    const relativePath = found?.rest[0] === 'artifact' ? decodeSegments(found.rest.slice(1)) : undefined;
    const artifact = relativePath === undefined ? undefined : found?.build.artifacts.get(relativePath);
    if (!artifact) return send(res, 404, 'Not found\n');
    return serveArtifact(req, res, artifact, planRange(req.headers.range, artifact.size), { rate: globalRate });
  }

  return {
    url: `${origin}/`,
    origin,
    requests,
    storageRequests,
    storageOrigin,
    get peakConcurrentArtifactRequests() {
      return peak;
    },
    addBuild(jobPath, number, spec) {
      if (jobPath.length === 0) throw new Error('fake-jenkins: empty job path');
      if (!Number.isSafeInteger(number) || number < 1) throw new Error(`fake-jenkins: bad build number ${number}`);
      const key = JSON.stringify(jobPath);
      const job = jobs.get(key) ?? { path: [...jobPath], builds: new Map<number, Build>() };
      jobs.set(key, job);
      const artifacts = new Map<string, Artifact>();
      for (const s of spec.artifacts) {
        if (artifacts.has(s.relativePath)) throw new Error(`fake-jenkins: duplicate artifact ${s.relativePath}`);
        if (s.content !== undefined && s.size !== undefined) {
          throw new Error(`fake-jenkins: ${s.relativePath}: give content or size, not both`);
        }
        const lastModified = s.lastModified ?? DEFAULT_LAST_MODIFIED;
        if (s.size !== undefined) {
          if (!Number.isSafeInteger(s.size) || s.size < 0) throw new Error(`fake-jenkins: bad size ${s.size}`);
          const seed = `${jobPath.join('/')}#${number}|${s.relativePath}`;
          const aesKey = createHash('sha256').update(seed).digest();
          artifacts.set(s.relativePath, { relativePath: s.relativePath, size: s.size, lastModified, key: aesKey });
        } else {
          const content = Buffer.from(s.content ?? '');
          artifacts.set(s.relativePath, { relativePath: s.relativePath, size: content.length, lastModified, content });
        }
      }
      job.builds.set(number, {
        number,
        result: spec.result ?? 'SUCCESS',
        displayName: spec.displayName ?? `#${number}`,
        fingerprint: spec.fingerprint ?? false,
        artifacts,
      });
      return buildUrl(job, number);
    },
    artifactBytes(url, relativePath) {
      const a = findArtifact(url, relativePath);
      if (a.content) return Buffer.from(a.content);
      if (a.size > MAX_ARTIFACT_BYTES) throw new Error(`fake-jenkins: ${relativePath} is too big for artifactBytes`);
      return Buffer.concat([...artifactChunks(a)]);
    },
    artifactSha256(url, relativePath) {
      const a = findArtifact(url, relativePath);
      return (a.sha256 ??= digest(a, 'sha256'));
    },
    setThrottle(bytesPerSecond) {
      throttle = bytesPerSecond && bytesPerSecond > 0 ? bytesPerSecond : undefined;
    },
    setArtifactStatus(match, status) {
      if (status === undefined) statusOverrides.delete(match);
      else statusOverrides.set(match, status);
    },
    setFault(match, fault) {
      if (fault) validateFault(fault);
      const previous = faults.get(match);
      if (previous) previous.active = false;
      faults.delete(match);
      if (fault) faults.set(match, { match, fault, remaining: fault.times ?? Infinity, active: true });
    },
    setArtifactContent(url, relativePath, content, lastModified = new Date()) {
      const build = findBuild(url);
      const old = build.artifacts.get(relativePath);
      if (!old) throw new Error(`fake-jenkins: no artifact ${relativePath} in ${url}`);
      const bytes = Buffer.from(content);
      // A new object: responses in flight keep streaming the old one.
      build.artifacts.set(relativePath, {
        relativePath,
        size: bytes.length,
        lastModified,
        content: bytes,
        ...(old.fingerprintOverride !== undefined && { fingerprintOverride: old.fingerprintOverride }),
      });
    },
    setFingerprintOverride(url, relativePath, md5) {
      const a = findArtifact(url, relativePath);
      if (md5 === undefined) delete a.fingerprintOverride;
      else a.fingerprintOverride = md5;
    },
    resetStats() {
      peak = inFlight;
    },
    async close() {
      await Promise.all([closeServer(server), closeServer(storage)]);
    },
  };
}
