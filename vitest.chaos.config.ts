import { defineConfig } from 'vitest/config';

// `npm run chaos`: the full chaos run (not part of `npm test`; it starts its own Redis and fleet).
export default defineConfig({
  test: {
    include: ['tests/chaos/**/*.test.ts'],
    environment: 'node',
    testTimeout: 900_000,
    hookTimeout: 60_000,
  },
});
