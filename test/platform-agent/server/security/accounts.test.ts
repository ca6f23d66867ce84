import { describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS } from '../../../../shared/clock.js';
import {
  accountActive,
  accountUsable,
  accountWindow,
  formatUtc,
  parseDate,
  userLockActive,
  userView,
} from '../../../../platform-agent/server/security/account-rules.js';
import { verifyPassword } from '../../../../platform-agent/server/security/passwords.js';
import { cloneSettings, defaultSettings, type SecuritySettings } from '../../../../platform-agent/server/security/settings.js';
import type { UserRecord } from '../../../../platform-agent/server/store/store.js';
import { PASSWORD, rejectsWith, throwsWith, useSecurityEnv } from './fixtures.js';
import { userRecord } from '../../../fixtures/records.js';

const env = useSecurityEnv();

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);

const record = (over: Partial<UserRecord> = {}): UserRecord => userRecord(over);

const withValidity = (days: number | null): SecuritySettings => ({ ...cloneSettings(defaultSettings), account_validity_days: days });

describe('accounts: validity window', () => {
  it('is unlimited while neither the global validity nor the user period is set', () => {
    expect(accountWindow(record(), withValidity(null))).toEqual({ from: null, until: null });
    expect(accountActive(record(), withValidity(null), T0 + 10_000 * DAY_MS)).toBe(true);
  });

  it('counts the global number of days from the account creation', () => {
    const s = withValidity(30);
    expect(accountWindow(record(), s)).toEqual({ from: null, until: T0 + 30 * DAY_MS });
    expect(accountActive(record(), s, T0 + 30 * DAY_MS - 1)).toBe(true);
    expect(accountActive(record(), s, T0 + 30 * DAY_MS)).toBe(false);
  });

  it('uses the user period instead of the global one when either end is set', () => {
    const s = withValidity(1);
    expect(accountWindow(record({ validUntil: T0 + 10 * DAY_MS }), s)).toEqual({ from: null, until: T0 + 10 * DAY_MS });
    expect(accountWindow(record({ validFrom: T0 + DAY_MS }), s)).toEqual({ from: T0 + DAY_MS, until: null });
    expect(accountActive(record({ validFrom: T0 + DAY_MS }), s, T0 + DAY_MS - 1)).toBe(false);
    expect(accountActive(record({ validFrom: T0 + DAY_MS }), s, T0 + 100 * DAY_MS)).toBe(true);
  });

  it('is unusable while locked until the lock time passes, and forever with an open-ended lock', () => {
    const locked = record({ lockedForSecurityReasons: true, lockedAt: T0, lockedUntil: T0 + DAY_MS });
    expect(userLockActive(locked, T0 + DAY_MS - 1)).toBe(true);
    expect(accountUsable(locked, withValidity(null), T0 + DAY_MS - 1)).toBe(false);
    expect(userLockActive(locked, T0 + DAY_MS)).toBe(false);
    expect(accountUsable(locked, withValidity(null), T0 + DAY_MS)).toBe(true);
    const byAdmin = record({ lockedForSecurityReasons: true, lockedAt: T0, lockedUntil: null });
    expect(accountUsable(byAdmin, withValidity(null), T0 + 1000 * DAY_MS)).toBe(false);
  });
});

describe('accounts: the user view', () => {
  it('shows an active account with its validity and role', () => {
    expect(userView(record(), withValidity(30), T0)).toEqual({
      username: 'alice',
      role: 'mobile',
      group: null,
      description: null,
      created_at: '2026-11-23T12:00:00.000Z',
      account_valid_from: null,
      account_valid_until: '2026-12-23T12:00:00.000Z',
      locked_for_security_reasons: false,
      locked_until: null,
      status: 'Active',
      barcode_set: false,
    });
  });

  it('shows "Locked until YYYY-MM-DD HH:MM UTC" during a lock, and Active once it passed', () => {
    const locked = record({ lockedForSecurityReasons: true, lockedAt: T0, lockedUntil: Date.UTC(2026, 10, 30, 14, 0, 30) });
    const view = userView(locked, withValidity(null), T0);
    expect(view.locked_for_security_reasons).toBe(true);
    expect(view.status).toBe('Locked until 2026-11-30 14:00 UTC');
    expect(view.locked_until).toBe('2026-11-30T14:00:30.000Z');
    const later = userView(locked, withValidity(null), Date.UTC(2026, 10, 30, 14, 1));
    expect(later).toMatchObject({ locked_for_security_reasons: false, locked_until: null, status: 'Active' });
  });

  it('says when an account is not valid yet or expired', () => {
    expect(userView(record({ validFrom: T0 + DAY_MS }), withValidity(null), T0).status).toBe('Not valid before 2026-11-24 12:00 UTC');
    expect(userView(record(), withValidity(1), T0 + DAY_MS).status).toBe('Expired on 2026-11-24 12:00 UTC');
    expect(formatUtc(Date.UTC(2026, 0, 2, 3, 4, 59))).toBe('2026-01-02 03:04 UTC');
  });
});

describe('accounts: dates', () => {
  it.each([
    ['2026-12-31', Date.UTC(2026, 11, 31)],
    ['2026-12-31T18:00', Date.UTC(2026, 11, 31, 18)],
    ['2026-12-31 18:00:30', Date.UTC(2026, 11, 31, 18, 0, 30)],
    ['2026-12-31T18:00:00Z', Date.UTC(2026, 11, 31, 18)],
    ['2026-12-31T18:00:00+02:00', Date.UTC(2026, 11, 31, 16)],
  ])('reads %s (UTC unless an offset is given)', (text, ms) => {
    expect(parseDate('account_valid_until', text)).toBe(ms);
  });

  it('reads null as unset', () => {
    expect(parseDate('account_valid_until', null)).toBeNull();
  });

  it.each(['31.12.2026', 'tomorrow', '2026-13-01', '2026-02-30', '2026-04-31', 20261231])('refuses %j, naming the field', (value) => {
    const err = throwsWith(() => parseDate('account_valid_until', value), 'PLATFORM_ERR_INVALID_REQUEST');
    expect(err.details?.field).toBe('account_valid_until');
  });
});

describe('accounts: create', () => {
  it('stores a scrypt hash of the password, never the password, with the creation time from the clock', async () => {
    env().clock.advance(HOUR_MS);
    await env().addUser('alice');
    const user = await env().user('alice');
    expect(user.passwordHash).toMatch(/^scrypt\$10\$8\$1\$/);
    expect(user.passwordHash).not.toContain(PASSWORD);
    expect(await verifyPassword(PASSWORD, user.passwordHash)).toBe(true);
    expect(user.createdAt).toBe(env().clock.now());
  });

  it.each([
    [{ username: '', password: PASSWORD, role: 'mobile' }, 'username'],
    [{ username: '-alice', password: PASSWORD, role: 'mobile' }, 'username'],
    [{ username: 'a  b', password: PASSWORD, role: 'mobile' }, 'username'],
    [{ username: 'a'.repeat(65), password: PASSWORD, role: 'mobile' }, 'username'],
    [{ username: 'alice', password: PASSWORD, role: 'root' }, 'role'],
    [{ username: 'alice', password: 'short', role: 'mobile' }, 'password'],
    [{ username: 'alice', password: 12345678, role: 'mobile' }, 'password'],
    [{ username: 'alice', password: PASSWORD, role: 'mobile', account_valid_until: 'soon' }, 'account_valid_until'],
    [
      { username: 'alice', password: PASSWORD, role: 'mobile', account_valid_from: '2026-12-31', account_valid_until: '2026-12-01' },
      'account_valid_until',
    ],
  ])('refuses %j, naming %s', async (input, field) => {
    const err = await rejectsWith(env().accounts.create(input), 'PLATFORM_ERR_INVALID_REQUEST');
    expect(err.details?.field).toBe(field);
    expect(await env().store.getUser('alice')).toBeNull();
  });

  it('refuses a second user with the same name', async () => {
    await env().addUser('alice');
    await rejectsWith(env().addUser('alice', 'admin'), 'PLATFORM_ERR_USER_EXISTS');
  });
});

describe('accounts: update and delete', () => {
  it('refuses unknown fields and a non-boolean lock flag, naming them', async () => {
    await env().addUser('alice');
    expect((await rejectsWith(env().accounts.update('alice', { locked: true }), 'PLATFORM_ERR_INVALID_REQUEST')).details?.field).toBe(
      'locked',
    );
    expect(
      (await rejectsWith(env().accounts.update('alice', { locked_for_security_reasons: 'no' }), 'PLATFORM_ERR_INVALID_REQUEST')).details
        ?.field,
    ).toBe('locked_for_security_reasons');
    await rejectsWith(env().accounts.update('alice', null), 'PLATFORM_ERR_INVALID_REQUEST');
    await rejectsWith(env().accounts.update('nobody', { role: 'admin' }), 'PLATFORM_ERR_USER_NOT_FOUND');
  });

  it('ends the sessions of a user whose password changes, and accepts the new password', async () => {
    await env().addUser('alice');
    const pair = await env().login({ username: 'alice', deviceId: 'd1' });
    await env().accounts.update('alice', { password: 'a brand new secret' });
    await rejectsWith(env().auth.authenticate(pair.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(pair.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().login({ username: 'alice', deviceId: 'd1' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await env().login({ username: 'alice', deviceId: 'd1', password: 'a brand new secret' });
  });

  it('records the time a password change revoked the sessions', async () => {
    await env().addUser('alice');
    const pair = await env().login({ username: 'alice', deviceId: 'd1' });
    const { fam } = await env().auth.authenticate(pair.access_token, 'api');
    env().clock.advance(HOUR_MS);
    await env().accounts.update('alice', { password: 'a brand new secret' });
    expect((await env().store.getFamily(fam))?.revokedAt).toBe(env().clock.now());
  });

  it('locks a user until an administrator unlocks, ending the sessions, when locked_for_security_reasons is set', async () => {
    await env().addUser('alice');
    const pair = await env().login({ username: 'alice', deviceId: 'd1' });
    const locked = await env().accounts.update('alice', { locked_for_security_reasons: true });
    expect(locked).toMatchObject({ lockedForSecurityReasons: true, lockedAt: env().clock.now(), lockedUntil: null });
    await rejectsWith(env().auth.authenticate(pair.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    env().clock.advance(365 * DAY_MS);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'd1' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await env().accounts.update('alice', { locked_for_security_reasons: false });
    await env().login({ username: 'alice', deviceId: 'd2' });
  });

  it('locks for a given time when the caller passes a default lock duration', async () => {
    await env().addUser('alice');
    const locked = await env().accounts.update('alice', { locked_for_security_reasons: true }, DAY_MS);
    expect(locked.lockedUntil).toBe(env().clock.now() + DAY_MS);
  });

  it('never removes, demotes or locks the last administrator, but allows it once there is another', async () => {
    await env().addUser('root', 'admin');
    await rejectsWith(env().accounts.update('root', { role: 'mobile' }), 'PLATFORM_ERR_LAST_ADMIN');
    await rejectsWith(env().accounts.update('root', { locked_for_security_reasons: true }), 'PLATFORM_ERR_LAST_ADMIN');
    await rejectsWith(env().accounts.delete('root'), 'PLATFORM_ERR_LAST_ADMIN');
    expect((await env().user('root')).role).toBe('admin');
    await env().addUser('root2', 'admin');
    await env().accounts.update('root', { role: 'external' });
    await rejectsWith(env().accounts.delete('root2'), 'PLATFORM_ERR_LAST_ADMIN');
    await env().accounts.delete('root');
    expect(await env().store.getUser('root')).toBeNull();
  });

  it('refuses one of two concurrent changes that would each leave the other administrator as the last (in one section)', async () => {
    await env().addUser('root', 'admin');
    await env().addUser('root2', 'admin');
    const outcomes = await Promise.allSettled([
      env().accounts.delete('root'),
      env().accounts.update('root2', { role: 'mobile' }),
      env().accounts.update('root2', { locked_for_security_reasons: true }),
    ]);
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    for (const o of outcomes) if (o.status === 'rejected') expect((o.reason as { code: string }).code).toBe('PLATFORM_ERR_LAST_ADMIN');
    expect((await env().store.listUsers()).filter((u) => u.role === 'admin' && !u.lockedForSecurityReasons)).toHaveLength(1);
  });

  it('changes the validity period and clears it with null', async () => {
    await env().addUser('alice');
    const changed = await env().accounts.update('alice', { account_valid_from: '2026-12-01', account_valid_until: '2027-01-01' });
    expect(changed).toMatchObject({ validFrom: Date.UTC(2026, 11, 1), validUntil: Date.UTC(2027, 0, 1) });
    await rejectsWith(env().accounts.update('alice', { account_valid_until: '2026-11-30' }), 'PLATFORM_ERR_INVALID_REQUEST');
    const cleared = await env().accounts.update('alice', { account_valid_from: null, account_valid_until: null });
    expect(cleared).toMatchObject({ validFrom: null, validUntil: null });
  });

  it('deletes a user with every token and session', async () => {
    await env().addUser('alice');
    const pair = await env().login({ username: 'alice', deviceId: 'd1' });
    await env().accounts.delete('alice');
    await rejectsWith(env().accounts.get('alice'), 'PLATFORM_ERR_USER_NOT_FOUND');
    await rejectsWith(env().auth.refresh(pair.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    // The same name again is a new account: the old tokens do not come back to life.
    await env().addUser('alice');
    await rejectsWith(env().auth.authenticate(pair.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
  });
});
