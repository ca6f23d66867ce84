import { join } from 'node:path';
import Database from 'better-sqlite3';
import { decodeJwt } from 'jose';
import { describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../../../shared/clock.js';
import { userView } from '../../../../platform-agent/server/security/account-rules.js';
import { DB_FILE } from '../../../../platform-agent/server/store/sqlite-store.js';
import { PASSWORD, rejectsWith, useSecurityEnv, WRONG_PASSWORD } from './fixtures.js';

const env = useSecurityEnv();

/** Locks `deviceId` with 5 wrong passwords for `username`. */
const lockDevice = (username: string, deviceId: string): Promise<void> => env().fail(5, { username, deviceId });

async function viewOf(username: string) {
  const { settings } = await env().store.getSettings();
  return userView(await env().user(username), settings, env().clock.now());
}

describe('lockout: devices', () => {
  it('locks the device after 5 failures within 15 min, with a Retry-After for the rest of the 15 min lock', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 5; i++) {
      await env().fail(1, { username: 'alice', deviceId: 'phone-1' });
      env().clock.advance(3 * MINUTE_MS);
    }
    const err = await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(err.httpStatus).toBe(429);
    expect(err.retryAfterSeconds).toBe(12 * 60);
    expect(env().events).toContainEqual(expect.objectContaining({ event: 'device_locked', deviceId: 'phone-1', username: 'alice' }));
    // Only that device: the same user logs in from another one.
    await env().login({ username: 'alice', deviceId: 'tablet-1' });
  });

  it('answers a name that is no account like any other (401s, then 429 on that name and device), locking nobody', async () => {
    await env().addUser('erin');
    await env().login({ username: 'erin', deviceId: 'erin-phone' });
    for (let i = 0; i < 5; i++)
      await rejectsWith(env().login({ username: 'nobody', deviceId: 'erin-phone' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await rejectsWith(env().login({ username: 'nobody', deviceId: 'erin-phone' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    // Erin's phone still works for erin: a device id is a claim, and the failures were nobody's.
    await env().login({ username: 'erin', deviceId: 'erin-phone' });
    expect(env().events.filter((e) => e.event === 'user_locked')).toHaveLength(0);
  });

  it("does not let failures claimed under someone's device id lock that user's logins from it", async () => {
    await env().addUser('erin');
    await env().addUser('mallory');
    await env().fail(5, { username: 'mallory', deviceId: 'erin-phone' });
    await rejectsWith(env().login({ username: 'mallory', deviceId: 'erin-phone' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    await env().login({ username: 'erin', deviceId: 'erin-phone' });
  });

  it('counts a user lock from (user, device) locks: 3 devices locked for erin lock erin everywhere', async () => {
    await env().addUser('erin');
    for (const d of ['d1', 'd2']) await lockDevice('erin', d);
    // Locks of other users on other devices do not add up to erin's.
    await env().addUser('bob');
    await lockDevice('bob', 'd3');
    await env().login({ username: 'erin', deviceId: 'erin-phone' });
    await lockDevice('erin', 'd3');
    expect((await env().user('erin')).lockedForSecurityReasons).toBe(true);
    await rejectsWith(env().login({ username: 'erin', deviceId: 'erin-phone' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  });

  it('does not lock the device when failures are spread so that the counter resets, each 15 min after the last', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 12; i++) {
      await env().fail(1, { username: 'alice', deviceId: 'phone-1' });
      env().clock.advance(15 * MINUTE_MS);
    }
    expect((await env().store.getDevice('phone-1'))?.lockedUntil).toBeNull();
    await env().login({ username: 'alice', deviceId: 'phone-1' });
  });

  it('still counts failures that come 14 min 59 s apart', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 5; i++) {
      env().clock.advance(15 * MINUTE_MS - 1000);
      await env().fail(1, { username: 'alice', deviceId: 'phone-1' });
    }
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
  });

  it('unlocks the device 15 min after the lock', async () => {
    await env().addUser('alice');
    await lockDevice('alice', 'phone-1');
    env().clock.advance(15 * MINUTE_MS - 1000);
    const err = await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(err.retryAfterSeconds).toBe(1);
    env().clock.advance(1000);
    await env().login({ username: 'alice', deviceId: 'phone-1' });
  });

  it('refuses even the right password while the device is locked, without counting it', async () => {
    await env().addUser('alice');
    await lockDevice('alice', 'phone-1');
    const before = await env().store.getDevice('phone-1');
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1', password: WRONG_PASSWORD }), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(await env().store.getDevice('phone-1')).toEqual(before);
  });

  it('records the device of every successful login, a first one included, with its user and time', async () => {
    await env().addUser('alice');
    await env().addUser('bob');
    await env().login({ username: 'alice', deviceId: 'phone-1' });
    expect(await env().store.getDevice('phone-1')).toMatchObject({ lastUsername: 'alice', lastSeenAt: env().clock.now(), failures: 0 });
    env().clock.advance(HOUR_MS);
    await env().login({ username: 'bob', deviceId: 'phone-1' });
    expect(await env().store.getDevice('phone-1')).toMatchObject({ lastUsername: 'bob', lastSeenAt: env().clock.now() });
  });

  it('resets the failure count on a successful login', async () => {
    await env().addUser('alice');
    await env().fail(4, { username: 'alice', deviceId: 'phone-1' });
    await env().login({ username: 'alice', deviceId: 'phone-1' });
    expect((await env().store.getDevice('phone-1'))?.failures).toBe(0);
    await env().fail(4, { username: 'alice', deviceId: 'phone-1' });
    await env().login({ username: 'alice', deviceId: 'phone-1' });
    await env().fail(5, { username: 'alice', deviceId: 'phone-1' });
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
  });

  it('evaluates at most 5 passwords on one device even when 20 guesses arrive at once', async () => {
    await env().addUser('alice');
    const guesses = Array.from({ length: 20 }, (_, i) =>
      env()
        .login({ username: 'alice', deviceId: 'phone-1', password: i === 19 ? PASSWORD : `guess number ${i}` })
        .then(
          () => 'token',
          (err: { code: string }) => err.code,
        ),
    );
    const outcomes = await Promise.all(guesses);
    expect(outcomes.filter((o) => o !== 'PLATFORM_ERR_DEVICE_LOCKED').length).toBeLessThanOrEqual(5);
    expect(outcomes[19]).toBe('PLATFORM_ERR_DEVICE_LOCKED');
  });

  it('applies changed thresholds: 3 failures within 5 min lock for 60 min', async () => {
    await env().addUser('alice');
    await env().patchSettings({ lockout: { device_failures: 3, failure_reset_minutes: 5, device_lock_minutes: 60 } });
    await env().fail(2, { username: 'alice', deviceId: 'phone-1' });
    env().clock.advance(5 * MINUTE_MS);
    await env().fail(2, { username: 'alice', deviceId: 'phone-1' });
    await env().login({ username: 'alice', deviceId: 'phone-1' });
    await env().fail(3, { username: 'alice', deviceId: 'phone-1' });
    const err = await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(err.retryAfterSeconds).toBe(3600);
  });
});

describe('lockout: users', () => {
  it('locks the user for 1 day after 3 device locks within 24 h, "Locked until <date> UTC"', async () => {
    await env().addUser('alice');
    env().clock.advance(7 * MINUTE_MS);
    await lockDevice('alice', 'd1');
    env().clock.advance(8 * HOUR_MS);
    await lockDevice('alice', 'd2');
    expect((await env().user('alice')).lockedForSecurityReasons).toBe(false);
    env().clock.advance(8 * HOUR_MS);
    await lockDevice('alice', 'd3');

    const user = await env().user('alice');
    expect(user.lockedForSecurityReasons).toBe(true);
    expect(user.lockedUntil).toBe(env().clock.now() + DAY_MS);
    expect(env().events).toContainEqual({ event: 'user_locked', username: 'alice', until: env().clock.now() + DAY_MS });
    const view = await viewOf('alice');
    expect(view.locked_for_security_reasons).toBe(true);
    expect(view.status).toBe('Locked until 2026-11-25 04:07 UTC');
    expect(view.locked_until).toBe('2026-11-25T04:07:00.000Z');
    // The right password from a device that never failed: the same answer as a wrong one.
    await rejectsWith(env().login({ username: 'alice', deviceId: 'fresh' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  });

  it('does not lock the user when the 3 device locks span more than 24 h', async () => {
    await env().addUser('alice');
    await lockDevice('alice', 'd1');
    env().clock.advance(12 * HOUR_MS);
    await lockDevice('alice', 'd2');
    env().clock.advance(12 * HOUR_MS);
    await lockDevice('alice', 'd3');
    expect((await env().user('alice')).lockedForSecurityReasons).toBe(false);
    await env().login({ username: 'alice', deviceId: 'fresh' });
  });

  it('ends every session of the user at once: access and refresh tokens of every device refused', async () => {
    await env().addUser('alice');
    await env().addUser('bob');
    const phone = await env().login({ username: 'alice', deviceId: 'phone' });
    const tablet = await env().login({ username: 'alice', deviceId: 'tablet' });
    const refreshed = await env().auth.refresh(tablet.refresh_token);
    const bob = await env().login({ username: 'bob', deviceId: 'bobs-phone' });
    for (const d of ['d1', 'd2', 'd3']) await lockDevice('alice', d);

    await rejectsWith(env().auth.authenticate(phone.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(refreshed.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(phone.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(refreshed.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    for (const pair of [phone, refreshed]) {
      const family = await env().store.getFamily(decodeJwt(pair.access_token).fam as string);
      expect(family?.revokedAt).toBe(env().clock.now());
    }
    await env().auth.authenticate(bob.access_token, 'api');
  });

  it('ends the lock when its day has passed: the user logs in again, but the old tokens stay dead', async () => {
    await env().addUser('alice');
    const before = await env().login({ username: 'alice', deviceId: 'phone' });
    for (const d of ['d1', 'd2', 'd3']) await lockDevice('alice', d);
    env().clock.advance(DAY_MS - 1000);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    env().clock.advance(1000);
    const after = await env().login({ username: 'alice', deviceId: 'phone' });
    await env().auth.authenticate(after.access_token, 'api');
    await rejectsWith(env().auth.refresh(before.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    const view = await viewOf('alice');
    expect(view.locked_for_security_reasons).toBe(false);
    expect(view.status).toBe('Active');
  });

  it('ends the lock when an administrator clears locked_for_security_reasons', async () => {
    await env().addUser('alice');
    for (const d of ['d1', 'd2', 'd3']) await lockDevice('alice', d);
    const unlocked = await env().accounts.update('alice', { locked_for_security_reasons: false });
    expect(unlocked.lockedForSecurityReasons).toBe(false);
    expect(unlocked.lockedUntil).toBeNull();
    expect((await viewOf('alice')).status).toBe('Active');
    await env().login({ username: 'alice', deviceId: 'fresh' });
    // A fresh start: the device locks from before no longer count towards the next user lock.
    await lockDevice('alice', 'd4');
    expect((await env().user('alice')).lockedForSecurityReasons).toBe(false);
  });

  it('does not extend a user lock with failures during the lock', async () => {
    await env().addUser('alice');
    for (const d of ['d1', 'd2', 'd3']) await lockDevice('alice', d);
    const until = (await env().user('alice')).lockedUntil;
    env().clock.advance(HOUR_MS);
    for (const d of ['d4', 'd5', 'd6']) await lockDevice('alice', d);
    expect((await env().user('alice')).lockedUntil).toBe(until);
  });

  it('recalculates locked_until of users and devices already locked when the lock durations change', async () => {
    await env().addUser('alice');
    for (const d of ['d1', 'd2', 'd3']) await lockDevice('alice', d);
    const lockedAt = env().clock.now();
    env().clock.advance(5 * MINUTE_MS);

    const change = await env().patchSettings({ lockout: { user_lock_days: 3, device_lock_minutes: 60 } });
    expect(change.recalculatesLocks).toBe(true);
    expect((await env().user('alice')).lockedUntil).toBe(lockedAt + 3 * DAY_MS);
    expect((await env().store.getDevice('d3'))?.lockedUntil).toBe(lockedAt + 60 * MINUTE_MS);
    expect((await viewOf('alice')).status).toBe('Locked until 2026-11-26 12:00 UTC');

    env().clock.advance(30 * MINUTE_MS);
    const err = await rejectsWith(env().login({ username: 'alice', deviceId: 'd3' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(err.retryAfterSeconds).toBe(25 * 60);
    env().clock.advance(2 * DAY_MS);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'fresh' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');

    // Shorter again: the lock is already over.
    await env().patchSettings({ lockout: { user_lock_days: 1 } });
    expect((await viewOf('alice')).locked_for_security_reasons).toBe(false);
    await env().login({ username: 'alice', deviceId: 'fresh' });
  });

  it('leaves an administrator lock without end alone when durations change', async () => {
    await env().addUser('alice');
    await env().accounts.update('alice', { locked_for_security_reasons: true });
    await env().patchSettings({ lockout: { user_lock_days: 2 } });
    expect((await env().user('alice')).lockedUntil).toBeNull();
    expect((await viewOf('alice')).status).toBe('Locked until an administrator unlocks it');
  });
});

describe('lockout: per-IP limit', () => {
  it('refuses the 11th failed login within a minute from one address with PLATFORM_ERR_TOO_MANY_ATTEMPTS and a Retry-After', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 10; i++) {
      await env().fail(1, { username: 'alice', deviceId: `d${i}`, ip: '127.0.0.9' });
      env().clock.advance(5000);
    }
    const err = await rejectsWith(env().login({ username: 'alice', deviceId: 'd10', ip: '127.0.0.9' }), 'PLATFORM_ERR_TOO_MANY_ATTEMPTS');
    expect(err.httpStatus).toBe(429);
    expect(err.retryAfterSeconds).toBe(10);
    expect(env().events).toContainEqual({ event: 'ip_limited', ip: '127.0.0.9' });
    // Other addresses are not affected.
    await env().login({ username: 'alice', deviceId: 'd10', ip: '127.0.0.10' });
  });

  it('lets 11 devices behind one address log in within a minute: successes do not count', async () => {
    for (let i = 0; i < 11; i++) await env().addUser(`user${i}`);
    for (let i = 0; i < 11; i++) await env().login({ username: `user${i}`, deviceId: `phone-${i}`, ip: '127.0.0.9' });
    // Successes used up nothing: ten failures still fit, the eleventh is refused.
    for (let i = 0; i < 10; i++) await env().fail(1, { username: 'user0', deviceId: `guess-${i}`, ip: '127.0.0.9' });
    await rejectsWith(env().login({ username: 'user0', deviceId: 'phone-0', ip: '127.0.0.9' }), 'PLATFORM_ERR_TOO_MANY_ATTEMPTS');
  });

  it('counts failures for names that are no account, and refused attempts not at all', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 10; i++) await env().fail(1, { username: `nobody-${i}`, deviceId: 'bot', ip: '127.0.0.9' });
    for (let i = 0; i < 5; i++)
      await rejectsWith(env().login({ username: 'alice', deviceId: 'd2', ip: '127.0.0.9' }), 'PLATFORM_ERR_TOO_MANY_ATTEMPTS');
    env().clock.advance(60_000);
    await env().login({ username: 'alice', deviceId: 'd2', ip: '127.0.0.9' });
  });

  it('frees the address once the oldest failure leaves the one-minute window', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 10; i++) await env().fail(1, { username: 'alice', deviceId: `d${i}`, ip: '2001:db8::1' });
    const err = await rejectsWith(env().login({ username: 'alice', deviceId: 'd1', ip: '2001:db8::1' }), 'PLATFORM_ERR_TOO_MANY_ATTEMPTS');
    expect(err.retryAfterSeconds).toBe(60);
    env().clock.advance(60_000 - 1);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'd1', ip: '2001:db8::1' }), 'PLATFORM_ERR_TOO_MANY_ATTEMPTS');
    env().clock.advance(1);
    await env().login({ username: 'alice', deviceId: 'd1', ip: '2001:db8::1' });
  });

  it('holds concurrent guesses from one address within the limit', async () => {
    await env().addUser('alice');
    const guesses = Array.from({ length: 20 }, (_, i) =>
      env()
        .login({ username: 'alice', deviceId: `d${i}`, password: 'wrong', ip: '127.0.0.9' })
        .catch((err: { code: string }) => err.code),
    );
    const codes = await Promise.all(guesses);
    expect(codes.filter((c) => c === 'PLATFORM_ERR_INVALID_CREDENTIALS')).toHaveLength(10);
    expect(codes.filter((c) => c === 'PLATFORM_ERR_TOO_MANY_ATTEMPTS')).toHaveLength(10);
  });

  it('exempts whitelisted addresses', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 30; i++) await env().login({ username: 'alice', deviceId: 'd1', ip: '10.0.0.1', ipDecision: 'whitelisted' });
  });

  it('refuses blacklisted addresses with PLATFORM_ERR_IP_BLOCKED, even with the right password, without counting a device failure', async () => {
    await env().addUser('alice');
    for (let i = 0; i < 6; i++) {
      const err = await rejectsWith(
        env().login({ username: 'alice', deviceId: 'd1', ip: '192.0.2.66', ipDecision: 'blacklisted' }),
        'PLATFORM_ERR_IP_BLOCKED',
      );
      expect(err.httpStatus).toBe(403);
    }
    expect(await env().store.getDevice('d1')).toBeNull();
  });

  it('follows a changed limit', async () => {
    await env().addUser('alice');
    await env().patchSettings({ ip_login_attempts_per_minute: 3 });
    for (let i = 0; i < 3; i++) await env().fail(1, { username: 'alice', deviceId: 'd1', ip: '203.0.113.9' });
    await rejectsWith(env().login({ username: 'alice', deviceId: 'd1', ip: '203.0.113.9' }), 'PLATFORM_ERR_TOO_MANY_ATTEMPTS');
  });
});

describe('lockout: restart', () => {
  it('keeps a locked device and a locked user locked, and a revoked refresh family revoked, across a restart', async () => {
    await env().addUser('alice');
    await env().addUser('bob');
    const alice = await env().login({ username: 'alice', deviceId: 'phone' });
    const bob = await env().login({ username: 'bob', deviceId: 'bobs-phone' });
    const bobNext = await env().auth.refresh(bob.refresh_token);
    await rejectsWith(env().auth.refresh(bob.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await env().addUser('carol');
    const carol = await env().login({ username: 'carol', deviceId: 'carols-phone' });
    for (const d of ['d1', 'd2', 'd3']) await lockDevice('alice', d);
    await lockDevice('carol', 'carols-laptop');
    env().clock.advance(MINUTE_MS);

    await env().restart();

    const err = await rejectsWith(env().login({ username: 'carol', deviceId: 'carols-laptop' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(err.retryAfterSeconds).toBe(14 * 60);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'fresh' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    expect((await viewOf('alice')).status).toMatch(/^Locked until 2026-11-24 12:00 UTC$/);
    await rejectsWith(env().auth.authenticate(alice.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(bobNext.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(bobNext.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    // What was valid stays valid: the signing key and the generation survived too.
    await env().auth.authenticate(carol.access_token, 'api');
    await env().auth.refresh(carol.refresh_token);
  });
});

describe('lockout: smart lockout (lockout.smart_lockout)', () => {
  /** Five different wrong passwords: with smart lockout a repeated one would count once. */
  const lockDevice = async (username: string, deviceId: string): Promise<void> => {
    for (let i = 0; i < 5; i++) await env().fail(1, { username, deviceId, password: `guess ${i}` });
  };

  /** Alice logs in on her phone, then an attacker locks her through three other devices. */
  async function lockAliceFromElsewhere(): Promise<void> {
    await env().addUser('alice');
    await env().login({ username: 'alice', deviceId: 'alice-phone' });
    for (const d of ['bot-1', 'bot-2', 'bot-3']) await lockDevice('alice', d);
    expect((await env().user('alice')).lockedForSecurityReasons).toBe(true);
  }

  it('is off by default: a user lock holds on the devices the user logged in from before', async () => {
    await lockAliceFromElsewhere();
    await rejectsWith(env().login({ username: 'alice', deviceId: 'alice-phone' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  });

  it('on: a known device keeps working through a user lock caused from other devices; any other device is locked out', async () => {
    await env().patchSettings({ lockout: { smart_lockout: true } });
    await lockAliceFromElsewhere();
    const pair = await env().login({ username: 'alice', deviceId: 'alice-phone' });
    // Its tokens work too, and refresh.
    expect((await env().auth.authenticate(pair.access_token, 'api')).sub).toBe('alice');
    await env().auth.refresh(pair.refresh_token);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'new-phone' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await rejectsWith(env().login({ username: 'alice', deviceId: 'bot-1', password: PASSWORD }), 'PLATFORM_ERR_DEVICE_LOCKED');
  });

  it("on: an administrator's lock has no exception, nor a known device with a lock of its own", async () => {
    await env().patchSettings({ lockout: { smart_lockout: true } });
    await lockAliceFromElsewhere();
    await lockDevice('alice', 'alice-phone');
    await rejectsWith(env().login({ username: 'alice', deviceId: 'alice-phone' }), 'PLATFORM_ERR_DEVICE_LOCKED');
    await env().addUser('bob');
    await env().login({ username: 'bob', deviceId: 'bob-phone' });
    await env().accounts.update('bob', { locked_for_security_reasons: true });
    await rejectsWith(env().login({ username: 'bob', deviceId: 'bob-phone' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
  });

  it('on: a known device whose own failures helped cause the user lock gets no exception', async () => {
    await env().patchSettings({ lockout: { smart_lockout: true } });
    await env().addUser('alice');
    await env().login({ username: 'alice', deviceId: 'alice-phone' });
    await env().login({ username: 'alice', deviceId: 'alice-tablet' });
    for (const d of ['alice-phone', 'bot-1', 'bot-2']) await lockDevice('alice', d);
    expect((await env().user('alice')).lockedForSecurityReasons).toBe(true);
    env().clock.advance(15 * MINUTE_MS);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'alice-phone' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await env().login({ username: 'alice', deviceId: 'alice-tablet' });
  });

  it('on: the same wrong password repeated counts once; different ones count each', async () => {
    await env().patchSettings({ lockout: { smart_lockout: true } });
    await env().addUser('alice');
    await env().fail(10, { username: 'alice', deviceId: 'phone-1', password: 'old password' });
    await env().login({ username: 'alice', deviceId: 'phone-1' });
    for (let i = 0; i < 5; i++) await env().fail(1, { username: 'alice', deviceId: 'phone-1', password: `guess ${i}` });
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
  });

  it('off: the same wrong password repeated counts every time', async () => {
    await env().addUser('alice');
    await env().fail(5, { username: 'alice', deviceId: 'phone-1', password: 'old password' });
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
  });

  it('keeps only a keyed hash of a wrong password, for the failure window only', async () => {
    await env().patchSettings({ lockout: { smart_lockout: true } });
    await env().addUser('alice');
    await env().fail(4, { username: 'alice', deviceId: 'phone-1', password: 'my old password' });
    const db = new Database(join(env().dir, DB_FILE), { readonly: true });
    try {
      const dump =
        JSON.stringify(db.prepare('SELECT * FROM device_users').all()) + JSON.stringify(db.prepare('SELECT * FROM config').all());
      expect(dump).not.toContain('my old password');
      expect(dump).not.toContain(Buffer.from('my old password').toString('base64'));
      expect(dump).toContain('tag');
    } finally {
      db.close();
    }
    // After the window the repeat counts again (the hash is forgotten with the failures).
    env().clock.advance(15 * MINUTE_MS);
    await env().fail(5, { username: 'alice', deviceId: 'phone-1', password: 'my old password' });
    expect((await env().store.getDeviceUser('phone-1', 'alice'))?.failures).toBe(1);
  });
});
