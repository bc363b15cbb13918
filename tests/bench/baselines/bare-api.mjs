// Baseline of the submit and cold-start scenarios: the same kind of process as `node dist/api/main.js`
// (Express 5, one ioredis connection made by ferry's own createRedis with the API's options, a BullMQ
// Queue, NODE_ENV=production) whose submit route only parses JSON and calls queue.add with the options
// ferry uses. Whatever ferry's API does on top (validation, dedup, the job index, idempotency, the Redis
// guard) is the difference the bench measures. Its status route answers queue.getJob(id) (one
// HGETALL): the status scenario's reference for what one hash read costs through Express.
// Env: REDIS_URL, PORT, QUEUE_PREFIX; BARE_BORN_PROTOTYPES=1 serves it on ferry's createHttpServer
// (api/http-server.ts) instead of app.listen: the submit scenario's reference for what that server
// alone gains a bare endpoint.
import { createServer } from 'node:http';
import process from 'node:process';
import { Queue } from 'bullmq';
import express from 'express';
import { v7 as uuidv7 } from 'uuid';
import { createHttpServer } from '../../../dist/api/http-server.js';
import { createLogger } from '../../../dist/shared/logger.js';
import { createRedis, waitForRedis } from '../../../dist/shared/redis.js';

const logger = createLogger({ service: 'bare-api', level: 'warn' });
const redis = createRedis(process.env.REDIS_URL ?? '', 'api', logger, 'bare-api');
await waitForRedis(redis, 5_000);
const queue = new Queue('downloads', { connection: redis, prefix: process.env.QUEUE_PREFIX ?? '{bare}' });
queue.on('error', (error) => logger.warn('queue error', { error: error.message }));

const app = express();
app.disable('x-powered-by');
app.get('/readyz', async (_req, res) => {
  await redis.ping();
  res.json({ status: 'ready' });
});
app.get('/api/v1/jenkins/download/:id/status', async (req, res) => {
  const job = await queue.getJob(req.params.id);
  if (!job) {
    res.status(404).json({ error: { code: 'NOT_FOUND' } });
    return;
  }
  res.json({ id: job.id, data: job.data, progress: job.progress, attempts: job.attemptsMade, processed_on: job.processedOn ?? null });
});
app.use(express.json({ limit: '64kb' }));
app.post('/api/v1/jenkins/download', async (req, res) => {
  const jobId = uuidv7();
  await queue.add('download', { ...req.body, release: '6.4', skip_existing: true, artifacts: [], accepted_at: new Date().toISOString() }, {
    jobId,
    attempts: 3,
    backoff: { type: 'exponential', delay: 5_000 },
    removeOnComplete: { age: 86_400 },
    removeOnFail: { age: 86_400 },
  });
  res.status(202).json({ job_id: jobId });
});
const server = process.env.BARE_BORN_PROTOTYPES === '1' ? createHttpServer(app) : createServer(app);
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
const stop = () => {
  server.close();
  void queue.close().finally(() => redis.disconnect());
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
