import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startScript, type ChildService } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { openSse } from '../helpers/sse-client.js';
import { startSystem, testEnv, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const READ = 'metrics-reader-0123456789';
const WRITE = 'metrics-writer-0123456789';

/** The value of one sample in Prometheus text, e.g. `ferry_jobs{queue="downloads",state="completed"}`; 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

describe('Prometheus metrics from the API and from a worker with METRICS_PORT', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let worker: ChildService;
  let workerMetrics: string;

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    system = await startSystem(jenkins.url, { API_TOKENS: `read:dashboards:${READ},write:ci:${WRITE}`, TOKEN_SECRET: 'metrics-secret-0123456789abcdef012345' });
    const port = await freePort();
    workerMetrics = `http://127.0.0.1:${port}/metrics`;
    worker = startScript('worker', { ...testEnv(jenkins.url, system.downloadDir, { QUEUE_PREFIX: system.config.queuePrefix }), METRICS_PORT: String(port), LOG_LEVEL: 'info' });
    await waitFor(async () => (await fetch(workerMetrics).catch(() => null))?.status === 200, 'the worker metrics endpoint', 20_000);
  });

  afterAll(async () => {
    await worker?.stop();
    await system?.stop();
    await jenkins?.close();
  });

  const apiMetrics = async () => {
    const response = await fetch(`${system.baseUrl}/metrics`, { headers: { authorization: `Bearer ${READ}` } });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    return response.text();
  };
  const scrapeWorker = async () => (await fetch(workerMetrics)).text();

  it('needs the read role on the API', async () => {
    expect((await fetch(`${system.baseUrl}/metrics`)).status).toBe(401);
  });

  it('the numbers move when a job runs: jobs by state, bytes, durations, retries, log lines, SSE clients, Redis RTT', async () => {
    const url = jenkins.addBuild(['QA_Release_2.2', 'metered'], 1, {
      artifacts: [
        { relativePath: 'hapy/a.bin', size: 300_000 },
        { relativePath: 'hapy/b.xml', content: '<b/>' },
      ],
    });
    jenkins.setFault('hapy/b.xml', { kind: 'status', status: 503, retryAfter: '0', times: 1 });
    const [apiBefore, workerBefore] = await Promise.all([apiMetrics(), scrapeWorker()]);

    jenkins.setThrottle(200_000);
    const submitted = await fetch(`${system.baseUrl}/api/v1/jenkins/download`, {
      method: 'POST',
      headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' },
      body: JSON.stringify({ job_url: url }),
    });
    const id = ((await submitted.json()) as { job_id: string }).job_id;
    const token = ((await (await fetch(`${system.baseUrl}/api/v1/jenkins/download/${id}/stream-token`, { method: 'POST', headers: { authorization: `Bearer ${READ}` } })).json()) as { token: string }).token;
    const reader = await openSse(`${system.baseUrl}/api/v1/jenkins/download/${id}?token=${encodeURIComponent(token)}`);
    await waitFor(async () => sample(await apiMetrics(), 'ferry_sse_clients') === 1, 'one SSE client counted');
    await waitFor(async () => sample(await scrapeWorker(), 'ferry_active_jobs', { queue: 'downloads' }) === 1, 'one active job counted');
    jenkins.setThrottle(undefined);
    await reader.closed;

    const [apiAfter, workerAfter] = await Promise.all([apiMetrics(), scrapeWorker()]);
    expect(sample(apiAfter, 'ferry_jobs', { queue: 'downloads', state: 'completed' })).toBe(sample(apiBefore, 'ferry_jobs', { queue: 'downloads', state: 'completed' }) + 1);
    await waitFor(async () => sample(await apiMetrics(), 'ferry_sse_clients') === 0, 'the SSE client gone');
    expect(sample(apiAfter, 'ferry_http_requests_total', { route: '/api/v1/jenkins/download', status: '202' })).toBeGreaterThanOrEqual(1);
    expect(sample(apiAfter, 'ferry_redis_rtt_seconds')).toBeGreaterThan(0);
    expect(sample(apiAfter, 'ferry_process_resident_memory_bytes')).toBeGreaterThan(0);

    expect(sample(workerAfter, 'ferry_downloaded_bytes_total') - sample(workerBefore, 'ferry_downloaded_bytes_total')).toBeGreaterThanOrEqual(300_004);
    expect(sample(workerAfter, 'ferry_job_duration_seconds_count', { outcome: 'completed' }) - sample(workerBefore, 'ferry_job_duration_seconds_count', { outcome: 'completed' })).toBe(1);
    expect(sample(workerAfter, 'ferry_download_retries_total', { kind: 'http_503' }) - sample(workerBefore, 'ferry_download_retries_total', { kind: 'http_503' })).toBe(1);
    expect(sample(workerAfter, 'ferry_log_lines_total') - sample(workerBefore, 'ferry_log_lines_total')).toBeGreaterThanOrEqual(4);
    expect(sample(workerAfter, 'ferry_active_jobs', { queue: 'downloads' })).toBe(0);
    expect(sample(workerAfter, 'ferry_redis_rtt_seconds')).toBeGreaterThan(0);
  });

  it('counts failed attempts by kind', async () => {
    const url = jenkins.addBuild(['QA_Release_2.2', 'metered-404'], 1, { artifacts: [{ relativePath: 'gone.xml', content: 'x' }] });
    jenkins.setFault('gone.xml', { kind: 'status', status: 404 });
    const before = sample(await scrapeWorker(), 'ferry_download_errors_total', { kind: 'http_404' });
    await fetch(`${system.baseUrl}/api/v1/jenkins/download`, {
      method: 'POST',
      headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' },
      body: JSON.stringify({ job_url: url }),
    });
    await waitFor(async () => sample(await scrapeWorker(), 'ferry_download_errors_total', { kind: 'http_404' }) === before + 1, 'the 404 counted');
    jenkins.setFault('gone.xml', undefined);
  });
});
