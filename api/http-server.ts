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
  // Reflect.construct runs Node's own constructor (a plain function in Node 20, a class or not in
  // later versions) on a new object whose prototype is this function's `prototype`.
  function ExpressRequest(socket: Socket): IncomingMessage {
    return Reflect.construct(http.IncomingMessage, [socket], ExpressRequest) as IncomingMessage;
  }
  function ExpressResponse(...args: unknown[]): ServerResponse {
    return Reflect.construct(http.ServerResponse, args, ExpressResponse) as ServerResponse;
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
