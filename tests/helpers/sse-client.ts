import http from 'node:http';

export interface SseEvent {
  readonly event: string;
  readonly id?: string;
  readonly data: string;
}

export interface SseReader {
  readonly status: number;
  readonly events: SseEvent[];
  readonly comments: string[];
  /** Resolves when the server closes the stream. */
  readonly closed: Promise<void>;
  close(): void;
}

/** A minimal EventSource-like reader over node:http that records every event and comment. */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseReader> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      const events: SseEvent[] = [];
      const comments: string[] = [];
      let buffer = '';
      res.setEncoding('utf8');
      const closed = new Promise<void>((done) => {
        res.on('end', () => done());
        res.on('close', () => done());
        res.on('error', () => done());
      });
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let index: number;
        while ((index = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, index);
          buffer = buffer.slice(index + 2);
          let event = 'message';
          let id: string | undefined;
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line.slice(1).trim());
            else if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('id:')) id = line.slice(3).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
          }
          if (data.length > 0) events.push({ event, data: data.join('\n'), ...(id !== undefined ? { id } : {}) });
        }
      });
      resolve({ status: res.statusCode ?? 0, events, comments, closed, close: () => req.destroy() });
    });
    req.on('error', reject);
  });
}

/** The `message` events that are log lines (have an id and a message). */
export function logLines(events: readonly SseEvent[]): Array<{ id: string; message: string }> {
  return events
    .filter((event) => event.event === 'message' && event.id !== undefined)
    .map((event) => ({ id: event.id as string, ...(JSON.parse(event.data) as { message?: string; status?: string }) }))
    .filter((line): line is { id: string; message: string } => typeof (line as { message?: unknown }).message === 'string');
}
