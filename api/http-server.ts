import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';

type ExpressPrototypes = { request: IncomingMessage; response: ServerResponse };

/**
 * The API's HTTP server: what `app.listen` makes (`http.createServer(app)`), except that each
 * request and response object is born with Express's prototype (`app.request`, `app.response`)
 * instead of getting it afterwards. Express gives every request and response its prototype with
 * Object.setPrototypeOf in app.handle (and api/plain-route.ts does the same); on an object made
 * with another prototype that is a map change in V8 that also makes each property added next
 * (req.baseUrl, req.params, res.locals...) slow: a profile of the submit route put ~14 µs per
 * request on those few lines. With the prototype already in place, both calls change nothing.
 * Node documents the `IncomingMessage` and `ServerResponse` options for exactly this (classes
 * extending its own); these constructors run Node's own ones on the new object.
 */
export function createHttpServer(app: Express): http.Server {
  const { request, response } = app as unknown as ExpressPrototypes;
  // Node 20's constructors are plain functions, run here on the new object. Should a later Node make
  // them classes (which cannot be called so), this serves as app.listen does: same answers, slower.
  // (Reflect.construct with these functions as new.target would work for both, but its objects were
  // as slow as re-prototyped ones: submit scenario 2,542 req/s, then 4,519 with call, one run each.)
  if (isClass(http.IncomingMessage) || isClass(http.ServerResponse)) return http.createServer(app);
  const incoming = http.IncomingMessage as unknown as (this: IncomingMessage, socket: Socket) => void;
  const outgoing = http.ServerResponse as unknown as (this: ServerResponse, ...args: unknown[]) => void;
  function ExpressRequest(this: IncomingMessage, socket: Socket): void {
    incoming.call(this, socket);
  }
  function ExpressResponse(this: ServerResponse, ...args: unknown[]): void {
    outgoing.apply(this, args);
  }
  ExpressRequest.prototype = request;
  ExpressResponse.prototype = response;
  return http.createServer(
    {
      IncomingMessage: ExpressRequest as unknown as typeof http.IncomingMessage,
      ServerResponse: ExpressResponse as unknown as typeof http.ServerResponse,
    },
    app,
  );
}

/** True for a `class` (which only `new` may run). */
export function isClass(fn: unknown): boolean {
  return typeof fn === 'function' && /^class\b/.test(Function.prototype.toString.call(fn));
}
