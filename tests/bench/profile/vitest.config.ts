import { defineConfig } from 'vitest/config';

// The profiling tools of this folder that need the test helpers (TypeScript): run one with
// `npx vitest run --config tests/bench/profile/vitest.config.ts [name]`. Not part of npm test or npm run bench.
export default defineConfig({
  test: {
    root: new URL('../../..', import.meta.url).pathname,
    include: ['tests/bench/profile/*.tool.ts'],
    environment: 'node',
    fileParallelism: false,
    disableConsoleIntercept: true,
    testTimeout: 1_800_000,
  },
});
