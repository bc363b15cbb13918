import { defineConfig } from 'vitest/config';

// `npm run test:cluster` and `npm run test:sentinel`: each starts its own real Redis Cluster or
// Sentinel set on loopback ports, and real API and worker processes (not part of `npm test`).
export default defineConfig({
  test: {
    include: ['tests/cluster/**/*.test.ts'],
    environment: 'node',
    fileParallelism: false,
    // Real processes and a real cluster; every wait inside is bounded by waitFor.
    testTimeout: 180_000,
    hookTimeout: 120_000,
  },
});
