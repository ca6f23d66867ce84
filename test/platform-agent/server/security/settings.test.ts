import { describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../../../shared/clock.js';
import {
  applySettingsPatch,
  cloneSettings,
  defaultSettings,
  inactivityMs,
  lockoutPolicy,
  patchFromAssignments,
  validityMs,
  type SecuritySettings,
} from '../../../../platform-agent/server/security/settings.js';
import { throwsWith } from './fixtures.js';

const defaults = (): SecuritySettings => cloneSettings(defaultSettings);

/** The field a refused patch names. */
function refusedField(patch: unknown, current: SecuritySettings = defaults()): unknown {
  const err = throwsWith(() => applySettingsPatch(current, patch), 'PLATFORM_ERR_INVALID_SETTING');
  expect(err.httpStatus).toBe(400);
  return err.details?.field;
}

describe('security settings: defaults', () => {
  it('gives API and administrator access tokens 14 days and refresh tokens 45 days', () => {
    expect(defaultSettings.api_token_validity).toEqual({ days: 14, hours: 0 });
    expect(defaultSettings.admin_token_validity).toEqual({ days: 14, hours: 0 });
    expect(defaultSettings.refresh_token_validity).toEqual({ days: 45, hours: 0 });
    expect(validityMs(defaultSettings.refresh_token_validity)).toBe(45 * DAY_MS);
  });

  it('leaves the administrator inactivity timeout and the account validity unset', () => {
    expect(defaultSettings.admin_inactivity_timeout).toBeNull();
    expect(defaultSettings.account_validity_days).toBeNull();
  });

  it('locks a device after 5 failures within 15 min for 15 min, and a user after 3 device locks within 24 h for 1 day', () => {
    expect(defaultSettings.lockout).toEqual({
      device_failures: 5,
      failure_reset_minutes: 15,
      device_lock_minutes: 15,
      user_device_locks: 3,
      device_lock_reset_hours: 24,
      user_lock_days: 1,
      smart_lockout: false,
    });
    expect(lockoutPolicy(defaults())).toEqual({
      deviceFailures: 5,
      failureResetMs: 15 * MINUTE_MS,
      deviceLockMs: 15 * MINUTE_MS,
      userDeviceLocks: 3,
      deviceLockWindowMs: 24 * HOUR_MS,
      userLockMs: DAY_MS,
      smart: false,
    });
  });

  it('allows 10 login attempts per IP address per minute', () => {
    expect(defaultSettings.ip_login_attempts_per_minute).toBe(10);
  });

  it('keeps both mobile authenticators off, with generate_tokens on, a 2,592,000 s token lifetime and a 30 min session idle timeout', () => {
    expect(defaultSettings.mobile_authorization).toEqual({ enabled: false, generate_tokens: true, token_lifetime_seconds: 2_592_000 });
    expect(defaultSettings.mobile_token).toEqual({ enabled: false });
    expect(defaultSettings.mobile_session_idle_minutes).toBe(30);
  });

  it('cannot be changed in place', () => {
    expect(Object.isFrozen(defaultSettings)).toBe(true);
  });
});

describe('security settings: inactivity timeout', () => {
  it('reads "hh:mm" as milliseconds and null as unset', () => {
    expect(inactivityMs('00:30')).toBe(30 * MINUTE_MS);
    expect(inactivityMs('2:05')).toBe(2 * HOUR_MS + 5 * MINUTE_MS);
    expect(inactivityMs(null)).toBeNull();
    expect(inactivityMs('00:60')).toBeNull();
    expect(inactivityMs('30')).toBeNull();
  });
});

describe('security settings: applySettingsPatch', () => {
  it('applies a partial update, keeping every other field and leaving the current settings untouched', () => {
    const current = defaults();
    const { next } = applySettingsPatch(current, {
      api_token_validity: { hours: 6 },
      lockout: { device_failures: 3 },
      mobile_authorization: { enabled: true },
      admin_inactivity_timeout: '00:30',
    });
    expect(next.api_token_validity).toEqual({ days: 14, hours: 6 });
    expect(next.lockout).toEqual({ ...defaultSettings.lockout, device_failures: 3 });
    expect(next.mobile_authorization).toEqual({ enabled: true, generate_tokens: true, token_lifetime_seconds: 2_592_000 });
    expect(next.admin_inactivity_timeout).toBe('00:30');
    expect(current).toEqual(defaultSettings);
  });

  it('accepts null to unset the inactivity timeout and the account validity', () => {
    const current = applySettingsPatch(defaults(), { admin_inactivity_timeout: '01:00', account_validity_days: 90 }).next;
    const { next } = applySettingsPatch(current, { admin_inactivity_timeout: null, account_validity_days: null });
    expect(next.admin_inactivity_timeout).toBeNull();
    expect(next.account_validity_days).toBeNull();
  });

  it.each([
    ['a refresh validity equal to the API validity', { refresh_token_validity: { days: 14 } }],
    ['a refresh validity shorter than the access validities', { refresh_token_validity: { days: 10 } }],
    ['an API validity as long as the refresh validity', { api_token_validity: { days: 45 } }],
    ['an administrator validity longer than the refresh validity', { admin_token_validity: { days: 46 } }],
    ['an administrator validity one hour longer than the refresh validity', { admin_token_validity: { days: 45, hours: 1 } }],
  ])('refuses %s, naming refresh_token_validity', (_what, patch) => {
    expect(refusedField(patch)).toBe('refresh_token_validity');
  });

  it('accepts a refresh validity one hour longer than both access validities', () => {
    const { next } = applySettingsPatch(defaults(), {
      api_token_validity: { days: 45, hours: 0 },
      admin_token_validity: { days: 2 },
      refresh_token_validity: { days: 45, hours: 1 },
    });
    expect(validityMs(next.refresh_token_validity)).toBe(45 * DAY_MS + HOUR_MS);
  });

  it.each([
    [{ no_such_setting: 1 }, 'no_such_setting'],
    [{ lockout: { device_failure: 3 } }, 'lockout.device_failure'],
    [{ api_token_validity: { minutes: 5 } }, 'api_token_validity.minutes'],
    [{ mobile_token: { enabled: true, lifetime: 5 } }, 'mobile_token.lifetime'],
    [{ mobile_authorization: { tokenLifeTime: 60 } }, 'mobile_authorization.tokenLifeTime'],
  ])('refuses the unknown field in %j, naming %s', (patch, field) => {
    expect(refusedField(patch)).toBe(field);
  });

  it.each([
    [{ ip_login_attempts_per_minute: '10' }, 'ip_login_attempts_per_minute'],
    [{ ip_login_attempts_per_minute: 0 }, 'ip_login_attempts_per_minute'],
    [{ lockout: { device_failures: 0 } }, 'lockout.device_failures'],
    [{ lockout: { device_failures: 2.5 } }, 'lockout.device_failures'],
    [{ lockout: { user_lock_days: null } }, 'lockout.user_lock_days'],
    [{ lockout: [] }, 'lockout'],
    [{ lockout: 5 }, 'lockout'],
    [{ mobile_authorization: { enabled: 'yes' } }, 'mobile_authorization.enabled'],
    [{ mobile_authorization: { token_lifetime_seconds: 59 } }, 'mobile_authorization.token_lifetime_seconds'],
    [{ mobile_token: { enabled: 1 } }, 'mobile_token.enabled'],
    [{ mobile_session_idle_minutes: 1441 }, 'mobile_session_idle_minutes'],
    [{ admin_inactivity_timeout: '30' }, 'admin_inactivity_timeout'],
    [{ admin_inactivity_timeout: '00:00' }, 'admin_inactivity_timeout'],
    [{ admin_inactivity_timeout: 30 }, 'admin_inactivity_timeout'],
    [{ account_validity_days: 0 }, 'account_validity_days'],
    [{ account_validity_days: '30' }, 'account_validity_days'],
    [{ api_token_validity: 14 }, 'api_token_validity'],
    [{ api_token_validity: { days: 0, hours: 0 } }, 'api_token_validity'],
    [{ api_token_validity: { hours: 24 } }, 'api_token_validity.hours'],
    [{ refresh_token_validity: { days: -1 } }, 'refresh_token_validity.days'],
  ])('refuses the bad value in %j, naming %s', (patch, field) => {
    expect(refusedField(patch)).toBe(field);
  });

  it.each([null, [], 'lockout.device_failures=3', 42])('refuses a body that is not an object (%j)', (body) => {
    expect(refusedField(body)).toBe('(body)');
  });

  it.each([
    ['{"constructor": 1}', 'constructor'],
    ['{"toString": 1}', 'toString'],
    ['{"hasOwnProperty": 1}', 'hasOwnProperty'],
    ['{"__proto__": {"x": 1}}', '__proto__'],
    ['{"lockout": {"toString": 1}}', 'lockout.toString'],
  ])('refuses names inherited from Object.prototype as unknown settings: %s', (body, field) => {
    const current = defaults();
    expect(refusedField(JSON.parse(body), current)).toBe(field);
  });

  it('flags invalidatesTokens only when a token validity really changes', () => {
    const s = defaults();
    expect(applySettingsPatch(s, { api_token_validity: { days: 7 } }).invalidatesTokens).toBe(true);
    expect(applySettingsPatch(s, { admin_token_validity: { hours: 1 } }).invalidatesTokens).toBe(true);
    expect(applySettingsPatch(s, { refresh_token_validity: { days: 60 } }).invalidatesTokens).toBe(true);
    expect(applySettingsPatch(s, { api_token_validity: { days: 14, hours: 0 } }).invalidatesTokens).toBe(false);
    expect(applySettingsPatch(s, { lockout: { device_lock_minutes: 30 }, admin_inactivity_timeout: '00:30' }).invalidatesTokens).toBe(
      false,
    );
    expect(applySettingsPatch(s, {}).invalidatesTokens).toBe(false);
  });

  it('flags recalculatesLocks only when the device or user lock duration changes', () => {
    const s = defaults();
    expect(applySettingsPatch(s, { lockout: { device_lock_minutes: 30 } }).recalculatesLocks).toBe(true);
    expect(applySettingsPatch(s, { lockout: { user_lock_days: 2 } }).recalculatesLocks).toBe(true);
    expect(applySettingsPatch(s, { lockout: { device_lock_minutes: 15, user_lock_days: 1 } }).recalculatesLocks).toBe(false);
    expect(applySettingsPatch(s, { lockout: { device_failures: 3 }, api_token_validity: { days: 7 } }).recalculatesLocks).toBe(false);
  });
});

describe('security settings: patchFromAssignments', () => {
  it('builds a nested patch from dotted names, parsing JSON values and keeping other text as strings', () => {
    expect(
      patchFromAssignments([
        'lockout.device_failures=3',
        'lockout.user_lock_days = 2',
        'admin_inactivity_timeout=00:30',
        'account_validity_days=null',
        'mobile_token.enabled=true',
        'api_token_validity={"days":7}',
      ]),
    ).toEqual({
      lockout: { device_failures: 3, user_lock_days: 2 },
      admin_inactivity_timeout: '00:30',
      account_validity_days: null,
      mobile_token: { enabled: true },
      api_token_validity: { days: 7 },
    });
  });

  it('gives a patch that applySettingsPatch accepts', () => {
    const { next, recalculatesLocks } = applySettingsPatch(
      defaults(),
      patchFromAssignments(['lockout.device_lock_minutes=30', 'mobile_authorization.token_lifetime_seconds=3600']),
    );
    expect(next.lockout.device_lock_minutes).toBe(30);
    expect(next.mobile_authorization.token_lifetime_seconds).toBe(3600);
    expect(recalculatesLocks).toBe(true);
  });

  it('leaves a bad value for applySettingsPatch to refuse, naming the field', () => {
    expect(refusedField(patchFromAssignments(['lockout.device_failures=many']))).toBe('lockout.device_failures');
  });

  it.each(['lockout.device_failures', '=3'])('refuses an assignment without a name or an "=" (%s)', (assignment) => {
    throwsWith(() => patchFromAssignments([assignment]), 'PLATFORM_ERR_INVALID_SETTING');
  });

  it('never writes to Object.prototype through a __proto__ or constructor path', () => {
    const probe = {} as Record<string, unknown>;
    try {
      try {
        patchFromAssignments(['__proto__.polluted=1']);
      } catch {
        // refusing the assignment is fine too
      }
      try {
        patchFromAssignments(['constructor.prototype.polluted=1']);
      } catch {
        // refusing the assignment is fine too
      }
      expect(probe.polluted).toBeUndefined();
    } finally {
      delete (Object.prototype as Record<string, unknown>).polluted;
    }
  });
});
