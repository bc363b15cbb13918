import type { Request } from 'express';
import { v7 as uuidv7 } from 'uuid';
import { describe, expect, it } from 'vitest';
import { dedupFingerprint, formatPointer, normaliseJobUrl, parsePointer, uuidv7Millis } from '../../api/dedup.js';
import { clientAddressScope, isReplayable } from '../../api/idempotency.js';
import { parseIdempotencyKey } from '../../api/request-schemas.js';
import { createKeys } from '../../shared/keys.js';
import { ValidationError } from '../../shared/errors.js';

const BUILD = 'https://jenkins.example/job/QA_Release_6.4/job/main-regression/216/';

describe('normaliseJobUrl', () => {
  it.each([
    ['as is', BUILD],
    ['upper-case scheme and host', 'HTTPS://Jenkins.EXAMPLE/job/QA_Release_6.4/job/main-regression/216/'],
    ['the default port', 'https://jenkins.example:443/job/QA_Release_6.4/job/main-regression/216/'],
    ['no trailing slash', 'https://jenkins.example/job/QA_Release_6.4/job/main-regression/216'],
    ['two trailing slashes', 'https://jenkins.example/job/QA_Release_6.4/job/main-regression/216//'],
    ['a query and fragment', 'https://jenkins.example/job/QA_Release_6.4/job/main-regression/216?x=1#y'],
  ])('%s', (_name, url) => {
    expect(normaliseJobUrl(url)).toBe(BUILD);
  });

  it('keeps a non-default port and the path case', () => {
    expect(normaliseJobUrl('http://Jenkins:8080/job/A/1')).toBe('http://jenkins:8080/job/A/1/');
    expect(normaliseJobUrl('http://jenkins:80/job/A/1')).toBe('http://jenkins/job/A/1/');
  });
});

describe('dedupFingerprint', () => {
  const base = { job_url: BUILD, release: '6.4', artifacts: ['b/**', 'a/**'] };

  it('is a sha256 hex that ignores glob order, repeated globs and URL spelling', () => {
    const fingerprint = dedupFingerprint(base);
    expect(fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(dedupFingerprint({ ...base, artifacts: ['a/**', 'b/**', 'a/**'] })).toBe(fingerprint);
    expect(dedupFingerprint({ ...base, job_url: 'HTTPS://JENKINS.example:443/job/QA_Release_6.4/job/main-regression/216' })).toBe(fingerprint);
  });

  it('differs with the release, the globs, default globs and the build', () => {
    const fingerprints = new Set([
      dedupFingerprint(base),
      dedupFingerprint({ ...base, release: '6.5' }),
      dedupFingerprint({ ...base, artifacts: ['a/**'] }),
      dedupFingerprint({ ...base, artifacts: [] }),
      dedupFingerprint({ ...base, job_url: BUILD.replace('/216/', '/217/') }),
    ]);
    expect(fingerprints.size).toBe(5);
  });

  it('ignores skip_existing (not part of the input at all)', () => {
    expect(dedupFingerprint({ ...base, skip_existing: false } as typeof base)).toBe(dedupFingerprint(base));
  });
});

describe('dedup pointers', () => {
  it('reads the UUIDv7 time and round-trips a pointer', () => {
    const id = uuidv7({ msecs: 1_700_000_000_123 });
    expect(uuidv7Millis(id)).toBe(1_700_000_000_123);
    expect(uuidv7Millis('01a214b4-dcbf-409f-9f50-90c01cad2802')).toBeNull(); // v4
    expect(parsePointer(formatPointer('claimed', id))).toEqual({ state: 'claimed', jobId: id, claimedAt: 1_700_000_000_123 });
    expect(parsePointer(formatPointer('queued', id))?.state).toBe('queued');
    expect(parsePointer(id)).toBeNull();
    expect(parsePointer(`other:${id}`)).toBeNull();
    expect(parsePointer(`claimed:${id}:x`)).toBeNull();
  });

  it('keys are scoped by queue prefix', () => {
    expect(createKeys('{ferry}').dedup('ab')).toBe('ferry:dedup:{ferry}:downloads:ab');
    expect(createKeys('{t1}').dedup('ab')).not.toBe(createKeys('{t2}').dedup('ab'));
    expect(createKeys('{ferry}').idempotency('cd')).toBe('ferry:idempotency:{ferry}:downloads:cd');
  });
});

describe('Idempotency-Key', () => {
  it.each([['a'], ['order-42'], ['x'.repeat(200)], ['with space ~!'], ['"quoted"']])('accepts %j', (key) => {
    expect(parseIdempotencyKey(key)).toBe(key);
  });

  it('is optional', () => {
    expect(parseIdempotencyKey(undefined)).toBeUndefined();
  });

  it.each([[''], ['x'.repeat(201)], ['tab\there'], ['caf\u00e9'], ['new\nline'], ['\u0000']])('refuses %j with a ValidationError', (key) => {
    expect(() => parseIdempotencyKey(key)).toThrow(ValidationError);
    expect(() => parseIdempotencyKey(key)).toThrow(/Idempotency-Key/);
  });

  it('stores 2xx and 400 answers, never 409 or 5xx', () => {
    expect([200, 202, 400].every(isReplayable)).toBe(true);
    expect([404, 409, 413, 500, 503].some(isReplayable)).toBe(false);
  });

  it('is scoped to the client address by default', () => {
    expect(clientAddressScope({ ip: '10.1.2.3', socket: {} } as unknown as Request)).toBe('ip:10.1.2.3');
    expect(clientAddressScope({ ip: undefined, socket: { remoteAddress: '::1' } } as unknown as Request)).toBe('ip:::1');
  });
});
