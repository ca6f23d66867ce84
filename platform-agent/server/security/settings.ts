/**
 * The platform server's security settings: their defaults (from the vendor documents), their
 * validation, and what a change implies (every token invalid, lock times recalculated).
 * Names are the ones the admin API and `platform-agent settings` use.
 */
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';

export interface Validity {
  days: number;
  hours: number;
}

export interface LockoutSettings {
  /** Failed logins on one device that lock it. */
  device_failures: number;
  /** The failure count resets this long after the last failure. */
  failure_reset_minutes: number;
  /** How long a device stays locked. */
  device_lock_minutes: number;
  /** Device locks of one user that lock the user. */
  user_device_locks: number;
  /** Device locks count within this window. */
  device_lock_reset_hours: number;
  /** How long a user stays locked. */
  user_lock_days: number;
  /**
   * Smart lockout (default false). On: a device on which the user has logged in successfully
   * before keeps working through a user lock caused by failures from other devices, and the same
   * wrong password repeated on one device counts once. Trade-off: an attacker cannot lock a user
   * out of their own known devices, but a stolen known device keeps working until an
   * administrator locks the user (an administrator's lock has no exception) or the device.
   */
  smart_lockout: boolean;
}

/** Encryption (the vendor's API and Control Panel checkboxes): HTTPS required, HTTP refused or redirected. */
export interface HttpsSettings {
  /** `/api/` only over TLS: the relay's HTTPS port, or the internal listener's TLS. Default false. */
  api: boolean;
  /** `/console/` only over TLS: plain HTTP is redirected to https:// on the same port. Default false. */
  control_panel: boolean;
}

export interface SecuritySettings {
  /** Encryption; "HTTP protocol is used by default". */
  https: HttpsSettings;
  /** Access-token validity for API users (mobile, external). Default 14 days. */
  api_token_validity: Validity;
  /** Access-token validity for administrators. Default 14 days. */
  admin_token_validity: Validity;
  /** Refresh-token validity for everyone; must exceed both access validities. Default 45 days. */
  refresh_token_validity: Validity;
  /** Administrator inactivity timeout, "hh:mm", or null (unset, the default). */
  admin_inactivity_timeout: string | null;
  /** Validity of every account in days from its creation, or null (unlimited, the default). A user's own period overrides it. */
  account_validity_days: number | null;
  lockout: LockoutSettings;
  /** Login attempts a minute from one IP address (whitelisted addresses are exempt). */
  ip_login_attempts_per_minute: number;
  /** `Authorization: Mobile base64(user:password)` (ThingWorx mobile authorization authenticator). */
  mobile_authorization: { enabled: boolean; generate_tokens: boolean; token_lifetime_seconds: number };
  /** `twx-mobile-token: <token>` (ThingWorx mobile token authenticator). */
  mobile_token: { enabled: boolean };
  /** Idle timeout of a session created by a mobile authenticator. */
  mobile_session_idle_minutes: number;
  /**
   * The device logins of Mobile SMARTS, off by default (the document recommends a name and a
   * password). `password_only`: "on the device only a password is asked, so every user's password
   * must be unique and none may be empty" — a device logs in with `{password}` alone, and a new or
   * changed password equal to another user's is refused. `barcode` («Вход по штрихкоду»): a device
   * logs in with `{barcode}`, the user barcode an administrator set. Mobile users only.
   */
  device_login: { password_only: boolean; barcode: boolean };
  /**
   * Rules for passwords set from now on (passwords already set stay valid). The Mobile SMARTS
   * recommendation — about 8 characters, upper- and lower-case letters, digits — is what
   * `recommendedPasswordPolicy` holds; the default keeps today's rule (at least 8 characters), which
   * is also the floor of `min_length`.
   */
  password_policy: PasswordPolicy;
}

export interface PasswordPolicy {
  /** Fewest characters (code points), 8-128. */
  min_length: number;
  /** At least one upper-case and one lower-case letter, in any script. */
  require_mixed_case: boolean;
  /** At least one digit. */
  require_digit: boolean;
}

/** The shortest password any policy allows: the rule before the policy existed. */
export const MIN_PASSWORD_CHARS = 8;

/** "длина около 8 символов, прописные и строчные буквы, цифры" (Mobile SMARTS). */
export const recommendedPasswordPolicy: Readonly<PasswordPolicy> = Object.freeze({
  min_length: 8,
  require_mixed_case: true,
  require_digit: true,
});

/** What `password` lacks under `policy`, or null when it meets it. */
export function passwordPolicyProblem(password: string, policy: PasswordPolicy): string | null {
  const needs: string[] = [];
  if ([...password].length < policy.min_length) needs.push(`at least ${policy.min_length} characters`);
  if (policy.require_mixed_case && !(/\p{Lu}/u.test(password) && /\p{Ll}/u.test(password))) needs.push('upper- and lower-case letters');
  if (policy.require_digit && !/\p{Nd}/u.test(password)) needs.push('a digit');
  return needs.length === 0 ? null : `the password policy asks for ${needs.join(', ')}`;
}

/**
 * Defaults. The mobile authenticators are off until an administrator turns them on (the vendor:
 * "they must be enabled"); `generate_tokens` is on and the token lifetime is 2,592,000 s (30 days).
 */
export const defaultSettings: Readonly<SecuritySettings> = Object.freeze({
  https: { api: false, control_panel: false },
  api_token_validity: { days: 14, hours: 0 },
  admin_token_validity: { days: 14, hours: 0 },
  refresh_token_validity: { days: 45, hours: 0 },
  admin_inactivity_timeout: null,
  account_validity_days: null,
  lockout: {
    device_failures: 5,
    failure_reset_minutes: 15,
    device_lock_minutes: 15,
    user_device_locks: 3,
    device_lock_reset_hours: 24,
    user_lock_days: 1,
    smart_lockout: false,
  },
  ip_login_attempts_per_minute: 10,
  mobile_authorization: { enabled: false, generate_tokens: true, token_lifetime_seconds: 2_592_000 },
  mobile_token: { enabled: false },
  mobile_session_idle_minutes: 30,
  device_login: { password_only: false, barcode: false },
  password_policy: { min_length: MIN_PASSWORD_CHARS, require_mixed_case: false, require_digit: false },
});

export function cloneSettings(s: SecuritySettings): SecuritySettings {
  return structuredClone(s);
}

export function validityMs(v: Validity): number {
  return v.days * DAY_MS + v.hours * HOUR_MS;
}

/** "hh:mm" → milliseconds; null stays null. */
export function inactivityMs(value: string | null): number | null {
  if (value === null) return null;
  const m = /^(\d{1,3}):([0-5]\d)$/.exec(value);
  if (!m) return null;
  return Number(m[1]) * HOUR_MS + Number(m[2]) * MINUTE_MS;
}

/** Lockout rules in milliseconds, as the store applies them. */
export interface LockoutPolicy {
  deviceFailures: number;
  failureResetMs: number;
  deviceLockMs: number;
  userDeviceLocks: number;
  deviceLockWindowMs: number;
  userLockMs: number;
  /** `lockout.smart_lockout`. */
  smart: boolean;
}

export function lockoutPolicy(s: SecuritySettings): LockoutPolicy {
  const l = s.lockout;
  return {
    deviceFailures: l.device_failures,
    failureResetMs: l.failure_reset_minutes * MINUTE_MS,
    deviceLockMs: l.device_lock_minutes * MINUTE_MS,
    userDeviceLocks: l.user_device_locks,
    deviceLockWindowMs: l.device_lock_reset_hours * HOUR_MS,
    userLockMs: l.user_lock_days * DAY_MS,
    smart: l.smart_lockout,
  };
}

function invalid(field: string, message: string): RelayError {
  return new RelayError('PLATFORM_ERR_INVALID_SETTING', `${field}: ${message}`, { details: { field } });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function int(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw invalid(field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

function bool(field: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw invalid(field, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function validity(field: string, v: unknown, current: Validity): Validity {
  if (!isObject(v)) throw invalid(field, 'expected {"days": <0-3650>, "hours": <0-23>}');
  for (const key of Object.keys(v)) if (key !== 'days' && key !== 'hours') throw invalid(`${field}.${key}`, 'unknown field');
  const next = {
    days: v.days === undefined ? current.days : int(`${field}.days`, v.days, 0, 3650),
    hours: v.hours === undefined ? current.hours : int(`${field}.hours`, v.hours, 0, 23),
  };
  if (validityMs(next) === 0) throw invalid(field, 'must be at least one hour');
  return next;
}

type Section = Record<string, (field: string, v: unknown, cur: unknown) => unknown>;

const lockoutFields: Section = {
  device_failures: (f, v) => int(f, v, 1, 1000),
  failure_reset_minutes: (f, v) => int(f, v, 1, 525_600),
  device_lock_minutes: (f, v) => int(f, v, 1, 525_600),
  user_device_locks: (f, v) => int(f, v, 1, 1000),
  device_lock_reset_hours: (f, v) => int(f, v, 1, 87_600),
  user_lock_days: (f, v) => int(f, v, 1, 3650),
  smart_lockout: (f, v) => bool(f, v),
};

function section(field: string, v: unknown, current: Record<string, unknown>, fields: Section): Record<string, unknown> {
  if (!isObject(v)) throw invalid(field, 'expected an object');
  const next = { ...current };
  for (const [key, value] of Object.entries(v)) {
    // Own keys only: `constructor` or `toString` must not find Object.prototype's.
    const check = Object.hasOwn(fields, key) ? fields[key] : undefined;
    if (!check) throw invalid(`${field}.${key}`, 'unknown field');
    next[key] = check(`${field}.${key}`, value, current[key]);
  }
  return next;
}

const topFields: Section = {
  https: (f, v, cur) => section(f, v, cur as Record<string, unknown>, { api: bool, control_panel: bool }),
  api_token_validity: (f, v, cur) => validity(f, v, cur as Validity),
  admin_token_validity: (f, v, cur) => validity(f, v, cur as Validity),
  refresh_token_validity: (f, v, cur) => validity(f, v, cur as Validity),
  admin_inactivity_timeout: (f, v) => {
    if (v === null) return null;
    if (typeof v !== 'string' || inactivityMs(v) === null || inactivityMs(v) === 0)
      throw invalid(f, `expected "hh:mm" (e.g. "00:30") or null, got ${JSON.stringify(v)}`);
    return v;
  },
  account_validity_days: (f, v) => (v === null ? null : int(f, v, 1, 36_500)),
  lockout: (f, v, cur) => section(f, v, cur as Record<string, unknown>, lockoutFields),
  ip_login_attempts_per_minute: (f, v) => int(f, v, 1, 100_000),
  mobile_authorization: (f, v, cur) =>
    section(f, v, cur as Record<string, unknown>, {
      enabled: bool,
      generate_tokens: bool,
      token_lifetime_seconds: (ff, vv) => int(ff, vv, 60, 10 * 365 * 86_400),
    }),
  mobile_token: (f, v, cur) => section(f, v, cur as Record<string, unknown>, { enabled: bool }),
  mobile_session_idle_minutes: (f, v) => int(f, v, 1, 1440),
  device_login: (f, v, cur) => section(f, v, cur as Record<string, unknown>, { password_only: bool, barcode: bool }),
  password_policy: (f, v, cur) =>
    section(f, v, cur as Record<string, unknown>, {
      min_length: (ff, vv) => int(ff, vv, MIN_PASSWORD_CHARS, 128),
      require_mixed_case: bool,
      require_digit: bool,
    }),
};

export interface SettingsChange {
  next: SecuritySettings;
  /** A token validity changed: every current token becomes invalid. */
  invalidatesTokens: boolean;
  /** A lock duration changed: locks in force get new end times. */
  recalculatesLocks: boolean;
}

/**
 * Applies a partial update (the admin API's PATCH body, or `settings set`) to `current`.
 * Throws PLATFORM_ERR_INVALID_SETTING (400) naming the first bad field; `current` is never changed.
 */
export function applySettingsPatch(current: SecuritySettings, patch: unknown): SettingsChange {
  if (!isObject(patch)) throw invalid('(body)', 'expected a JSON object of settings');
  const next = cloneSettings(current) as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(patch)) {
    const check = Object.hasOwn(topFields, key) ? topFields[key] : undefined;
    if (!check) throw invalid(key, 'unknown setting');
    next[key] = check(key, value, next[key]);
  }
  const s = next as unknown as SecuritySettings;
  const refresh = validityMs(s.refresh_token_validity);
  if (refresh <= validityMs(s.api_token_validity))
    throw invalid('refresh_token_validity', 'must exceed api_token_validity (the vendor rule: refresh outlives the access token)');
  if (refresh <= validityMs(s.admin_token_validity))
    throw invalid('refresh_token_validity', 'must exceed admin_token_validity (the vendor rule: refresh outlives the access token)');
  const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
  return {
    next: s,
    invalidatesTokens:
      !same(s.api_token_validity, current.api_token_validity) ||
      !same(s.admin_token_validity, current.admin_token_validity) ||
      !same(s.refresh_token_validity, current.refresh_token_validity),
    recalculatesLocks:
      s.lockout.device_lock_minutes !== current.lockout.device_lock_minutes || s.lockout.user_lock_days !== current.lockout.user_lock_days,
  };
}

/**
 * Parses `settings set` arguments: `lockout.device_failures=3`, `admin_inactivity_timeout=00:30`,
 * `account_validity_days=null`, `mobile_token.enabled=true`. Values are JSON where they parse as
 * JSON, strings otherwise. Returns a patch for `applySettingsPatch`.
 */
export function patchFromAssignments(assignments: string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const a of assignments) {
    const eq = a.indexOf('=');
    if (eq <= 0) throw invalid(a, 'expected <name>=<value>, e.g. lockout.device_failures=3');
    const path = a.slice(0, eq).trim().split('.');
    const bad = path.find((key) => key === '' || key === '__proto__' || key === 'constructor' || key === 'prototype');
    if (bad !== undefined) throw invalid(a.slice(0, eq), 'not a setting name');
    const raw = a.slice(eq + 1).trim();
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    let target = patch;
    for (const key of path.slice(0, -1)) {
      const nextTarget = target[key];
      if (!isObject(nextTarget)) target[key] = Object.create(null) as Record<string, unknown>;
      target = target[key] as Record<string, unknown>;
    }
    target[path[path.length - 1]!] = value;
  }
  return patch;
}
