import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'certs/**', 'data/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        performance: 'readonly',
        URL: 'readonly',
        NodeJS: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  // Which room may import which (each folder's README says why). Cycles: `npm run check:cycles`.
  ...importRules([
    ['shared/**/*.ts', ['**/relay/**', '**/platform-agent/**'], 'shared/ is used by both processes and imports neither'],
    ['relay/**/*.ts', ['**/platform-agent/**'], 'the relay never imports the platform agent'],
    ['platform-agent/**/*.ts', ['**/relay/**'], 'the platform agent never imports the relay'],
    [
      'platform-agent/agent/**/*.ts',
      ['**/relay/**', '**/server/**', '!**/server/relay-control.js', '!**/server/relay-settings.js', '../cli.js', '../demo.js'],
      'the agent takes the platform server only through its ports (server/relay-control.ts, server/relay-settings.ts) and a StreamTarget',
    ],
    [
      'platform-agent/server/**/*.ts',
      ['**/relay/**', '**/agent/**', '../cli.js', '../demo.js'],
      'the platform server knows nothing of the tunnel: take what it needs through a port (server/relay-control.ts)',
    ],
  ]),
);

/**
 * One ESLint block per rule: files matching `files` may not import `group`. A later block replaces
 * an earlier one's list for the files both match (ESLint does not merge rule options), so a
 * narrower block repeats the wider one's patterns.
 */
function importRules(rules) {
  return rules.map(([files, group, message]) => ({
    files: [files],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group, message }] }] },
  }));
}
