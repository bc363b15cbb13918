/**
 * Many SSE followers of ferry's live log, in one process, cheap enough for 10,000 of them: each
 * keeps only its next expected line number and counters, and every received line's delay (receive
 * wall clock minus the publish wall clock the line carries, see baselines/log-publisher.mjs) goes
 * into one shared array.
 */
import net from 'node:net';
import { wallClockMs } from './harness.js';

export interface FollowerStats {
  readonly clients: number;
  /** Answered 200 (the rest failed to connect). */
  readonly connected: number;
  /** Received every line 1..expected exactly once, in order, then the end of the log. */
  readonly perfect: number;
  /** Received the end of the log (`event: complete`). */
  readonly ended: number;
  /** Lines that came after a later one (a repeat or a reordering). */
  readonly repeatedOrOutOfOrder: number;
  /** Lines never received (summed over clients). */
  readonly missing: number;
  /** Clients the server closed before the end (or that failed). */
  readonly cutOff: number;
  /** Publish-to-receive delay of every received line, ms. */
  readonly delays: Float64Array;
}

export interface Followers {
  /** Resolves once every client has its response headers and first event (the progress snapshot). */
  readonly ready: Promise<void>;
  /** Resolves once every stream has ended or closed, or after `timeoutMs` (false then). */
  finished(timeoutMs: number): Promise<boolean>;
  stats(): FollowerStats;
  close(): void;
}

interface Client {
  next: number;
  buffer: string;
  gotFirstEvent: boolean;
  ended: boolean;
  closed: boolean;
  status: number;
  repeated: number;
  skipped: number;
  socket?: net.Socket;
}

const LINE_MARK = '"message":"bench line ';

/**
 * Opens `perJob` followers of each job's SSE stream (`<apiUrl>/api/v1/jenkins/download/<id>`),
 * at most `connectConcurrency` connection attempts at a time. `expectedLines` is how many lines each
 * job will publish (numbered from 1).
 */
export function follow(apiUrl: string, jobIds: readonly string[], perJob: number, expectedLines: number, connectConcurrency = 200): Followers {
  const { hostname: host, port: portText } = new URL(apiUrl);
  const port = Number(portText);
  const clients: Client[] = [];
  const delays = new Float64Array(jobIds.length * perJob * expectedLines);
  let delayCount = 0;
  let open = 0;
  let settle: (() => void) | undefined;
  const allSettled = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const markClosed = (client: Client) => {
    if (client.closed) return;
    client.closed = true;
    open -= 1;
    if (open === 0) settle?.();
  };

  const onBlock = (client: Client, block: string, receivedAt: number) => {
    client.gotFirstEvent = true;
    const mark = block.indexOf(LINE_MARK);
    if (mark >= 0) {
      const rest = block.slice(mark + LINE_MARK.length);
      const space = rest.indexOf(' at ');
      const line = Number(rest.slice(0, space));
      const publishedAt = Number.parseFloat(rest.slice(space + 4));
      if (delayCount < delays.length) delays[delayCount++] = receivedAt - publishedAt;
      if (line === client.next) client.next += 1;
      else if (line < client.next) client.repeated += 1;
      else {
        client.skipped += line - client.next;
        client.next = line + 1;
      }
    } else if (block.startsWith('event: complete')) {
      client.ended = true;
    }
  };

  /**
   * One follower on a raw TCP socket: an HTTP/1.1 GET written by hand and the chunked body decoded
   * here. Node's http client costs several times more per event (parser, IncomingMessage stream,
   * string decoder), and with 10,000 followers on the same 2 cores as the API that cost would show
   * up as delay.
   */
  const connect = (jobId: string) =>
    new Promise<void>((resolve) => {
      const client: Client = { next: 1, buffer: '', gotFirstEvent: false, ended: false, closed: false, status: 0, repeated: 0, skipped: 0 };
      clients.push(client);
      open += 1;
      let raw = '';
      let inBody = false;
      const socket = net.connect(port, host);
      client.socket = socket;
      socket.setNoDelay(true);
      // latin1: one character per byte, so string lengths are the chunk sizes (the stream is ASCII).
      socket.setEncoding('latin1');
      socket.write(`GET /api/v1/jenkins/download/${jobId} HTTP/1.1\r\nHost: ${host}:${port}\r\nAccept: text/event-stream\r\n\r\n`);
      socket.on('data', (chunk: string) => {
        const receivedAt = wallClockMs();
        raw += chunk;
        if (!inBody) {
          const headerEnd = raw.indexOf('\r\n\r\n');
          if (headerEnd < 0) return;
          client.status = Number(raw.slice(9, 12));
          if (client.status !== 200 || !/transfer-encoding: chunked/i.test(raw.slice(0, headerEnd))) {
            socket.destroy();
            return;
          }
          raw = raw.slice(headerEnd + 4);
          inBody = true;
          resolve();
        }
        // Chunked body: "<size hex>\r\n<data>\r\n" ... "0\r\n\r\n".
        for (;;) {
          const lineEnd = raw.indexOf('\r\n');
          if (lineEnd < 0) return;
          const size = Number.parseInt(raw.slice(0, lineEnd), 16);
          if (size === 0) {
            socket.destroy();
            return;
          }
          if (raw.length < lineEnd + 2 + size + 2) return;
          client.buffer += raw.slice(lineEnd + 2, lineEnd + 2 + size);
          raw = raw.slice(lineEnd + 2 + size + 2);
          let end: number;
          while ((end = client.buffer.indexOf('\n\n')) >= 0) {
            onBlock(client, client.buffer.slice(0, end), receivedAt);
            client.buffer = client.buffer.slice(end + 2);
          }
        }
      });
      socket.on('close', () => {
        markClosed(client);
        resolve();
      });
      socket.on('error', () => undefined);
    });

  const ready = (async () => {
    // Round-robin over jobs, a bounded number of connection attempts at a time.
    const order = Array.from({ length: jobIds.length * perJob }, (_, index) => jobIds[index % jobIds.length] as string);
    let cursor = 0;
    await Promise.all(
      Array.from({ length: Math.min(connectConcurrency, order.length) }, async () => {
        while (cursor < order.length) await connect(order[cursor++] as string);
      }),
    );
    const deadline = Date.now() + 60_000;
    while (clients.some((client) => !client.closed && !client.gotFirstEvent)) {
      if (Date.now() > deadline) throw new Error('SSE followers did not all get their first event within 60 s');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();

  return {
    ready,
    async finished(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      });
      const done = open === 0 ? true : await Promise.race([allSettled.then(() => true), timedOut]);
      clearTimeout(timer);
      return done;
    },
    stats() {
      let perfect = 0;
      let ended = 0;
      let repeated = 0;
      let missing = 0;
      let cutOff = 0;
      let connected = 0;
      for (const client of clients) {
        if (client.status === 200) connected += 1;
        if (client.ended) ended += 1;
        else cutOff += 1;
        repeated += client.repeated;
        const received = client.next - 1 - client.skipped;
        missing += client.skipped + Math.max(0, expectedLines - (client.next - 1));
        if (client.ended && client.repeated === 0 && client.skipped === 0 && received === expectedLines) perfect += 1;
      }
      return { clients: clients.length, connected, perfect, ended, repeatedOrOutOfOrder: repeated, missing, cutOff, delays: delays.subarray(0, delayCount) };
    },
    close() {
      for (const client of clients) client.socket?.destroy();
    },
  };
}
