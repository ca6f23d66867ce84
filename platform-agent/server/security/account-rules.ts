/**
 * What an account is, without a store: field checks for users and groups, dates, the account
 * validity window and lock state as users and administrators see them ("Locked until
 * 2026-11-30 14:00 UTC"). accounts.ts and groups.ts both build on it.
 */
import { DAY_MS } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import { ROLES, type Role, type UserRecord } from '../store/store.js';
import { NAME_RULE, normalizeName } from './names.js';
import { passwordProblem } from './passwords.js';
import type { SecuritySettings } from './settings.js';

/** Longest description of a user or a group, in characters. */
export const MAX_DESCRIPTION_CHARS = 500;

/** A 400 PLATFORM_ERR_INVALID_REQUEST naming `field`. */
export function invalid(field: string, message: string): RelayError {
  return new RelayError('PLATFORM_ERR_INVALID_REQUEST', `${field}: ${message}`, { details: { field } });
}

/** A user or group name (names.ts: any script, NFC), returned in NFC. */
export function checkName(field: string, name: unknown): string {
  const normalized = normalizeName(name);
  if (normalized === null) throw invalid(field, NAME_RULE);
  return normalized;
}

export function checkUsername(username: unknown): string {
  return checkName('username', username);
}

/** An optional description: a string of at most 500 characters; null or "" clear it. */
export function checkDescription(description: unknown): string | null {
  if (description === null || description === '') return null;
  if (typeof description !== 'string' || description.length > MAX_DESCRIPTION_CHARS)
    throw invalid('description', `expected a string of at most ${MAX_DESCRIPTION_CHARS} characters, or null`);
  return description;
}

/** An optional group name; null clears it. Whether it exists, for the user's role, the store checks with the write. */
export function checkGroupField(group: unknown): string | null {
  return group === null ? null : checkName('group', group);
}

export function checkRole(role: unknown): Role {
  if (typeof role !== 'string' || !ROLES.includes(role as Role)) throw invalid('role', `expected one of ${ROLES.join(', ')}`);
  return role as Role;
}

export function checkPassword(password: unknown): string {
  if (typeof password !== 'string') throw invalid('password', 'expected a string');
  const problem = passwordProblem(password);
  if (problem) throw invalid('password', problem);
  return password;
}

/** An ISO 8601 date or date-time (UTC when no offset is given), or null. */
export function parseDate(field: string, value: unknown): number | null {
  if (value === null) return null;
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(value))
    throw invalid(field, 'expected an ISO 8601 date such as 2026-12-31 or 2026-12-31T18:00:00Z, or null');
  const hasZone = /(Z|[+-]\d{2}:?\d{2})$/.test(value) && value.length > 10;
  const ms = Date.parse(value.length === 10 ? `${value}T00:00:00Z` : hasZone ? value : `${value.replace(' ', 'T')}Z`);
  // Date.parse rolls 2026-02-30 over to March: check the calendar date itself.
  const [y, m, d] = value.slice(0, 10).split('-').map(Number) as [number, number, number];
  const day = new Date(Date.UTC(y, m - 1, d));
  if (Number.isNaN(ms) || day.getUTCMonth() !== m - 1 || day.getUTCDate() !== d) throw invalid(field, 'not a real date');
  return ms;
}

/** "2026-11-30 14:00 UTC" */
export function formatUtc(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/** The user lock in force at `now`, if any. A lock whose time has passed is over without anyone touching the store. */
export function userLockActive(user: UserRecord, now: number): boolean {
  return user.lockedForSecurityReasons && (user.lockedUntil === null || user.lockedUntil > now);
}

/** The account's validity window: the user's own period when set, else the global number of days from creation. */
export function accountWindow(user: UserRecord, settings: SecuritySettings): { from: number | null; until: number | null } {
  if (user.validFrom !== null || user.validUntil !== null) return { from: user.validFrom, until: user.validUntil };
  if (settings.account_validity_days === null) return { from: null, until: null };
  return { from: null, until: user.createdAt + settings.account_validity_days * DAY_MS };
}

export function accountActive(user: UserRecord, settings: SecuritySettings, now: number): boolean {
  const { from, until } = accountWindow(user, settings);
  return (from === null || now >= from) && (until === null || now < until);
}

/** May this account log in and use its tokens right now? */
export function accountUsable(user: UserRecord, settings: SecuritySettings, now: number): boolean {
  return !userLockActive(user, now) && accountActive(user, settings, now);
}

export interface UserView {
  username: string;
  role: Role;
  group: string | null;
  description: string | null;
  created_at: string;
  account_valid_from: string | null;
  account_valid_until: string | null;
  locked_for_security_reasons: boolean;
  locked_until: string | null;
  status: string;
  /** A user barcode is set (the barcode itself is a credential: never shown). */
  barcode_set: boolean;
}

/**
 * A user as the admin API, the control panel and the CLI show it. `waived`: the administrator
 * whose validity is waived now (security/groups.ts `waivedAdmin`): shown as active, saying why.
 */
export function userView(user: UserRecord, settings: SecuritySettings, now: number, waived: string | null = null): UserView {
  const locked = userLockActive(user, now);
  const window = accountWindow(user, settings);
  let status = 'Active';
  if (locked)
    status = user.lockedUntil === null ? 'Locked until an administrator unlocks it' : `Locked until ${formatUtc(user.lockedUntil)}`;
  else if (waived === user.username && !accountActive(user, settings, now))
    status = 'Active: the last administrator who can manage users is never expired';
  else if (window.from !== null && now < window.from) status = `Not valid before ${formatUtc(window.from)}`;
  else if (window.until !== null && now >= window.until) status = `Expired on ${formatUtc(window.until)}`;
  return {
    username: user.username,
    role: user.role,
    group: user.group,
    description: user.description,
    created_at: new Date(user.createdAt).toISOString(),
    account_valid_from: iso(window.from),
    account_valid_until: iso(window.until),
    locked_for_security_reasons: locked,
    locked_until: locked ? iso(user.lockedUntil) : null,
    status,
    barcode_set: user.barcodeHash !== null,
  };
}

export interface NewUser {
  username: unknown;
  password: unknown;
  role: unknown;
  account_valid_from?: unknown;
  account_valid_until?: unknown;
  group?: unknown;
  description?: unknown;
  /** The user barcode («Штрихкод пользователя»), a credential; absent or null: none. */
  barcode?: unknown;
}

/** Longest user barcode, in characters. */
export const MAX_BARCODE_CHARS = 128;
const BARCODE = /^[^\p{Cc}\p{Cf}\s](?:[^\p{Cc}\p{Cf}]*[^\p{Cc}\p{Cf}\s])?$/u;

/** A user barcode: 4-128 characters, no control or invisible characters, no space at either end; null clears it. */
export function checkBarcode(barcode: unknown): string | null {
  if (barcode === null) return null;
  if (typeof barcode !== 'string' || [...barcode].length < 4 || [...barcode].length > MAX_BARCODE_CHARS || !BARCODE.test(barcode))
    throw invalid('barcode', `expected 4-${MAX_BARCODE_CHARS} characters without control characters or spaces at the ends, or null`);
  return barcode;
}
