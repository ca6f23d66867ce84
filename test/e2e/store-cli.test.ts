/**
 * End to end: `--store` on the built `platform-agent` (start and the administrators' commands),
 * against a private real PostgreSQL (test/fixtures/postgres.ts): a bad value or an unreachable
 * database is a clear error naming the option (and never the password), the password may stay out
 * of argv (PGPASSWORD), and two data folders with the same lookup.key are one platform.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasPostgres, usePostgres } from '../fixtures/postgres.js';
import { AGENT, run } from '../fixtures/processes.js';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'store-cli-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const folder = (name: string): string => join(root, name);

/** Runs the CLI to its end; `stdin` piped, then closed. */
function exitOf(
  args: string[],
  env: Record<string, string> = {},
  stdin = '',
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, [AGENT, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin.end(stdin);
  // A command that should have ended but did not (a refusal that never came) is killed, not left behind.
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('--store refusals', () => {
  it.each([
    [['--store', 'mysql://u@h/db'], /--store: expected sqlite or postgres:\/\//],
    [['--store', 'postgres://u@db.example/p?sslmode=require'], /--store: sslmode=require does not verify the database server/],
    [['--store', 'postgres://u@db.example'], /--store: the URL names no database/],
    [['--store-pool-size', '1'], /--store-pool-size: 1 is not valid; expected an integer from 2 to 200/],
    [
      ['--store-statement-timeout-ms', '600001'],
      /--store-statement-timeout-ms: 600001 is not valid; expected an integer from 100 to 600000/,
    ],
    [['--store-ca', '/nonexistent.pem', '--store', 'postgres://u@db.example/p'], /--store-ca: cannot read/],
    [['--store-ca', '/nonexistent.pem'], /--store-ca applies to a postgres:\/\/ --store only/],
    [['--store', 'postgres://u@127.0.0.1/p', '--upstream', 'http://127.0.0.1:1'], /--store belongs to the built-in platform server/],
  ])('platform-agent start %j', async (args, message) => {
    const r = await exitOf(['start', '--listen', '127.0.0.1:0', '--data', folder(`refused-${Math.random()}`), ...args], {
      PLATFORM_AGENT_TOKEN: 'x'.repeat(40),
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
  });
});

describe.skipIf(!hasPostgres)('--store postgres:// with the built CLI', () => {
  const cluster = usePostgres();

  it('names --store, without the password, when the database is unreachable or refuses the login', async () => {
    const password = cluster().password;
    let r = await exitOf([
      'start',
      '--listen',
      '127.0.0.1:0',
      '--data',
      folder('unreachable'),
      '--store',
      `postgres://platform:${password}@127.0.0.1:1/x`,
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /--store postgres:\/\/platform@127\.0\.0\.1:1\/x: cannot use the database \(.*ECONNREFUSED.*\); check the address/,
    );
    expect(r.stderr + r.stdout).not.toContain(password);
    // a password on the command line is readable by every user of the host: said at start
    expect(r.stdout).toContain('store_password_in_argv');
    r = await exitOf(['user', 'list', '--data', folder('bad-login'), '--store', cluster().adminUrl.replace(password, 'not-the-password')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/password authentication failed/);
    expect(r.stderr).not.toContain('not-the-password');
  });

  it('starts on the shared store with the password from PGPASSWORD, and a second data folder with the same lookup.key sees its users', async () => {
    const url = await cluster().createDatabase();
    const bare = url.replace(`:${cluster().password}@`, '@');
    const env = { PGPASSWORD: cluster().password };
    const first = run(AGENT, ['start', '--listen', '127.0.0.1:0', '--data', folder('one'), '--store', bare], env);
    await first.waitFor((l) => l.event === 'platform_listening');
    await first.waitFor((l) => l.event === 'agent_ready');
    expect(first.lines.some((l) => l.event === 'store_migrated')).toBe(true);
    expect(first.lines.some((l) => l.event === 'store_password_in_argv')).toBe(false);
    expect(first.stderr.join('\n')).toMatch(/First administrator created: username "admin"/);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);

    // an administrator's command through the first folder, then a list through a second one sharing the key
    const add = await exitOf(
      ['user', 'add', 'Петров', '--role', 'mobile', '--data', folder('one'), '--store', bare],
      env,
      'petrov-Pa55word-1\n',
    );
    expect(add.code, add.stderr).toBe(0);
    copyFileSync(join(folder('one'), 'lookup.key'), join(root, 'copied.key'));
    const two = folder('two');
    const list = await exitOf(['user', 'list', '--json', '--data', two, '--store', bare], env);
    // without the key the second folder gets a new one, which the database refuses
    expect(list.code).toBe(1);
    expect(list.stderr).toMatch(/lookup.key is not the lookup key this database was used with/);
    rmSync(join(two, 'lookup.key'));
    copyFileSync(join(root, 'copied.key'), join(two, 'lookup.key'));
    const again = await exitOf(['user', 'list', '--json', '--data', two, '--store', bare], env);
    expect(again.code, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { username: string }[]).map((u) => u.username)).toEqual(['admin', 'Петров']);
  });
});
