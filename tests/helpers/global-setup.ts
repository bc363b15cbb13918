import { existsSync } from 'node:fs';
import type { TestProject } from 'vitest/node';
import { startRedisServer } from './redis-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

/** One private redis-server for the integration files (they run one at a time). */
export default async function setup(project: TestProject) {
  if (!existsSync(new URL('../../dist/api/main.js', import.meta.url))) {
    throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
  }
  const server = await startRedisServer();
  project.provide('redisUrl', server.url);
  return async () => {
    await server.stop();
  };
}
