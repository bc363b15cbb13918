import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startSystem, type TestSystem } from '../helpers/system.js';

const TOKEN = 'fuzz-admin-token-0123456789';

/** Path segments a hostile client tries: traversal, encodings, huge, odd unicode, ids that are not ids. */
const hostileSegment = fc.oneof(
  fc.constantFrom('..', '%2e%2e', '%2F', '..%2F..%2Fetc%2Fpasswd', '%00', '%ff', '%E2%80%AE', 'null', 'undefined', '[object Object]', '-1', '0'),
  fc.uuid(),
  fc.string({ maxLength: 40 }).map((value) => encodeURIComponent(value)),
  fc.string({ minLength: 500, maxLength: 3_000 }).map((value) => encodeURIComponent(value)),
  fc.stringMatching(/^[0-9a-f-]{1,40}$/),
);

const paths = hostileSegment.chain((id) =>
  fc.constantFrom(
    '/api/v1/jenkins/download',
    `/api/v1/jenkins/download/${id}`,
    `/api/v1/jenkins/download/${id}/status`,
    `/api/v1/jenkins/download/${id}/logs`,
    `/api/v1/jenkins/download/${id}/logs?after=${id}&limit=${id}`,
    `/api/v1/jenkins/download/${id}/cancel`,
    `/api/v1/jenkins/download/${id}/stream-token`,
    `/api/v1/jenkins/download/${id}?token=${id}`,
    '/api/v1/jenkins/download-selected',
    `/api/v1/jenkins/download-selected/${id}`,
    `/api/v1/jenkins/downloads?status=${id}&release=${id}&limit=${id}&cursor=${id}`,
    `/api/v1/jenkins/${id}`,
    `/${id}`,
  ),
);

/** Bodies: JSON of any shape, the right shape with hostile values, non-JSON, and oversized ones. */
const bodies = (jenkinsUrl: string) =>
  fc.oneof(
    fc.jsonValue().map((value) => JSON.stringify(value)),
    fc.record(
      {
        job_url: fc.oneof(fc.string(), fc.webUrl(), fc.constant(`${jenkinsUrl}job/x/1/`), fc.constant('file:///etc/passwd'), fc.constant(`${jenkinsUrl}../../admin/1/`)),
        release: fc.oneof(fc.string(), fc.constant('..'), fc.constant('../../etc'), fc.constant('6.4'), fc.integer()),
        skip_existing: fc.oneof(fc.boolean(), fc.string()),
        artifacts: fc.oneof(fc.array(fc.string({ maxLength: 300 }), { maxLength: 60 }), fc.string()),
        extra: fc.anything(),
      },
      { requiredKeys: [] },
    ).map((value) => JSON.stringify(value)),
    fc.record({ jobs: fc.oneof(fc.array(fc.record({ key: fc.string(), release: fc.string(), build_url: fc.string() }), { maxLength: 120 }), fc.anything()) }).map((value) =>
      JSON.stringify(value),
    ),
    fc.string({ maxLength: 200 }),
    fc.constant('{"job_url": '),
    fc.integer({ min: 65 * 1024, max: 90 * 1024 }).map((size) => JSON.stringify({ job_url: 'x'.repeat(size) })),
  );

/** Header values a client can send (Node refuses CR, LF and NUL itself, so those never reach the server). */
const headerValue = fc.oneof(fc.string({ maxLength: 300 }), fc.constant('Bearer '), fc.constant(`Bearer ${TOKEN}`), fc.constant('Basic Og=='), fc.constant('Basic !!!'))
  .map((value) => value.replace(/[^\t\x20-\x7e]/g, ''));

const requests = (jenkinsUrl: string) =>
  fc.record({
    method: fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS'),
    path: paths,
    body: fc.option(bodies(jenkinsUrl), { nil: undefined }),
    contentType: fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', ''),
    authorization: fc.option(headerValue, { nil: undefined }),
    idempotencyKey: fc.option(headerValue, { nil: undefined }),
    lastEventId: fc.option(headerValue, { nil: undefined }),
    adminPin: fc.option(headerValue, { nil: undefined }),
  });

describe('hostile requests (fast-check): never a 5xx, always a JSON 4xx error', () => {
  let jenkins: FakeJenkins;
  let open: TestSystem;
  let secured: TestSystem;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    open = await startSystem(jenkins.url, { RATE_LIMIT_PER_MINUTE: '1000000' });
    secured = await startSystem(jenkins.url, {
      API_TOKENS: `admin:fuzz:${TOKEN}`,
      TOKEN_SECRET: 'fuzz-secret-0123456789abcdef0123456789',
      ADMIN_PIN: 'pin-1234',
      RATE_LIMIT_PER_MINUTE: '1000000',
    });
  });

  afterAll(async () => {
    await secured?.stop();
    await open?.stop();
    await jenkins?.close();
  });

  for (const [name, system] of [['open API', () => open], ['API with tokens', () => secured]] as const) {
    it(`${name}: 5,000 hostile requests`, async () => {
      let count = 0;
      await fc.assert(
        fc.asyncProperty(requests(jenkins.url), async (request) => {
          count += 1;
          const headers: Record<string, string> = {};
          if (request.contentType) headers['content-type'] = request.contentType;
          if (request.authorization !== undefined) headers.authorization = request.authorization;
          if (request.idempotencyKey !== undefined) headers['idempotency-key'] = request.idempotencyKey;
          if (request.lastEventId !== undefined) headers['last-event-id'] = request.lastEventId;
          if (request.adminPin !== undefined) headers['x-admin-pin'] = request.adminPin;
          const withBody = request.body !== undefined && request.method !== 'GET' && request.method !== 'OPTIONS';
          const response = await fetch(`${system().baseUrl}${request.path}`, {
            method: request.method,
            headers,
            ...(withBody ? { body: request.body } : {}),
            signal: AbortSignal.timeout(10_000),
          });
          const text = await response.text();
          const context = `${request.method} ${request.path.slice(0, 120)} -> ${response.status} ${text.slice(0, 200)}`;
          expect(response.status, context).toBeLessThan(500);
          if (response.status >= 400) {
            expect(response.headers.get('content-type') ?? '', context).toContain('application/json');
            const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
            expect(typeof parsed.error?.code, context).toBe('string');
            expect(typeof parsed.error?.message, context).toBe('string');
          }
        }),
        { numRuns: 5_000 },
      );
      expect(count).toBeGreaterThanOrEqual(5_000);
      // Still healthy afterwards.
      expect((await fetch(`${system().baseUrl}/readyz`)).status).toBe(200);
    }, 300_000);
  }
});
