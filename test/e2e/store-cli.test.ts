/**
 * End to end: `--store` on the built `platform-agent` (start and the administrators' commands),
 * against a private real PostgreSQL (test/fixtures/postgres.ts): a bad value or an unreachable
 * database is a clear error naming the option (and never the password), the password may stay out
 * of argv (PGPASSWORD), and two data folders with the same lookup.key are one platform.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasPostgres, usePostgres } from '../fixtures/postgres.js';
import { testLogger } from '../fixtures/harness.js';
import { T0, userRecord } from '../fixtures/records.js';
import Database from 'better-sqlite3';
import { nameKey } from '../../platform-agent/server/security/names.js';
import { ManualClock } from '../../shared/clock.js';
import { Accounts } from '../../platform-agent/server/security/accounts.js';
import { AuthService } from '../../platform-agent/server/security/auth.js';
import { Groups } from '../../platform-agent/server/security/groups.js';
import { cloneSettings, defaultSettings, lockoutPolicy } from '../../platform-agent/server/security/settings.js';
import { PgStore } from '../../platform-agent/server/store/pg-store.js';
import { SqliteStore } from '../../platform-agent/server/store/sqlite-store.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };
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

  it('takes the --store URL, password and all, from a --config file, without the warning a password on the command line gets', async () => {
    const config = join(root, 'agent.json');
    writeFileSync(config, JSON.stringify({ store: await cluster().createDatabase(), listen: '127.0.0.1:0', data: folder('from-config') }));
    const agent = run(AGENT, ['start', '--config', config]);
    await agent.waitFor((l) => l.event === 'agent_ready');
    expect(agent.lines.some((l) => l.event === 'store_migrated')).toBe(true);
    expect(agent.lines.some((l) => l.event === 'store_password_in_argv')).toBe(false);
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });

  it('store copy moves a SQLite platform into an empty PostgreSQL database, whole, and refuses a database already in use', async () => {
    const dir = folder('copy-source');
    const sqlite = new SqliteStore(dir);
    const clock = new ManualClock(T0);
    const accounts = new Accounts(sqlite, clock, FAST_SCRYPT);
    await new Groups(sqlite, clock).create({ name: 'Операторы ТСД', role: 'mobile', operations: ['api.read'] });
    await accounts.create({
      username: 'Иванов',
      password: 'ivanov-Pa55word-1',
      role: 'mobile',
      group: 'Операторы ТСД',
      barcode: '4600000000017',
    });
    await accounts.create({ username: 'root', password: 'root-Pa55word-1', role: 'admin' });
    const policy = lockoutPolicy(cloneSettings(defaultSettings));
    for (let i = 0; i < policy.deviceFailures; i++) await sqlite.recordLoginFailure('scanner-7', 'Иванов', T0 + i, policy, true);
    await sqlite.saveSettings(
      { ...cloneSettings(defaultSettings), ip_login_attempts_per_minute: 42 },
      { invalidateTokens: true, recalculateLocks: null, now: T0 },
    );
    // a login makes the signing key and a refresh-token family
    const rootPair = await new AuthService(sqlite, clock, () => {}, FAST_SCRYPT).login({
      username: 'root',
      password: 'root-Pa55word-1',
      deviceId: 'pc-1',
      ip: '127.0.0.1',
      ipDecision: 'whitelisted',
      audience: 'admin',
    });
    const before = {
      users: await sqlite.listUsers(),
      groups: await sqlite.listGroups(),
      settings: await sqlite.getSettings(),
      key: await sqlite.getSigningKey(),
      devices: await sqlite.listDevices(),
      lock: await sqlite.deviceLockedUntil('scanner-7', 'Иванов', T0 + 10),
    };
    await sqlite.close();

    const url = await cluster().createDatabase();
    const copy = await exitOf(['store', 'copy', '--data', dir, '--store', url]);
    expect(copy.code, copy.stderr).toBe(0);
    expect(copy.stdout).toMatch(/users: 2/);
    expect(copy.stdout).toMatch(/device_users: 2/);
    expect(copy.stdout).toMatch(/refresh_families: 1/);
    expect(copy.stdout + copy.stderr).not.toContain(cluster().password);

    const pgStore = await PgStore.open({ url, lookupKeyFile: join(dir, 'lookup.key'), logger: testLogger() });
    try {
      expect(await pgStore.listUsers()).toEqual(before.users);
      expect(await pgStore.listGroups()).toEqual(before.groups);
      expect(await pgStore.getSettings()).toEqual(before.settings);
      expect(await pgStore.getSigningKey()).toEqual(before.key);
      expect(await pgStore.listDevices()).toEqual(before.devices);
      expect(await pgStore.deviceLockedUntil('scanner-7', 'Иванов', T0 + 10)).toBe(before.lock);
      // the tokens, the passwords and the barcode work there, with the data folder's lookup key
      const auth = new AuthService(pgStore, clock, () => {}, FAST_SCRYPT);
      expect((await auth.authenticate(rootPair.access_token, 'admin')).sub).toBe('root');
      await pgStore.saveSettings(
        { ...before.settings.settings, device_login: { password_only: false, barcode: true } },
        { invalidateTokens: false, recalculateLocks: null, now: T0 },
      );
      const pair = await auth.login({
        username: '',
        password: '4600000000017',
        method: 'barcode',
        deviceId: 'scanner-8',
        ip: '127.0.0.1',
        ipDecision: 'whitelisted',
        audience: 'api',
      });
      expect(pair.access_token).toBeTruthy();
    } finally {
      await pgStore.close();
    }
    const again = await exitOf(['store', 'copy', '--data', dir, '--store', url]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already holds users: copy only into a database no platform has used/);
    const toSqlite = await exitOf(['store', 'copy', '--data', dir]);
    expect(toSqlite.code).toBe(1);
    expect(toSqlite.stderr).toMatch(/--store: give the postgres:\/\/… database/);
  });

  it('store copy refuses a platform whose names differ only in case (from before names were unique that way), naming them', async () => {
    const dir = folder('copy-ambiguous');
    const sqlite = new SqliteStore(dir);
    await sqlite.createUser(userRecord({ username: 'alice' }));
    await sqlite.close();
    const db = new Database(join(dir, 'platform.db'));
    db.prepare("INSERT INTO users (username, password_hash, role, created_at, name_key) VALUES ('ALICE', 'x', 'mobile', 0, ?)").run(
      nameKey('alice'),
    );
    db.close();
    const r = await exitOf(['store', 'copy', '--data', dir, '--store', await cluster().createDatabase()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/names that differ only in case must be resolved first .*: ALICE \/ alice/);
  });
});
