/**
 * Accounts: creation and changes with their validation (account-rules.ts), kept consistent with
 * the user managers rule (groups.ts). Used by the admin API and by the `platform-agent user …`
 * CLI alike.
 */
import type { Clock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import type { PlatformStore, SecretKind, UserPatch, UserRecord, UserWriteOptions } from '../store/store.js';
import { USER_MANAGERS, keepUserManager } from './groups.js';
import { lookupTag } from './lookup-tags.js';
import { hashPassword, type ScryptParams } from './passwords.js';
import { passwordPolicyProblem, type SecuritySettings } from './settings.js';
import {
  checkBarcode,
  checkDescription,
  checkGroupField,
  checkPassword,
  checkRole,
  checkUsername,
  invalid,
  parseDate,
  type NewUser,
} from './account-rules.js';

export class Accounts {
  constructor(
    private readonly store: PlatformStore,
    private readonly clock: Clock,
    private readonly scrypt?: ScryptParams,
  ) {}

  async create(input: NewUser): Promise<UserRecord> {
    const { settings } = await this.store.getSettings();
    const username = checkUsername(input.username);
    const role = checkRole(input.role);
    const password = checkPolicy(checkPassword(input.password), settings);
    const validFrom = input.account_valid_from === undefined ? null : parseDate('account_valid_from', input.account_valid_from);
    const validUntil = input.account_valid_until === undefined ? null : parseDate('account_valid_until', input.account_valid_until);
    if (validFrom !== null && validUntil !== null && validUntil <= validFrom)
      throw invalid('account_valid_until', 'must be after account_valid_from');
    const group = input.group === undefined ? null : checkGroupField(input.group);
    const description = input.description === undefined ? null : checkDescription(input.description);
    const barcode = input.barcode === undefined ? null : checkBarcode(input.barcode);
    const user: UserRecord = {
      username,
      passwordHash: await hashPassword(password, this.scrypt),
      passwordTag: await this.tag('password', password),
      ...(await this.barcodeFields(barcode)),
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
    await this.store.createUser(user, writeOptions(settings));
    return user;
  }

  private async tag(kind: SecretKind, secret: string): Promise<string> {
    return lookupTag(await this.store.lookupKey(), kind, secret);
  }

  private async barcodeFields(barcode: string | null): Promise<Pick<UserRecord, 'barcodeHash' | 'barcodeTag'>> {
    if (barcode === null) return { barcodeHash: null, barcodeTag: null };
    return { barcodeHash: await hashPassword(barcode, this.scrypt), barcodeTag: await this.tag('barcode', barcode) };
  }

  async get(username: string): Promise<UserRecord> {
    const user = await this.store.getUser(username);
    if (!user) throw new RelayError('PLATFORM_ERR_USER_NOT_FOUND');
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
      'barcode',
    ];
    for (const key of Object.keys(input)) if (!allowed.includes(key)) throw invalid(key, `unknown field; expected ${allowed.join(', ')}`);
    const user = await this.get(username);
    const { settings } = await this.store.getSettings();
    const patch: UserPatch = {};
    if (input.role !== undefined) patch.role = checkRole(input.role);
    if (input.group !== undefined) patch.group = checkGroupField(input.group);
    if (input.description !== undefined) patch.description = checkDescription(input.description);
    if (input.password !== undefined) {
      const password = checkPolicy(checkPassword(input.password), settings);
      patch.passwordHash = await hashPassword(password, this.scrypt);
      patch.passwordTag = await this.tag('password', password);
    }
    if (input.barcode !== undefined) Object.assign(patch, await this.barcodeFields(checkBarcode(input.barcode)));
    if (input.account_valid_from !== undefined) patch.validFrom = parseDate('account_valid_from', input.account_valid_from);
    if (input.account_valid_until !== undefined) patch.validUntil = parseDate('account_valid_until', input.account_valid_until);
    const from = patch.validFrom !== undefined ? patch.validFrom : user.validFrom;
    const until = patch.validUntil !== undefined ? patch.validUntil : user.validUntil;
    if (from !== null && until !== null && until <= from) throw invalid('account_valid_until', 'must be after account_valid_from');
    const lock = input.locked_for_security_reasons;
    if (lock !== undefined && typeof lock !== 'boolean') throw invalid('locked_for_security_reasons', 'expected true or false');
    // An administrator's change is checked and written in one section: two changes at once (on
    // any instance) cannot each count on the other's administrator remaining.
    const write = async (): Promise<UserRecord | null> => {
      if (user.role === 'admin') {
        const after: UserRecord = {
          ...user,
          ...patch,
          ...(lock === true ? { lockedForSecurityReasons: true, lockedUntil: null } : {}),
          ...(lock === false ? { lockedForSecurityReasons: false, lockedUntil: null } : {}),
        };
        await keepUserManager(this.store, this.clock.now(), { user: { username, after } });
      }

      let result: UserRecord | null =
        Object.keys(patch).length > 0 ? await this.store.updateUser(username, patch, this.clock.now(), writeOptions(settings)) : user;
      if (lock === false) result = await this.store.setUserLock(username, null);
      if (lock === true) {
        const now = this.clock.now();
        result = await this.store.setUserLock(username, {
          lockedAt: now,
          lockedUntil: lockDefaultMs === undefined ? null : now + lockDefaultMs,
        });
      }
      return result;
    };
    const result = user.role === 'admin' ? await this.store.exclusive(USER_MANAGERS, write) : await write();
    if (!result) throw new RelayError('PLATFORM_ERR_USER_NOT_FOUND');
    return result;
  }

  async delete(username: string): Promise<void> {
    const user = await this.get(username);
    if (user.role !== 'admin') {
      await this.store.deleteUser(username);
      return;
    }
    await this.store.exclusive(USER_MANAGERS, async () => {
      await keepUserManager(this.store, this.clock.now(), { user: { username, after: null } });
      await this.store.deleteUser(username);
    });
  }
}

/** A new password must meet the password policy in force (settings `password_policy`). */
function checkPolicy(password: string, settings: SecuritySettings): string {
  const problem = passwordPolicyProblem(password, settings.password_policy);
  if (problem) throw invalid('password', problem);
  return password;
}

/** With password-only device login on, a password must be no other user's. */
function writeOptions(settings: SecuritySettings): UserWriteOptions {
  return { uniquePassword: settings.device_login.password_only };
}
