import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/bench/**', 'test/load/**', 'node_modules/**', 'dist/**'],
    globalSetup: ['test/fixtures/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // two cores: keep heavy suites from starving each other
    maxWorkers: 2,
    minWorkers: 1,
    // `vitest run --coverage` (what `npm test` runs). Only code run in the test processes is
    // measured: the suites that start the built relay or agent (dist/, in child processes) add
    // nothing here, so the floor is of what the in-process tests reach.
    coverage: {
      provider: 'v8',
      include: ['relay/**/*.ts', 'platform-agent/**/*.ts', 'shared/**/*.ts'],
      exclude: ['**/*.test.ts', 'test/**', 'dist/**'],
      reporter: ['text-summary', 'json-summary'],
      reportsDirectory: 'coverage',
      // the floor: today's figures with every suite running, the browser ones included (CI
      // installs chromium), rounded down to the whole percent (2026-12-03, after the issue-13
      // restructuring: statements and lines 86.62%, branches 91.06%, functions 95.63%). Without
      // chromium the console tests skip and the figures fall under the floor. Raise it as tests
      // are added.
      thresholds: { statements: 86, branches: 91, functions: 95, lines: 86 },
    },
  },
});
