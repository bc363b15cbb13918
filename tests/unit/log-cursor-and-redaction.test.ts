import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../shared/errors.js';
import { compareCursors, cursorSequence, isCursor } from '../../shared/log-cursor.js';
import { redactText } from '../../shared/logger.js';

describe('log cursors', () => {
  it('orders by line number, not text', () => {
    expect(compareCursors('0-9', '0-10')).toBeLessThan(0);
    expect(cursorSequence('0-42')).toBe(42);
  });

  it('refuses anything a server did not issue', () => {
    for (const bad of ['', '1-1', '0-', 'abc', '0-1-2', '0-99999999999999999']) expect(isCursor(bad)).toBe(false);
    expect(() => cursorSequence('nope')).toThrow(ValidationError);
  });
});

describe('redaction', () => {
  it('removes credentials from URLs and authorization values', () => {
    expect(redactText('GET https://user:tok3n@jenkins.example/job/a failed')).toBe('GET https://[redacted]@jenkins.example/job/a failed');
    expect(redactText('Authorization: Basic dXNlcjp0b2tlbg==')).toBe('Authorization: Basic [redacted]');
    expect(redactText('redis://:pw@127.0.0.1:6379')).toBe('redis://[redacted]@127.0.0.1:6379');
  });

  it('removes the whole of a password holding a raw @, and of a token with any characters', () => {
    expect(redactText('"redis":"redis://default:Pa55@word-XYZ@127.0.0.1:1"')).toBe('"redis":"redis://[redacted]@127.0.0.1:1"');
    expect(redactText('two: https://a:b@h1/x and https://c:d@h2/y')).toBe('two: https://[redacted]@h1/x and https://[redacted]@h2/y');
    expect(redactText('Bearer abc!SECRET%PART$x, next')).toBe('Bearer [redacted], next');
    expect(redactText('{"authorization":"Basic dXNl:cjp0!b2tlbg=="}')).toBe('{"authorization":"Basic [redacted]"}');
  });
});
