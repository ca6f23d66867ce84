/**
 * The platform server's state behind one small interface: accounts, settings, signing keys,
 * login counters, locks, refresh-token families, mobile tokens and sessions. Every
 * check-and-update (a failure counter, a lock, a refresh rotation, a rate limit) is one method,
 * atomic in the store: SQLite (sqlite-store.ts, the embedded default) runs each in one IMMEDIATE
 * transaction, PostgreSQL (pg-store.ts, shared by several platform server instances) in one
 * SERIALIZABLE transaction retried on a conflict. Times are milliseconds since the epoch,
 * always passed in by the caller (its clock), never read here. Secrets arrive already hashed.
 */
import { DAY_MS } from '../../../shared/clock.js';
import type { LockoutPolicy, SecuritySettings } from '../security/settings.js';
import type { AdminWaitPolicy } from '../security/admin-waits.js';
import type { IpListName } from '../../../shared/ip-rule-files.js';

export type Role = 'mobile' | 'external' | 'admin';
export const ROLES: readonly Role[] = ['mobile', 'external', 'admin'];

export interface UserRecord {
  username: string;
  passwordHash: string;
  role: Role;
  createdAt: number;
  /** Per-user validity period; when either is set it overrides the global account validity. */
  validFrom: number | null;
  validUntil: number | null;
  lockedForSecurityReasons: boolean;
  lockedAt: number | null;
  /** null with the flag set: locked by an administrator until one unlocks. */
  lockedUntil: number | null;
  /** The user's group (same role as the user), or null: every operation of its role. */
  group: string | null;
  description: string | null;
  /**
   * The password's lookup tag (security/lookup-tags.ts: a keyed HMAC, the key outside the
   * database), set with every password from store migration 8 on; null for a password set before.
   * It lets a device log in with a password alone (`device_login.password_only`).
   */
  passwordTag: string | null;
  /** The user's barcode («Штрихкод пользователя»), a credential: its scrypt hash and lookup tag, or null when none is set. */
  barcodeHash: string | null;
  barcodeTag: string | null;
}

export type UserPatch = Partial<
  Pick<
    UserRecord,
    'passwordHash' | 'passwordTag' | 'barcodeHash' | 'barcodeTag' | 'role' | 'validFrom' | 'validUntil' | 'group' | 'description'
  >
>;

/** How a user's secret is looked up without the name (device logins of Mobile SMARTS). */
export type SecretKind = 'password' | 'barcode';

/** Options of a write that sets a password: refuse it (409 PLATFORM_ERR_PASSWORD_IN_USE) when another user's password has the same tag. */
export interface UserWriteOptions {
  uniquePassword?: boolean;
}

export interface GroupRecord {
  name: string;
  role: Role;
  description: string | null;
  /** Operation names from the catalog in security/groups.ts; never empty. */
  operations: string[];
  createdAt: number;
}

export type GroupPatch = Partial<Pick<GroupRecord, 'role' | 'description' | 'operations'>>;

/** An operation an administrator defined beside the built-in ones (a document type of Mobile SMARTS, say). */
export interface CustomOperationRecord {
  name: string;
  description: string | null;
  createdAt: number;
}

/**
 * A device (the client's `X-Device-Id`; `admin-console@<ip>` for a console login, `mobile@<ip>`
 * for an `Authorization: Mobile` login without one) as logins on it left it. A device id is a
 * claim, not an identity: failures and locks are kept per (user, device) (see `DeviceUserRecord`),
 * and this view sums them up for administrators: the highest failure count and the latest lock of
 * any user on the device. Rows outlive the user they name; `prune` forgets a device after
 * DEVICE_RETENTION_MS without a login.
 */
export interface DeviceRecord {
  deviceId: string;
  failures: number;
  lastFailureAt: number | null;
  /** The user of the last login on the device, successful or not. */
  lastUsername: string | null;
  /** The last login on the device, successful or not; null only for a row from before migration 3 without a failure to date it. */
  lastSeenAt: number | null;
  lockedAt: number | null;
  lockedUntil: number | null;
}

/**
 * One user on one device: its failure count and lock (which stop only that user's logins from
 * that device), whether the user ever logged in there successfully (`known`, for smart lockout).
 * `username` is the account's stored name, or for a name that is no account the name's key
 * (`nameKey`): such rows lock nothing but answer like the others (no account enumeration).
 */
export interface DeviceUserRecord {
  username: string;
  deviceId: string;
  failures: number;
  lastFailureAt: number | null;
  lockedAt: number | null;
  lockedUntil: number | null;
  lastSeenAt: number;
  known: boolean;
}

/**
 * How long a device is remembered after its last login when it has neither a lock in force nor
 * failures that still count (180 days: a device used now and then stays listed, while device ids
 * made up by a password-guessing client do not pile up for ever).
 */
export const DEVICE_RETENTION_MS = 180 * DAY_MS;

export interface SigningKeyRecord {
  kid: string;
  privateJwk: string;
  publicJwk: string;
  createdAt: number;
}

export interface StoredSettings {
  settings: SecuritySettings;
  /** Bumped whenever every current token must become invalid (validity change, key rotation). */
  tokenGeneration: number;
}

export interface FamilyRecord {
  familyId: string;
  username: string;
  deviceId: string | null;
  audience: string;
  currentJtiHash: string;
  createdAt: number;
  lastUsedAt: number;
  expiresAt: number;
  revokedAt: number | null;
}

export type RotateResult = 'rotated' | 'reused' | 'revoked' | 'missing';

export interface FailureResult {
  /** Smart lockout: the same wrong password was already counted on this (user, device); nothing changed. */
  repeated?: boolean;
  /** The device is (now) locked until this time, or null. */
  deviceLockedUntil: number | null;
  /** This failure locked the device. */
  deviceLockedNow: boolean;
  /** This failure locked the user (its sessions were revoked in the same transaction). */
  userLockedUntil: number | null;
}

export interface MobileTokenRecord {
  tokenHash: string;
  username: string;
  createdAt: number;
  expiresAt: number;
  /** The token generation it was issued under; a token of another generation is void. */
  generation: number;
}

export interface MobileSessionRecord {
  sessionHash: string;
  username: string;
  /** The mobile token it came from (renewable while that token is valid), or null (credentials). */
  tokenHash: string | null;
  createdAt: number;
  lastSeenAt: number;
  /** The token generation it was opened under; a session of another generation is void. */
  generation: number;
}

/** What `touchMobileSession` found: the session (its last use moved), or why there is none. */
export type SessionLookup = { session: MobileSessionRecord } | { refused: 'missing' | 'idle' | 'void' };

/**
 * The IP whitelist and blacklist kept in a shared store (so that every instance applies the same
 * lists), each list's text exactly as saved. The platform's IpGuard (http/ip-guard.ts) checks the
 * text before `put`, loads both lists at start and polls `versions` to reload a list another
 * instance saved.
 */
export interface IpListStore {
  /** How the store reads in logs and messages (no password). */
  describe(): string;
  /** The list's text and version, or null while it was never saved (nor imported). */
  get(list: IpListName): Promise<{ text: string; updatedAt: number } | null>;
  /**
   * Replaces the list's text; returns its new version: `now`, or one more than the version it
   * replaces when that is not older (versions of a list only grow, so two saves in one
   * millisecond are still two changes to a poller).
   */
  put(list: IpListName, text: string, now: number): Promise<number>;
  /** Each list's version (its `updatedAt`), null for one never saved: one cheap query per poll. */
  versions(): Promise<Record<IpListName, number | null>>;
}

export interface PlatformStore {
  /**
   * Where the IP lists live when the store keeps them (a shared store: every instance reads them
   * from it); null when they are files in the data folder (the embedded store: one instance).
   */
  readonly ipLists: IpListStore | null;
  // settings and keys
  getSettings(): Promise<StoredSettings>;
  /** Writes settings; bumps the token generation when told to; moves the end of locks in force (`lockedAt + new duration`). */
  saveSettings(
    next: SecuritySettings,
    opts: { invalidateTokens: boolean; recalculateLocks: LockoutPolicy | null; now: number },
  ): Promise<StoredSettings>;
  /** A named configuration document (JSON), or undefined when none was saved. */
  getConfig(key: string): Promise<unknown>;
  putConfig(key: string, value: unknown, now: number): Promise<void>;
  getSigningKey(): Promise<SigningKeyRecord | null>;
  /** Stores `key` only if there is no key yet (no generation change); returns the key in force. Safe when several callers race. */
  initSigningKey(key: SigningKeyRecord): Promise<SigningKeyRecord>;
  /** Replaces the signing key and bumps the token generation (every token signed before is refused). */
  rotateSigningKey(key: SigningKeyRecord): Promise<void>;

  // accounts
  /**
   * Creates a user; 409 PLATFORM_ERR_USER_EXISTS when a user of the same name without regard to case
   * exists. Its group (if any) must exist with the user's role, checked in the same transaction
   * (400 naming `group`); the group's stored name is kept.
   */
  createUser(user: UserRecord, opts?: UserWriteOptions): Promise<void>;
  /**
   * The user of that name, compared by `nameKey` (without regard to case); among names that
   * collided before names were unique that way, only the exactly matching one. Every method that
   * takes a user or group name finds it this way.
   */
  getUser(username: string): Promise<UserRecord | null>;
  /** The user a login or a token of that name may act as: as `getUser`, but null while the name's key is ambiguous. */
  getLoginUser(name: string): Promise<UserRecord | null>;
  /** Sets of stored user names, and of group names, that share one key (from before migration 5), for a warning. */
  ambiguousNames(): Promise<{ users: string[][]; groups: string[][] }>;
  listUsers(): Promise<UserRecord[]>;
  /**
   * Changes a user; a new password or role ends the user's sessions (revoked at `now`). The resulting group must exist
   * with the resulting role, checked in the same transaction (400 naming `group`, or `role` when only the role changed).
   */
  updateUser(username: string, patch: UserPatch, now: number, opts?: UserWriteOptions): Promise<UserRecord | null>;
  /**
   * The users whose password or barcode has this lookup tag. A barcode tag is unique (409
   * PLATFORM_ERR_BARCODE_IN_USE on a write that would repeat one); a password tag is unique only
   * while password-only login asks it, so several may come back.
   */
  usersBySecretTag(kind: SecretKind, tag: string): Promise<UserRecord[]>;
  /** Sets of user names whose passwords share a lookup tag (what turning password-only login on must refuse). */
  sharedPasswords(): Promise<string[][]>;
  /** The key of the lookup tags, made on first use. Kept apart from the data it keys (a file beside platform.db, not in it). */
  lookupKey(): Promise<Buffer>;
  /** Sets or clears the security lock; setting it revokes every refresh family and session of the user. */
  setUserLock(username: string, lock: { lockedAt: number; lockedUntil: number | null } | null): Promise<UserRecord | null>;
  /**
   * Deletes the user with its families, mobile tokens and sessions. Its devices stay: a device's
   * lock and failures hold whichever name is tried next on it; the rows age out through `prune`.
   */
  deleteUser(username: string): Promise<boolean>;
  countAdmins(): Promise<number>;

  // user groups
  /** Creates a group (409 PLATFORM_ERR_GROUP_EXISTS when the name is taken, without regard to case). */
  createGroup(group: GroupRecord): Promise<void>;
  getGroup(name: string): Promise<GroupRecord | null>;
  listGroups(): Promise<GroupRecord[]>;
  /** Changes a group; a new role is refused (409 PLATFORM_ERR_GROUP_IN_USE) while the group has users, in the same transaction. */
  updateGroup(name: string, patch: GroupPatch): Promise<GroupRecord | null>;
  /** Deletes a group; refused (409 PLATFORM_ERR_GROUP_IN_USE) in the same transaction while users remain. False when there was none. */
  deleteGroup(name: string): Promise<boolean>;
  countUsersInGroup(name: string): Promise<number>;

  // operations defined by administrators
  listCustomOperations(): Promise<CustomOperationRecord[]>;
  /** 409 PLATFORM_ERR_OPERATION_EXISTS when the name is taken. */
  createCustomOperation(op: CustomOperationRecord): Promise<void>;
  /** Changes the description; null when there is no such operation. */
  updateCustomOperation(name: string, description: string | null): Promise<CustomOperationRecord | null>;
  /** Deletes it; refused (409 PLATFORM_ERR_OPERATION_IN_USE, naming the groups) in the same transaction while a group holds it. False when there was none. */
  deleteCustomOperation(name: string): Promise<boolean>;

  // login limits and lockout
  /**
   * Reserves one login attempt from `ip` if fewer than `limit` are held in the last `windowMs`;
   * else says when one frees up. The limit is on failed logins: a login that succeeds gives its
   * reservation back (`releaseIpAttempt`). Reserving first keeps concurrent guesses within the limit.
   */
  hitIpAttempt(
    ip: string,
    now: number,
    windowMs: number,
    limit: number,
  ): Promise<{ allowed: boolean; retryAfterMs: number; attemptId: number }>;
  /** Gives back a reservation of `hitIpAttempt` (the login succeeded). */
  releaseIpAttempt(attemptId: number): Promise<void>;
  /**
   * An administrator's login attempt, counted atomically under every key (address, account): when
   * any key is still waiting, refused without counting (retry after the longest wait); otherwise
   * counted as a failure in advance — so that guesses sent at once meet the wait too — with the
   * wait the policy gives, until `clearAdminLogin` on success.
   */
  hitAdminLogin(keys: readonly string[], now: number, policy: AdminWaitPolicy): Promise<{ allowed: boolean; retryAfterMs: number }>;
  /** Forgets the failures counted under `keys` (a successful login). */
  clearAdminLogin(keys: readonly string[]): Promise<void>;
  getDevice(deviceId: string): Promise<DeviceRecord | null>;
  /** Every device, or those whose last login was `username`'s; ordered by user name, then device id. */
  listDevices(filter?: { username?: string }): Promise<DeviceRecord[]>;
  /** The (user, device) row, if any. */
  getDeviceUser(deviceId: string, username: string): Promise<DeviceUserRecord | null>;
  /**
   * When `username`'s logins from `deviceId` are locked (a (user, device) lock, or a device-wide
   * lock from before migration 4), or null.
   */
  deviceLockedUntil(deviceId: string, username: string, now: number): Promise<number | null>;
  /**
   * One failed login of `username` on a device, applying the lockout policy atomically: the
   * (user, device) lock, then — for an existing user only — the user lock. `passwordTag` (smart
   * lockout: a keyed hash of the wrong password, never the password) makes a repeat of a recent
   * wrong password count once.
   */
  recordLoginFailure(
    deviceId: string,
    username: string,
    now: number,
    policy: LockoutPolicy,
    userExists: boolean,
    passwordTag?: string,
  ): Promise<FailureResult>;
  /**
   * A successful login records the device (created if new) as seen at `now` by `username`, resets
   * that (user, device)'s failure count and marks the device known for the user — unless it got
   * locked while the password was being checked (concurrent guesses): then nothing changes and the
   * answer is false.
   */
  recordLoginSuccess(deviceId: string, username: string, now: number): Promise<boolean>;
  /** Clears every lock and failure count on the device, for every user. */
  unlockDevice(deviceId: string): Promise<boolean>;

  // refresh-token families
  createFamily(family: FamilyRecord): Promise<void>;
  getFamily(familyId: string): Promise<FamilyRecord | null>;
  /** Spends `presentedJtiHash` and makes `nextJtiHash` current; a spent token revokes the family. */
  rotateFamily(familyId: string, presentedJtiHash: string, nextJtiHash: string, now: number, expiresAt: number): Promise<RotateResult>;
  revokeFamily(familyId: string, now: number): Promise<void>;
  touchFamily(familyId: string, now: number): Promise<void>;

  // mobile authenticators
  /** Stores a token under the current token generation (`generation` of the argument is ignored). */
  putMobileToken(token: Omit<MobileTokenRecord, 'generation'>): Promise<void>;
  /** The token, if it exists and belongs to the current token generation. */
  getMobileToken(tokenHash: string): Promise<MobileTokenRecord | null>;
  /** Stores a session under the current token generation. */
  putMobileSession(session: Omit<MobileSessionRecord, 'generation'>): Promise<void>;
  /**
   * The session if it exists, belongs to the current token generation and was used within
   * `idleMs`; refreshes its last use. Idle and void ones are deleted, and the answer says which.
   */
  touchMobileSession(sessionHash: string, now: number, idleMs: number): Promise<SessionLookup>;

  /**
   * Drops expired rows (spent families, old attempts, expired tokens, idle sessions) and devices
   * last seen more than DEVICE_RETENTION_MS ago (or never, for rows from before that was recorded)
   * that have no lock in force and no failures that still count under the stored lockout policy;
   * returns how many.
   */
  prune(now: number): Promise<number>;
  /**
   * Runs `fn` while no other `exclusive(name)` section runs on this store's data — in this process
   * or, for a shared store, in any instance: for a rule that spans several calls (a change must
   * leave an administrator who can manage users), so that two concurrent changes cannot each
   * count on the other's target remaining.
   */
  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
