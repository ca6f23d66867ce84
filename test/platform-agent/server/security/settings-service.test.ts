/**
 * The one way settings change (security/settings-service.ts): validate, save, void tokens when a
 * validity changes, move the end of locks in force when a lock duration changes, and one audit
 * line saying who, through what and which settings. The admin API, the console and the CLI all
 * go through it (their own tests: admin-cli.test.ts, console.test.ts, platform-api.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { MINUTE_MS } from '../../../../shared/clock.js';
import { rejectsWith, useSecurityEnv } from './fixtures.js';

const env = useSecurityEnv();

describe('settings service', () => {
  it('saves a change and writes one audit line naming who, through what and which settings', async () => {
    const change = await env().settings.update({ lockout: { device_failures: 3 }, admin_inactivity_timeout: '00:30' }, 'root', 'console');
    expect(change.changed.map((c) => c.setting)).toEqual(['admin_inactivity_timeout', 'lockout.device_failures']);
    expect((await env().settings.get()).settings.lockout.device_failures).toBe(3);
    expect(
      env().audit.map(({ event, by, via, settings, invalidatedTokens, recalculatedLocks }) => ({
        event,
        by,
        via,
        settings,
        invalidatedTokens,
        recalculatedLocks,
      })),
    ).toEqual([
      {
        event: 'settings_changed',
        by: 'root',
        via: 'console',
        settings: ['admin_inactivity_timeout', 'lockout.device_failures'],
        invalidatedTokens: false,
        recalculatedLocks: false,
      },
    ]);
  });

  it('saves and logs nothing for a patch that changes nothing', async () => {
    const before = await env().settings.get();
    const change = await env().settings.update({ lockout: { device_failures: before.settings.lockout.device_failures } }, 'root', 'api');
    expect(change.changed).toEqual([]);
    expect(await env().settings.get()).toEqual(before);
    expect(env().audit).toEqual([]);
  });

  it('refuses a bad value naming the field, saving and logging nothing', async () => {
    const before = await env().settings.get();
    const err = await rejectsWith(
      env().settings.update({ lockout: { device_failures: 0 } }, 'root', 'cli'),
      'PLATFORM_ERR_INVALID_SETTING',
    );
    expect(err.details?.field).toBe('lockout.device_failures');
    expect(await env().settings.get()).toEqual(before);
    expect(env().audit).toEqual([]);
  });

  it('voids every token when a validity changes', async () => {
    await env().addUser('alice');
    const pair = await env().login({ username: 'alice', deviceId: 'phone-1' });
    await env().auth.authenticate(pair.access_token, 'api');
    await env().settings.update({ api_token_validity: { days: 7 } }, 'root', 'api');
    await rejectsWith(env().auth.authenticate(pair.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    expect(env().audit[0]).toMatchObject({ invalidatedTokens: true, settings: ['api_token_validity.days'] });
  });

  it('moves the end of a device lock in force when the lock duration changes', async () => {
    await env().addUser('alice');
    await env().fail(5, { username: 'alice', deviceId: 'phone-1' });
    const lockedAt = env().clock.now();
    expect((await env().store.getDevice('phone-1'))?.lockedUntil).toBe(lockedAt + 15 * MINUTE_MS);
    env().clock.advance(MINUTE_MS);
    await env().settings.update({ lockout: { device_lock_minutes: 60 } }, 'root', 'api');
    expect((await env().store.getDevice('phone-1'))?.lockedUntil).toBe(lockedAt + 60 * MINUTE_MS);
    expect(env().audit[0]).toMatchObject({ recalculatedLocks: true });
  });
});
