import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        test: {
          name: 'integration',
          include: ['tests/integration/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['tests/helpers/global-setup.ts'],
          // The files share one Redis server and start real processes: run them one at a time.
          fileParallelism: false,
          // Real processes and real transfers: a test waits for jobs to finish (bounded by waitFor).
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
