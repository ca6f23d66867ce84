/**
 * The behaviour every `PlatformStore` must show through the interface (store.ts), whatever keeps
 * the data: one suite for the SQLite store and the shared PostgreSQL one. A test file calls
 * `describeStoreContract` with a factory of stores on fresh data; what is particular to one
 * implementation (files, migrations of its own schema) stays in that implementation's test file.
 *
 * Times are values passed in (from T0), never a clock. Calls issued together with `Promise.all`
 * run one after the other inside one process for SQLite, and truly at once for a store reached
 * over the network: no assertion here depends on the order concurrent calls happen to run in.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../../../shared/clock.js';
import { RelayError } from '../../../../shared/errors.js';
import { adminWaitPolicy } from '../../../../platform-agent/server/security/admin-waits.js';
import { cloneSettings, defaultSettings, lockoutPolicy, type LockoutPolicy } from '../../../../platform-agent/server/security/settings.js';
import {
  DEVICE_RETENTION_MS,
  type FailureResult,
  type FamilyRecord,
  type PlatformStore,
  type SigningKeyRecord,
  type UserRecord,
} from '../../../../platform-agent/server/store/store.js';
import { T0, groupRecord, userRecord } from '../../../fixtures/records.js';

export interface StoreFactory {
  /** A store on fresh, empty data for this test. */
  open(): Promise<PlatformStore>;
  /** Another instance on the same data as the last `open()` (a second platform server instance sharing the store). */
  openSecond(): Promise<PlatformStore>;
  /**
   * Closes every store opened for this test and removes its data; called after each test. A test
   * may have closed some of them itself (to show that data outlives an instance): that must not fail.
   */
  cleanup(): Promise<void>;
}

const policy = lockoutPolicy(cloneSettings(defaultSettings));

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

const group = groupRecord;

const signingKey = (kid: string, createdAt = T0): SigningKeyRecord => ({ kid, privateJwk: `{"d":"${kid}"}`, publicJwk: '{}', createdAt });

/** The code and the `field` detail of the RelayError the promise rejects with. */
async function codeOf(promise: Promise<unknown>): Promise<{ code: string; field: unknown }> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(RelayError);
    return { code: (err as RelayError).code, field: (err as RelayError).details?.field };
  }
  throw new Error('expected a RelayError');
}

/** What a failure that neither counted towards a lock in force nor locked anything answers. */
const counted: FailureResult = { deviceLockedUntil: null, deviceLockedNow: false, userLockedUntil: null };

/** Registers the contract's tests for the stores `factory` makes (called once, inside the contract's describe). */
export function describeStoreContract(label: string, factory: () => StoreFactory): void {
  describe(`${label}: the PlatformStore contract`, () => {
    const stores = factory();
    const open = (): Promise<PlatformStore> => stores.open();
    const openSecond = (): Promise<PlatformStore> => stores.openSecond();
    afterEach(async () => {
      await stores.cleanup();
    });

    describe('settings and configuration', () => {
      it('serves the default settings at token generation 1 before any are saved', async () => {
        expect(await (await open()).getSettings()).toEqual({ settings: cloneSettings(defaultSettings), tokenGeneration: 1 });
      });

      it('keeps configuration documents across reopening, and answers undefined for one never saved', async () => {
        const first = await open();
        expect(await first.getConfig('relay_connection')).toBeUndefined();
        await first.putConfig('relay_connection', { enabled: true, relays: ['wss://a:1'] }, 1);
        await first.putConfig('relay_connection', { enabled: false, relays: ['wss://b:2'] }, 2);
        await first.close();
        expect(await (await openSecond()).getConfig('relay_connection')).toEqual({ enabled: false, relays: ['wss://b:2'] });
      });

      it('reopens a migrated database without touching its data', async () => {
        const first = await open();
        await first.createUser(user('alice'));
        await first.close();
        expect(await (await openSecond()).getUser('alice')).toEqual(user('alice'));
      });

      it('bumps the token generation only when told to, and keeps everything across a reopen', async () => {
        const store = await open();
        const next = { ...cloneSettings(defaultSettings), ip_login_attempts_per_minute: 20 };
        expect((await store.saveSettings(next, { invalidateTokens: false, recalculateLocks: null, now: T0 })).tokenGeneration).toBe(1);
        expect((await store.saveSettings(next, { invalidateTokens: true, recalculateLocks: null, now: T0 })).tokenGeneration).toBe(2);
        await store.rotateSigningKey(signingKey('k1'));
        await store.close();
        const again = await openSecond();
        expect(await again.getSettings()).toEqual({ settings: next, tokenGeneration: 3 });
        expect((await again.getSigningKey())?.kid).toBe('k1');
      });

      it('moves the end of device and user locks in force to lockedAt + the new duration, leaving ended and open-ended locks alone', async () => {
        const store = await open();
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
        expect(await store.deviceLockedUntil('d1', 'nobody', T0 + MINUTE_MS)).toBe(T0 + 45 * MINUTE_MS);
      });
    });

    describe('signing keys', () => {
      it('stores a first signing key only when there is none, without changing the token generation', async () => {
        const a = await open();
        const b = await openSecond();
        expect(await a.initSigningKey(signingKey('k1'))).toEqual(signingKey('k1'));
        expect(await b.initSigningKey(signingKey('k2', T0 + 1))).toEqual(signingKey('k1'));
        expect((await b.getSigningKey())?.kid).toBe('k1');
        expect((await a.getSettings()).tokenGeneration).toBe(1);
      });

      it('keeps one signing key: rotation replaces it and bumps the generation', async () => {
        const store = await open();
        expect(await store.getSigningKey()).toBeNull();
        await store.rotateSigningKey(signingKey('k1'));
        await store.rotateSigningKey(signingKey('k2'));
        expect(await store.getSigningKey()).toEqual(signingKey('k2'));
        expect((await store.getSettings()).tokenGeneration).toBe(3);
        // A first key offered after a rotation changes nothing.
        expect((await store.initSigningKey(signingKey('k3', T0 + DAY_MS))).kid).toBe('k2');
        expect((await (await openSecond()).getSigningKey())?.kid).toBe('k2');
      });
    });

    describe('accounts', () => {
      it("checks a user's group and role in the write: unknown group, role mismatch", async () => {
        const store = await open();
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

      it('refuses a user or a group whose name differs from a taken one only in case or Unicode normalisation', async () => {
        const store = await open();
        await store.createUser(user('alice'));
        await store.createUser(user('ADMIN', { role: 'admin' }));
        await store.createUser(user('caf\u00e9'));
        for (const name of ['Alice', 'ALICE', 'admin', 'cafe\u0301', 'CAF\u00c9'])
          expect(await codeOf(store.createUser(user(name)))).toMatchObject({ code: 'PLATFORM_ERR_USER_EXISTS' });
        await store.createGroup(group('staff'));
        expect(await codeOf(store.createGroup(group('Staff')))).toMatchObject({ code: 'PLATFORM_ERR_GROUP_EXISTS' });
        expect((await store.listUsers()).map((u) => u.username)).toEqual(['ADMIN', 'alice', 'caf\u00e9']);
        expect(await store.countAdmins()).toBe(1);
        expect(await store.ambiguousNames()).toEqual({ users: [], groups: [] });
      });

      it('finds, changes, locks and deletes a user and a group by any case of the name, keeping the stored names', async () => {
        const store = await open();
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

      it('ends the sessions of a user whose password or role changes, and only then', async () => {
        const store = await open();
        await store.createUser(user('alice'));
        await store.createFamily(family('f1', 'alice'));
        await store.updateUser('alice', { description: 'just a note' }, T0 + 1);
        expect((await store.getFamily('f1'))?.revokedAt).toBeNull();
        await store.updateUser('alice', { passwordHash: 'scrypt$new' }, T0 + 2);
        expect((await store.getFamily('f1'))?.revokedAt).toBe(T0 + 2);
        await store.createFamily(family('f2', 'alice'));
        await store.updateUser('alice', { role: 'external' }, T0 + 3);
        expect((await store.getFamily('f2'))?.revokedAt).toBe(T0 + 3);
        expect(await store.updateUser('nobody', { description: 'x' }, T0)).toBeNull();
      });

      it('keeps barcodes unique always and passwords unique when asked, finding users by either tag', async () => {
        const store = await open();
        await store.createUser(user('alice', { passwordTag: 'pw-1', barcodeHash: 'bh-a', barcodeTag: 'bc-1' }));
        expect(await codeOf(store.createUser(user('bob', { barcodeHash: 'bh-b', barcodeTag: 'bc-1' })))).toMatchObject({
          code: 'PLATFORM_ERR_BARCODE_IN_USE',
        });
        expect(await codeOf(store.createUser(user('bob', { passwordTag: 'pw-1' }), { uniquePassword: true }))).toMatchObject({
          code: 'PLATFORM_ERR_PASSWORD_IN_USE',
        });
        expect(await store.getUser('bob')).toBeNull();
        await store.createUser(user('bob', { passwordTag: 'pw-1' }));
        expect((await store.usersBySecretTag('password', 'pw-1')).map((u) => u.username)).toEqual(['alice', 'bob']);
        expect((await store.usersBySecretTag('barcode', 'bc-1')).map((u) => u.username)).toEqual(['alice']);
        expect(await store.usersBySecretTag('barcode', 'pw-1')).toEqual([]);
        expect(await store.sharedPasswords()).toEqual([['alice', 'bob']]);
        expect(await codeOf(store.updateUser('bob', { barcodeHash: 'bh-b', barcodeTag: 'bc-1' }, T0))).toMatchObject({
          code: 'PLATFORM_ERR_BARCODE_IN_USE',
        });
        expect(
          await codeOf(store.updateUser('bob', { passwordHash: 'h', passwordTag: 'pw-1' }, T0, { uniquePassword: true })),
        ).toMatchObject({
          code: 'PLATFORM_ERR_PASSWORD_IN_USE',
        });
        // A user's own tags are no conflict with itself.
        expect(await store.updateUser('alice', { barcodeHash: 'bh-a2', barcodeTag: 'bc-1' }, T0, { uniquePassword: true })).toMatchObject({
          barcodeTag: 'bc-1',
        });
        await store.updateUser('bob', { passwordHash: 'h2', passwordTag: 'pw-2' }, T0, { uniquePassword: true });
        expect(await store.sharedPasswords()).toEqual([]);
      });

      it('gives every instance on the same data the same 32-byte lookup key', async () => {
        const a = await open();
        const b = await openSecond();
        const [ka, kb] = await Promise.all([a.lookupKey(), b.lookupKey()]);
        expect(ka.length).toBe(32);
        expect(kb.equals(ka)).toBe(true);
        expect((await a.lookupKey()).equals(ka)).toBe(true);
      });
    });

    describe('user groups and custom operations', () => {
      it('creates, lists, changes and deletes groups, and keeps them across a reopen', async () => {
        const store = await open();
        await store.createGroup(group('b-writers', { operations: ['api.read', 'api.write'], description: 'they write' }));
        await store.createGroup(group('a-readers'));
        expect(await codeOf(store.createGroup(group('a-readers')))).toMatchObject({ code: 'PLATFORM_ERR_GROUP_EXISTS' });
        expect((await store.listGroups()).map((g) => g.name)).toEqual(['a-readers', 'b-writers']);
        expect(await store.updateGroup('a-readers', { operations: ['profile.read'], role: 'external' })).toEqual(
          group('a-readers', { operations: ['profile.read'], role: 'external' }),
        );
        expect(await store.updateGroup('nobody', { description: 'x' })).toBeNull();
        await store.close();
        const again = await openSecond();
        expect(await again.getGroup('b-writers')).toEqual(
          group('b-writers', { operations: ['api.read', 'api.write'], description: 'they write' }),
        );
        expect(await again.deleteGroup('a-readers')).toBe(true);
        expect(await again.deleteGroup('a-readers')).toBe(false);
        expect(await again.getGroup('a-readers')).toBeNull();
      });

      it('refuses to delete a group or change its role while users remain, in the same transaction', async () => {
        const store = await open();
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

      it('creates, lists, describes and deletes custom operations, refusing a taken name and one a group holds', async () => {
        const store = await open();
        expect(await store.listCustomOperations()).toEqual([]);
        await store.createCustomOperation({ name: 'doc.receipt', description: 'Приход', createdAt: T0 });
        await store.createCustomOperation({ name: 'doc.inventory', description: null, createdAt: T0 + 1 });
        expect(await codeOf(store.createCustomOperation({ name: 'doc.receipt', description: null, createdAt: T0 }))).toMatchObject({
          code: 'PLATFORM_ERR_OPERATION_EXISTS',
        });
        expect(await store.listCustomOperations()).toEqual([
          { name: 'doc.inventory', description: null, createdAt: T0 + 1 },
          { name: 'doc.receipt', description: 'Приход', createdAt: T0 },
        ]);
        expect(await store.updateCustomOperation('doc.inventory', 'Инвентаризация')).toEqual({
          name: 'doc.inventory',
          description: 'Инвентаризация',
          createdAt: T0 + 1,
        });
        expect(await store.updateCustomOperation('nope', 'x')).toBeNull();
        await store.createGroup(group('b-clerks', { operations: ['api.read', 'doc.receipt'] }));
        await store.createGroup(group('a-clerks', { operations: ['doc.receipt'] }));
        let refused: unknown;
        try {
          await store.deleteCustomOperation('doc.receipt');
        } catch (err) {
          refused = err;
        }
        expect(refused).toBeInstanceOf(RelayError);
        expect(refused).toMatchObject({ code: 'PLATFORM_ERR_OPERATION_IN_USE', details: { groups: ['a-clerks', 'b-clerks'] } });
        expect((await store.listCustomOperations()).map((op) => op.name)).toEqual(['doc.inventory', 'doc.receipt']);
        expect(await store.deleteCustomOperation('doc.inventory')).toBe(true);
        expect(await store.deleteCustomOperation('doc.inventory')).toBe(false);
        const second = await openSecond();
        expect((await second.listCustomOperations()).map((op) => op.name)).toEqual(['doc.receipt']);
      });
    });

    describe('lockout counters and locks', () => {
      it('locks the device exactly once under 20 concurrent failures', async () => {
        const store = await open();
        await store.createUser(user('alice'));
        const results = await Promise.all(Array.from({ length: 20 }, () => store.recordLoginFailure('d1', 'alice', T0, policy, true)));
        expect(results.filter((r) => r.deviceLockedNow)).toHaveLength(1);
        expect(results.filter((r) => r.userLockedUntil !== null)).toHaveLength(0);
        expect(results.filter((r) => r.deviceLockedUntil === null)).toHaveLength(4);
        expect(results.filter((r) => r.deviceLockedUntil === T0 + 15 * MINUTE_MS)).toHaveLength(16);
        expect(await store.getDevice('d1')).toMatchObject({ lockedAt: T0, lockedUntil: T0 + 15 * MINUTE_MS, lastUsername: 'alice' });
      });

      it('locks the device exactly once when 20 failures arrive through two connections to the same file', async () => {
        const a = await open();
        const b = await openSecond();
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).recordLoginFailure('d1', 'alice', T0 + i, policy, false)),
        );
        expect(results.filter((r) => r.deviceLockedNow)).toHaveLength(1);
      });

      it('locks the user exactly once when three devices lock at the same time', async () => {
        const store = await open();
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

      it('resets the failure count on success and unlocks a device on request', async () => {
        const store = await open();
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

      it('forgets failures older than the reset time, and a lock once it has ended', async () => {
        const store = await open();
        for (let i = 0; i < 4; i++) await store.recordLoginFailure('d1', 'alice', T0, policy, false);
        // The reset time after the last failure: the count starts again.
        expect(await store.recordLoginFailure('d1', 'alice', T0 + policy.failureResetMs, policy, false)).toEqual(counted);
        expect(await store.getDeviceUser('d1', 'alice')).toMatchObject({ failures: 1, lastFailureAt: T0 + policy.failureResetMs });
        expect(await store.deviceLockedUntil('d1', 'alice', T0 + 15 * MINUTE_MS)).toBeNull();
      });

      it('counts a repeat of a recent wrong password once under smart lockout, and a new one again', async () => {
        const store = await open();
        const smart: LockoutPolicy = { ...policy, smart: true };
        expect(await store.recordLoginFailure('d1', 'alice', T0, smart, true, 'tag-1')).toEqual(counted);
        for (let i = 1; i <= 10; i++)
          expect(await store.recordLoginFailure('d1', 'alice', T0 + i, smart, true, 'tag-1')).toMatchObject({
            repeated: true,
            deviceLockedNow: false,
            deviceLockedUntil: null,
          });
        expect(await store.getDeviceUser('d1', 'alice')).toMatchObject({ failures: 1, lastSeenAt: T0 + 10 });
        for (let i = 2; i <= 4; i++)
          expect(await store.recordLoginFailure('d1', 'alice', T0 + 20, smart, true, `tag-${i}`)).toEqual(counted);
        expect(await store.recordLoginFailure('d1', 'alice', T0 + 21, smart, true, 'tag-5')).toEqual({
          deviceLockedUntil: T0 + 21 + policy.deviceLockMs,
          deviceLockedNow: true,
          userLockedUntil: null,
        });
        // Once the failure window has passed, the same wrong password counts again.
        await store.recordLoginFailure('d2', 'alice', T0, smart, true, 'tag-1');
        expect(await store.recordLoginFailure('d2', 'alice', T0 + policy.failureResetMs, smart, true, 'tag-1')).toEqual(counted);
        expect(await store.getDeviceUser('d2', 'alice')).toMatchObject({ failures: 1 });
      });
    });

    describe('address limits', () => {
      it('never lets more than `limit` attempts from one address through under concurrency', async () => {
        const a = await open();
        const b = await openSecond();
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).hitIpAttempt('203.0.113.1', T0, MINUTE_MS, 10)),
        );
        expect(results.filter((r) => r.allowed)).toHaveLength(10);
        for (const r of results.filter((x) => !x.allowed)) expect(r.retryAfterMs).toBe(MINUTE_MS);
        expect((await a.hitIpAttempt('203.0.113.2', T0, MINUTE_MS, 10)).allowed).toBe(true);
      });

      it('frees one attempt per attempt that leaves the window, refused ones not counted', async () => {
        const store = await open();
        for (let i = 0; i < 3; i++) expect((await store.hitIpAttempt('ip', T0 + i * 1000, MINUTE_MS, 3)).allowed).toBe(true);
        for (let i = 0; i < 10; i++) expect((await store.hitIpAttempt('ip', T0 + 5000, MINUTE_MS, 3)).allowed).toBe(false);
        expect(await store.hitIpAttempt('ip', T0 + 59_999, MINUTE_MS, 3)).toMatchObject({ allowed: false, retryAfterMs: 1 });
        expect((await store.hitIpAttempt('ip', T0 + MINUTE_MS, MINUTE_MS, 3)).allowed).toBe(true);
        expect(await store.hitIpAttempt('ip', T0 + MINUTE_MS, MINUTE_MS, 3)).toMatchObject({ allowed: false, retryAfterMs: 1000 });
      });

      it('gives a released attempt back (a login that succeeded), and only that one', async () => {
        const store = await open();
        const first = await store.hitIpAttempt('ip', T0, MINUTE_MS, 2);
        await store.hitIpAttempt('ip', T0, MINUTE_MS, 2);
        expect((await store.hitIpAttempt('ip', T0, MINUTE_MS, 2)).allowed).toBe(false);
        await store.releaseIpAttempt(first.attemptId);
        expect((await store.hitIpAttempt('ip', T0, MINUTE_MS, 2)).allowed).toBe(true);
        expect((await store.hitIpAttempt('ip', T0, MINUTE_MS, 2)).allowed).toBe(false);
      });
    });

    describe("administrators' login waits", () => {
      it('counts attempts under every key through two connections, refuses during the wait, and keeps the counts across reopening', async () => {
        const a = await open();
        const b = await openSecond();
        const keys = ['ip:127.0.0.2', 'user:admin'];
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).hitAdminLogin(keys, T0, adminWaitPolicy)));
        expect(results.filter((r) => r.allowed)).toHaveLength(3);
        for (const r of results.filter((r) => !r.allowed)) expect(r.retryAfterMs).toBe(1_000);
        await a.close();
        await b.close();
        const c = await openSecond();
        // One key alone still waits: the account's wait holds for a login from another address.
        expect(await c.hitAdminLogin(['ip:127.0.0.3', 'user:admin'], T0 + 500, adminWaitPolicy)).toEqual({
          allowed: false,
          retryAfterMs: 500,
        });
        await c.clearAdminLogin(['user:admin']);
        expect((await c.hitAdminLogin(['ip:127.0.0.3', 'user:admin'], T0 + 500, adminWaitPolicy)).allowed).toBe(true);
      });

      it('prunes a count once its reset time has passed without a failure', async () => {
        const store = await open();
        await store.hitAdminLogin(['user:x'], T0, adminWaitPolicy);
        expect(await store.prune(T0 + adminWaitPolicy.failureResetMs - 1)).toBe(0);
        expect(await store.prune(T0 + adminWaitPolicy.failureResetMs)).toBe(1);
      });
    });

    describe('devices', () => {
      it('records a device on its first successful login with the user and the time, failures 0 and no lock', async () => {
        const store = await open();
        expect(await store.getDevice('phone-1')).toBeNull();
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
        expect(await store.getDeviceUser('phone-1', 'alice')).toEqual({
          username: 'alice',
          deviceId: 'phone-1',
          failures: 0,
          lastFailureAt: null,
          lockedAt: null,
          lockedUntil: null,
          lastSeenAt: T0,
          known: true,
        });
        expect(await store.getDeviceUser('phone-1', 'bob')).toBeNull();
      });

      it('moves the last sight and the last user on every login, failed or successful', async () => {
        const store = await open();
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
        const store = await open();
        for (let i = 0; i < 5; i++) await store.recordLoginFailure('d1', 'alice', T0, policy, true);
        expect(await store.recordLoginSuccess('d1', 'alice', T0 + 15 * MINUTE_MS)).toBe(true);
        expect(await store.getDevice('d1')).toMatchObject({
          failures: 0,
          lastSeenAt: T0 + 15 * MINUTE_MS,
          lockedUntil: T0 + 15 * MINUTE_MS,
        });
      });

      it("lists every device by user name, then device id, or one user's devices", async () => {
        const store = await open();
        await store.recordLoginSuccess('tablet', 'bob', T0);
        await store.recordLoginSuccess('phone-b', 'alice', T0);
        await store.recordLoginFailure('phone-a', 'alice', T0, policy, true);
        await store.recordLoginSuccess('laptop', 'bob', T0);
        const ids = (list: { deviceId: string; lastUsername: string | null }[]): string[] =>
          list.map((d) => `${d.lastUsername}/${d.deviceId}`);
        expect(ids(await store.listDevices())).toEqual(['alice/phone-a', 'alice/phone-b', 'bob/laptop', 'bob/tablet']);
        expect(ids(await store.listDevices({ username: 'bob' }))).toEqual(['bob/laptop', 'bob/tablet']);
        expect(await store.listDevices({ username: 'nobody' })).toEqual([]);
      });

      it("keeps a deleted user's devices and its (user, device) lock, which holds that name only", async () => {
        const store = await open();
        await store.createUser(user('alice'));
        await store.recordLoginSuccess('phone-1', 'alice', T0);
        for (let i = 0; i < 5; i++) await store.recordLoginFailure('phone-2', 'alice', T0, policy, true);
        expect(await store.deleteUser('alice')).toBe(true);
        expect(await store.deleteUser('alice')).toBe(false);
        expect((await store.listDevices({ username: 'alice' })).map((d) => d.deviceId)).toEqual(['phone-1', 'phone-2']);
        expect((await store.recordLoginFailure('phone-2', 'alice', T0 + MINUTE_MS, policy, false)).deviceLockedUntil).toBe(
          T0 + 15 * MINUTE_MS,
        );
        expect((await store.recordLoginFailure('phone-2', 'bob', T0 + MINUTE_MS, policy, false)).deviceLockedUntil).toBeNull();
        // A later account of the same name does not inherit the devices as known ones (smart lockout).
        expect(await store.getDeviceUser('phone-1', 'alice')).toMatchObject({ known: false });
      });

      it('prunes a device last seen more than 180 days ago, and keeps one seen 180 days ago to the millisecond', async () => {
        const store = await open();
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
        const store = await open();
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

      it('prunes a (user, device) row without a successful login once its lock and failures no longer count; a known one after 180 days', async () => {
        const store = await open();
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
    });

    describe('refresh families', () => {
      it('rotates the current token, revokes the family when a spent one comes back, and says why it refuses', async () => {
        const store = await open();
        await store.createFamily(family('f1', 'alice'));
        expect(await store.getFamily('f1')).toEqual(family('f1', 'alice'));
        expect(await store.rotateFamily('f1', 'h1', 'h2', T0 + 1000, T0 + 50 * DAY_MS)).toBe('rotated');
        expect(await store.getFamily('f1')).toMatchObject({ currentJtiHash: 'h2', lastUsedAt: T0 + 1000, expiresAt: T0 + 50 * DAY_MS });
        expect(await store.rotateFamily('f1', 'h1', 'h3', T0 + 2000, T0 + 50 * DAY_MS)).toBe('reused');
        expect((await store.getFamily('f1'))?.revokedAt).toBe(T0 + 2000);
        expect(await store.rotateFamily('f1', 'h2', 'h3', T0 + 3000, T0 + 50 * DAY_MS)).toBe('revoked');
        expect(await store.rotateFamily('nope', 'h1', 'h2', T0, T0)).toBe('missing');
        expect(await store.getFamily('nope')).toBeNull();
      });

      it('lets exactly one of two concurrent rotations of the same token win', async () => {
        const a = await open();
        const b = await openSecond();
        await a.createFamily(family('f1', 'alice'));
        const results = await Promise.all([
          a.rotateFamily('f1', 'h1', 'hA', T0, T0 + DAY_MS),
          b.rotateFamily('f1', 'h1', 'hB', T0, T0 + DAY_MS),
        ]);
        expect(results.sort()).toEqual(['reused', 'rotated']);
        expect((await a.getFamily('f1'))?.revokedAt).toBe(T0);
      });

      it('keeps a revoked family revoked across a reopen', async () => {
        const store = await open();
        await store.createFamily(family('f1', 'alice'));
        await store.revokeFamily('f1', T0 + 5);
        await store.revokeFamily('f1', T0 + 10);
        await store.close();
        const again = await openSecond();
        expect((await again.getFamily('f1'))?.revokedAt).toBe(T0 + 5);
        expect(await again.rotateFamily('f1', 'h1', 'h2', T0 + 20, T0 + DAY_MS)).toBe('revoked');
      });

      it('never moves the last use back in time', async () => {
        const store = await open();
        await store.createFamily(family('f1', 'alice'));
        await store.touchFamily('f1', T0 + 10_000);
        await store.touchFamily('f1', T0 + 5_000);
        expect((await store.getFamily('f1'))?.lastUsedAt).toBe(T0 + 10_000);
      });
    });

    describe('user locks', () => {
      it('revokes every family, mobile token and mobile session of a user it locks, and nobody else’s', async () => {
        const store = await open();
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
        expect(await store.setUserLock('alice', null)).toMatchObject({
          lockedForSecurityReasons: false,
          lockedAt: null,
          lockedUntil: null,
        });
      });

      it('keeps a user lock and a device lock across a reopen', async () => {
        const store = await open();
        await store.createUser(user('alice'));
        for (let d = 0; d < 3; d++) for (let i = 0; i < 5; i++) await store.recordLoginFailure(`d${d}`, 'alice', T0, policy, true);
        await store.close();
        const again = await openSecond();
        expect(await again.getUser('alice')).toMatchObject({ lockedForSecurityReasons: true, lockedUntil: T0 + DAY_MS });
        expect((await again.getDevice('d2'))?.lockedUntil).toBe(T0 + 15 * MINUTE_MS);
        expect((await again.recordLoginFailure('d2', 'alice', T0 + MINUTE_MS, policy, true)).deviceLockedUntil).toBe(T0 + 15 * MINUTE_MS);
      });
    });

    describe('mobile tokens, sessions and pruning', () => {
      it('keeps a session used within the idle time, renewing it, and deletes it once idle longer', async () => {
        const store = await open();
        await store.putMobileSession({ sessionHash: 's', username: 'alice', tokenHash: 't', createdAt: T0, lastSeenAt: T0 });
        expect(await store.touchMobileSession('s', T0 + 30 * MINUTE_MS, 30 * MINUTE_MS)).toMatchObject({
          session: { lastSeenAt: T0 + 30 * MINUTE_MS, tokenHash: 't' },
        });
        expect(await store.touchMobileSession('s', T0 + 60 * MINUTE_MS + 1, 30 * MINUTE_MS)).toEqual({ refused: 'idle' });
        expect(await store.touchMobileSession('s', T0 + 60 * MINUTE_MS + 2, 30 * MINUTE_MS)).toEqual({ refused: 'missing' });
      });

      it('stores tokens and sessions under the generation in force, and voids them when it changes', async () => {
        const store = await open();
        await store.putMobileToken({ tokenHash: 't1', username: 'alice', createdAt: T0, expiresAt: T0 + DAY_MS });
        await store.putMobileSession({ sessionHash: 's1', username: 'alice', tokenHash: 't1', createdAt: T0, lastSeenAt: T0 });
        expect(await store.getMobileToken('t1')).toEqual({
          tokenHash: 't1',
          username: 'alice',
          createdAt: T0,
          expiresAt: T0 + DAY_MS,
          generation: 1,
        });
        expect(await store.getMobileToken('nope')).toBeNull();
        await store.rotateSigningKey(signingKey('k1'));
        expect(await store.getMobileToken('t1')).toBeNull();
        expect(await store.touchMobileSession('s1', T0 + 1, 30 * MINUTE_MS)).toEqual({ refused: 'void' });
        expect(await store.touchMobileSession('s1', T0 + 2, 30 * MINUTE_MS)).toEqual({ refused: 'missing' });
        await store.putMobileToken({ tokenHash: 't2', username: 'alice', createdAt: T0, expiresAt: T0 + DAY_MS });
        expect(await store.getMobileToken('t2')).toMatchObject({ generation: 2 });
        await store.putMobileSession({ sessionHash: 's2', username: 'alice', tokenHash: 't2', createdAt: T0, lastSeenAt: T0 });
        expect(await store.touchMobileSession('s2', T0 + 1, 30 * MINUTE_MS)).toEqual({
          session: { sessionHash: 's2', username: 'alice', tokenHash: 't2', createdAt: T0, lastSeenAt: T0 + 1, generation: 2 },
        });
      });

      it('deletes a user with its families, mobile tokens and sessions', async () => {
        const store = await open();
        await store.createUser(user('alice'));
        await store.createFamily(family('fa', 'alice'));
        await store.putMobileToken({ tokenHash: 'ta', username: 'alice', createdAt: T0, expiresAt: T0 + DAY_MS });
        await store.putMobileSession({ sessionHash: 'sa', username: 'alice', tokenHash: 'ta', createdAt: T0, lastSeenAt: T0 });
        expect(await store.deleteUser('alice')).toBe(true);
        expect(await store.getFamily('fa')).toBeNull();
        expect(await store.getMobileToken('ta')).toBeNull();
        expect(await store.touchMobileSession('sa', T0 + 1, 30 * MINUTE_MS)).toEqual({ refused: 'missing' });
      });

      it('prunes expired families, old revoked ones, expired mobile tokens, old attempts and idle sessions, and nothing live', async () => {
        const store = await open();
        const now = T0 + 10 * DAY_MS;
        await store.createFamily(family('expired', 'alice', { expiresAt: now - 1 }));
        await store.createFamily(family('revoked-long-ago', 'alice', { revokedAt: now - 2 * DAY_MS }));
        await store.createFamily(family('revoked-recently', 'alice', { revokedAt: now - HOUR_MS }));
        await store.createFamily(family('live', 'alice', { expiresAt: now + DAY_MS }));
        await store.putMobileToken({ tokenHash: 'old', username: 'alice', createdAt: T0, expiresAt: now });
        await store.putMobileToken({ tokenHash: 'new', username: 'alice', createdAt: T0, expiresAt: now + 1 });
        await store.putMobileSession({
          sessionHash: 'idle',
          username: 'alice',
          tokenHash: null,
          createdAt: T0,
          lastSeenAt: now - 2 * DAY_MS,
        });
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
        expect(await store.prune(now)).toBe(0);
      });
    });

    describe('two instances at once (each check-and-update atomic across instances)', () => {
      it('locks a (user, device) at exactly N failures out of 3N sent at once over both instances; after the lock nothing counts', async () => {
        const a = await open();
        const b = await openSecond();
        await a.createUser(user('alice'));
        const n = policy.deviceFailures;
        // A failure window longer than the lock: a count that went on past the lock would still hold when it ends.
        const p: LockoutPolicy = { ...policy, failureResetMs: DAY_MS };
        const lockEnd = T0 + p.deviceLockMs;
        const results = await Promise.all(
          Array.from({ length: 3 * n }, (_, i) => (i % 2 ? b : a).recordLoginFailure('d1', 'alice', T0, p, true)),
        );
        expect(results.filter((r) => r.deviceLockedNow)).toEqual([
          { deviceLockedUntil: lockEnd, deviceLockedNow: true, userLockedUntil: null },
        ]);
        // Failures 1 … N−1 counted and locked nothing; the N-th locked; the 2N after it met the lock.
        const before = results.filter((r) => r.deviceLockedUntil === null);
        expect(before).toHaveLength(n - 1);
        for (const r of before) expect(r).toEqual(counted);
        const after = results.filter((r) => !r.deviceLockedNow && r.deviceLockedUntil !== null);
        expect(after).toHaveLength(2 * n);
        for (const r of after) expect(r).toEqual({ deviceLockedUntil: lockEnd, deviceLockedNow: false, userLockedUntil: null });
        expect(await b.getDeviceUser('d1', 'alice')).toMatchObject({ lockedAt: T0, lockedUntil: lockEnd });
        expect(await a.deviceLockedUntil('d1', 'alice', T0)).toBe(lockEnd);
        expect(await b.getUser('alice')).toMatchObject({ lockedForSecurityReasons: false });
        // When the lock ends the count starts from nothing: N−1 more lock nothing, the N-th locks again.
        for (let i = 1; i < n; i++) expect(await (i % 2 ? a : b).recordLoginFailure('d1', 'alice', lockEnd, p, true)).toEqual(counted);
        expect(await a.recordLoginFailure('d1', 'alice', lockEnd, p, true)).toMatchObject({ deviceLockedNow: true });
      });

      it('locks the user exactly once, at the M-th device lock, when M devices are driven to their lock at once over both instances', async () => {
        const a = await open();
        const b = await openSecond();
        await a.createUser(user('alice'));
        await a.createFamily(family('fa', 'alice'));
        const m = policy.userDeviceLocks;
        const n = policy.deviceFailures;
        const results = await Promise.all(
          Array.from({ length: 2 * m * n }, (_, i) => (i % 2 ? b : a).recordLoginFailure(`d${i % m}`, 'alice', T0, policy, true)),
        );
        expect(results.filter((r) => r.deviceLockedNow)).toHaveLength(m);
        const userLocks = results.filter((r) => r.userLockedUntil !== null);
        expect(userLocks).toEqual([
          { deviceLockedUntil: T0 + policy.deviceLockMs, deviceLockedNow: true, userLockedUntil: T0 + policy.userLockMs },
        ]);
        for (const store of [a, b])
          expect(await store.getUser('alice')).toMatchObject({
            lockedForSecurityReasons: true,
            lockedAt: T0,
            lockedUntil: T0 + policy.userLockMs,
          });
        // The user lock ended the user's sessions in the same step.
        expect((await b.getFamily('fa'))?.revokedAt).toBe(T0);
        for (let d = 0; d < m; d++) expect(await b.deviceLockedUntil(`d${d}`, 'alice', T0)).toBe(T0 + policy.deviceLockMs);
      });

      it('does not lock the user at M − 1 device locks made at once over both instances', async () => {
        const a = await open();
        const b = await openSecond();
        await a.createUser(user('alice'));
        const m = policy.userDeviceLocks;
        const n = policy.deviceFailures;
        const results = await Promise.all(
          Array.from({ length: 2 * (m - 1) * n }, (_, i) =>
            (i % 2 ? b : a).recordLoginFailure(`d${i % (m - 1)}`, 'alice', T0, policy, true),
          ),
        );
        expect(results.filter((r) => r.deviceLockedNow)).toHaveLength(m - 1);
        expect(results.filter((r) => r.userLockedUntil !== null)).toHaveLength(0);
        expect(await b.getUser('alice')).toMatchObject({ lockedForSecurityReasons: false, lockedUntil: null });
      });

      it('lets exactly one of ten concurrent rotations of the same token win; the next one reuses and revokes, the rest find it revoked', async () => {
        const a = await open();
        const b = await openSecond();
        await a.createFamily(family('f1', 'alice'));
        const now = T0 + 1000;
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 ? b : a).rotateFamily('f1', 'h1', `next-${i}`, now, now + DAY_MS)),
        );
        const count = (r: string): number => results.filter((x) => x === r).length;
        expect({ rotated: count('rotated'), reused: count('reused'), revoked: count('revoked'), missing: count('missing') }).toEqual({
          rotated: 1,
          reused: 1,
          revoked: 8,
          missing: 0,
        });
        const winner = results.indexOf('rotated');
        for (const store of [a, b])
          expect(await store.getFamily('f1')).toEqual(
            family('f1', 'alice', { currentJtiHash: `next-${winner}`, lastUsedAt: now, expiresAt: now + DAY_MS, revokedAt: now }),
          );
      });

      it('lets exactly L of 3L attempts from one address through when they arrive at once over both instances', async () => {
        const a = await open();
        const b = await openSecond();
        const limit = 4;
        const results = await Promise.all(
          Array.from({ length: 3 * limit }, (_, i) => (i % 2 ? b : a).hitIpAttempt('198.51.100.7', T0, MINUTE_MS, limit)),
        );
        const allowed = results.filter((r) => r.allowed);
        expect(allowed).toHaveLength(limit);
        expect(new Set(allowed.map((r) => r.attemptId)).size).toBe(limit);
        for (const r of results.filter((x) => !x.allowed)) expect(r.retryAfterMs).toBe(MINUTE_MS);
        // A reservation taken through one instance is given back through the other.
        await b.releaseIpAttempt(allowed[0]!.attemptId);
        expect((await a.hitIpAttempt('198.51.100.7', T0 + 1, MINUTE_MS, limit)).allowed).toBe(true);
        expect((await b.hitIpAttempt('198.51.100.7', T0 + 1, MINUTE_MS, limit)).allowed).toBe(false);
      });

      it("lets exactly one of ten administrator's logins sent at once under one key through, when the first failure makes one wait", async () => {
        const a = await open();
        const b = await openSecond();
        const oneFree = { ...adminWaitPolicy, freeFailures: 1 };
        const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? b : a).hitAdminLogin(['user:admin'], T0, oneFree)));
        expect(results.filter((r) => r.allowed)).toEqual([{ allowed: true, retryAfterMs: 0 }]);
        for (const r of results.filter((x) => !x.allowed)) expect(r).toEqual({ allowed: false, retryAfterMs: oneFree.firstWaitMs });
        expect(await a.hitAdminLogin(['user:admin'], T0 + oneFree.firstWaitMs - 1, oneFree)).toEqual({ allowed: false, retryAfterMs: 1 });
        expect((await b.hitAdminLogin(['user:admin'], T0 + oneFree.firstWaitMs, oneFree)).allowed).toBe(true);
      });

      it('answers two different first signing keys offered at once on both instances with the same one', async () => {
        const a = await open();
        const b = await openSecond();
        const [first, second] = await Promise.all([a.initSigningKey(signingKey('k1')), b.initSigningKey(signingKey('k2', T0 + 1))]);
        expect(second).toEqual(first);
        expect([signingKey('k1'), signingKey('k2', T0 + 1)]).toContainEqual(first);
        expect(await a.getSigningKey()).toEqual(first);
        expect(await b.getSigningKey()).toEqual(first);
        expect((await b.getSettings()).tokenGeneration).toBe(1);
      });

      it('creates exactly one of `Alice` and `alice` sent at once on both instances; the other gets 409 PLATFORM_ERR_USER_EXISTS', async () => {
        const a = await open();
        const b = await openSecond();
        const outcomes = await Promise.allSettled([a.createUser(user('Alice')), b.createUser(user('alice'))]);
        expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
        const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
        expect(refused).toHaveLength(1);
        expect(refused[0]!.reason).toBeInstanceOf(RelayError);
        expect(refused[0]!.reason).toMatchObject({ code: 'PLATFORM_ERR_USER_EXISTS', httpStatus: 409 });
        const created = outcomes[0]!.status === 'fulfilled' ? 'Alice' : 'alice';
        for (const store of [a, b]) {
          expect((await store.listUsers()).map((u) => u.username)).toEqual([created]);
          expect(await store.getLoginUser('ALICE')).toEqual(user(created));
        }
        expect(await a.ambiguousNames()).toEqual({ users: [], groups: [] });
      });

      it('answers a login success that races the locking failure consistently: true only if the lock came after, and then it reset the count', async () => {
        const a = await open();
        const b = await openSecond();
        await a.createUser(user('alice'));
        const n = policy.deviceFailures;
        // Ten device locks: none of them may lock the user here.
        const p: LockoutPolicy = { ...policy, userDeviceLocks: 1000 };
        const seen = { successFirst: 0, lockFirst: 0 };
        for (let round = 0; round < 10; round++) {
          const device = `race-${round}`;
          for (let i = 1; i < n; i++) expect(await (i % 2 ? a : b).recordLoginFailure(device, 'alice', T0, p, true)).toEqual(counted);
          const [x, y] = round % 2 ? [a, b] : [b, a];
          const success = (): Promise<boolean> => x.recordLoginSuccess(device, 'alice', T0 + 1);
          const failure = (): Promise<FailureResult> => y.recordLoginFailure(device, 'alice', T0 + 1, p, true);
          // Both orders of issue, so that a store that runs calls in order meets both.
          const [ok, failed] =
            round % 4 < 2
              ? await Promise.all([success(), failure()])
              : await Promise.all([failure(), success()]).then(([f, s]) => [s, f] as const);
          const row = await (round % 2 ? b : a).getDeviceUser(device, 'alice');
          if (ok) {
            // The success came first: it reset the count, so the failure after it was the first of a new count.
            seen.successFirst++;
            expect(failed).toEqual(counted);
            expect(row).toMatchObject({ failures: 1, lockedUntil: null, known: true, lastFailureAt: T0 + 1 });
            expect(await a.deviceLockedUntil(device, 'alice', T0 + 1)).toBeNull();
          } else {
            // The lock came first: the success changed nothing.
            seen.lockFirst++;
            expect(failed).toEqual({ deviceLockedUntil: T0 + 1 + policy.deviceLockMs, deviceLockedNow: true, userLockedUntil: null });
            expect(row).toMatchObject({ lockedAt: T0 + 1, lockedUntil: T0 + 1 + policy.deviceLockMs, known: false });
            expect(await b.deviceLockedUntil(device, 'alice', T0 + 1)).toBe(T0 + 1 + policy.deviceLockMs);
          }
        }
        expect(seen.successFirst + seen.lockFirst).toBe(10);
        expect(await b.getUser('alice')).toMatchObject({ lockedForSecurityReasons: false });
      });

      it('shows a settings change made on one instance to the other at once: the settings, the generation, and void tokens', async () => {
        const a = await open();
        const b = await openSecond();
        await a.putMobileToken({ tokenHash: 'tok', username: 'alice', createdAt: T0, expiresAt: T0 + DAY_MS });
        await a.putMobileSession({ sessionHash: 'ses', username: 'alice', tokenHash: 'tok', createdAt: T0, lastSeenAt: T0 });
        expect(await b.getMobileToken('tok')).toMatchObject({ generation: 1 });
        const next = cloneSettings(defaultSettings);
        next.mobile_session_idle_minutes = 10;
        next.lockout.device_failures = 3;
        expect(await a.saveSettings(next, { invalidateTokens: true, recalculateLocks: null, now: T0 + 1 })).toEqual({
          settings: next,
          tokenGeneration: 2,
        });
        expect(await b.getSettings()).toEqual({ settings: next, tokenGeneration: 2 });
        expect(await b.getMobileToken('tok')).toBeNull();
        expect(await b.touchMobileSession('ses', T0 + 2, 30 * MINUTE_MS)).toEqual({ refused: 'void' });
        // What the other instance stores from then on is of the new generation, and valid on both.
        await b.putMobileToken({ tokenHash: 'tok2', username: 'alice', createdAt: T0 + 2, expiresAt: T0 + DAY_MS });
        expect(await a.getMobileToken('tok2')).toMatchObject({ generation: 2 });
        // A change without invalidation keeps the tokens.
        await b.saveSettings(cloneSettings(defaultSettings), { invalidateTokens: false, recalculateLocks: null, now: T0 + 3 });
        expect(await a.getSettings()).toEqual({ settings: cloneSettings(defaultSettings), tokenGeneration: 2 });
        expect(await a.getMobileToken('tok2')).not.toBeNull();
      });
    });
  });
}
