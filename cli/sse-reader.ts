/** One Server-Sent Event, dispatched at the blank line that ends it. */
export interface SseEvent {
  /** `event:` field; `message` when absent. */
  readonly event: string;
  /** `id:` field of this event, when it had one (ferry's log lines do; progress snapshots do not). */
  readonly id?: string;
  /** `data:` fields joined with newlines. */
  readonly data: string;
}

/** No byte arrived within the idle timeout: the connection is presumed dead (the API pings every 15 s). */
export class StreamIdleError extends Error {
  constructor(idleMs: number) {
    super(`no data from the server for ${Math.round(idleMs / 1000)} s`);
    this.name = 'StreamIdleError';
  }
}

/**
 * Parses an `text/event-stream` body (WHATWG HTML, "event stream interpretation"): lines end with
 * CRLF, LF or CR; `:` starts a comment; an event is dispatched only at the blank line that ends it,
 * so an event cut off by a dropped connection is never yielded (and its id never counts as seen).
 * Ending the iteration early cancels the body, which closes the connection.
 */
export async function* readSse(body: ReadableStream<Uint8Array>, idleTimeoutMs: number): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let idle = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      idle = true;
      void reader.cancel().catch(() => undefined);
    }, idleTimeoutMs);
  };

  let buffer = '';
  let event = '';
  let id: string | undefined;
  let data: string[] = [];
  /** Takes the complete lines off the buffer; returns the events they complete. */
  const takeLines = (ended: boolean): SseEvent[] => {
    const events: SseEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(buffer);
      if (!match) break;
      // A CR at the very end may be the first half of a CRLF split across chunks: wait for more.
      if (match[0] === '\r' && match.index === buffer.length - 1 && !ended) break;
      const line = buffer.slice(0, match.index);
      buffer = buffer.slice(match.index + match[0].length);
      if (line === '') {
        if (data.length > 0) events.push({ event: event || 'message', data: data.join('\n'), ...(id !== undefined ? { id } : {}) });
        event = '';
        id = undefined;
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      else if (field === 'id' && !value.includes('\0')) id = value;
    }
    return events;
  };

  try {
    arm();
    for (;;) {
      const { done, value } = await reader.read();
      if (idle) throw new StreamIdleError(idleTimeoutMs);
      if (done) {
        // The stream ended: what is left is an incomplete event, which is discarded.
        yield* takeLines(true);
        return;
      }
      arm();
      buffer += decoder.decode(value, { stream: true });
      yield* takeLines(false);
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => undefined);
  }
}
