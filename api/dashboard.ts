import type { Queue } from 'bullmq';
import type { RequestHandler, Router } from 'express';
import { ForbiddenError } from '../shared/errors.js';

export const DASHBOARD_PATH = '/admin/queues';

export interface DashboardOptions {
  /** DASHBOARD_READ_ONLY: operators see the queues but cannot retry, remove or clean. */
  readonly readOnly?: boolean;
}

/**
 * Bull Board over ferry's queues (downloads, batches): operators see, retry and remove BullMQ jobs.
 * Bull Board's packages are loaded on the first dashboard request, not at start: they are a fifth
 * of the API's module loading (measured with the cold-start bench), and /readyz need not wait for them.
 */
export function createDashboardRouter(queues: Queue[], options: DashboardOptions = {}): RequestHandler {
  const load = async (): Promise<Router> => {
    const [{ createBullBoard }, { BullMQAdapter }, { ExpressAdapter }] = await Promise.all([
      import('@bull-board/api'),
      import('@bull-board/api/bullMQAdapter'),
      import('@bull-board/express'),
    ]);
    const serverAdapter = new ExpressAdapter();
    serverAdapter.setBasePath(DASHBOARD_PATH);
    createBullBoard({
      queues: queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode: options.readOnly ?? false })),
      serverAdapter,
      options: { uiConfig: { boardTitle: 'ferry' } },
    });
    return serverAdapter.getRouter() as Router;
  };
  let board: Promise<Router> | undefined;
  return (req, res, next) => {
    board ??= load();
    board
      .then(
        (router) => router(req, res, next),
        (error: unknown) => {
          // Not remembered: the next request tries again.
          board = undefined;
          throw error;
        },
      )
      .catch(next);
  };
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Cross-site request protection for the dashboard's write actions. A browser logged in with HTTP
 * Basic sends the credentials on any request to this origin, even one a hostile page starts; it
 * also says where a request comes from (`Origin`, `Sec-Fetch-Site`). A write whose origin is not
 * this server's is refused. Clients that are not browsers send neither header and are not at risk.
 */
export const sameOriginWrites: RequestHandler = (req, _res, next) => {
  if (SAFE_METHODS.has(req.method)) {
    next();
    return;
  }
  const site = req.get('sec-fetch-site');
  const origin = req.get('origin');
  const host = req.get('host');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    throw new ForbiddenError(`Cross-site dashboard action refused (Sec-Fetch-Site: ${site})`);
  }
  if (origin !== undefined) {
    let sameHost = false;
    try {
      sameHost = new URL(origin).host === host;
    } catch {
      sameHost = false;
    }
    if (!sameHost) throw new ForbiddenError('Cross-site dashboard action refused (Origin is not this server)');
  }
  next();
};
