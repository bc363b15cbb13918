import net from 'node:net';
import tls from 'node:tls';

/**
 * One HTTP/1.1 GET whose body the socket reads straight into the caller's memory (net/tls
 * `onread` with a buffer chosen per read), for big artifact bodies. Through the `http` module a
 * body costs, per 64 KiB, a socket read buffer, a copy of it by the HTTP parser, and the garbage
 * of both (on the 2-core bench machine that was about a third of the worker's CPU per GiB and
 * 40-50 MB of its peak RSS); here the kernel copies each byte once, into the file writer's slots.
 *
 * Deliberately small: it sends one request with `Connection: close` on a connection of its own
 * and reads one response with a Content-Length. Anything else (chunked or close-delimited body,
 * a head over MAX_HEAD_BYTES, a malformed head) is refused with {@link DirectGetUnsupported}
 * before any body byte is handed over, and the caller uses the `http` module instead.
 */

/** Longest response head accepted (Node's own HTTP parser allows 16 KiB by default). */
const MAX_HEAD_BYTES = 64 * 1024;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/;
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?$/;

/** Status and headers of a response (header names in lower case, repeated ones joined with ", "). */
export interface ResponseHead {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
}

/** Where the body goes: a socket read lands in `readBuffer()`, then `commit` says how many bytes. */
export interface BodyTarget {
  /** Memory for the next socket read. */
  readBuffer(): Buffer;
  /** `bytes` were read into the buffer the last `readBuffer` returned; false: no room for more yet. */
  commit(bytes: number): boolean;
  /** Takes bytes that arrived with the head (copied); false: no room for more yet. */
  push(chunk: Buffer): boolean;
  /** Calls `listener` once there is room again after `commit` or `push` returned false. */
  onRoom(listener: () => void): void;
}

/** The response cannot be read this way (its framing or head); nothing of the body was handed over. */
export class DirectGetUnsupported extends Error {}

/** The connection failed, timed out or closed early (`cause` holds the socket's error, if any). */
export class DirectGetTransportError extends Error {}

export interface DirectGetOptions {
  readonly url: URL;
  /** Request headers besides Host and Connection. */
  readonly headers: Readonly<Record<string, string>>;
  readonly signal: AbortSignal;
  /** Milliseconds without any data (connecting included) before the request fails. */
  readonly idleTimeoutMs: number;
  /** For https: URLs (CA, verification). */
  readonly tls?: tls.ConnectionOptions;
  /** Sees the head before any body byte is handed over; throws to refuse the response. */
  readonly accept: (head: ResponseHead) => void;
  readonly target: BodyTarget;
}

/** Parses a complete head (without the final blank line); undefined when malformed. */
export function parseHead(text: string): ResponseHead | undefined {
  const lines = text.split('\r\n');
  const status = STATUS_LINE.exec(lines[0] ?? '');
  if (!status) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const header = HEADER_LINE.exec(line);
    if (!header) return undefined; // obsolete line folding included
    const name = (header[1] as string).toLowerCase();
    const value = header[2] as string;
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { status: Number(status[1]), headers };
}

/** Body length from Content-Length; undefined when the body is not framed by one (chunked, missing, conflicting). */
function bodyLength(head: ResponseHead): number | undefined {
  if (head.headers['transfer-encoding'] !== undefined) return undefined;
  const values = (head.headers['content-length'] ?? '').split(',').map((value) => value.trim());
  const first = values[0] ?? '';
  if (!/^\d+$/.test(first) || values.some((value) => value !== first)) return undefined;
  return Number(first);
}

/** A final response head and the bytes after it (a view: copy what you keep before the next push). */
export interface CompleteHead {
  readonly head: ResponseHead;
  readonly rest: Buffer;
}

/**
 * Collects a response head from socket reads of any size. Each byte is copied at most once into
 * one growing buffer (only when the head spans reads) and searched for the blank line once (from
 * three bytes before the new ones), so a head arriving a byte at a time costs time linear in its
 * length, up to MAX_HEAD_BYTES. Interim (1xx) heads are skipped.
 */
export class ResponseHeadReader {
  private store: Buffer | undefined;
  /** Bytes of an incomplete head held at the start of `store`. */
  private held = 0;
  /** Where to search next: no blank line starts before it. */
  private searchFrom = 0;

  /** Takes the next read (the caller may reuse its memory afterwards); the final head once complete, else undefined. Throws DirectGetUnsupported. */
  push(chunk: Buffer): CompleteHead | undefined {
    let all = chunk;
    if (this.held > 0) {
      const length = this.held + chunk.length;
      this.reserve(length);
      chunk.copy(this.store as Buffer, this.held);
      all = (this.store as Buffer).subarray(0, length);
    }
    for (;;) {
      const end = all.indexOf('\r\n\r\n', this.searchFrom);
      if (end < 0) {
        if (all.length > MAX_HEAD_BYTES) throw new DirectGetUnsupported(`response head longer than ${MAX_HEAD_BYTES} bytes`);
        this.hold(all);
        this.searchFrom = Math.max(0, all.length - 3);
        return undefined;
      }
      // The limit holds however the head arrived (in one read it is found before the check above).
      if (end + 4 > MAX_HEAD_BYTES) throw new DirectGetUnsupported(`response head longer than ${MAX_HEAD_BYTES} bytes`);
      const head = parseHead(all.subarray(0, end).toString('latin1'));
      if (!head) throw new DirectGetUnsupported('malformed response head');
      const rest = all.subarray(end + 4);
      this.searchFrom = 0;
      if (head.status >= 100 && head.status < 200) {
        // An interim answer (103 Early Hints and the like): the real one follows.
        all = rest;
        continue;
      }
      this.held = 0;
      this.store = undefined;
      return { head, rest };
    }
  }

  /** Keeps `bytes` (a view into the read or into `store`) at the start of `store`. */
  private hold(bytes: Buffer): void {
    if (this.store && bytes.buffer === this.store.buffer && bytes.byteOffset === this.store.byteOffset) {
      this.held = bytes.length;
      return;
    }
    this.reserve(bytes.length);
    // Buffer#copy is memmove: `bytes` may lie further on in `store` (after an interim head).
    bytes.copy(this.store as Buffer, 0);
    this.held = bytes.length;
  }

  /** Makes `store` hold at least `length` bytes, keeping its first `held`. */
  private reserve(length: number): void {
    if (this.store && this.store.length >= length) return;
    const bigger = Buffer.allocUnsafe(Math.max(length, 2 * (this.store?.length ?? 1024)));
    if (this.store && this.held > 0) this.store.copy(bigger, 0, 0, this.held);
    this.store = bigger;
  }
}

/**
 * GETs `url` and hands its body to `target`. Resolves with the head once every body byte was
 * committed; rejects with the socket's error, the abort reason, {@link DirectGetUnsupported}, or
 * whatever `accept` or `target` threw.
 */
export function directGet(options: DirectGetOptions): Promise<ResponseHead> {
  const { url, signal, target } = options;
  return new Promise<ResponseHead>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const headBuffer = Buffer.allocUnsafe(16 * 1024);
    const headReader = new ResponseHeadReader();
    let head: ResponseHead | undefined;
    let remaining = 0;
    let settled = false;
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));

    const finish = (error: unknown, result?: ResponseHead) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      if (error === undefined) resolve(result as ResponseHead);
      else reject(error);
    };
    const onAbort = () => finish(signal.reason);

    /** Body bytes: hands them over; stops reading when the target has no room or the body is complete. */
    const body = (bytes: number, commit: (bytes: number) => boolean): boolean => {
      const take = Math.min(bytes, remaining);
      remaining -= take;
      const room = take > 0 ? commit(take) : true;
      if (remaining === 0) {
        finish(undefined, head);
        return false;
      }
      // Resumed on the next tick: reading stops only after this callback returns false.
      if (!room) target.onRoom(() => process.nextTick(() => socket.resume()));
      return room;
    };

    /** Head bytes: collects them until the blank line; then checks the head and passes on the body bytes after it. */
    const headPart = (chunk: Buffer): boolean => {
      const complete = headReader.push(chunk);
      if (!complete) return true;
      const { rest } = complete;
      options.accept(complete.head);
      const length = bodyLength(complete.head);
      if (length === undefined) throw new DirectGetUnsupported('response body not framed by Content-Length');
      head = complete.head;
      remaining = length;
      if (remaining === 0) {
        finish(undefined, head);
        return false;
      }
      return body(rest.length, () => target.push(Buffer.from(rest.subarray(0, Math.min(rest.length, length)))));
    };

    const onread = {
      // Called before every read: during the head a small buffer of our own, then the target's memory.
      buffer: () => (head ? target.readBuffer() : headBuffer),
      callback: (bytes: number, buffer: Uint8Array): boolean => {
        if (settled) return false;
        try {
          if (!head) return headPart((buffer as Buffer).subarray(0, bytes));
          return body(bytes, (taken) => target.commit(taken));
        } catch (error) {
          finish(error);
          return false;
        }
      },
    };
    const socket: net.Socket =
      url.protocol === 'https:'
        ? tls.connect({ ...options.tls, host, port, ...(net.isIP(host) ? {} : { servername: host }), onread } as tls.ConnectionOptions)
        : net.connect({ host, port, onread });
    signal.addEventListener('abort', onAbort, { once: true });
    socket.setTimeout(options.idleTimeoutMs, () => finish(new DirectGetTransportError(`no data for ${options.idleTimeoutMs} ms`)));
    socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, 'Connection: close'];
      for (const [name, value] of Object.entries(options.headers)) lines.push(`${name}: ${value}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
    });
    // `on`, not `once`: a second 'error' without a listener would be thrown by the emitter.
    socket.on('error', (error) => finish(new DirectGetTransportError(error.message, { cause: error })));
    socket.once('close', () => {
      finish(new DirectGetTransportError(head ? `connection closed with ${remaining} body bytes still to come` : 'connection closed before the response head'));
    });
  });
}
