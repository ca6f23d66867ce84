import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../../../shared/clock.js';
import { RelayError } from '../../../../shared/errors.js';
import {
  cloneSettings,
  defaultSettings,
  lockoutPolicy,
  type SecuritySettings,
} from '../../../../platform-agent/server/security/settings.js';
import { DB_FILE, LOOKUP_KEY_FILE, MIGRATIONS, SqliteStore } from '../../../../platform-agent/server/store/sqlite-store.js';
import {
  DEVICE_RETENTION_MS,
  type FamilyRecord,
  type GroupRecord,
  type UserRecord,
} from '../../../../platform-agent/server/store/store.js';
import { adminWaitPolicy } from '../../../../platform-agent/server/security/admin-waits.js';
import { userRecord } from '../../../fixtures/records.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);
const policy = lockoutPolicy(cloneSettings(defaultSettings));

let dir: string;
const open: SqliteStore[] = [];

/** A store on this test's folder; closed after the test. */
function openStore(): SqliteStore {
  const store = new SqliteStore(dir);
  open.push(store);
  return store;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sqlite-store-test-'));
});
afterEach(async () => {
  for (const store of open.splice(0)) await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const user = (username: string, over: Partial<UserRecord> = {}): UserRecord =>
  userRecord({ username, passwordHash: 'scrypt$10$8$1$salt$key', ...over });

function family(familyId: string, username: string, over: Partial<FamilyRecord> = {}): FamilyRecord {
  return {
    familyId,
    username,
    deviceId: 'd1',
    audience: 'api',
    currentJtiHash: 'h1',
    createdAt: T0,
    lastUsedAt: T0,
    expiresAt: T0 + 45 * DAY_MS,
    revokedAt: null,
    ...over,
  };
}

function expectStoreError(fn: () => unknown): RelayError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).code).toBe('PLATFORM_ERR_STORE');
    return err as RelayError;
  }
  throw new Error('expected PLATFORM_ERR_STORE, but nothing was thrown');
}

describe('SqliteStore: opening', () => {
  it('creates platform.db readable by its owner only, in WAL mode, at the newest schema version', async () => {
    const store = openStore();
    expect(store.file).toBe(join(dir, DB_FILE));
    expect(statSync(store.file).mode & 0o777).toBe(0o600);
    await store.close();
    const db = new Database(join(dir, DB_FILE), { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    } finally {
      db.close();
    }
  });

  it('creates a missing data folder with mode 0700', () => {
    const nested = join(dir, 'data');
    const store = new SqliteStore(nested);
    open.push(store);
    expect(statSync(nested).mode & 0o777).toBe(0o700);
  });

  it('serves the default settings at token generation 1 before any are saved', async () => {
    expect(await openStore().getSettings()).toEqual({ settings: cloneSettings(defaultSettings), tokenGeneration: 1 });
  });

  it('keeps configuration documents across reopening, and answers undefined for one never saved', async () => {
    const first = openStore();
    expect(await first.getConfig('relay_connection')).toBeUndefined();
    await first.putConfig('relay_connection', { enabled: true, relays: ['wss://a:1'] }, 1);
    await first.putConfig('relay_connection', { enabled: false, relays: ['wss://b:2'] }, 2);
    await first.close();
    expect(await openStore().getConfig('relay_connection')).toEqual({ enabled: false, relays: ['wss://b:2'] });
  });

  it('reopens a migrated database without touching its data', async () => {
    const first = openStore();
    await first.createUser(user('alice'));
    await first.close();
    expect(await openStore().getUser('alice')).toEqual(user('alice'));
  });

  it('refuses a database with a newer schema version than it knows, with PLATFORM_ERR_STORE', async () => {
    await openStore().close();
    const db = new Database(join(dir, DB_FILE));
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.close();
    const err = expectStoreError(() => openStore());
    expect(err.message).toContain(`schema version ${MIGRATIONS.length + 1}`);
  });

  it('refuses a file that is not a SQLite database with PLATFORM_ERR_STORE', () => {
    writeFileSync(join(dir, DB_FILE), 'this is not a database, just some text that is long enough to have a header'.repeat(20));
    expectStoreError(() => openStore());
  });

  it('refuses a data folder it cannot create with PLATFORM_ERR_STORE', () => {
    writeFileSync(join(dir, 'a-file'), '');
    expectStoreError(() => new SqliteStore(join(dir, 'a-file', 'data')));
  });

  it('fills settings saved by an older version with the defaults of fields added since', async () => {
    await openStore().close();
    // What an older version saved: without the fields added since.
    const older: Partial<SecuritySettings> = cloneSettings(defaultSettings);
    delete older.mobile_token;
    delete older.mobile_session_idle_minutes;
    const db = new Database(join(dir, DB_FILE));
    db.prepare('INSERT INTO settings (id, json, token_generation) VALUES (1, ?, 7)').run(
      JSON.stringify({ ...older, lockout: { device_failures: 3 } }),
    );
    db.close();
    const { settings, tokenGeneration } = await openStore().getSettings();
    expect(tokenGeneration).toBe(7);
    expect(settings.mobile_token).toEqual({ enabled: false });
    expect(settings.mobile_session_idle_minutes).toBe(30);
    expect(settings.lockout).toEqual({ ...defaultSettings.lockout, device_failures: 3 });
  });
});

describe('SqliteStore: settings and keys', () => {
  it('bumps the token generation only when told to, and keeps everything across a reopen', async () => {
    const store = openStore();
    const next = { ...cloneSettings(defaultSettings), ip_login_attempts_per_minute: 20 };
    expect((await store.saveSettings(next, { invalidateTokens: false, recalculateLocks: null, now: T0 })).tokenGeneration).toBe(1);
    expect((await store.saveSettings(next, { invalidateTokens: true, recalculateLocks: null, now: T0 })).tokenGeneration).toBe(2);
    await store.rotateSigningKey({ kid: 'k1', privateJwk: '{}', publicJwk: '{}', createdAt: T0 });
    await store.close();
    const again = openStore();
    expect(await again.getSettings()).toEqual({ settings: next, tokenGeneration: 3 });
    expect((await again.getSigningKey())?.kid).toBe('k1');
  });

  it('stores a first signing key only when there is none, without changing the token generation', async () => {
    const a = openStore();
    const b = openStore();
    const [first, second] = await Promise.all([
      a.initSigningKey({ kid: 'k1', privateJwk: '{}', publicJwk: '{}', createdAt: T0 }),
      b.initSigningKey({ kid: 'k2', privateJwk: '{}', publicJwk: '{}', createdAt: T0 + 1 }),
    ]);
    expect(first.kid).toBe('k1');
    expect(second.kid).toBe('k1');
    expect((await b.getSigningKey())?.kid).toBe('k1');
    expect((await a.getSettings()).tokenGeneration).toBe(1);
  });

  it('keeps one signing key: rotation replaces it and bumps the generation', async () => {
    const store = openStore();
    await store.rotateSigningKey({ kid: 'k1', privateJwk: '{"d":"1"}', publicJwk: '{}', createdAt: T0 });
    await store.rotateSigningKey({ kid: 'k2', privateJwk: '{"d":"2"}', publicJwk: '{}', createdAt: T0 });
    expect((await store.getSigningKey())?.kid).toBe('k2');
    expect((await store.getSettings()).tokenGeneration).toBe(3);
    await store.close();
    const db = new Database(join(dir, DB_FILE), { readonly: true });
    try {
      expect(db.prepare('SELECT count(*) AS n FROM signing_keys').get()).toEqual({ n: 1 });
    } finally {
      db.close();
    }
  });

  it('moves the end of device and user locks in force to lockedAt + the new duration, leaving ended and open-ended locks alone', async () => {
    const store = openStore();
    await store.createUser(user('locked', { lockedForSecurityReasons: true, lockedAt: T0, lockedUntil: T0 + DAY_MS }));
    await store.createUser(user('ended', { lockedForSecurityReasons: true, lockedAt: T0 - 3 * DAY_MS, lockedUntil: T0 - 2 * DAY_MS }));
    await store.createUser(user('byadmin', { lockedForSecurityReasons: true, lockedAt: T0, lockedUntil: null }));
    for (let i = 0; i < 5; i++) await store.recordLoginFailure('d1', 'nobody', T0, policy, false);
    const next = cloneSettings(defaultSettings);
    next.lockout.user_lock_days = 2;
    next.lockout.device_lock_minutes = 45;
    await store.saveSettings(next, { invalidateTokens: false, recalculateLocks: lockoutPolicy(next), now: T0 + MINUTE_MS });
    expect((await store.getUser('locked'))?.lockedUntil).toBe(T0 + 2 * DAY_MS);
    expect((await store.getUser('ended'))?.lockedUntil).toBe(T0 - 2 * DAY_MS);
    expect((await store.getUser('byadmin'))?.lockedUntil).toBeNull();
    expect((await store.getDevice('d1'))?.lockedUntil).toBe(T0 + 45 * MINUTE_MS);
  });
});

describe('SqliteStore: user groups', () => {
  const group = (name: string, over: Partial<GroupRecord> = {}): GroupRecord => ({
    name,
    role: 'mobile',
    description: null,
    operations: ['api.read'],
    createdAt: T0,
    ...over,
  });

  const codeOf = async (promise: Promise<unknown>): Promise<{ code: string; field: unknown }> => {
    try {
      await promise;
    } catch (err) {
      expect(err).toBeInstanceOf(RelayError);
      return { code: (err as RelayError).code, field: (err as RelayError).details?.field };
    }
    throw new Error('expected a RelayError');
  };

  it('migrates a version 1 database: its users keep their data and get no group', async () => {
    const db = new Database(join(dir, DB_FILE));
    db.exec(MIGRATIONS[0]!);
    db.pragma('user_version = 1');
    db.prepare("INSERT INTO users (username, password_hash, role, created_at) VALUES ('old', 'h', 'mobile', ?)").run(T0);
    db.close();
    const store = openStore();
    expect(await store.getUser('old')).toMatchObject({ username: 'old', role: 'mobile', group: null, description: null });
    await store.createGroup(group('readers'));
    expect(await store.listGroups()).toEqual([group('readers')]);
  });

  it('creates, lists, changes and deletes groups, and keeps them across a reopen', async () => {
    const store = openStore();
    await store.createGroup(group('b-writers', { operations: ['api.read', 'api.write'], description: 'they write' }));
    await store.createGroup(group('a-readers'));
    expect(await codeOf(store.createGroup(group('a-readers')))).toMatchObject({ code: 'PLATFORM_ERR_GROUP_EXISTS' });
    expect((await store.listGroups()).map((g) => g.name)).toEqual(['a-readers', 'b-writers']);
    expect(await store.updateGroup('a-readers', { operations: ['profile.read'], role: 'external' })).toEqual(
      group('a-readers', { operations: ['profile.read'], role: 'external' }),
    );
    expect(await store.updateGroup('nobody', { description: 'x' })).toBeNull();
    await store.close();
    const again = openStore();
    expect(await again.getGroup('b-writers')).toEqual(
      group('b-writers', { operations: ['api.read', 'api.write'], description: 'they write' }),
    );
    expect(await again.deleteGroup('a-readers')).toBe(true);
    expect(await again.deleteGroup('a-readers')).toBe(false);
    expect(await again.getGroup('a-readers')).toBeNull();
  });

  it("checks a user's group and role in the write: unknown group, role mismatch", async () => {
    const store = openStore();
    await store.createGroup(group('readers'));
    expect(await codeOf(store.createUser(user('alice', { group: 'nope' })))).toEqual({
      code: 'PLATFORM_ERR_INVALID_REQUEST',
      field: 'group',
    });
    expect(await codeOf(store.createUser(user('alice', { group: 'readers', role: 'external' })))).toEqual({
      code: 'PLATFORM_ERR_INVALID_REQUEST',
      field: 'group',
    });
    expect(await store.getUser('alice')).toBeNull();
    await store.createUser(user('alice', { group: 'readers', description: 'field worker' }));
    expect(await store.getUser('alice')).toMatchObject({ group: 'readers', description: 'field worker' });
    expect(await codeOf(store.updateUser('alice', { role: 'external' }, T0))).toEqual({
      code: 'PLATFORM_ERR_INVALID_REQUEST',
      field: 'role',
    });
    expect(await store.updateUser('alice', { role: 'external', group: null }, T0)).toMatchObject({ role: 'external', group: null });
  });

  it('refuses to delete a group or change its role while users remain, in the same transaction', async () => {
    const store = openStore();
    await store.createGroup(group('readers'));
    await store.createUser(user('alice', { group: 'readers' }));
    await store.createUser(user('bob', { group: 'readers' }));
    expect(await store.countUsersInGroup('readers')).toBe(2);
    expect(await codeOf(store.deleteGroup('readers'))).toMatchObject({ code: 'PLATFORM_ERR_GROUP_IN_USE' });
    expect(await codeOf(store.updateGroup('readers', { role: 'external' }))).toMatchObject({
      code: 'PLATFORM_ERR_GROUP_IN_USE',
      field: 'role',
    });
    expect(await store.getGroup('readers')).toEqual(group('readers'));
    await store.deleteUser('alice');
    await store.updateUser('bob', { group: null }, T0);
    expect(await store.countUsersInGroup('readers')).toBe(0);
    expect(await store.deleteGroup('readers')).toBe(true);
  });
});

describe('SqliteStore: atomic counters', () => {
  it('locks the device exactly once under 20 concurrent failures', async () => {
    const store = openStore();
    await store.createUser(user('alice'));
    const results = await Promise.all(Array.from({ length: 20 }, () => store.recordLoginFailure('d1', 'alice', T0, policy, true)));
    expect(results.filter((r) => r.deviceLockedNow)).toHaveLength(1);
    expect(results.filter((r) => r.userLockedUntil !== null)).toHaveLength(0);
    for (const r of results.slice(4)) expect(r.deviceLockedUntil).toBe(T0 + 15 * MINUTE_MS);
    expect(await store.getDevice('d1')).toMatchObject({ lockedAt: T0, lockedUntil: T0 + 15 * MINUTE_MS, lastUsername: 'alice' });
  });

  it('locks the device exactly once when 20 failures arrive through two connections to the same file', async () => {
    const a = openStore();
    const b = openStore();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).recordLoginFailure('d1', 'alice', T0 + i, policy, false)),
    );
    expect(results.filter((r) => r.deviceLockedNow)).toHaveLength(1);
  });

  it('locks the user exactly once when three devices lock at the same time', async () => {
    const store = openStore();
    await store.createUser(user('alice'));
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => store.recordLoginFailure(`d${i % 3}`, 'alice', T0, policy, true)),
    );
    expect(results.filter((r) => r.deviceLockedNow)).toHaveLength(3);
    const userLocks = results.filter((r) => r.userLockedUntil !== null);
    expect(userLocks).toHaveLength(1);
    expect(userLocks[0]!.userLockedUntil).toBe(T0 + DAY_MS);
    expect(await store.getUser('alice')).toMatchObject({ lockedForSecurityReasons: true, lockedAt: T0, lockedUntil: T0 + DAY_MS });
  });

  it('never lets more than `limit` attempts from one address through under concurrency', async () => {
    const a = openStore();
    const b = openStore();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).hitIpAttempt('203.0.113.1', T0, MINUTE_MS, 10)));
    expect(results.filter((r) => r.allowed)).toHaveLength(10);
    for (const r of results.filter((x) => !x.allowed)) expect(r.retryAfterMs).toBe(MINUTE_MS);
    expect((await a.hitIpAttempt('203.0.113.2', T0, MINUTE_MS, 10)).allowed).toBe(true);
  });

  it('frees one attempt per attempt that leaves the window, refused ones not counted', async () => {
    const store = openStore();
    for (let i = 0; i < 3; i++) expect((await store.hitIpAttempt('ip', T0 + i * 1000, MINUTE_MS, 3)).allowed).toBe(true);
    for (let i = 0; i < 10; i++) expect((await store.hitIpAttempt('ip', T0 + 5000, MINUTE_MS, 3)).allowed).toBe(false);
    expect(await store.hitIpAttempt('ip', T0 + 59_999, MINUTE_MS, 3)).toMatchObject({ allowed: false, retryAfterMs: 1 });
    expect((await store.hitIpAttempt('ip', T0 + MINUTE_MS, MINUTE_MS, 3)).allowed).toBe(true);
    expect(await store.hitIpAttempt('ip', T0 + MINUTE_MS, MINUTE_MS, 3)).toMatchObject({ allowed: false, retryAfterMs: 1000 });
  });

  it('gives a released attempt back (a login that succeeded), and only that one', async () => {
    const store = openStore();
    const first = await store.hitIpAttempt('ip', T0, MINUTE_MS, 2);
    await store.hitIpAttempt('ip', T0, MINUTE_MS, 2);
    expect((await store.hitIpAttempt('ip', T0, MINUTE_MS, 2)).allowed).toBe(false);
    await store.releaseIpAttempt(first.attemptId);
    expect((await store.hitIpAttempt('ip', T0, MINUTE_MS, 2)).allowed).toBe(true);
    expect((await store.hitIpAttempt('ip', T0, MINUTE_MS, 2)).allowed).toBe(false);
  });

  it('resets the failure count on success and unlocks a device on request', async () => {
    const store = openStore();
    for (let i = 0; i < 4; i++) await store.recordLoginFailure('d1', 'alice', T0, policy, false);
    expect(await store.recordLoginSuccess('d1', 'alice', T0)).toBe(true);
    expect((await store.recordLoginFailure('d1', 'alice', T0, policy, false)).deviceLockedNow).toBe(false);
    for (let i = 0; i < 4; i++) await store.recordLoginFailure('d1', 'alice', T0, policy, false);
    expect((await store.getDevice('d1'))?.lockedUntil).toBe(T0 + 15 * MINUTE_MS);
    // A success that arrives after the lock (a guess in flight) changes nothing, not even who was seen last.
    const locked = await store.getDevice('d1');
    expect(await store.recordLoginSuccess('d1', 'alice', T0 + 1)).toBe(false);
    expect(await store.getDevice('d1')).toEqual(locked);
    // The lock is alice's on d1: another user's login there is not held by it.
    expect(await store.deviceLockedUntil('d1', 'alice', T0 + 1)).toBe(T0 + 15 * MINUTE_MS);
    expect(await store.deviceLockedUntil('d1', 'mallory', T0 + 1)).toBeNull();
    expect(locked).toMatchObject({ lockedUntil: T0 + 15 * MINUTE_MS, lastUsername: 'alice', lastSeenAt: T0 });
    expect(await store.unlockDevice('d1')).toBe(true);
    expect(await store.getDevice('d1')).toMatchObject({ failures: 0, lockedAt: null, lockedUntil: null });
    expect(await store.unlockDevice('never-seen')).toBe(false);
  });
});

describe("SqliteStore: administrators' login waits", () => {
  it('counts attempts under every key through two connections, refuses during the wait, and keeps the counts across reopening', async () => {
    const a = openStore();
    const b = openStore();
    const keys = ['ip:127.0.0.2', 'user:admin'];
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).hitAdminLogin(keys, T0, adminWaitPolicy)));
    expect(results.filter((r) => r.allowed)).toHaveLength(3);
    for (const r of results.filter((r) => !r.allowed)) expect(r.retryAfterMs).toBe(1_000);
    await a.close();
    await b.close();
    const c = openStore();
    // One key alone still waits: the account's wait holds for a login from another address.
    expect(await c.hitAdminLogin(['ip:127.0.0.3', 'user:admin'], T0 + 500, adminWaitPolicy)).toEqual({ allowed: false, retryAfterMs: 500 });
    await c.clearAdminLogin(['user:admin']);
    expect((await c.hitAdminLogin(['ip:127.0.0.3', 'user:admin'], T0 + 500, adminWaitPolicy)).allowed).toBe(true);
  });

  it('prunes a count once its reset time has passed without a failure', async () => {
    const store = openStore();
    await store.hitAdminLogin(['user:x'], T0, adminWaitPolicy);
    expect(await store.prune(T0 + adminWaitPolicy.failureResetMs - 1)).toBe(0);
    expect(await store.prune(T0 + adminWaitPolicy.failureResetMs)).toBe(1);
  });
});

describe('SqliteStore: devices', () => {
  it('records a device on its first successful login with the user and the time, failures 0 and no lock', async () => {
    const store = openStore();
    expect(await store.recordLoginSuccess('phone-1', 'alice', T0)).toBe(true);
    expect(await store.getDevice('phone-1')).toEqual({
      deviceId: 'phone-1',
      failures: 0,
      lastFailureAt: null,
      lastUsername: 'alice',
      lastSeenAt: T0,
      lockedAt: null,
      lockedUntil: null,
    });
  });

  it('moves the last sight and the last user on every login, failed or successful', async () => {
    const store = openStore();
    await store.recordLoginFailure('shared', 'alice', T0, policy, true);
    expect(await store.getDevice('shared')).toMatchObject({ failures: 1, lastFailureAt: T0, lastUsername: 'alice', lastSeenAt: T0 });
    expect(await store.recordLoginSuccess('shared', 'bob', T0 + MINUTE_MS)).toBe(true);
    // Bob's success resets bob's count on the device; alice's failure there still counts for alice.
    expect(await store.getDevice('shared')).toMatchObject({ failures: 1, lastUsername: 'bob', lastSeenAt: T0 + MINUTE_MS });
    expect(await store.getDeviceUser('shared', 'bob')).toMatchObject({ failures: 0, known: true });
    expect(await store.getDeviceUser('shared', 'alice')).toMatchObject({ failures: 1, known: false });
    await store.recordLoginFailure('shared', 'carol', T0 + 2 * MINUTE_MS, policy, false);
    expect(await store.getDevice('shared')).toMatchObject({ failures: 1, lastUsername: 'carol', lastSeenAt: T0 + 2 * MINUTE_MS });
  });

  it("resets the count on a success once a lock has ended, keeping the ended lock's times", async () => {
    const store = openStore();
    for (let i = 0; i < 5; i++) await store.recordLoginFailure('d1', 'alice', T0, policy, true);
    expect(await store.recordLoginSuccess('d1', 'alice', T0 + 15 * MINUTE_MS)).toBe(true);
    expect(await store.getDevice('d1')).toMatchObject({ failures: 0, lastSeenAt: T0 + 15 * MINUTE_MS, lockedUntil: T0 + 15 * MINUTE_MS });
  });

  it("lists every device by user name, then device id, or one user's devices", async () => {
    const store = openStore();
    await store.recordLoginSuccess('tablet', 'bob', T0);
    await store.recordLoginSuccess('phone-b', 'alice', T0);
    await store.recordLoginFailure('phone-a', 'alice', T0, policy, true);
    await store.recordLoginSuccess('laptop', 'bob', T0);
    const ids = (list: { deviceId: string; lastUsername: string | null }[]): string[] => list.map((d) => `${d.lastUsername}/${d.deviceId}`);
    expect(ids(await store.listDevices())).toEqual(['alice/phone-a', 'alice/phone-b', 'bob/laptop', 'bob/tablet']);
    expect(ids(await store.listDevices({ username: 'bob' }))).toEqual(['bob/laptop', 'bob/tablet']);
    expect(await store.listDevices({ username: 'nobody' })).toEqual([]);
  });

  it("keeps a deleted user's devices and its (user, device) lock, which holds that name only", async () => {
    const store = openStore();
    await store.createUser(user('alice'));
    await store.recordLoginSuccess('phone-1', 'alice', T0);
    for (let i = 0; i < 5; i++) await store.recordLoginFailure('phone-2', 'alice', T0, policy, true);
    expect(await store.deleteUser('alice')).toBe(true);
    expect((await store.listDevices({ username: 'alice' })).map((d) => d.deviceId)).toEqual(['phone-1', 'phone-2']);
    expect((await store.recordLoginFailure('phone-2', 'alice', T0 + MINUTE_MS, policy, false)).deviceLockedUntil).toBe(T0 + 15 * MINUTE_MS);
    expect((await store.recordLoginFailure('phone-2', 'bob', T0 + MINUTE_MS, policy, false)).deviceLockedUntil).toBeNull();
    // A later account of the same name does not inherit the devices as known ones (smart lockout).
    expect(await store.getDeviceUser('phone-1', 'alice')).toMatchObject({ known: false });
  });

  it('prunes a device last seen more than 180 days ago, and keeps one seen 180 days ago to the millisecond', async () => {
    const store = openStore();
    const now = T0 + 365 * DAY_MS;
    expect(DEVICE_RETENTION_MS).toBe(180 * DAY_MS);
    await store.recordLoginSuccess('old', 'alice', now - DEVICE_RETENTION_MS - 1);
    await store.recordLoginSuccess('edge', 'alice', now - DEVICE_RETENTION_MS);
    await store.recordLoginSuccess('recent', 'alice', now - DAY_MS);
    expect(await store.prune(now)).toBe(1);
    expect((await store.listDevices()).map((d) => d.deviceId)).toEqual(['edge', 'recent']);
    expect(await store.prune(now + 1)).toBe(1);
    expect((await store.listDevices()).map((d) => d.deviceId)).toEqual(['recent']);
  });

  it('keeps a device seen long ago while its lock is in force or its failures still count, then prunes it', async () => {
    const store = openStore();
    // Failures count for a year after the last one, and a lock lasts 200 days: both outlast the retention.
    const next = cloneSettings(defaultSettings);
    next.lockout.failure_reset_minutes = 365 * 24 * 60;
    next.lockout.device_lock_minutes = 200 * 24 * 60;
    await store.saveSettings(next, { invalidateTokens: false, recalculateLocks: null, now: T0 });
    const long = lockoutPolicy(next);
    for (let i = 0; i < 5; i++) await store.recordLoginFailure('locked', 'alice', T0, long, true);
    await store.recordLoginFailure('failing', 'alice', T0, long, true);
    await store.recordLoginSuccess('idle', 'alice', T0);

    expect(await store.prune(T0 + 190 * DAY_MS)).toBe(1);
    expect((await store.listDevices()).map((d) => d.deviceId)).toEqual(['failing', 'locked']);
    // The lock ends at 200 days; the failure stops counting at 365.
    expect(await store.prune(T0 + 200 * DAY_MS)).toBe(1);
    expect((await store.listDevices()).map((d) => d.deviceId)).toEqual(['failing']);
    expect(await store.prune(T0 + 365 * DAY_MS)).toBe(1);
    expect(await store.listDevices()).toEqual([]);
  });

  it('migrates a version 2 database: a device gets its last failure as its last sight, or none', async () => {
    const db = new Database(join(dir, DB_FILE));
    db.exec(MIGRATIONS[0]!);
    db.exec(MIGRATIONS[1]!);
    db.pragma('user_version = 2');
    db.prepare("INSERT INTO devices (device_id, failures, last_failure_at, last_username) VALUES ('failing', 2, ?, 'alice')").run(T0);
    db.prepare("INSERT INTO devices (device_id, failures, last_username) VALUES ('cleared', 0, 'bob')").run();
    db.close();
    const store = openStore();
    expect(await store.getDevice('failing')).toMatchObject({ failures: 2, lastUsername: 'alice', lastSeenAt: T0 });
    expect(await store.getDevice('cleared')).toMatchObject({ lastUsername: 'bob', lastSeenAt: null });
    // Never seen since the upgrade, no lock, no failures: forgotten at the first prune.
    expect(await store.prune(T0)).toBe(1);
    expect(await store.getDevice('cleared')).toBeNull();
    expect(await store.getDevice('failing')).not.toBeNull();
  });
});

describe('SqliteStore: migration 4 (per (user, device) lockout, token generations)', () => {
  it('keeps a device-wide lock in force for every user until it ends, and a user lock as it was', async () => {
    const db = new Database(join(dir, DB_FILE));
    for (let v = 0; v < 3; v++) db.exec(MIGRATIONS[v]!);
    db.pragma('user_version = 3');
    db.prepare(
      "INSERT INTO devices (device_id, failures, last_failure_at, last_username, last_seen_at, locked_at, locked_until) VALUES ('phone', 0, ?, 'alice', ?, ?, ?)",
    ).run(T0, T0, T0, T0 + 15 * MINUTE_MS);
    db.prepare(
      "INSERT INTO users (username, password_hash, role, created_at, locked, locked_at, locked_until) VALUES ('bob', 'x', 'mobile', ?, 1, ?, ?)",
    ).run(T0, T0, T0 + DAY_MS);
    db.prepare(
      "INSERT INTO refresh_families (family_id, username, device_id, audience, current_jti_hash, created_at, last_used_at, expires_at) VALUES ('f', 'carol', 'tablet', 'api', 'h', ?, ?, ?)",
    ).run(T0, T0 + 1, T0 + DAY_MS);
    db.prepare("INSERT INTO settings (id, json, token_generation) VALUES (1, '{}', 7)").run();
    db.prepare("INSERT INTO mobile_tokens (token_hash, username, created_at, expires_at) VALUES ('t', 'carol', ?, ?)").run(T0, T0 + DAY_MS);
    db.close();
    const store = openStore();
    for (const name of ['alice', 'bob', 'anyone']) expect(await store.deviceLockedUntil('phone', name, T0 + 1)).toBe(T0 + 15 * MINUTE_MS);
    expect(await store.recordLoginSuccess('phone', 'anyone', T0 + 1)).toBe(false);
    expect(await store.getDevice('phone')).toMatchObject({ lockedUntil: T0 + 15 * MINUTE_MS });
    expect(await store.deviceLockedUntil('phone', 'alice', T0 + 15 * MINUTE_MS)).toBeNull();
    expect(await store.getUser('bob')).toMatchObject({ lockedForSecurityReasons: true, lockedUntil: T0 + DAY_MS });
    // A device with a refresh family saw a successful login: it starts known for that user.
    expect(await store.getDeviceUser('tablet', 'carol')).toMatchObject({ known: true, lastSeenAt: T0 + 1 });
    // A mobile token issued before keeps working: it gets the generation in force.
    expect(await store.getMobileToken('t')).toMatchObject({ generation: 7 });
  });
});

describe('SqliteStore: names without regard to case', () => {
  const group = (name: string): GroupRecord => ({ name, role: 'mobile', description: null, operations: ['api.read'], createdAt: T0 });
  const codeOf = async (promise: Promise<unknown>): Promise<{ code: string }> => {
    try {
      await promise;
    } catch (err) {
      expect(err).toBeInstanceOf(RelayError);
      return { code: (err as RelayError).code };
    }
    throw new Error('expected a RelayError');
  };

  it('refuses a user or a group whose name differs from a taken one only in case or Unicode normalisation', async () => {
    const store = openStore();
    await store.createUser(user('alice'));
    await store.createUser(user('ADMIN', { role: 'admin' }));
    await store.createUser(user('caf\u00e9'));
    for (const name of ['Alice', 'ALICE', 'admin', 'cafe\u0301', 'CAF\u00c9'])
      expect(await codeOf(store.createUser(user(name)))).toMatchObject({ code: 'PLATFORM_ERR_USER_EXISTS' });
    await store.createGroup(group('staff'));
    expect(await codeOf(store.createGroup(group('Staff')))).toMatchObject({ code: 'PLATFORM_ERR_GROUP_EXISTS' });
    expect((await store.listUsers()).map((u) => u.username)).toEqual(['ADMIN', 'alice', 'caf\u00e9']);
  });

  it('finds, changes, locks and deletes a user and a group by any case of the name, keeping the stored names', async () => {
    const store = openStore();
    await store.createGroup(group('Staff'));
    await store.createUser(user('alice', { group: 'STAFF' }));
    expect(await store.getUser('ALICE')).toMatchObject({ username: 'alice', group: 'Staff' });
    expect(await store.getLoginUser('Alice')).toMatchObject({ username: 'alice' });
    expect(await store.getGroup('staff')).toMatchObject({ name: 'Staff' });
    expect(await store.countUsersInGroup('STAFF')).toBe(1);
    expect(await store.updateUser('Alice', { description: 'x', group: null }, T0)).toMatchObject({ username: 'alice', group: null });
    expect(await store.setUserLock('ALICE', { lockedAt: T0, lockedUntil: null })).toMatchObject({ lockedForSecurityReasons: true });
    expect(await store.updateGroup('STAFF', { description: 'all of us' })).toMatchObject({ name: 'Staff', description: 'all of us' });
    expect(await store.deleteUser('ALICE')).toBe(true);
    expect(await store.getUser('alice')).toBeNull();
    expect(await store.deleteGroup('staff')).toBe(true);
  });

  it('prunes a (user, device) row without a successful login once its lock and failures no longer count; a known one after 180 days', async () => {
    const store = openStore();
    for (let i = 0; i < 5; i++) await store.recordLoginFailure('bot', 'made-up', T0, policy, false);
    await store.recordLoginFailure('bot', 'other-made-up', T0, policy, false);
    await store.recordLoginSuccess('bot', 'alice', T0);
    await store.prune(T0 + 15 * MINUTE_MS - 1);
    expect(await store.getDeviceUser('bot', 'made-up')).not.toBeNull();
    await store.prune(T0 + 15 * MINUTE_MS);
    expect(await store.getDeviceUser('bot', 'made-up')).toBeNull();
    expect(await store.getDeviceUser('bot', 'other-made-up')).toBeNull();
    expect(await store.getDeviceUser('bot', 'alice')).toMatchObject({ known: true });
    await store.prune(T0 + DEVICE_RETENTION_MS + 1);
    expect(await store.getDeviceUser('bot', 'alice')).toBeNull();
    expect(await store.getDevice('bot')).toBeNull();
  });

  it('migration 5 keeps users that collide, all of them, lists them, and lets none of them log in; exact names still reach each', async () => {
    const db = new Database(join(dir, DB_FILE));
    for (let v = 0; v < 4; v++) db.exec(MIGRATIONS[v]!);
    db.pragma('user_version = 4');
    const insert = db.prepare(
      "INSERT INTO users (username, password_hash, role, created_at, locked, locked_at, locked_until) VALUES (?, 'x', 'mobile', ?, ?, ?, ?)",
    );
    insert.run('Alice', T0, 0, null, null);
    insert.run('alice', T0, 1, T0, T0 + DAY_MS);
    insert.run('bob', T0, 0, null, null);
    db.prepare("INSERT INTO groups (name, role, operations, created_at) VALUES ('Staff', 'mobile', '[\"api.read\"]', ?)").run(T0);
    db.prepare("INSERT INTO groups (name, role, operations, created_at) VALUES ('staff', 'mobile', '[\"api.read\"]', ?)").run(T0);
    db.close();
    const store = openStore();
    expect(await store.ambiguousNames()).toEqual({ users: [['Alice', 'alice']], groups: [['Staff', 'staff']] });
    expect(await store.getLoginUser('alice')).toBeNull();
    expect(await store.getLoginUser('ALICE')).toBeNull();
    expect(await store.getLoginUser('BOB')).toMatchObject({ username: 'bob' });
    // The lock survives the migration.
    expect(await store.getUser('alice')).toMatchObject({ username: 'alice', lockedForSecurityReasons: true, lockedUntil: T0 + DAY_MS });
    expect(await store.getUser('Alice')).toMatchObject({ username: 'Alice', lockedForSecurityReasons: false });
    expect(await store.getUser('ALICE')).toBeNull();
    // Once an administrator deletes one, the name works again.
    expect(await store.deleteUser('Alice')).toBe(true);
    expect(await store.getLoginUser('ALICE')).toMatchObject({ username: 'alice' });
    expect((await store.ambiguousNames()).users).toEqual([]);
  });

  it('migration 7 makes every key again with full case folding: names that only folding joins are listed, and log in by any case', async () => {
    const db = new Database(join(dir, DB_FILE));
    db.function('name_key', { deterministic: true }, (name: unknown) => String(name).normalize('NFC').toLowerCase());
    for (let v = 0; v < 6; v++) db.exec(MIGRATIONS[v]!);
    db.pragma('user_version = 6');
    const insert = db.prepare(
      "INSERT INTO users (username, password_hash, role, created_at, locked, name_key) VALUES (?, 'x', 'mobile', ?, 0, lower(?))",
    );
    // Under the old key (lower case only) these two were different names; folding makes them one.
    insert.run('STRASSE', T0, 'strasse');
    insert.run('straße', T0, 'straße');
    insert.run('Иванов', T0, 'иванов');
    db.close();
    const store = openStore();
    expect(await store.ambiguousNames()).toEqual({ users: [['STRASSE', 'straße']], groups: [] });
    expect(await store.getLoginUser('Strasse')).toBeNull();
    expect(await store.getLoginUser('ИВАНОВ')).toMatchObject({ username: 'Иванов' });
  });
});

describe('SqliteStore: refresh families', () => {
  it('rotates the current token, revokes the family when a spent one comes back, and says why it refuses', async () => {
    const store = openStore();
    await store.createFamily(family('f1', 'alice'));
    expect(await store.rotateFamily('f1', 'h1', 'h2', T0 + 1000, T0 + 50 * DAY_MS)).toBe('rotated');
    expect(await store.getFamily('f1')).toMatchObject({ currentJtiHash: 'h2', lastUsedAt: T0 + 1000, expiresAt: T0 + 50 * DAY_MS });
    expect(await store.rotateFamily('f1', 'h1', 'h3', T0 + 2000, T0 + 50 * DAY_MS)).toBe('reused');
    expect((await store.getFamily('f1'))?.revokedAt).toBe(T0 + 2000);
    expect(await store.rotateFamily('f1', 'h2', 'h3', T0 + 3000, T0 + 50 * DAY_MS)).toBe('revoked');
    expect(await store.rotateFamily('nope', 'h1', 'h2', T0, T0)).toBe('missing');
  });

  it('lets exactly one of two concurrent rotations of the same token win', async () => {
    const a = openStore();
    const b = openStore();
    await a.createFamily(family('f1', 'alice'));
    const results = await Promise.all([
      a.rotateFamily('f1', 'h1', 'hA', T0, T0 + DAY_MS),
      b.rotateFamily('f1', 'h1', 'hB', T0, T0 + DAY_MS),
    ]);
    expect(results.sort()).toEqual(['reused', 'rotated']);
    expect((await a.getFamily('f1'))?.revokedAt).toBe(T0);
  });

  it('keeps a revoked family revoked across a reopen', async () => {
    const store = openStore();
    await store.createFamily(family('f1', 'alice'));
    await store.revokeFamily('f1', T0 + 5);
    await store.revokeFamily('f1', T0 + 10);
    await store.close();
    const again = openStore();
    expect((await again.getFamily('f1'))?.revokedAt).toBe(T0 + 5);
    expect(await again.rotateFamily('f1', 'h1', 'h2', T0 + 20, T0 + DAY_MS)).toBe('revoked');
  });

  it('never moves the last use back in time', async () => {
    const store = openStore();
    await store.createFamily(family('f1', 'alice'));
    await store.touchFamily('f1', T0 + 10_000);
    await store.touchFamily('f1', T0 + 5_000);
    expect((await store.getFamily('f1'))?.lastUsedAt).toBe(T0 + 10_000);
  });
});

describe('SqliteStore: user locks', () => {
  it('revokes every family, mobile token and mobile session of a user it locks, and nobody else’s', async () => {
    const store = openStore();
    await store.createUser(user('alice'));
    await store.createUser(user('bob'));
    await store.createFamily(family('fa', 'alice'));
    await store.createFamily(family('fb', 'bob'));
    await store.putMobileToken({ tokenHash: 'ta', username: 'alice', createdAt: T0, expiresAt: T0 + DAY_MS });
    await store.putMobileSession({ sessionHash: 'sa', username: 'alice', tokenHash: null, createdAt: T0, lastSeenAt: T0 });
    await store.putMobileSession({ sessionHash: 'sb', username: 'bob', tokenHash: null, createdAt: T0, lastSeenAt: T0 });
    const locked = await store.setUserLock('alice', { lockedAt: T0 + 1, lockedUntil: T0 + DAY_MS });
    expect(locked).toMatchObject({ lockedForSecurityReasons: true, lockedAt: T0 + 1, lockedUntil: T0 + DAY_MS });
    expect((await store.getFamily('fa'))?.revokedAt).toBe(T0 + 1);
    expect((await store.getFamily('fb'))?.revokedAt).toBeNull();
    expect(await store.getMobileToken('ta')).toBeNull();
    expect(await store.touchMobileSession('sa', T0 + 2, 30 * MINUTE_MS)).toEqual({ refused: 'missing' });
    expect(await store.touchMobileSession('sb', T0 + 2, 30 * MINUTE_MS)).toHaveProperty('session');
    expect(await store.setUserLock('nobody', null)).toBeNull();
  });

  it('keeps a user lock and a device lock across a reopen', async () => {
    const store = openStore();
    await store.createUser(user('alice'));
    for (let d = 0; d < 3; d++) for (let i = 0; i < 5; i++) await store.recordLoginFailure(`d${d}`, 'alice', T0, policy, true);
    await store.close();
    const again = openStore();
    expect(await again.getUser('alice')).toMatchObject({ lockedForSecurityReasons: true, lockedUntil: T0 + DAY_MS });
    expect((await again.getDevice('d2'))?.lockedUntil).toBe(T0 + 15 * MINUTE_MS);
    expect((await again.recordLoginFailure('d2', 'alice', T0 + MINUTE_MS, policy, true)).deviceLockedUntil).toBe(T0 + 15 * MINUTE_MS);
  });
});

describe('SqliteStore: mobile sessions and pruning', () => {
  it('keeps a session used within the idle time, renewing it, and deletes it once idle longer', async () => {
    const store = openStore();
    await store.putMobileSession({ sessionHash: 's', username: 'alice', tokenHash: 't', createdAt: T0, lastSeenAt: T0 });
    expect(await store.touchMobileSession('s', T0 + 30 * MINUTE_MS, 30 * MINUTE_MS)).toMatchObject({
      session: { lastSeenAt: T0 + 30 * MINUTE_MS, tokenHash: 't' },
    });
    expect(await store.touchMobileSession('s', T0 + 60 * MINUTE_MS + 1, 30 * MINUTE_MS)).toEqual({ refused: 'idle' });
    expect(await store.touchMobileSession('s', T0 + 60 * MINUTE_MS + 2, 30 * MINUTE_MS)).toEqual({ refused: 'missing' });
  });

  it('prunes expired families, old revoked ones, expired mobile tokens, old attempts and idle sessions, and nothing live', async () => {
    const store = openStore();
    const now = T0 + 10 * DAY_MS;
    await store.createFamily(family('expired', 'alice', { expiresAt: now - 1 }));
    await store.createFamily(family('revoked-long-ago', 'alice', { revokedAt: now - 2 * DAY_MS }));
    await store.createFamily(family('revoked-recently', 'alice', { revokedAt: now - HOUR_MS }));
    await store.createFamily(family('live', 'alice', { expiresAt: now + DAY_MS }));
    await store.putMobileToken({ tokenHash: 'old', username: 'alice', createdAt: T0, expiresAt: now });
    await store.putMobileToken({ tokenHash: 'new', username: 'alice', createdAt: T0, expiresAt: now + 1 });
    await store.putMobileSession({ sessionHash: 'idle', username: 'alice', tokenHash: null, createdAt: T0, lastSeenAt: now - 2 * DAY_MS });
    await store.putMobileSession({ sessionHash: 'fresh', username: 'alice', tokenHash: null, createdAt: T0, lastSeenAt: now });
    await store.hitIpAttempt('ip', now - 2 * HOUR_MS, MINUTE_MS, 10);
    expect(await store.prune(now)).toBe(5);
    expect(await store.getFamily('expired')).toBeNull();
    expect(await store.getFamily('revoked-long-ago')).toBeNull();
    expect(await store.getFamily('revoked-recently')).not.toBeNull();
    expect(await store.getFamily('live')).not.toBeNull();
    expect(await store.getMobileToken('old')).toBeNull();
    expect(await store.getMobileToken('new')).not.toBeNull();
    expect(await store.touchMobileSession('fresh', now, 30 * MINUTE_MS)).toHaveProperty('session');
  });
});

describe('SqliteStore: the lookup key (device logins)', () => {
  it('is made once, 32 bytes, mode 0600, beside platform.db and not in it; every store on the folder reads the same key', async () => {
    const [a, b] = [openStore(), openStore()];
    const [ka, kb] = await Promise.all([a.lookupKey(), b.lookupKey()]);
    expect(ka.length).toBe(32);
    expect(kb.equals(ka)).toBe(true);
    expect(statSync(join(dir, LOOKUP_KEY_FILE)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, LOOKUP_KEY_FILE)).equals(ka)).toBe(true);
    expect(readFileSync(join(dir, DB_FILE)).includes(ka)).toBe(false);
    // No temporary file is left behind.
    expect(readdirSync(dir).filter((f) => f.startsWith(`${LOOKUP_KEY_FILE}.`))).toEqual([]);
    await a.close();
    await b.close();
  });

  it('refuses a key file of the wrong size rather than use it', async () => {
    writeFileSync(join(dir, LOOKUP_KEY_FILE), 'short');
    const store = openStore();
    await expect(store.lookupKey()).rejects.toMatchObject({ code: 'PLATFORM_ERR_STORE' });
    await store.close();
  });
});
