import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpServer, isClass } from '../../api/http-server.js';

/** Listens on a free loopback port; returns the base URL. */
async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('createHttpServer: requests and responses born with Express prototypes', () => {
  it('tells classes from plain constructor functions (the fallback for a Node whose http constructors are classes)', () => {
    expect(isClass(class A {})).toBe(true);
    expect(isClass(class extends Error {})).toBe(true);
    expect(isClass(function Plain() {})).toBe(false);
    expect(isClass(() => undefined)).toBe(false);
    expect(isClass({})).toBe(false);
  });

  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
  });

  /** An app with a JSON route, an error, a streamed body and a mounted sub-app, on `make`'s server. */
  async function start(make: (app: express.Express) => Server) {
    const app = express();
    const born: Array<{ req: boolean; res: boolean }> = [];
    app.post('/echo/:id', express.json(), (req, res) => {
      res.status(201).set('X-Test', 'yes').json({ id: req.params.id, body: req.body as unknown, is: req.is('application/json'), host: req.hostname });
    });
    app.get('/fail', () => {
      throw new Error('boom');
    });
    app.get('/stream', (_req, res) => {
      res.type('text/plain');
      res.write('a');
      setTimeout(() => res.end('b'), 5);
    });
    const sub = express();
    sub.get('/inner', (req, res) => {
      res.json({ baseUrl: req.baseUrl, sub: Object.getPrototypeOf(req) === sub.request });
    });
    app.use('/sub', sub);
    const server = make(app);
    servers.push(server);
    // Runs before Express sees the request: the prototypes the objects were made with.
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
      born.push({ req: Object.getPrototypeOf(req) === app.request, res: Object.getPrototypeOf(res) === app.response });
    });
    return { url: await listen(server), born };
  }

  it('serves exactly what app.listen serves, with each request and response made with the app prototypes', async () => {
    const ours = await start((app) => createHttpServer(app));
    // What app.listen makes.
    const plain = await start((app) => createServer(app));
    const exchange = async (base: string) => {
      const post = await fetch(`${base}/echo/42`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: [1, 'x'] }) });
      const fail = await fetch(`${base}/fail`);
      const stream = await fetch(`${base}/stream`);
      const sub = await fetch(`${base}/sub/inner`);
      const head = await fetch(`${base}/sub/inner`, { method: 'HEAD' });
      return {
        head: { status: head.status, type: head.headers.get('content-type'), length: head.headers.get('content-length'), body: await head.text() },
        post: { status: post.status, header: post.headers.get('x-test'), type: post.headers.get('content-type'), body: (await post.json()) as unknown },
        fail: { status: fail.status },
        stream: { status: stream.status, body: await stream.text() },
        sub: (await sub.json()) as unknown,
      };
    };
    const a = await exchange(ours.url);
    const b = await exchange(plain.url);
    expect(a).toEqual(b);
    expect(a.post).toEqual({ status: 201, header: 'yes', type: 'application/json; charset=utf-8', body: { id: '42', body: { a: [1, 'x'] }, is: 'application/json', host: '127.0.0.1' } });
    expect(a.stream.body).toBe('ab');
    // A mounted app still gets its own prototype while it runs.
    expect(a.sub).toEqual({ baseUrl: '/sub', sub: true });
    expect(a.head).toMatchObject({ status: 200, type: 'application/json; charset=utf-8', body: '' });
    expect(ours.born).toHaveLength(5);
    expect(plain.born).toHaveLength(5);
    expect(ours.born.every((x) => x.req && x.res)).toBe(true);
    // app.listen's server makes plain Node objects that Express re-prototypes afterwards.
    expect(plain.born.every((x) => !x.req && !x.res)).toBe(true);
  });
});
