import { Writable } from 'node:stream';
import winston from 'winston';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/logger.js';

describe('logger', () => {
  it('drops entries below its level before formatting them, and follows a level changed at run time', () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        callback();
      },
    });
    const logger = createLogger({ service: 'test', level: 'info', json: true });
    // The same logger (its formats) with its output captured instead of printed.
    logger.clear().add(new winston.transports.Stream({ stream: sink }));
    const child = logger.child({ request_id: 'r1' });
    // A getter nested in the metadata shows whether the formats ran at all: winston copies the
    // metadata shallowly, redaction walks into every nested field.
    let formatted = 0;
    const meta = {
      nested: {
        get probe() {
          formatted += 1;
          return 'x';
        },
      },
    };
    child.http('below the level', meta);
    logger.debug('below the level', meta);
    expect(formatted).toBe(0);
    child.warn('shown', { token: 'secret-value' });
    logger.level = 'http';
    child.http('shown after the change');
    expect(lines.map((line) => [line.level, line.message, line.request_id])).toEqual([
      ['warn', 'shown', 'r1'],
      ['http', 'shown after the change', 'r1'],
    ]);
    expect(lines[0]?.token).toBe('[redacted]');
  });
});
