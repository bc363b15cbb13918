import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ErrorRequestHandler, Express, Request, RequestHandler, Response } from 'express';

/**
 * A hot route answered without Express's router: the app's common middleware and the route's own
 * handlers, the very same functions the router runs for it, called in the same order on the same
 * Express request and response objects, but without walking the app's stack of layers, matching
 * each one's path, mounting and unmounting routers, and building a final handler for every
 * request. The answer (status, body, headers, log lines, metrics) is the one the router would give.
 */
export interface PlainRoute {
  /** The route's path pattern as the router has it (metrics label it so). */
  readonly path: string;
  /**
   * A pure test of the raw request: the route parameters when this route answers it, else null and
   * the router answers as usual. Only a request the router would give to this route may match.
   */
  match(req: IncomingMessage): Record<string, string> | null;
  /** Router-level middleware that runs before the route is matched (e.g. `router.use(BASE, identify)`). */
  readonly before: readonly RequestHandler[];
  /** The route's handlers, as in `router.get(path, ...handlers)`. */
  readonly handlers: readonly RequestHandler[];
}

export interface PlainRoutesOptions {
  readonly app: Express;
  readonly routes: readonly PlainRoute[];
  /** The app's middleware in front of its routers, in order (what every request goes through). */
  readonly common: readonly RequestHandler[];
  /** The app's error handler. */
  readonly errorHandler: ErrorRequestHandler;
}

const isThenable = (value: unknown): value is PromiseLike<unknown> =>
  value !== null && typeof value === 'object' && typeof (value as PromiseLike<unknown>).then === 'function';

type Handle = (req: IncomingMessage, res: ServerResponse, callback?: (error?: unknown) => void) => void;
type ExpressInternals = { handle: Handle; request: object; response: object };

/**
 * Puts `routes` in front of the app: a request one of them matches is answered by that route's
 * chain; any other goes to Express. Only top-level requests (the app used as the server's
 * listener, as app.listen does); an app mounted in another app goes through Express entirely.
 */
export function installPlainRoutes({ app, routes, common, errorHandler }: PlainRoutesOptions): void {
  const internals = app as unknown as ExpressInternals;
  const expressHandle = internals.handle.bind(app);

  // Each route's chain is fixed: built once here, not per request.
  const compiled = routes.map((route) => ({
    route,
    chain: [...common, ...route.before, ...route.handlers],
    routeStart: common.length + route.before.length,
  }));

  const run = (raw: IncomingMessage, rawRes: ServerResponse, { route, chain, routeStart }: (typeof compiled)[number], params: Record<string, string>) => {
    // What Express's app.handle does before its router runs.
    const req = raw as unknown as Request & { res: Response; route?: { path: string } };
    const res = rawRes as unknown as Response & { req: Request };
    req.res = res;
    res.req = req;
    Object.setPrototypeOf(req, internals.request);
    Object.setPrototypeOf(res, internals.response);
    res.locals = Object.create(null) as Response['locals'];
    // What the router sets: the mount point ('/' gives ''), then the route's parameters.
    req.baseUrl = '';
    req.originalUrl = req.url;
    req.params = {};
    let index = 0;
    let failed = false;
    const fail = (error: unknown) => {
      if (failed) return;
      failed = true;
      // Express catches what its error handler throws; here a throw (or rejection) would escape.
      const giveUp = () => {
        if (!res.headersSent) res.statusCode = 500;
        res.destroy();
      };
      try {
        const result: unknown = errorHandler(error, req, res, () => undefined);
        if (isThenable(result)) result.then(undefined, giveUp);
      } catch {
        giveUp();
      }
    };
    const next = (error?: unknown): void => {
      // As the router does: any truthy value is an error (the routes here never pass 'route').
      if (error) {
        fail(error);
        return;
      }
      const handler = chain[index];
      if (!handler) {
        // A route that calls next() with nothing after it: the router would go on to its 404.
        fail(new Error(`plain route ${route.path} passed the request on`));
        return;
      }
      if (index === routeStart) {
        req.route = { path: route.path };
        req.params = params;
      }
      index += 1;
      try {
        const result: unknown = handler(req, res, next);
        // As Express 5 does: a returned promise that rejects is the handler failing.
        if (isThenable(result)) result.then(undefined, (error_: unknown) => fail(error_ ? error_ : new Error('Rejected promise')));
      } catch (error_) {
        fail(error_);
      }
    };
    next();
  };

  internals.handle = (req, res, callback) => {
    if (callback === undefined) {
      for (const entry of compiled) {
        const params = entry.route.match(req);
        if (params) {
          run(req, res, entry, params);
          return;
        }
      }
    }
    expressHandle(req, res, callback);
  };
}
