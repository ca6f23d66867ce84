/**
 * What both stores share below SQL: the row shapes (SQLite gives 0/1 and JSON text where
 * PostgreSQL gives booleans and parsed JSON), their records, the administrators' device summary,
 * settings defaults, and the lookup tags' key file.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { RelayError } from '../../../shared/errors.js';
import { adminWaitMs, type AdminWaitPolicy } from '../security/admin-waits.js';
import { cloneSettings, defaultSettings, type LockoutPolicy, type SecuritySettings } from '../security/settings.js';
import type { DeviceRecord, DeviceUserRecord, FamilyRecord, GroupRecord, Role, UserRecord } from './store.js';

/** The lookup tags' key (store.ts `lookupKey`), beside platform.db and not in it: a copy of the database alone does not give it. */
export const LOOKUP_KEY_FILE = 'lookup.key';
export const LOOKUP_KEY_BYTES = 32;

/** Reads the key file, or makes it (0600) if there is none; two processes making it at once end with the same key. */
export function readOrCreateKey(file: string): Buffer {
  try {
    const key = readFileSync(file);
    if (key.length !== LOOKUP_KEY_BYTES)
      throw new RelayError('PLATFORM_ERR_STORE', `${file}: expected ${LOOKUP_KEY_BYTES} bytes, found ${key.length}`);
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Written whole under another name, then linked into place: nobody reads a half-written key, and a race has one winner.
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(temp, randomBytes(LOOKUP_KEY_BYTES), { mode: 0o600, flag: 'wx' });
  try {
    linkSync(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    unlinkSync(temp);
  }
  return readOrCreateKey(file);
}

export interface UserRow {
  username: string;
  password_hash: string;
  role: Role;
  created_at: number;
  valid_from: number | null;
  valid_until: number | null;
  /** 0/1 in SQLite, a boolean in PostgreSQL. */
  locked: number | boolean;
  locked_at: number | null;
  locked_until: number | null;
  group_name: string | null;
  description: string | null;
  password_tag: string | null;
  barcode_hash: string | null;
  barcode_tag: string | null;
}

export interface GroupRow {
  name: string;
  role: Role;
  description: string | null;
  /** JSON text in SQLite, parsed in PostgreSQL. */
  operations: string | string[];
  created_at: number;
}

export interface DeviceRow {
  device_id: string;
  failures: number;
  last_failure_at: number | null;
  last_username: string | null;
  last_seen_at: number | null;
  locked_at: number | null;
  locked_until: number | null;
}

export interface DeviceUserRow {
  username: string;
  device_id: string;
  failures: number;
  last_failure_at: number | null;
  locked_at: number | null;
  locked_until: number | null;
  last_seen_at: number;
  known: number | boolean;
  wrong_tags: string | WrongTag[];
}

/** A recent wrong password's keyed hash on one (user, device), and when it was last tried. */
export interface WrongTag {
  tag: string;
  at: number;
}

/** How many recent wrong passwords a (user, device) remembers (smart lockout). */
const MAX_WRONG_TAGS = 8;

/** The recent wrong passwords of a (user, device) row, as either store keeps them. */
const wrongTags = (r: DeviceUserRow | null): WrongTag[] =>
  r === null ? [] : typeof r.wrong_tags === 'string' ? (JSON.parse(r.wrong_tags) as WrongTag[]) : r.wrong_tags;

export interface FamilyRow {
  family_id: string;
  username: string;
  device_id: string | null;
  audience: string;
  current_jti_hash: string;
  created_at: number;
  last_used_at: number;
  expires_at: number;
  revoked_at: number | null;
}

export const toUser = (r: UserRow): UserRecord => ({
  username: r.username,
  passwordHash: r.password_hash,
  role: r.role,
  createdAt: r.created_at,
  validFrom: r.valid_from,
  validUntil: r.valid_until,
  lockedForSecurityReasons: r.locked === 1 || r.locked === true,
  lockedAt: r.locked_at,
  lockedUntil: r.locked_until,
  group: r.group_name,
  description: r.description,
  passwordTag: r.password_tag,
  barcodeHash: r.barcode_hash,
  barcodeTag: r.barcode_tag,
});

export const toGroup = (r: GroupRow): GroupRecord => ({
  name: r.name,
  role: r.role,
  description: r.description,
  operations: typeof r.operations === 'string' ? (JSON.parse(r.operations) as string[]) : r.operations,
  createdAt: r.created_at,
});

/** A validation error on one field, as the accounts rules raise them. */
export const invalidField = (field: string, message: string): RelayError =>
  new RelayError('PLATFORM_ERR_INVALID_REQUEST', `${field}: ${message}`, { details: { field } });

export const toDevice = (r: DeviceRow): DeviceRecord => ({
  deviceId: r.device_id,
  failures: r.failures,
  lastFailureAt: r.last_failure_at,
  lastUsername: r.last_username,
  lastSeenAt: r.last_seen_at,
  lockedAt: r.locked_at,
  lockedUntil: r.locked_until,
});

export const toDeviceUser = (r: DeviceUserRow): DeviceUserRecord => ({
  username: r.username,
  deviceId: r.device_id,
  failures: r.failures,
  lastFailureAt: r.last_failure_at,
  lockedAt: r.locked_at,
  lockedUntil: r.locked_until,
  lastSeenAt: r.last_seen_at,
  known: r.known === 1 || r.known === true,
});

/** The administrators' view of a device: its own row, with the highest count and the latest lock of any user on it. */
export function summarise(device: DeviceRecord, users: DeviceUserRecord[]): DeviceRecord {
  const out = { ...device };
  for (const u of users) {
    if (u.failures > out.failures) out.failures = u.failures;
    if (u.lastFailureAt !== null && (out.lastFailureAt === null || u.lastFailureAt > out.lastFailureAt))
      out.lastFailureAt = u.lastFailureAt;
    if (u.lockedUntil !== null && (out.lockedUntil === null || u.lockedUntil > out.lockedUntil)) {
      out.lockedUntil = u.lockedUntil;
      out.lockedAt = u.lockedAt;
    }
  }
  return out;
}

export const toFamily = (r: FamilyRow): FamilyRecord => ({
  familyId: r.family_id,
  username: r.username,
  deviceId: r.device_id,
  audience: r.audience,
  currentJtiHash: r.current_jti_hash,
  createdAt: r.created_at,
  lastUsedAt: r.last_used_at,
  expiresAt: r.expires_at,
  revokedAt: r.revoked_at,
});

/** Settings saved by an older version get the fields added since from the defaults. */
export function withDefaults(saved: Partial<SecuritySettings>): SecuritySettings {
  const d = cloneSettings(defaultSettings);
  return {
    ...d,
    ...saved,
    https: { ...d.https, ...saved.https },
    lockout: { ...d.lockout, ...saved.lockout },
    mobile_authorization: { ...d.mobile_authorization, ...saved.mobile_authorization },
    mobile_token: { ...d.mobile_token, ...saved.mobile_token },
    device_login: { ...d.device_login, ...saved.device_login },
    password_policy: { ...d.password_policy, ...saved.password_policy },
  };
}

/**
 * What `platform-agent store copy` moves from an embedded store to a shared one, table by table
 * in an order the foreign keys accept, with the columns both schemas have (times, JSON text and
 * 0/1 flags read the same on both sides). Per-address attempts are not copied: they age out
 * within the hour anyway.
 */
export const COPIED_TABLES = {
  settings: ['id', 'json', 'token_generation'],
  signing_keys: ['kid', 'private_jwk', 'public_jwk', 'created_at'],
  custom_operations: ['name', 'description', 'created_at'],
  groups: ['name', 'name_key', 'role', 'description', 'operations', 'created_at'],
  users: [
    'username',
    'name_key',
    'password_hash',
    'role',
    'created_at',
    'valid_from',
    'valid_until',
    'locked',
    'locked_at',
    'locked_until',
    'group_name',
    'description',
    'password_tag',
    'barcode_hash',
    'barcode_tag',
  ],
  config: ['key', 'json', 'updated_at'],
  devices: ['device_id', 'failures', 'last_failure_at', 'last_username', 'last_seen_at', 'locked_at', 'locked_until'],
  device_users: [
    'username',
    'device_id',
    'failures',
    'last_failure_at',
    'locked_at',
    'locked_until',
    'last_seen_at',
    'known',
    'wrong_tags',
  ],
  device_locks: ['username', 'device_id', 'locked_at'],
  admin_login_failures: ['key', 'failures', 'last_failure_at', 'wait_until'],
  refresh_families: [
    'family_id',
    'username',
    'device_id',
    'audience',
    'current_jti_hash',
    'created_at',
    'last_used_at',
    'expires_at',
    'revoked_at',
  ],
  mobile_tokens: ['token_hash', 'username', 'created_at', 'expires_at', 'generation'],
  mobile_sessions: ['session_hash', 'username', 'token_hash', 'created_at', 'last_seen_at', 'generation'],
} as const satisfies Record<string, readonly string[]>;

export type CopiedTable = keyof typeof COPIED_TABLES;

/** Every copied table's rows, as `exportTables` reads them (values in the order of COPIED_TABLES' columns). */
export type TableRows = Record<CopiedTable, unknown[][]>;

/**
 * What one failed login does to a (user, device) row, the lockout rule itself (both stores write
 * what it says in their transaction): a wrong password already counted within the failure window
 * counts once (smart lockout: its tag's time moves); otherwise the count, reset `failureResetMs`
 * after the last failure, grows by one and locks the device at `deviceFailures`, which starts the
 * count and the remembered tags again.
 */
export type FailureStep =
  { repeated: true; tags: WrongTag[] } | { repeated: false; failures: number; lockedUntil: number | null; tags: WrongTag[] };

export function failureStep(
  cur: DeviceUserRow | null,
  now: number,
  p: Pick<LockoutPolicy, 'failureResetMs' | 'deviceFailures' | 'deviceLockMs'>,
  passwordTag: string | undefined,
): FailureStep {
  let tags = wrongTags(cur).filter((t) => now - t.at < p.failureResetMs);
  if (passwordTag !== undefined && cur && tags.some((t) => t.tag === passwordTag))
    return { repeated: true, tags: tags.map((t) => (t.tag === passwordTag ? { tag: t.tag, at: now } : t)) };
  if (passwordTag !== undefined) tags = [...tags, { tag: passwordTag, at: now }].slice(-MAX_WRONG_TAGS);
  const stale = cur?.last_failure_at == null || now - cur.last_failure_at >= p.failureResetMs;
  const failures = (stale ? 0 : cur.failures) + 1;
  const lockNow = failures >= p.deviceFailures;
  return lockNow
    ? { repeated: false, failures: 0, lockedUntil: now + p.deviceLockMs, tags: [] }
    : { repeated: false, failures, lockedUntil: null, tags };
}

/** An administrator's failure count and wait under one key, as stored. */
export interface AdminFailureRow {
  failures: number;
  last_failure_at: number;
  wait_until: number;
}

/**
 * An administrator's login attempt under `keys` (address, account), the waiting rule itself:
 * refused while any key still waits (a count older than the reset time no longer does), else
 * counted in advance under every key with the wait the policy gives the new count.
 */
export function adminLoginStep(
  keys: readonly string[],
  stored: (key: string) => AdminFailureRow | undefined,
  now: number,
  policy: AdminWaitPolicy,
): { allowed: false; retryAfterMs: number } | { allowed: true; counts: { key: string; failures: number; waitUntil: number }[] } {
  const rows = keys.map((key) => {
    const row = stored(key);
    return { key, row: row && now - row.last_failure_at < policy.failureResetMs ? row : undefined };
  });
  const waitUntil = Math.max(0, ...rows.map(({ row }) => row?.wait_until ?? 0));
  // A refused attempt is not counted: waiting out the wait is all it takes.
  if (waitUntil > now) return { allowed: false, retryAfterMs: waitUntil - now };
  return {
    allowed: true,
    counts: rows.map(({ key, row }) => {
      const failures = (row?.failures ?? 0) + 1;
      return { key, failures, waitUntil: now + adminWaitMs(failures, policy) };
    }),
  };
}
