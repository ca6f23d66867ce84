/**
 * End to end: the built `platform-agent user|group|device|settings …` commands as child processes on a
 * temp data folder, checked against the store opened in this process. `npm test` builds first, so
 * dist/ is current.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyPassword } from '../../platform-agent/server/security/passwords.js';
import { lockoutPolicy } from '../../platform-agent/server/security/settings.js';
import { SqliteStore } from '../../platform-agent/server/store/sqlite-store.js';
import { AGENT } from '../fixtures/processes.js';

const ADMIN_PASSWORD = 'first-admin-Pa55word';
const ALICE_PASSWORD = 'alice-Pa55word-one';
const ALICE_NEW_PASSWORD = 'alice-Pa55word-two';
/** Every password given on stdin: no output of any run may contain one. */
const SECRETS = [ADMIN_PASSWORD, ALICE_PASSWORD, ALICE_NEW_PASSWORD];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

let dataDir: string;

/** Runs the CLI on the test's data folder; `stdin` is piped (not a terminal) and then closed. */
function cli(args: string[], stdin = ''): Promise<Result> {
  const child = spawn(process.execPath, [AGENT, ...args, '--data', dataDir], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.stdin.end(stdin);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      for (const secret of SECRETS) expect(stdout + stderr, `a password was printed by: ${args.join(' ')}`).not.toContain(secret);
      resolve({ code, stdout, stderr });
    });
  });
}

async function cliJson<T = Record<string, unknown>>(args: string[], stdin?: string): Promise<T> {
  const r = await cli([...args, '--json'], stdin);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as T;
}

async function withStore<T>(fn: (store: SqliteStore) => Promise<T>): Promise<T> {
  const store = new SqliteStore(dataDir);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

beforeAll(() => {
  if (!existsSync(join(process.cwd(), 'dist/platform-agent/server/admin-cli.js')))
    throw new Error('dist/ has no admin-cli.js: run `npm run build` first (`npm test` does)');
  dataDir = mkdtempSync(join(tmpdir(), 'platform-admin-cli-'));
});

afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('platform-agent user …', () => {
  it('adds a user with the password from the first line of stdin, stored as a hash that verifies it', async () => {
    const view = await cliJson(['user', 'add', 'root-admin', '--role', 'admin'], `${ADMIN_PASSWORD}\nignored second line\n`);
    expect(view).toMatchObject({ username: 'root-admin', role: 'admin', locked_for_security_reasons: false, status: 'Active' });

    await withStore(async (store) => {
      const hash = (await store.getUser('root-admin'))!.passwordHash;
      expect(hash).not.toContain(ADMIN_PASSWORD);
      expect(await verifyPassword(ADMIN_PASSWORD, hash)).toBe(true);
      expect(await verifyPassword('ignored second line', hash)).toBe(false);
    });
  });

  it('lists users as a table and as JSON, and shows one', async () => {
    await cliJson(['user', 'add', 'alice', '--role', 'mobile', '--valid-until', '2099-12-31'], `${ALICE_PASSWORD}\r\n`);

    const list = await cliJson<{ username: string; role: string; status: string }[]>(['user', 'list']);
    expect(list.map((u) => [u.username, u.role, u.status])).toEqual([
      ['alice', 'mobile', 'Active'],
      ['root-admin', 'admin', 'Active'],
    ]);
    const table = await cli(['user', 'list']);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^USERNAME\s+ROLE\s+GROUP\s+STATUS$/);
    expect(table.stdout).toMatch(/^alice\s+mobile\s+-\s+Active$/m);

    const alice = await cliJson(['user', 'show', 'alice']);
    expect(alice).toMatchObject({ username: 'alice', account_valid_from: null, account_valid_until: '2099-12-31T00:00:00.000Z' });
    await withStore(async (store) => expect(await verifyPassword(ALICE_PASSWORD, (await store.getUser('alice'))!.passwordHash)).toBe(true));
  });

  it('sets role, validity period and a new password read from stdin', async () => {
    const changed = await cliJson([
      'user',
      'set',
      'alice',
      '--role',
      'external',
      '--valid-from',
      '2026-01-01',
      '--valid-until',
      '2099-06-30T12:00:00Z',
    ]);
    expect(changed).toMatchObject({
      role: 'external',
      account_valid_from: '2026-01-01T00:00:00.000Z',
      account_valid_until: '2099-06-30T12:00:00.000Z',
    });

    const cleared = await cliJson(['user', 'set', 'alice', '--valid-from', 'none', '--valid-until', 'none']);
    expect(cleared).toMatchObject({ role: 'external', account_valid_from: null, account_valid_until: null });

    await cliJson(['user', 'set', 'alice', '--password'], `${ALICE_NEW_PASSWORD}\n`);
    await withStore(async (store) => {
      const hash = (await store.getUser('alice'))!.passwordHash;
      expect(await verifyPassword(ALICE_NEW_PASSWORD, hash)).toBe(true);
      expect(await verifyPassword(ALICE_PASSWORD, hash)).toBe(false);
    });
  });

  it('locks a user until an administrator unlocks it', async () => {
    const locked = await cliJson(['user', 'lock', 'alice']);
    expect(locked).toMatchObject({
      locked_for_security_reasons: true,
      locked_until: null,
      status: 'Locked until an administrator unlocks it',
    });
    expect((await cliJson(['user', 'show', 'alice'])).locked_for_security_reasons).toBe(true);

    const unlocked = await cliJson(['user', 'unlock', 'alice']);
    expect(unlocked).toMatchObject({ locked_for_security_reasons: false, status: 'Active' });
  });

  it('refuses a password on the command line: there is no such option', async () => {
    const onAdd = await cli(['user', 'add', 'bob', '--role', 'mobile', '--password', 'argv-Pa55word']);
    expect(onAdd.code).toBe(2);
    expect(onAdd.stderr).toMatch(/Unknown argument.*password/);

    const onSet = await cli(['user', 'set', 'alice', '--password=argv-Pa55word']);
    expect(onSet.code).toBe(2);
    expect(onSet.stderr).toContain('password');

    expect((await cliJson<{ username: string }[]>(['user', 'list'])).map((u) => u.username)).toEqual(['alice', 'root-admin']);
    await withStore(async (store) =>
      expect(await verifyPassword('argv-Pa55word', (await store.getUser('alice'))!.passwordHash)).toBe(false),
    );
  });

  it('reports a refused request as one line on stderr with status 1', async () => {
    const cases: [string[], string][] = [
      [['user', 'show', 'nobody'], 'platform-agent: no such user: nobody'],
      [['user', 'set', 'alice', '--valid-until', 'tomorrow'], 'platform-agent: account_valid_until: expected an ISO 8601 date'],
      [['user', 'add', 'alice', '--role', 'mobile'], 'platform-agent: user alice already exists'],
      [['user', 'add', 'short', '--role', 'mobile'], 'platform-agent: password: a password needs at least 8 characters'],
    ];
    for (const [args, message] of cases) {
      const r = await cli(args, 'short\n');
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.startsWith(message), r.stderr).toBe(true);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stdout).toBe('');
    }
  });

  it('refuses to delete, demote, lock or expire the last administrator, and deletes other users', async () => {
    for (const args of [
      ['user', 'delete', 'root-admin'],
      ['user', 'set', 'root-admin', '--role', 'mobile'],
      ['user', 'lock', 'root-admin'],
      ['user', 'set', 'root-admin', '--valid-until', '2020-01-01'],
      ['user', 'set', 'root-admin', '--valid-from', '2999-01-01'],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toBe(
        'platform-agent: the last administrator who can manage users cannot be removed, demoted, locked, expired or lose admin.users\n',
      );
    }
    expect(await cliJson(['user', 'show', 'root-admin'])).toMatchObject({ role: 'admin', locked_for_security_reasons: false });

    expect(await cliJson(['user', 'delete', 'alice'])).toEqual({ deleted: 'alice' });
    expect((await cli(['user', 'show', 'alice'])).code).toBe(1);
  });

  it('needs an existing platform.db for anything but creating', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'platform-admin-cli-empty-'));
    try {
      const child = spawn(process.execPath, [AGENT, 'user', 'list', '--data', empty]);
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const code = await new Promise((resolve) => child.once('close', resolve));
      expect(code).toBe(1);
      expect(stderr).toMatch(/^platform-agent: --data .*: no platform\.db there/);
      expect(existsSync(join(empty, 'platform.db'))).toBe(false);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe('platform-agent group …', () => {
  it('refuses a group without operations with the vendor message, and an unknown operation naming the field', async () => {
    for (const operations of ['', ',']) {
      const r = await cli(['group', 'add', 'empty', '--role', 'mobile', '--operations', operations]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe('platform-agent: A user group must have at least one operation\n');
      expect(r.stdout).toBe('');
    }
    const unknown = await cli(['group', 'add', 'bad', '--role', 'mobile', '--operations', 'api.read,api.delete']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.startsWith('platform-agent: operations: unknown operation "api.delete"'), unknown.stderr).toBe(true);
    expect(await cliJson(['group', 'list'])).toEqual([]);
  });

  it('adds, lists, shows and changes a group', async () => {
    const crew = await cliJson([
      'group',
      'add',
      'crew',
      '--role',
      'mobile',
      '--operations',
      'profile.read, api.read',
      '--description',
      'Field crew',
    ]);
    expect(crew).toMatchObject({
      name: 'crew',
      role: 'mobile',
      operations: ['api.read', 'profile.read'],
      description: 'Field crew',
      users: 0,
    });

    const table = await cli(['group', 'list']);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^NAME\s+ROLE\s+USERS\s+OPERATIONS$/);
    expect(table.stdout).toMatch(/^crew\s+mobile\s+0\s+api\.read,profile\.read$/m);
    expect(await cliJson(['group', 'show', 'crew'])).toMatchObject({ name: 'crew', description: 'Field crew' });

    const changed = await cliJson(['group', 'set', 'crew', '--operations', 'api.read,api.write', '--description', '']);
    expect(changed).toMatchObject({ operations: ['api.read', 'api.write'], description: null });
    const none = await cli(['group', 'set', 'crew', '--operations', '']);
    expect(none.code).toBe(1);
    expect(none.stderr).toBe('platform-agent: A user group must have at least one operation\n');
  });

  it('puts a user in a group of its role with a description, and refuses a group of another role', async () => {
    const dave = await cliJson(
      ['user', 'add', 'dave', '--role', 'mobile', '--group', 'crew', '--description', 'Site A'],
      `${ALICE_PASSWORD}\n`,
    );
    expect(dave).toMatchObject({ username: 'dave', role: 'mobile', group: 'crew', description: 'Site A' });
    await withStore(async (store) => expect(await store.getUser('dave')).toMatchObject({ group: 'crew', description: 'Site A' }));

    const mismatch = await cli(['user', 'add', 'erin', '--role', 'external', '--group', 'crew'], `${ALICE_PASSWORD}\n`);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr).toBe("platform-agent: group: group crew is for role mobile, the user's role is external\n");
    const missing = await cli(['user', 'set', 'dave', '--group', 'nope']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('platform-agent: group: no such group: nope\n');
    const role = await cli(['user', 'set', 'dave', '--role', 'external']);
    expect(role.code).toBe(1);
    expect(role.stderr.startsWith('platform-agent: role: group crew is for role mobile'), role.stderr).toBe(true);
  });

  it('refuses to delete a group in use or change its role, then deletes it once empty', async () => {
    const inUse = await cli(['group', 'delete', 'crew']);
    expect(inUse.code).toBe(1);
    expect(inUse.stderr).toBe('platform-agent: group crew still has 1 user(s); move or delete them first\n');
    const role = await cli(['group', 'set', 'crew', '--role', 'external']);
    expect(role.code).toBe(1);
    expect(role.stderr).toMatch(/^platform-agent: group crew has 1 user\(s\) with role mobile: its role cannot change\n$/);

    expect(await cliJson(['user', 'set', 'dave', '--group', 'none', '--description', ''])).toMatchObject({
      group: null,
      description: null,
    });
    expect(await cliJson(['group', 'delete', 'crew'])).toEqual({ deleted: 'crew' });
    const gone = await cli(['group', 'show', 'crew']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe('platform-agent: no such group: crew\n');
    expect(await cliJson(['user', 'delete', 'dave'])).toEqual({ deleted: 'dave' });
  });

  it('exits 2 on bad usage', async () => {
    expect((await cli(['group', 'add', 'g', '--role', 'mobile'])).code).toBe(2);
    expect((await cli(['group', 'add', 'g', '--role', 'root', '--operations', 'api.read'])).code).toBe(2);
    expect((await cli(['group', 'set', 'g'])).code).toBe(2);
    expect((await cli(['group'])).code).toBe(2);
  });
});

describe('platform-agent device …', () => {
  it('lists every device by user with its last sight, a device locked by failed logins among them, and unlocks it', async () => {
    const now = Date.now();
    await withStore(async (store) => {
      const policy = lockoutPolicy((await store.getSettings()).settings);
      for (let i = 0; i < policy.deviceFailures; i++) await store.recordLoginFailure('phone-1', 'root-admin', now, policy, true);
      await store.recordLoginFailure('phone-2', 'root-admin', now, policy, true);
      await store.recordLoginSuccess('tablet', 'dave', now - 60_000);
    });

    type Device = {
      device_id: string;
      failures: number;
      last_username: string;
      last_seen_at: string | null;
      locked_until: string | null;
      status: string;
    };
    const devices = await cliJson<Device[]>(['device', 'list']);
    expect(
      devices.map((d) => [d.last_username, d.device_id, d.failures, d.locked_until !== null, d.status.replace(/\d{4}.*/, '…')]),
    ).toEqual([
      ['dave', 'tablet', 0, false, 'Active'],
      ['root-admin', 'phone-1', 0, true, 'Locked until …'],
      ['root-admin', 'phone-2', 1, false, '1 failed login'],
    ]);
    expect(devices[0]!.last_seen_at).toBe(new Date(now - 60_000).toISOString());
    expect(devices[1]!.status).toMatch(/^Locked until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$/);

    const text = await cli(['device', 'list', '--user', 'root-admin']);
    expect(text.code).toBe(0);
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^DEVICE\s+USER\s+LAST SEEN\s+STATUS$/);
    expect(lines.slice(1).map((l) => l.split(/\s{2,}/).slice(0, 2))).toEqual([
      ['phone-1', 'root-admin'],
      ['phone-2', 'root-admin'],
    ]);
    expect(lines[2]).toMatch(/^phone-2\s+root-admin\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\s+1 failed login$/);
    expect((await cli(['device', 'list', '--user', 'nobody'])).stdout).toBe('no devices of nobody\n');
    expect((await cli(['device', 'list', '--user', ''])).code).toBe(2);

    expect(await cliJson(['device', 'unlock', 'phone-1'])).toEqual({ unlocked: 'phone-1' });
    // The device stays listed, now active.
    expect((await cliJson<Device[]>(['device', 'list', '--user', 'root-admin'])).map((d) => [d.device_id, d.status])).toEqual([
      ['phone-1', 'Active'],
      ['phone-2', '1 failed login'],
    ]);
    await withStore(async (store) => expect((await store.getDevice('phone-1'))!.lockedUntil).toBeNull());

    const unknown = await cli(['device', 'unlock', 'no-such-phone']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('platform-agent: no such device: no-such-phone\n');
  });
});

describe('platform-agent operation …', () => {
  it('defines, lists, changes and deletes operations; a group holds one, which then cannot be deleted', async () => {
    const added = await cliJson(['operation', 'add', 'doc.receipt', '--description', 'Приход товара']);
    expect(added).toEqual({ name: 'doc.receipt', roles: ['mobile', 'external'], description: 'Приход товара', custom: true });
    const list = await cliJson<{ name: string; custom: boolean }[]>(['operation', 'list']);
    expect(list[0]).toMatchObject({ name: 'api.read', custom: false });
    expect(list.at(-1)).toMatchObject({ name: 'doc.receipt', custom: true });
    const text = await cli(['operation', 'list']);
    expect(text.stdout.split('\n').find((l) => l.startsWith('doc.receipt'))).toMatch(/administrator\s+Приход товара$/);
    expect(await cliJson(['operation', 'set', 'doc.receipt', '--description', 'Приёмка'])).toMatchObject({ description: 'Приёмка' });
    await cliJson(['group', 'add', 'Приёмщики', '--role', 'mobile', '--operations', 'api.read,doc.receipt']);
    const held = await cli(['operation', 'delete', 'doc.receipt']);
    expect(held.code).toBe(1);
    expect(held.stderr).toBe('platform-agent: user groups still hold the operation doc.receipt: Приёмщики\n');
    const bad = await cli(['operation', 'add', 'api.export']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^platform-agent: name: /);
    await cliJson(['group', 'delete', 'Приёмщики']);
    expect(await cliJson(['operation', 'delete', 'doc.receipt'])).toEqual({ deleted: 'doc.receipt' });
  });
});

describe('platform-agent settings …', () => {
  it('sets settings by name=value and shows them', async () => {
    const set = await cliJson<{ changed: { setting: string; from: unknown; to: unknown }[]; tokens_invalidated: boolean }>([
      'settings',
      'set',
      'lockout.device_failures=3',
      'admin_inactivity_timeout=00:30',
      'account_validity_days=null',
    ]);
    expect(set.changed).toEqual([
      { setting: 'admin_inactivity_timeout', from: null, to: '00:30' },
      { setting: 'lockout.device_failures', from: 5, to: 3 },
    ]);
    expect(set.tokens_invalidated).toBe(false);

    const shown = await cli(['settings', 'show']);
    expect(shown.code).toBe(0);
    const settings = JSON.parse(shown.stdout) as { lockout: { device_failures: number }; admin_inactivity_timeout: string | null };
    expect(settings.lockout.device_failures).toBe(3);
    expect(settings.admin_inactivity_timeout).toBe('00:30');
  });

  it('says so when a validity change invalidates every token', async () => {
    const before = await withStore((store) => store.getSettings());
    const r = await cli(['settings', 'set', 'api_token_validity.days=7']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('api_token_validity.days: 14 -> 7');
    expect(r.stdout).toMatch(/every token issued so far is now invalid/);
    const after = await withStore((store) => store.getSettings());
    expect(after.tokenGeneration).toBe(before.tokenGeneration + 1);
    expect(after.settings.api_token_validity).toEqual({ days: 7, hours: 0 });
  });

  it('writes the audit line the server would, to cli-audit.log in the data folder, and nothing for no change', async () => {
    const file = join(dataDir, 'cli-audit.log'); // as the README documents it
    const before = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
    expect((await cli(['settings', 'set', 'lockout.user_lock_days=3'])).code).toBe(0);
    expect((await cli(['settings', 'set', 'lockout.user_lock_days=3'])).stdout).toContain('no change');
    const lines = readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .slice(before)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      event: 'settings_changed',
      via: 'cli',
      settings: ['lockout.user_lock_days'],
      recalculatedLocks: true,
    });
    expect(String(lines[0]!.by)).toMatch(/\(cli\)$/);
  });

  it('refuses a bad setting with status 1 and a message naming the field, changing nothing', async () => {
    const before = await withStore((store) => store.getSettings());
    const cases: [string, string][] = [
      ['lockout.device_failures=0', 'platform-agent: lockout.device_failures: '],
      ['admin_inactivity_timeout=half-an-hour', 'platform-agent: admin_inactivity_timeout: '],
      ['no_such_setting=1', 'platform-agent: no_such_setting: unknown setting'],
      ['refresh_token_validity.days=1', 'platform-agent: refresh_token_validity: must exceed'],
    ];
    for (const [assignment, message] of cases) {
      const r = await cli(['settings', 'set', 'lockout.user_lock_days=2', assignment]);
      expect(r.code, assignment).toBe(1);
      expect(r.stderr.startsWith(message), r.stderr).toBe(true);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(await withStore((store) => store.getSettings())).toEqual(before);
  });

  it('exits 2 on bad usage', async () => {
    expect((await cli(['settings', 'set'])).code).toBe(2);
    expect((await cli(['settings', 'frobnicate'])).code).toBe(2);
    expect((await cli(['user', 'set', 'root-admin'])).code).toBe(2);
    expect((await cli(['user', 'add', 'carol', '--role', 'root'])).code).toBe(2);
  });
});
