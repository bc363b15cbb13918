import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BatchAnswerSchema,
  CancelAnswerSchema,
  ListAnswerSchema,
  LogsAnswerSchema,
  StatusViewSchema,
  StreamTokenAnswerSchema,
  SubmitAnswerSchema,
} from '../../api/openapi.js';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startSystem, type TestSystem } from '../helpers/system.js';
import { waitFor } from '../helpers/wait-for.js';

const TOKEN = 'openapi-admin-token-0123456789';

interface Layer {
  route?: { path: string | string[]; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
}

/** Every `METHOD /path` the Express app routes (its own and its routers', mounted at /), as OpenAPI paths. */
function servedRoutes(stack: Layer[]): Set<string> {
  const routes = new Set<string>();
  for (const layer of stack) {
    if (layer.route) {
      for (const path of [layer.route.path].flat()) {
        for (const method of Object.keys(layer.route.methods)) routes.add(`${method.toUpperCase()} ${path.replaceAll(/:(\w+)/g, '{$1}')}`);
      }
    } else if (layer.handle?.stack) {
      for (const route of servedRoutes(layer.handle.stack)) routes.add(route);
    }
  }
  return routes;
}

describe('GET /api/v1/openapi.json: OpenAPI 3.1 generated from the validating schemas', () => {
  let jenkins: FakeJenkins;
  let system: TestSystem;
  let document: {
    openapi: string;
    paths: Record<string, Record<string, { requestBody?: { content: Record<string, { examples?: Record<string, { value: unknown }> }> } }>>;
  };
  const auth = { authorization: `Bearer ${TOKEN}` };

  beforeAll(async () => {
    jenkins = await startFakeJenkins();
    system = await startSystem(jenkins.url, { API_TOKENS: `admin:ops:${TOKEN}`, TOKEN_SECRET: 'openapi-secret-0123456789abcdef0123456' });
    await system.startWorker();
    const response = await fetch(`${system.baseUrl}/api/v1/openapi.json`);
    expect(response.status).toBe(200);
    document = (await response.json()) as typeof document;
  });

  afterAll(async () => {
    await system?.stop();
    await jenkins?.close();
  });

  it('is open, OpenAPI 3.1, and lists every route the app serves (and no route it does not)', () => {
    expect(document.openapi).toBe('3.1.0');
    const documented = new Set(Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`)));
    const served = servedRoutes((system.api.app as unknown as { router: { stack: Layer[] } }).router.stack);
    expect(served.size).toBeGreaterThan(10);
    // The web page's own files (index.html, its script and styles) are documented as the page at /.
    for (const route of served) {
      if (/^GET \/[\w.-]+\.(html|js|css|svg|ico)$/.test(route)) continue;
      expect(documented, `${route} is served but not documented`).toContain(route);
    }
    // The dashboard is Bull Board's own router; the page at / is static files.
    for (const route of documented) {
      if (route === 'GET /admin/queues' || route === 'GET /') continue;
      expect(served, `${route} is documented but not served`).toContain(route);
    }
  });

  it('its example requests are accepted, and real answers match its response schemas', async () => {
    const post = async (path: string, body: unknown) => {
      const response = await fetch(`${system.baseUrl}${path}`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: response.status, body: (await response.json()) as unknown };
    };
    const submitExample = document.paths['/api/v1/jenkins/download']?.post?.requestBody?.content['application/json']?.examples?.tracker?.value;
    const batchExample = document.paths['/api/v1/jenkins/download-selected']?.post?.requestBody?.content['application/json']?.examples?.tracker?.value;
    expect(submitExample).toBeDefined();
    expect(batchExample).toBeDefined();

    // The example names a build this fake Jenkins has.
    jenkins.addBuild(['QA_Release_6.4', 'main-regression'], 216, { artifacts: [{ relativePath: 'hapy/reports/junit/a.xml', content: '<a/>' }] });
    const submitted = await post('/api/v1/jenkins/download', submitExample);
    expect(submitted.status).toBe(202);
    const answer = SubmitAnswerSchema.parse(submitted.body);
    const batch = await post('/api/v1/jenkins/download-selected', batchExample);
    expect(batch.status).toBe(202);
    BatchAnswerSchema.parse(batch.body);

    const get = async (path: string) => (await (await fetch(`${system.baseUrl}${path}`, { headers: auth })).json()) as unknown;
    const status = await waitFor(async () => {
      const view = StatusViewSchema.parse(await get(answer.status_url));
      return view.status === 'completed' ? view : null;
    }, 'the example job to complete');
    expect(status.files?.length).toBe(1);
    const batchId = (batch.body as { job_id: string }).job_id;
    await waitFor(async () => StatusViewSchema.parse(await get(`/api/v1/jenkins/download/${batchId}/status`)).status !== 'pending', 'the batch to start');
    ListAnswerSchema.parse(await get('/api/v1/jenkins/downloads'));
    LogsAnswerSchema.parse(await get(`/api/v1/jenkins/download/${answer.job_id}/logs`));
    StreamTokenAnswerSchema.parse((await post(`/api/v1/jenkins/download/${answer.job_id}/stream-token`, {})).body);
    const cancelled = await post(`/api/v1/jenkins/download/${answer.job_id}/cancel`, {});
    expect(cancelled.status).toBe(409);
    const other = await post('/api/v1/jenkins/download', { ...(submitExample as object), release: 'other' });
    const cancel = await post(`/api/v1/jenkins/download/${(other.body as { job_id: string }).job_id}/cancel`, {});
    if (cancel.status !== 409) CancelAnswerSchema.parse(cancel.body);
  });
});
