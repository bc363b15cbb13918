import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import type { Router } from 'express';

export const DASHBOARD_PATH = '/admin/queues';

/** Bull Board over the download queue: operators see, retry and remove BullMQ jobs. */
export function createDashboardRouter(queue: Queue): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: [new BullMQAdapter(queue)],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'ferry' } },
  });
  return serverAdapter.getRouter() as Router;
}
