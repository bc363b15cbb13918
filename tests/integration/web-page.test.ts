import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

/** Debian's chromium (`.ci/run` installs it); Playwright's own browser builds are never downloaded. */
function findChromium(): string | undefined {
  for (const candidate of [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser']) {
    if (candidate && existsSync(candidate)) return candidate;
  }
  try {
    return execFileSync('which', ['chromium'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const executablePath = findChromium();
if (!executablePath && process.env.CI) throw new Error('chromium is not installed: .ci/run installs it with apt-get');
if (!executablePath) console.warn('web-page.test.ts SKIPPED: no chromium on this machine (apt-get install chromium); CI always runs it');

const ARTIFACTS_DIR = new URL('../artifacts/', import.meta.url);
const FINAL = ['completed', 'failed', 'cancelled'];

interface LogLine {
  readonly id: string;
  readonly message: string;
}

/** A TCP proxy in front of the API whose open connections can all be cut: a dropped network. */
async function startCuttableProxy(target: string) {
  const { hostname, port } = new URL(target);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) socket.on('error', drop).on('close', drop);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** Destroys every open connection (the page's log stream among them); returns how many. */
    cut() {
      const count = sockets.size;
      for (const socket of sockets) socket.destroy();
      return count;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Every line of the job's log through the JSON pages, the reference the page is compared with. */
async function jsonLog(baseUrl: string, jobId: string, headers: Record<string, string> = {}): Promise<LogLine[]> {
  const lines: LogLine[] = [];
  let after = '';
  for (;;) {
    const response = await fetch(`${baseUrl}/api/v1/jenkins/download/${jobId}/logs?limit=1000${after ? `&after=${after}` : ''}`, { headers });
    expect(response.status).toBe(200);
    const page = (await response.json()) as { lines: LogLine[]; next: string | null; done: boolean };
    lines.push(...page.lines.map(({ id, message }) => ({ id, message })));
    if (page.done || page.lines.length === 0) return lines;
    after = page.next ?? after;
  }
}

/** The log lines on the page, in order: the id each carries and its text. */
const pageLines = (page: Page) =>
  page.$$eval('#log li', (items) =>
    items.map((item) => ({ id: item.getAttribute('data-id') ?? '', message: item.querySelector('.message')?.textContent ?? '' })),
  );
const lineCount = (page: Page) => page.locator('#log li').count();
const jobStatus = (page: Page) => page.locator('#job-status').textContent();

/**
 * What the page and chromium complain about: exceptions, Content-Security-Policy violations, bad
 * markup. Failed requests are left out: the tests cause 401s, 503s and cut streams on purpose.
 */
function watchPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (['error', 'warning'].includes(message.type()) && !message.text().startsWith('Failed to load resource')) {
      errors.push(`console ${message.type()}: ${message.text()}`);
    }
  });
  return errors;
}

describe.skipIf(!executablePath)('web page (API in this process, headless chromium)', () => {
  let browser: Browser;
  let jenkins: FakeJenkins;
  const contexts: BrowserContext[] = [];
  const newPage = async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    contexts.push(context);
    return context.newPage();
  };

  beforeAll(async () => {
    // --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
    browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
    jenkins = await startFakeJenkins();
    await mkdir(ARTIFACTS_DIR, { recursive: true });
  });

  afterEach(async () => {
    jenkins.setThrottle(undefined);
    for (const context of contexts.splice(0)) await context.close();
  });

  afterAll(async () => {
    await browser?.close();
    await jenkins?.close();
  });

  describe('open API', () => {
    let system: TestSystem;
    let proxy: Awaited<ReturnType<typeof startCuttableProxy>>;

    beforeAll(async () => {
      system = await startSystem(jenkins.url);
      await system.startWorker();
      proxy = await startCuttableProxy(system.baseUrl);
    });

    afterAll(async () => {
      await proxy?.close();
      await system?.stop();
    });

    it('GET / serves the page, its script and stylesheet with no-cache and a script-src self policy; other paths stay JSON 404s', async () => {
      const html = await fetch(`${system.baseUrl}/`);
      expect(html.status).toBe(200);
      expect(html.headers.get('content-type')).toMatch(/^text\/html/);
      expect(html.headers.get('cache-control')).toBe('no-cache');
      const policy = html.headers.get('content-security-policy') ?? '';
      expect(policy).toContain("script-src 'self'");
      expect(policy).toContain("script-src-attr 'none'");
      // Plain HTTP at a non-loopback address would otherwise load the script over https:// and fail.
      expect(policy).not.toContain('upgrade-insecure-requests');
      const etag = html.headers.get('etag');
      expect(etag).toBeTruthy();
      // node:http, not fetch: fetch adds Cache-Control: no-cache to a conditional request.
      const revalidated = await new Promise<number | undefined>((resolve, reject) => {
        http.get(`${system.baseUrl}/`, { headers: { 'if-none-match': etag ?? '' } }, (res) => resolve(res.resume().statusCode)).on('error', reject);
      });
      expect(revalidated).toBe(304);
      const script = await fetch(`${system.baseUrl}/app.js`);
      expect(script.headers.get('content-type')).toMatch(/javascript/);
      expect((await fetch(`${system.baseUrl}/style.css`)).headers.get('content-type')).toMatch(/^text\/css/);
      for (const path of ['/web-page.ts', '/../package.json', '/index.htm', '/nope.js']) {
        const response = await fetch(`${system.baseUrl}${path}`);
        expect(response.status, path).toBe(404);
        expect(((await response.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
      }
    });

    it('submits a job, shows lines as they arrive, survives a dropped connection and a reload, and shows every line exactly once and the final state', async () => {
      // Sixteen modules of 6 kB each, at 3 kB/s per response (32 s) while the test drops the
      // connection twice and reloads (about 15 s): the job is still running then; the throttle is
      // lifted afterwards.
      const modules: Record<string, number> = {};
      for (let n = 1; n <= 16; n += 1) {
        const name = `WEB_MODULE_${n}`;
        modules[name] = 40 + n;
        jenkins.addBuild(['QA_Release_9.1', name.replaceAll('_', '-')], 40 + n, { artifacts: [{ relativePath: 'hapy/result.bin', size: 6_000 }] });
      }
      const jobUrl = jenkins.addBuild(['QA_Release_9.1', 'web-regression'], 7, {
        artifacts: [{ relativePath: 'build_map.json', content: JSON.stringify(modules) }],
      });
      jenkins.setThrottle(3_000);

      const page = await newPage();
      const errors = watchPageErrors(page);
      // The log streams the page opens, with the headers chromium sent (allHeaders: as on the wire).
      const streams: Array<Promise<{ url: URL; headers: Record<string, string> }>> = [];
      page.on('request', (request) => {
        if (request.resourceType() === 'eventsource') streams.push(request.allHeaders().then((headers) => ({ url: new URL(request.url()), headers })));
      });
      await page.goto(`${proxy.url}/`);
      await page.locator('#submit-form').waitFor();
      await page.fill('input[name=job_url]', jobUrl);
      await page.uncheck('input[name=skip_existing]');
      await page.fill('textarea[name=artifacts]', 'hapy/**');
      await page.click('#submit-form button[type=submit]');

      await page.waitForURL(/#job=/);
      const jobId = new URL(page.url()).hash.replace('#job=', '');
      expect(jobId).toMatch(/^[0-9a-f-]{36}$/);
      await expect.poll(() => page.locator('#submit-result').textContent()).toContain(jobId);

      // Lines arrive while the job runs: some now, more a little later, on the same page.
      await waitFor(async () => (await lineCount(page)) >= 3, 'the first lines on the page');
      const first = await lineCount(page);
      await waitFor(async () => (await lineCount(page)) > first, 'a new line arriving live');
      await waitFor(async () => (await jobStatus(page)) === 'running', 'the running status');
      await waitFor(async () => /modules \d+\/16 · files \d+\/16/.test((await page.locator('#job-progress-text').textContent()) ?? ''), 'the progress text');

      /** The lines on the page are the log's first lines, each once. */
      const expectExactPrefix = async () => {
        const shown = await pageLines(page);
        expect(new Set(shown.map((line) => line.id)).size).toBe(shown.length);
        expect(shown).toEqual((await jsonLog(system.baseUrl, jobId)).slice(0, shown.length));
      };
      /** Waits for the `n`th stream to open and a line to arrive through it. */
      const waitForStream = async (n: number, what: string) => {
        const before = await lineCount(page);
        // 20 s: chromium waits 3 s before reconnecting, then a module takes 2 s at this throttle.
        await waitFor(async () => streams.length >= n && (await lineCount(page)) > before, what, 20_000);
        expect(streams).toHaveLength(n);
        return streams[n - 1];
      };

      // A dropped connection: EventSource reconnects by itself (after its 3 s retry delay) with
      // Last-Event-ID, and the page goes on without a gap or a repeat.
      expect(streams).toHaveLength(1);
      expect(proxy.cut()).toBeGreaterThan(0);
      const reconnect = await waitForStream(2, "new lines after the browser's own reconnect");
      expect((await reconnect)?.headers['last-event-id']).toMatch(/^\d+-\d+$/);
      await expectExactPrefix();

      // Dropped again, and the reconnect is refused (a 503, e.g. during a Redis outage): EventSource
      // gives up on an HTTP error, so the page opens a new stream after the last line it shows.
      let refused = 0;
      const streamPath = /\/api\/v1\/jenkins\/download\/[^/?]+(\?.*)?$/;
      await page.route(streamPath, async (route) => {
        if (route.request().resourceType() !== 'eventsource' || refused > 0) return route.continue();
        refused += 1;
        return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":{"code":"REDIS_UNAVAILABLE","message":"test"}}' });
      });
      expect(proxy.cut()).toBeGreaterThan(0);
      const reopened = await waitForStream(4, 'new lines after the page reopened the stream');
      expect(refused).toBe(1);
      const resumeFrom = (await reopened)?.url.searchParams.get('last_event_id');
      expect((await pageLines(page)).map((line) => line.id)).toContain(resumeFrom);
      await expectExactPrefix();
      await page.unroute(streamPath);

      // A reload mid-job: the view starts clean and replays the log from its first line.
      expect(await jobStatus(page)).toBe('running');
      const beforeReload = await lineCount(page);
      await page.reload();
      await waitFor(async () => (await lineCount(page)) >= beforeReload, 'the log replayed after the reload');
      expect(await jobStatus(page)).toBe('running');
      // Speed and time left show once the page has seen a second of progress.
      await waitFor(async () => /\/s · about .+ left/.test((await page.locator('#job-progress-text').textContent()) ?? ''), 'speed and time left', 20_000);

      jenkins.setThrottle(undefined);
      await waitFor(async () => FINAL.includes((await jobStatus(page)) ?? ''), 'the final status on the page', 30_000);
      expect(await jobStatus(page)).toBe('completed');
      // The job's record, once it says so too: the finish time shows.
      await waitFor(async () => ((await page.locator('#job-completed').textContent()) ?? '') !== '', 'the finish time');
      const expected = await jsonLog(system.baseUrl, jobId);
      expect(expected.at(-1)?.message).toBe('Job completed');
      await waitFor(async () => (await lineCount(page)) >= expected.length, 'every line on the page');

      const shown = await pageLines(page);
      expect(new Set(shown.map((line) => line.id)).size).toBe(shown.length);
      expect(shown).toEqual(expected);
      expect(shown.length).toBeGreaterThan(beforeReload);
      expect(await page.locator('#job-progress').evaluate((bar) => (bar as unknown as { value: number }).value)).toBe(1);
      expect(await page.locator('#job-progress-text').textContent()).toMatch(/^modules 16\/16 · files 16\/16 · (96\.0 kB) of \1$/);
      expect(await page.locator('#cancel-button').isHidden()).toBe(true);
      await expect.poll(() => page.locator(`#jobs tr[data-id="${jobId}"] .status`).textContent()).toBe('completed');

      await page.screenshot({ path: new URL('web-page.png', ARTIFACTS_DIR).pathname, fullPage: true });
      expect(errors).toEqual([]);
    });

    it('cancels a running job from its view', async () => {
      const jobUrl = jenkins.addBuild(['QA_Release_9.1', 'web-cancel'], 3, { artifacts: [{ relativePath: 'hapy/slow.bin', size: 1_000_000 }] });
      // 2 kB/s: the job runs for minutes unless it is cancelled.
      jenkins.setThrottle(2_000);
      const page = await newPage();
      const errors = watchPageErrors(page);
      await page.goto(`${system.baseUrl}/`);
      await page.fill('input[name=job_url]', jobUrl);
      await page.click('#submit-form button[type=submit]');
      await page.waitForURL(/#job=/);
      await waitFor(async () => (await jobStatus(page)) === 'running', 'the job running');
      await page.click('#cancel-button');
      await waitFor(async () => (await jobStatus(page)) === 'cancelled', 'the cancelled status', 20_000);
      await waitFor(async () => (await pageLines(page)).at(-1)?.message === 'Job cancelled', 'the end line');
      expect(await page.locator('#cancel-button').isHidden()).toBe(true);
      expect(errors).toEqual([]);
    });
  });

  describe('API with tokens', () => {
    const writeToken = 'web-page-test-write-token-0123456789';
    let system: TestSystem;

    beforeAll(async () => {
      system = await startSystem(jenkins.url, {
        API_TOKENS: `write:web:${writeToken}`,
        TOKEN_SECRET: 'web-page-test-token-secret-0123456789abcdef',
      });
      await system.startWorker();
    });

    afterAll(async () => {
      await system?.stop();
    });

    it('asks for a token, keeps it for the browser session, and opens the log stream with a stream token', async () => {
      const jobUrl = jenkins.addBuild(['QA_Release_9.2', 'web-token'], 11, {
        artifacts: [
          { relativePath: 'hapy/a.xml', content: '<testsuite name="a"/>' },
          { relativePath: 'hapy/b.xml', content: '<testsuite name="b"/>' },
        ],
      });
      const page = await newPage();
      const errors = watchPageErrors(page);
      const urls: string[] = [];
      page.on('request', (request) => urls.push(request.url()));

      await page.goto(`${system.baseUrl}/`);
      await page.locator('#token-form').waitFor();
      expect(await page.locator('#app').isHidden()).toBe(true);
      await page.screenshot({ path: new URL('web-page-token.png', ARTIFACTS_DIR).pathname });
      await page.fill('#token-input', 'not-a-valid-token-at-all');
      await page.click('#token-form button[type=submit]');
      await expect.poll(() => page.locator('#token-error').textContent()).toBe('That token was not accepted.');
      expect(await page.locator('#app').isHidden()).toBe(true);

      await page.fill('#token-input', writeToken);
      await page.click('#token-form button[type=submit]');
      await page.locator('#submit-form').waitFor();
      await page.fill('input[name=job_url]', jobUrl);
      await page.click('#submit-form button[type=submit]');
      await page.waitForURL(/#job=/);
      const jobId = new URL(page.url()).hash.replace('#job=', '');
      await waitFor(async () => (await jobStatus(page)) === 'completed', 'the job completed on the page', 30_000);

      const auth = { authorization: `Bearer ${writeToken}` };
      const expected = await jsonLog(system.baseUrl, jobId, auth);
      await waitFor(async () => (await lineCount(page)) >= expected.length, 'every line on the page');
      expect(await pageLines(page)).toEqual(expected);
      expect(urls.some((url) => url.includes(`/download/${jobId}?token=st1.`))).toBe(true);
      expect(urls.filter((url) => url.includes(writeToken))).toEqual([]);

      // Kept for the session: a reload asks for nothing and replays the log once.
      await page.reload();
      await page.locator('#submit-form').waitFor();
      expect(await page.locator('#token-section').isHidden()).toBe(true);
      await waitFor(async () => (await lineCount(page)) >= expected.length, 'the log after the reload');
      expect(await pageLines(page)).toEqual(expected);

      // Forgetting it asks again.
      await page.click('#forget-token');
      await page.locator('#token-form').waitFor();
      expect(await page.evaluate("sessionStorage.getItem('ferry.token')")).toBeNull();

      // Another browser session starts without it.
      const other = await newPage();
      await other.goto(`${system.baseUrl}/#job=${jobId}`);
      await other.locator('#token-form').waitFor();
      expect(await other.locator('#log li').count()).toBe(0);
      expect(errors).toEqual([]);
    });
  });
});
