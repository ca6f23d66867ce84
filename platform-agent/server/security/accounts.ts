/**
 * Accounts: creation and changes with their validation, account validity, lock state as users
 * and administrators see it ("Locked until 2026-11-30 14:00 UTC"). Used by the admin API and by
 * the `platform-agent user …` CLI alike.
 */
import type { Clock } from '../../../shared/clock.js';
import { DAY_MS } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import { ROLES, type PlatformStore, type Role, type UserPatch, type UserRecord } from '../store/store.js';
import { keepUserManager } from './groups.js';
import { hashPassword, passwordProblem, type ScryptParams } from './passwords.js';
import type { SecuritySettings } from './settings.js';

/** Usernames and group names. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

/** Longest description of a user or a group, in characters. */
export const MAX_DESCRIPTION_CHARS = 500;

/** A 400 RELAY_ERR_INVALID_REQUEST naming `field`. */
export function invalid(field: string, message: string): RelayError {
  return new RelayError('RELAY_ERR_INVALID_REQUEST', `${field}: ${message}`, { details: { field } });
}

/** A user or group name: 1-64 letters, digits and `. _ @ -`, not starting with a sign. */
export function checkName(field: string, name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name))
    throw invalid(field, 'expected 1-64 characters: letters, digits, and . _ @ - (not first)');
  return name;
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
function checkGroupField(group: unknown): string | null {
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
}

export class Accounts {
  constructor(
    private readonly store: PlatformStore,
    private readonly clock: Clock,
    private readonly scrypt?: ScryptParams,
  ) {}

  async create(input: NewUser): Promise<UserRecord> {
    const username = checkUsername(input.username);
    const role = checkRole(input.role);
    const password = checkPassword(input.password);
    const validFrom = input.account_valid_from === undefined ? null : parseDate('account_valid_from', input.account_valid_from);
    const validUntil = input.account_valid_until === undefined ? null : parseDate('account_valid_until', input.account_valid_until);
    if (validFrom !== null && validUntil !== null && validUntil <= validFrom)
      throw invalid('account_valid_until', 'must be after account_valid_from');
    const group = input.group === undefined ? null : checkGroupField(input.group);
    const description = input.description === undefined ? null : checkDescription(input.description);
    const user: UserRecord = {
      username,
      passwordHash: await hashPassword(password, this.scrypt),
      role,
      createdAt: this.clock.now(),
      validFrom,
      validUntil,
      lockedForSecurityReasons: false,
      lockedAt: null,
      lockedUntil: null,
      group,
      description,
    };
    await this.store.createUser(user);
    return user;
  }

  async get(username: string): Promise<UserRecord> {
    const user = await this.store.getUser(username);
    if (!user) throw new RelayError('RELAY_ERR_USER_NOT_FOUND');
    return user;
  }

  /**
   * Applies an admin change: `role`, `group` (null: none), `description`, `password`, `account_valid_from`/`account_valid_until`,
   * `locked_for_security_reasons` (false unlocks; true locks until an administrator unlocks, ending
   * every session). Unknown fields are refused. The last administrator cannot be demoted or locked.
   */
  async update(username: string, body: unknown, lockDefaultMs?: number): Promise<UserRecord> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('(body)', 'expected a JSON object');
    const input = body as Record<string, unknown>;
    const allowed = [
      'role',
      'group',
      'description',
      'password',
      'account_valid_from',
      'account_valid_until',
      'locked_for_security_reasons',
    ];
    for (const key of Object.keys(input)) if (!allowed.includes(key)) throw invalid(key, `unknown field; expected ${allowed.join(', ')}`);
    const user = await this.get(username);
    const patch: UserPatch = {};
    if (input.role !== undefined) patch.role = checkRole(input.role);
    if (input.group !== undefined) patch.group = checkGroupField(input.group);
    if (input.description !== undefined) patch.description = checkDescription(input.description);
    if (input.password !== undefined) patch.passwordHash = await hashPassword(checkPassword(input.password), this.scrypt);
    if (input.account_valid_from !== undefined) patch.validFrom = parseDate('account_valid_from', input.account_valid_from);
    if (input.account_valid_until !== undefined) patch.validUntil = parseDate('account_valid_until', input.account_valid_until);
    const from = patch.validFrom !== undefined ? patch.validFrom : user.validFrom;
    const until = patch.validUntil !== undefined ? patch.validUntil : user.validUntil;
    if (from !== null && until !== null && until <= from) throw invalid('account_valid_until', 'must be after account_valid_from');
    const lock = input.locked_for_security_reasons;
    if (lock !== undefined && typeof lock !== 'boolean') throw invalid('locked_for_security_reasons', 'expected true or false');
    if (user.role === 'admin') {
      const after: UserRecord = {
        ...user,
        ...patch,
        ...(lock === true ? { lockedForSecurityReasons: true, lockedUntil: null } : {}),
        ...(lock === false ? { lockedForSecurityReasons: false, lockedUntil: null } : {}),
      };
      await keepUserManager(this.store, this.clock.now(), { user: { username, after } });
    }

    let result = Object.keys(patch).length > 0 ? await this.store.updateUser(username, patch, this.clock.now()) : user;
    if (lock === false) result = await this.store.setUserLock(username, null);
    if (lock === true) {
      const now = this.clock.now();
      result = await this.store.setUserLock(username, {
        lockedAt: now,
        lockedUntil: lockDefaultMs === undefined ? null : now + lockDefaultMs,
      });
    }
    if (!result) throw new RelayError('RELAY_ERR_USER_NOT_FOUND');
    return result;
  }

  async delete(username: string): Promise<void> {
    const user = await this.get(username);
    if (user.role === 'admin') await keepUserManager(this.store, this.clock.now(), { user: { username, after: null } });
    await this.store.deleteUser(username);
  }
}
