import { defineConfig } from 'vitest/config';

/**
 * The load tests (test/load/): ten thousand connections and more, with real processes. One file
 * at a time, alone on the machine: `npm test` runs them after the other suites, `npm run
 * test:load` runs them alone.
 */
export default defineConfig({
  test: {
    include: ['test/load/**/*.test.ts'],
    globalSetup: ['test/fixtures/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: false,
    maxWorkers: 1,
    minWorkers: 1,
  },
});
