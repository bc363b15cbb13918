import { describe, expect, it } from 'vitest';
import { DirectGetUnsupported, ResponseHeadReader, type CompleteHead } from '../../worker/direct-get.js';

/** Feeds `bytes` in pieces of `size` through one reusable read buffer, as the socket does; the first complete head, with its rest copied. */
function feed(bytes: Buffer, size: number): { complete: CompleteHead | undefined; pushes: number } {
  const reader = new ResponseHeadReader();
  const read = Buffer.alloc(Math.max(size, 1));
  let pushes = 0;
  for (let at = 0; at < bytes.length; at += size) {
    const piece = bytes.subarray(at, at + size);
    piece.copy(read);
    pushes += 1;
    const complete = reader.push(read.subarray(0, piece.length));
    // The read buffer is overwritten with garbage before the next read: nothing may point into it.
    const result = complete ? { head: complete.head, rest: Buffer.from(complete.rest) } : undefined;
    read.fill(0x78);
    if (result) return { complete: result, pushes };
  }
  return { complete: undefined, pushes };
}

const HEAD = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Many: a\r\nX-Many: b\r\n\r\n';

describe('ResponseHeadReader', () => {
  it('finds the head and the body bytes after it, however the bytes are split', () => {
    const bytes = Buffer.from(`${HEAD}hello`, 'latin1');
    for (const size of [1, 2, 3, 4, 5, 7, 16, HEAD.length - 1, HEAD.length, bytes.length]) {
      const { complete } = feed(bytes, size);
      expect(complete?.head, `pieces of ${size}`).toEqual({ status: 200, headers: { 'content-length': '5', 'x-many': 'a, b' } });
      // What came with the head's last piece; the rest follows as body reads.
      const restStart = Math.ceil(HEAD.length / size) * size;
      expect(complete?.rest.toString('latin1'), `pieces of ${size}`).toBe('hello'.slice(0, Math.max(0, Math.min(restStart, bytes.length) - HEAD.length)));
    }
  });

  it('skips interim heads (103 Early Hints), also when they arrive a byte at a time', () => {
    const bytes = Buffer.from(`HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n${HEAD}hi`, 'latin1');
    for (const size of [1, 3, bytes.length]) {
      const { complete } = feed(bytes, size);
      expect(complete?.head.status).toBe(200);
      expect(complete?.head.headers['link']).toBeUndefined();
    }
    expect(feed(bytes, bytes.length).complete?.rest.toString('latin1')).toBe('hi');
  });

  it('reads a 60 KiB head sent a byte at a time, and refuses one over 64 KiB', () => {
    const filler = Array.from({ length: 600 }, (_, i) => `X-Filler-${i}: ${'v'.repeat(80)}`).join('\r\n');
    const big = `HTTP/1.1 200 OK\r\nContent-Length: 0\r\n${filler}\r\n\r\n`;
    expect(big.length).toBeGreaterThan(50_000);
    expect(big.length).toBeLessThan(64 * 1024);
    const { complete, pushes } = feed(Buffer.from(big, 'latin1'), 1);
    expect(pushes).toBe(big.length);
    expect(complete?.head.headers['x-filler-599']).toBe('v'.repeat(80));
    expect(Object.keys(complete?.head.headers ?? {})).toHaveLength(601);

    const endless = Buffer.from(`HTTP/1.1 200 OK\r\n${'X-Long: y\r\n'.repeat(7_000)}`, 'latin1');
    expect(() => feed(endless, 1)).toThrow(DirectGetUnsupported);
    expect(() => feed(endless, 1)).toThrow(/longer than 65536 bytes/);
  });

  it('finds the head at every pair of cut points of two interim heads, the final head and body bytes', () => {
    const text = `HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n${HEAD}hello`;
    const bytes = Buffer.from(text, 'latin1');
    const headEnd = text.indexOf('\r\n\r\n', text.indexOf('HTTP/1.1 200')) + 4;
    let cases = 0;
    for (let first = 1; first < bytes.length; first += 1) {
      for (let second = first + 1; second <= bytes.length; second += 1) {
        const reader = new ResponseHeadReader();
        const read = Buffer.alloc(bytes.length);
        let found: { status: number; rest: string; at: number } | undefined;
        for (const [from, to] of [[0, first], [first, second], [second, bytes.length]] as const) {
          if (from === to) continue;
          bytes.copy(read, 0, from, to);
          const complete = reader.push(read.subarray(0, to - from));
          if (complete) found = { status: complete.head.status, rest: complete.rest.toString('latin1'), at: to };
          read.fill(0x78);
          if (found) break;
        }
        expect(found?.status).toBe(200);
        // The bytes after the head that came in the read that completed it.
        expect(found?.rest).toBe(text.slice(headEnd, found?.at));
        cases += 1;
      }
    }
    expect(cases).toBe(((bytes.length - 1) * bytes.length) / 2);
  });

  it('holds the 64 KiB limit however the head arrives: 65,536 bytes read, 65,537 refused', () => {
    const headOf = (length: number) => {
      const start = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: ';
      return Buffer.from(`${start}${'p'.repeat(length - start.length - 4)}\r\n\r\n`, 'latin1');
    };
    const limit = 64 * 1024;
    expect(headOf(limit)).toHaveLength(limit);
    for (const size of [1, 4096, 16 * 1024, limit + 10]) {
      expect(feed(headOf(limit), size).complete?.head.status, `pieces of ${size}`).toBe(200);
      expect(() => feed(headOf(limit + 1), size), `pieces of ${size}`).toThrow(/longer than 65536 bytes/);
    }
  });

  it('refuses a malformed head', () => {
    expect(() => feed(Buffer.from('HTTP/1.1 200 OK\r\n folded: line\r\n\r\n', 'latin1'), 4)).toThrow(/malformed response head/);
    expect(() => feed(Buffer.from('SPDY/3 200 OK\r\n\r\n', 'latin1'), 1)).toThrow(/malformed response head/);
  });
});
