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

  it('refuses a malformed head', () => {
    expect(() => feed(Buffer.from('HTTP/1.1 200 OK\r\n folded: line\r\n\r\n', 'latin1'), 4)).toThrow(/malformed response head/);
    expect(() => feed(Buffer.from('SPDY/3 200 OK\r\n\r\n', 'latin1'), 1)).toThrow(/malformed response head/);
  });
});
