import type { RequestHandler, Response } from 'express';
import { ShuttingDownError } from '../shared/errors.js';

/** Paths a stopping server still answers itself: liveness, and readiness saying it is stopping. */
const HEALTH_PATHS = new Set(['/healthz', '/readyz']);

/**
 * The API's side of a graceful stop. Once draining: /readyz answers 503 (so load balancers stop
 * sending traffic), new requests get 503 SHUTTING_DOWN with `Connection: close`, long-lived streams
 * (SSE) are told to leave and reconnect elsewhere, and requests already in flight run to their end.
 */
export interface Drain {
  readonly draining: boolean;
  /** Requests being answered now (SSE streams included until they end). */
  readonly inFlight: number;
  /** Starts draining. Idempotent. */
  start(): void;
  /**
   * Calls `listener` once when draining starts, or at once when it already has (a stream that
   * opens during the drain ends at once). Returns the function that removes it.
   */
  onDrain(listener: () => void): () => void;
  /** Resolves true once no request is in flight, or false after `timeoutMs`. */
  idle(timeoutMs: number): Promise<boolean>;
  /** First middleware of the app: counts requests and turns new ones away while draining. */
  readonly middleware: RequestHandler;
}

export function createDrain(): Drain {
  let draining = false;
  const listeners = new Set<() => void>();
  const open = new Set<Response>();
  const idleWaiters = new Set<() => void>();

  const settleIdle = () => {
    if (open.size > 0) return;
    for (const resolve of idleWaiters) resolve();
    idleWaiters.clear();
  };

  return {
    get draining() {
      return draining;
    },
    get inFlight() {
      return open.size;
    },
    start() {
      if (draining) return;
      draining = true;
      // Answers still to be written close their connection after they are sent.
      for (const res of open) if (!res.headersSent) res.setHeader('connection', 'close');
      for (const listener of [...listeners]) listener();
      listeners.clear();
    },
    onDrain(listener) {
      if (draining) {
        listener();
        return () => undefined;
      }
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    idle(timeoutMs) {
      if (open.size === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          resolve(true);
        };
        const timer = setTimeout(() => {
          idleWaiters.delete(done);
          resolve(false);
        }, timeoutMs);
        idleWaiters.add(done);
      });
    },
    middleware(req, res, next) {
      if (draining && !HEALTH_PATHS.has(req.path)) {
        next(new ShuttingDownError());
        return;
      }
      if (draining) res.setHeader('connection', 'close');
      open.add(res);
      res.once('close', () => {
        open.delete(res);
        settleIdle();
      });
      next();
    },
  };
}
