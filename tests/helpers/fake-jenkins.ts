/**
 * A fake Jenkins HTTP server for tests: build JSON (`api/json`), fingerprints,
 * permalinks, folder jobs, Basic auth, and artifact downloads with Range, HEAD,
 * throttling and forced error statuses. Listens on 127.0.0.1 on a random port.
 *
 * Generated artifacts (`size` instead of `content`) are produced on the fly from
 * an AES-256-CTR keystream (key = sha256 of job path, build number and relative
 * path), so any byte range can be served without holding the file in memory.
 */
import { createCipheriv, createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
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
}

/** One request as seen by the fake server. */
export interface RecordedRequest {
  method: string;
  /** Path and query exactly as received (still URL-encoded). */
  path: string;
  /** True when the credentials were valid, or when the server requires none. */
  authorized: boolean;
  /** The Range header, if any. */
  range?: string;
  /** The raw Authorization header, if any. */
  authorization?: string;
}

export interface FakeJenkins {
  /** 'http://127.0.0.1:<port>/' (trailing slash). */
  readonly url: string;
  /** 'http://127.0.0.1:<port>'. */
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
  /** At most this many artifact body bytes per second per response (0/undefined = unlimited). Applies to in-flight responses too. */
  setThrottle(bytesPerSecond: number | undefined): void;
  /** Artifact requests whose decoded path contains `match` answer `status` until cleared with `undefined`. */
  setArtifactStatus(match: string, status: number | undefined): void;
  /** Closes the server, destroying open sockets (also throttled responses in flight). */
  close(): Promise<void>;
}

/** Last-Modified of artifacts that do not set `lastModified`. */
export const DEFAULT_LAST_MODIFIED = new Date('2024-01-15T10:30:00Z');

const CHUNK = 64 * 1024;
const ZEROS = Buffer.alloc(CHUNK);
const PERMALINKS = new Set(['lastBuild', 'lastSuccessfulBuild', 'lastCompletedBuild', 'lastStableBuild']);
const MAX_ARTIFACT_BYTES = 512 * 1024 * 1024;

interface Artifact {
  relativePath: string;
  size: number;
  lastModified: Date;
  content?: Buffer;
  key?: Buffer; // AES key for generated content
  sha256?: string;
  md5?: string;
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

/** Starts a fake Jenkins on 127.0.0.1 with a random free port. */
export async function startFakeJenkins(options: FakeJenkinsOptions = {}): Promise<FakeJenkins> {
  const jobs = new Map<string, Job>();
  const requests: RecordedRequest[] = [];
  const statusOverrides = new Map<string, number>();
  let throttle: number | undefined;
  const expectedAuth =
    options.user !== undefined && options.token !== undefined
      ? Buffer.from('Basic ' + Buffer.from(`${options.user}:${options.token}`).toString('base64'))
      : undefined;

  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;

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

  function findArtifact(url: string, relativePath: string): Artifact {
    const found = route(new URL(url, origin).pathname);
    const artifact = found?.build.artifacts.get(relativePath);
    if (!artifact) throw new Error(`fake-jenkins: no artifact ${relativePath} in ${url}`);
    return artifact;
  }

  function send(res: ServerResponse, status: number, body: string, contentType = 'text/plain;charset=utf-8'): void {
    res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawUrl = req.url ?? '/';
    const header = req.headers.authorization;
    const given = header === undefined ? undefined : Buffer.from(header);
    const authorized =
      !expectedAuth || (given !== undefined && given.length === expectedAuth.length && timingSafeEqual(given, expectedAuth));
    requests.push({
      method: req.method ?? 'GET',
      path: rawUrl,
      authorized,
      ...(req.headers.range !== undefined && { range: req.headers.range }),
      ...(header !== undefined && { authorization: header }),
    });
    if (!authorized) {
      res.setHeader('WWW-Authenticate', 'Basic realm="Jenkins"');
      return send(res, 401, 'Authentication required\n');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'Method not allowed\n');

    const url = new URL(rawUrl, origin);
    const found = route(url.pathname);
    if (!found) return send(res, 404, 'Not found\n');
    const { job, build, rest } = found;

    if (rest.length === 0 || (rest.length === 1 && rest[0] === '')) {
      return send(res, 200, `<html><body>${build.displayName}</body></html>`, 'text/html;charset=utf-8');
    }
    if (rest[0] === 'api' && rest[1] === 'json' && rest.length <= 3 && (rest[2] ?? '') === '') {
      const all = [...build.artifacts.values()];
      const wantsFingerprints = (url.searchParams.get('tree') ?? '').includes('fingerprint');
      const fingerprints: { fileName: string; hash: string }[] = [];
      for (const a of wantsFingerprints && build.fingerprint ? all : []) {
        a.md5 ??= await digestAsync(a, 'md5');
        fingerprints.push({ fileName: baseName(a.relativePath), hash: a.md5 });
      }
      const body = wantsFingerprints
        ? { _class: 'hudson.model.FreeStyleBuild', fingerprint: fingerprints }
        : {
            _class: 'hudson.model.FreeStyleBuild',
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
    if (rest[0] !== 'artifact' || rest.length < 2) return send(res, 404, 'Not found\n');

    let relativePath: string;
    let decodedPath: string;
    try {
      relativePath = rest.slice(1).map((s) => decodeURIComponent(s)).join('/');
      decodedPath = url.pathname.split('/').map((s) => decodeURIComponent(s)).join('/');
    } catch {
      return send(res, 400, 'Bad path encoding\n');
    }
    for (const [match, status] of statusOverrides) {
      if (decodedPath.includes(match)) return send(res, status, `Forced status ${status}\n`);
    }
    const artifact = build.artifacts.get(relativePath);
    if (!artifact) return send(res, 404, 'Not found\n');
    return serveArtifact(req, res, artifact);
  }

  async function serveArtifact(req: IncomingMessage, res: ServerResponse, a: Artifact): Promise<void> {
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Last-Modified': a.lastModified.toUTCString(),
      'Accept-Ranges': 'bytes',
    };
    let start = 0;
    let end = a.size; // exclusive
    let status = 200;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      const first = Number(m[1]);
      const last = m[2] ? Number(m[2]) : Infinity;
      if (first >= a.size) {
        res.writeHead(416, { ...headers, 'Content-Range': `bytes */${a.size}`, 'Content-Length': 0 });
        res.end();
        return;
      }
      if (last >= first) {
        start = first;
        end = Math.min(a.size, last + 1);
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end - 1}/${a.size}`;
      }
    }
    headers['Content-Length'] = end - start;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') {
      res.end();
      return;
    }

    const abort = new AbortController();
    res.on('close', () => abort.abort());
    try {
      for (const chunk of artifactChunks(a, start, end)) {
        for (let off = 0; off < chunk.length; ) {
          const bps = throttle;
          const n = bps ? Math.min(chunk.length - off, Math.max(1, Math.floor(bps / 10))) : chunk.length - off;
          const piece = chunk.subarray(off, off + n);
          off += n;
          if (abort.signal.aborted) return;
          if (!res.write(piece)) await once(res, 'drain', { signal: abort.signal });
          if (bps) await sleep((n / bps) * 1000, undefined, { signal: abort.signal });
        }
      }
      res.end();
    } catch {
      res.destroy(); // client went away or server closing
    }
  }

  return {
    url: `${origin}/`,
    origin,
    requests,
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
    async close() {
      if (!server.listening) return;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
