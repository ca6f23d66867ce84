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
      // installs chromium), rounded down to the whole percent (2026-12-03: statements and lines
      // 85.18%, branches 90.61%, functions 96.2%). Without chromium the console tests skip and
      // the figures fall to ~77/89/88/77, under the floor. Raise it as tests are added.
      thresholds: { statements: 85, branches: 90, functions: 96, lines: 85 },
    },
  },
});
