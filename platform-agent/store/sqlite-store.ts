/**
 * The embedded store: SQLite through better-sqlite3, one file `platform.db` in the data folder
 * (mode 0700 folder, 0600 file), WAL journal, schema migrations numbered by `user_version`.
 * Every method that checks and updates runs in one `IMMEDIATE` transaction, so a second process
 * (the `platform-agent user …` CLI while the server runs) never sees half an update, and a crash
 * never loses a lock: a lock is committed before the login answer leaves.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { RelayError } from '../../shared/errors.js';
import { adminWaitMs, adminWaitPolicy, type AdminWaitPolicy } from '../security/admin-waits.js';
import { cloneSettings, defaultSettings, lockoutPolicy, type LockoutPolicy, type SecuritySettings } from '../security/settings.js';
import {
  DEVICE_RETENTION_MS,
  type DeviceRecord,
  type FailureResult,
  type FamilyRecord,
  type GroupPatch,
  type GroupRecord,
  type MobileSessionRecord,
  type MobileTokenRecord,
  type PlatformStore,
  type Role,
  type RotateResult,
  type SigningKeyRecord,
  type StoredSettings,
  type UserPatch,
  type UserRecord,
} from './store.js';

export const DB_FILE = 'platform.db';

/** Migrations in order; index + 1 is the `user_version` after it. Never edit one that shipped: add another. Exported for the migration tests. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE settings (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL, token_generation INTEGER NOT NULL);
  CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, private_jwk TEXT NOT NULL, public_jwk TEXT NOT NULL, created_at INTEGER NOT NULL);
  CREATE TABLE users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('mobile', 'external', 'admin')),
    created_at INTEGER NOT NULL,
    valid_from INTEGER,
    valid_until INTEGER,
    locked INTEGER NOT NULL DEFAULT 0,
    locked_at INTEGER,
    locked_until INTEGER
  );
  CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure_at INTEGER,
    last_username TEXT,
    locked_at INTEGER,
    locked_until INTEGER
  );
  CREATE TABLE device_locks (username TEXT NOT NULL, device_id TEXT NOT NULL, locked_at INTEGER NOT NULL);
  CREATE INDEX device_locks_user ON device_locks (username, locked_at);
  CREATE TABLE ip_attempts (ip TEXT NOT NULL, at INTEGER NOT NULL);
  CREATE INDEX ip_attempts_ip ON ip_attempts (ip, at);
  CREATE TABLE refresh_families (
    family_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    device_id TEXT,
    audience TEXT NOT NULL,
    current_jti_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE INDEX refresh_families_user ON refresh_families (username);
  CREATE TABLE mobile_tokens (token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
  CREATE INDEX mobile_tokens_user ON mobile_tokens (username);
  CREATE TABLE mobile_sessions (
    session_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    token_hash TEXT,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
  );
  CREATE INDEX mobile_sessions_user ON mobile_sessions (username);
  `,
  // 2: user groups; a user without a group keeps every operation of its role.
  `
  CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('mobile', 'external', 'admin')),
    description TEXT,
    operations TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  ALTER TABLE users ADD COLUMN group_name TEXT REFERENCES groups (name);
  ALTER TABLE users ADD COLUMN description TEXT;
  CREATE INDEX users_group ON users (group_name);
  `,
  // 3: named documents of configuration (the relay connection), each one JSON value; devices
  // recorded on every login, successful or not, with its time. A row's last failure, when it has
  // one, was the last login it saw; a row without one keeps null, which prune takes as long ago.
  `
  CREATE TABLE config (key TEXT PRIMARY KEY, json TEXT NOT NULL, updated_at INTEGER NOT NULL);
  ALTER TABLE devices ADD COLUMN last_seen_at INTEGER;
  UPDATE devices SET last_seen_at = last_failure_at;
  CREATE INDEX devices_user ON devices (last_username, device_id);
  CREATE INDEX devices_last_seen ON devices (last_seen_at);
  `,
  // 4: administrators' failed logins, counted per key ("ip:<address>", "user:<name>"); the wait
  // each key is in ends at wait_until. Administrators are slowed down, never locked.
  `
  CREATE TABLE admin_login_failures (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL,
    wait_until INTEGER NOT NULL
  );
  `,
];

interface UserRow {
  username: string;
  password_hash: string;
  role: Role;
  created_at: number;
  valid_from: number | null;
  valid_until: number | null;
  locked: number;
  locked_at: number | null;
  locked_until: number | null;
  group_name: string | null;
  description: string | null;
}

interface GroupRow {
  name: string;
  role: Role;
  description: string | null;
  operations: string;
  created_at: number;
}

interface DeviceRow {
  device_id: string;
  failures: number;
  last_failure_at: number | null;
  last_username: string | null;
  last_seen_at: number | null;
  locked_at: number | null;
  locked_until: number | null;
}

interface FamilyRow {
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

const toUser = (r: UserRow): UserRecord => ({
  username: r.username,
  passwordHash: r.password_hash,
  role: r.role,
  createdAt: r.created_at,
  validFrom: r.valid_from,
  validUntil: r.valid_until,
  lockedForSecurityReasons: r.locked === 1,
  lockedAt: r.locked_at,
  lockedUntil: r.locked_until,
  group: r.group_name,
  description: r.description,
});

const toGroup = (r: GroupRow): GroupRecord => ({
  name: r.name,
  role: r.role,
  description: r.description,
  operations: JSON.parse(r.operations) as string[],
  createdAt: r.created_at,
});

/** A validation error on one field, as the accounts rules raise them. */
const invalidField = (field: string, message: string): RelayError =>
  new RelayError('RELAY_ERR_INVALID_REQUEST', `${field}: ${message}`, { details: { field } });

const toDevice = (r: DeviceRow): DeviceRecord => ({
  deviceId: r.device_id,
  failures: r.failures,
  lastFailureAt: r.last_failure_at,
  lastUsername: r.last_username,
  lastSeenAt: r.last_seen_at,
  lockedAt: r.locked_at,
  lockedUntil: r.locked_until,
});

const toFamily = (r: FamilyRow): FamilyRecord => ({
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
function withDefaults(saved: Partial<SecuritySettings>): SecuritySettings {
  const d = cloneSettings(defaultSettings);
  return {
    ...d,
    ...saved,
    https: { ...d.https, ...saved.https },
    lockout: { ...d.lockout, ...saved.lockout },
    mobile_authorization: { ...d.mobile_authorization, ...saved.mobile_authorization },
    mobile_token: { ...d.mobile_token, ...saved.mobile_token },
  };
}

export class SqliteStore implements PlatformStore {
  readonly file: string;
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  /** Opens (creating when needed) `<dir>/platform.db` and migrates it. `dir` ':memory:' keeps everything in memory (tests). */
  constructor(dir: string) {
    if (dir === ':memory:') {
      this.file = ':memory:';
      this.db = new Database(':memory:');
    } else {
      this.file = join(dir, DB_FILE);
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        this.db = new Database(this.file);
        chmodSync(this.file, 0o600);
      } catch (err) {
        throw new RelayError('RELAY_ERR_STORE', `--data ${dir}: cannot open ${DB_FILE} there (${(err as Error).message})`, { cause: err });
      }
    }
    try {
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('journal_mode = WAL');
      // FULL: a lock written for a failed login must survive a power loss, not only a process crash.
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.migrate();
    } catch (err) {
      this.db.close();
      if (err instanceof RelayError) throw err;
      throw new RelayError('RELAY_ERR_STORE', `${this.file}: not a usable platform database (${(err as Error).message})`, { cause: err });
    }
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length)
      throw new RelayError(
        'RELAY_ERR_STORE',
        `${this.file} has schema version ${version}, newer than this program knows (${MIGRATIONS.length}); run the newer version`,
      );
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db
        .transaction(() => {
          this.db.exec(MIGRATIONS[v]!);
          this.db.pragma(`user_version = ${v + 1}`);
        })
        .immediate();
    }
  }

  /**
   * The prepared statement for `text`, prepared once: compiling SQL costs more than running these
   * point queries, and several run on every authenticated request. Every SQL text here is a
   * literal, so the cache holds a fixed, small set.
   */
  private sql(text: string): Database.Statement {
    let statement = this.statements.get(text);
    if (!statement) {
      statement = this.db.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }

  /** Runs `fn` in one IMMEDIATE transaction (takes the write lock up front: no upgrade deadlocks between processes). */
  private tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  // ------------------------------------------------------------- settings and keys

  private readSettings(): StoredSettings {
    const row = this.sql('SELECT json, token_generation FROM settings WHERE id = 1').get() as
      { json: string; token_generation: number } | undefined;
    if (!row) return { settings: cloneSettings(defaultSettings), tokenGeneration: 1 };
    return { settings: withDefaults(JSON.parse(row.json) as Partial<SecuritySettings>), tokenGeneration: row.token_generation };
  }

  async getSettings(): Promise<StoredSettings> {
    return this.readSettings();
  }

  async getConfig(key: string): Promise<unknown> {
    const row = this.sql('SELECT json FROM config WHERE key = ?').get(key) as { json: string } | undefined;
    return row ? (JSON.parse(row.json) as unknown) : undefined;
  }

  async putConfig(key: string, value: unknown, now: number): Promise<void> {
    this.sql(
      'INSERT INTO config (key, json, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at',
    ).run(key, JSON.stringify(value), now);
  }

  private bumpGeneration(): void {
    const cur = this.readSettings();
    this.sql(
      'INSERT INTO settings (id, json, token_generation) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET token_generation = excluded.token_generation',
    ).run(JSON.stringify(cur.settings), cur.tokenGeneration + 1);
  }

  async saveSettings(
    next: SecuritySettings,
    opts: { invalidateTokens: boolean; recalculateLocks: LockoutPolicy | null; now: number },
  ): Promise<StoredSettings> {
    return this.tx(() => {
      const cur = this.readSettings();
      const generation = cur.tokenGeneration + (opts.invalidateTokens ? 1 : 0);
      this.sql(
        'INSERT INTO settings (id, json, token_generation) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET json = excluded.json, token_generation = excluded.token_generation',
      ).run(JSON.stringify(next), generation);
      const policy = opts.recalculateLocks;
      if (policy) {
        // Locks in force end at lockedAt + the new duration (the vendor: "locking time is recalculated").
        this.sql('UPDATE devices SET locked_until = locked_at + ? WHERE locked_until IS NOT NULL AND locked_until > ?').run(
          policy.deviceLockMs,
          opts.now,
        );
        this.sql('UPDATE users SET locked_until = locked_at + ? WHERE locked = 1 AND locked_until IS NOT NULL AND locked_until > ?').run(
          policy.userLockMs,
          opts.now,
        );
      }
      return { settings: next, tokenGeneration: generation };
    });
  }

  async getSigningKey(): Promise<SigningKeyRecord | null> {
    const row = this.sql('SELECT kid, private_jwk, public_jwk, created_at FROM signing_keys ORDER BY created_at DESC LIMIT 1').get() as
      { kid: string; private_jwk: string; public_jwk: string; created_at: number } | undefined;
    return row ? { kid: row.kid, privateJwk: row.private_jwk, publicJwk: row.public_jwk, createdAt: row.created_at } : null;
  }

  async initSigningKey(key: SigningKeyRecord): Promise<SigningKeyRecord> {
    return this.tx(() => {
      this.sql(
        'INSERT INTO signing_keys (kid, private_jwk, public_jwk, created_at) SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM signing_keys)',
      ).run(key.kid, key.privateJwk, key.publicJwk, key.createdAt);
      const row = this.sql('SELECT kid, private_jwk, public_jwk, created_at FROM signing_keys ORDER BY created_at DESC LIMIT 1').get() as {
        kid: string;
        private_jwk: string;
        public_jwk: string;
        created_at: number;
      };
      return { kid: row.kid, privateJwk: row.private_jwk, publicJwk: row.public_jwk, createdAt: row.created_at };
    });
  }

  async rotateSigningKey(key: SigningKeyRecord): Promise<void> {
    this.tx(() => {
      // Only one key is kept: a token signed by the previous key must fail, and the private key must not linger on disk.
      this.sql('DELETE FROM signing_keys').run();
      this.sql('INSERT INTO signing_keys (kid, private_jwk, public_jwk, created_at) VALUES (?, ?, ?, ?)').run(
        key.kid,
        key.privateJwk,
        key.publicJwk,
        key.createdAt,
      );
      this.bumpGeneration();
    });
  }

  // ------------------------------------------------------------- accounts

  /** A user's group must exist and be for the user's role; checked inside the transaction that writes the user. */
  private checkUserGroup(group: string | null, role: Role, field: 'group' | 'role'): void {
    if (group === null) return;
    const row = this.sql('SELECT role FROM groups WHERE name = ?').get(group) as { role: Role } | undefined;
    if (!row) throw invalidField('group', `no such group: ${group}`);
    if (row.role !== role) throw invalidField(field, `group ${group} is for role ${row.role}, the user's role is ${role}`);
  }

  async createUser(u: UserRecord): Promise<void> {
    this.tx(() => {
      this.checkUserGroup(u.group, u.role, 'group');
      try {
        this.sql(
          `INSERT INTO users (username, password_hash, role, created_at, valid_from, valid_until, locked, locked_at, locked_until, group_name, description)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          u.username,
          u.passwordHash,
          u.role,
          u.createdAt,
          u.validFrom,
          u.validUntil,
          u.lockedForSecurityReasons ? 1 : 0,
          u.lockedAt,
          u.lockedUntil,
          u.group,
          u.description,
        );
      } catch (err) {
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new RelayError('RELAY_ERR_USER_EXISTS');
        throw err;
      }
    });
  }

  private readUser(username: string): UserRecord | null {
    const row = this.sql('SELECT * FROM users WHERE username = ?').get(username) as UserRow | undefined;
    return row ? toUser(row) : null;
  }

  async getUser(username: string): Promise<UserRecord | null> {
    return this.readUser(username);
  }

  async listUsers(): Promise<UserRecord[]> {
    return (this.sql('SELECT * FROM users ORDER BY username').all() as UserRow[]).map(toUser);
  }

  async updateUser(username: string, patch: UserPatch, now: number): Promise<UserRecord | null> {
    return this.tx(() => {
      const cur = this.readUser(username);
      if (!cur) return null;
      const next = { ...cur, ...patch };
      if (patch.group !== undefined || patch.role !== undefined)
        this.checkUserGroup(next.group, next.role, patch.group !== undefined ? 'group' : 'role');
      this.sql(
        'UPDATE users SET password_hash = ?, role = ?, valid_from = ?, valid_until = ?, group_name = ?, description = ? WHERE username = ?',
      ).run(next.passwordHash, next.role, next.validFrom, next.validUntil, next.group, next.description, username);
      if (patch.passwordHash !== undefined || (patch.role !== undefined && patch.role !== cur.role)) this.revokeUserSessions(username, now);
      return next;
    });
  }

  /** Ends every session of a user: refresh families revoked (their access tokens fail with them), mobile tokens and sessions deleted. */
  private revokeUserSessions(username: string, now: number): void {
    this.sql('UPDATE refresh_families SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL').run(now, username);
    this.sql('DELETE FROM mobile_tokens WHERE username = ?').run(username);
    this.sql('DELETE FROM mobile_sessions WHERE username = ?').run(username);
  }

  async setUserLock(username: string, lock: { lockedAt: number; lockedUntil: number | null } | null): Promise<UserRecord | null> {
    return this.tx(() => {
      if (!this.readUser(username)) return null;
      if (lock) {
        this.sql('UPDATE users SET locked = 1, locked_at = ?, locked_until = ? WHERE username = ?').run(
          lock.lockedAt,
          lock.lockedUntil,
          username,
        );
        this.revokeUserSessions(username, lock.lockedAt);
      } else {
        this.sql('UPDATE users SET locked = 0, locked_at = NULL, locked_until = NULL WHERE username = ?').run(username);
        // A fresh start: old device locks no longer count towards the next user lock.
        this.sql('DELETE FROM device_locks WHERE username = ?').run(username);
      }
      return this.readUser(username);
    });
  }

  async deleteUser(username: string): Promise<boolean> {
    return this.tx(() => {
      const gone = this.sql('DELETE FROM users WHERE username = ?').run(username).changes > 0;
      if (gone) {
        this.sql('DELETE FROM refresh_families WHERE username = ?').run(username);
        this.sql('DELETE FROM mobile_tokens WHERE username = ?').run(username);
        this.sql('DELETE FROM mobile_sessions WHERE username = ?').run(username);
        this.sql('DELETE FROM device_locks WHERE username = ?').run(username);
      }
      return gone;
    });
  }

  async countAdmins(): Promise<number> {
    return (this.sql("SELECT count(*) AS n FROM users WHERE role = 'admin'").get() as { n: number }).n;
  }

  // ------------------------------------------------------------- user groups

  async createGroup(g: GroupRecord): Promise<void> {
    try {
      this.sql('INSERT INTO groups (name, role, description, operations, created_at) VALUES (?, ?, ?, ?, ?)').run(
        g.name,
        g.role,
        g.description,
        JSON.stringify(g.operations),
        g.createdAt,
      );
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new RelayError('RELAY_ERR_GROUP_EXISTS');
      throw err;
    }
  }

  private readGroup(name: string): GroupRecord | null {
    const row = this.sql('SELECT * FROM groups WHERE name = ?').get(name) as GroupRow | undefined;
    return row ? toGroup(row) : null;
  }

  async getGroup(name: string): Promise<GroupRecord | null> {
    return this.readGroup(name);
  }

  async listGroups(): Promise<GroupRecord[]> {
    return (this.sql('SELECT * FROM groups ORDER BY name').all() as GroupRow[]).map(toGroup);
  }

  private usersInGroup(name: string): number {
    return (this.sql('SELECT count(*) AS n FROM users WHERE group_name = ?').get(name) as { n: number }).n;
  }

  async updateGroup(name: string, patch: GroupPatch): Promise<GroupRecord | null> {
    return this.tx(() => {
      const cur = this.readGroup(name);
      if (!cur) return null;
      const next = { ...cur, ...patch };
      const users = next.role === cur.role ? 0 : this.usersInGroup(name);
      if (users > 0)
        throw new RelayError('RELAY_ERR_GROUP_IN_USE', `group ${name} has ${users} user(s) with role ${cur.role}: its role cannot change`, {
          details: { field: 'role' },
        });
      this.sql('UPDATE groups SET role = ?, description = ?, operations = ? WHERE name = ?').run(
        next.role,
        next.description,
        JSON.stringify(next.operations),
        name,
      );
      return next;
    });
  }

  async deleteGroup(name: string): Promise<boolean> {
    return this.tx(() => {
      const users = this.usersInGroup(name);
      if (users > 0) throw new RelayError('RELAY_ERR_GROUP_IN_USE', `group ${name} still has ${users} user(s); move or delete them first`);
      return this.sql('DELETE FROM groups WHERE name = ?').run(name).changes > 0;
    });
  }

  async countUsersInGroup(name: string): Promise<number> {
    return this.usersInGroup(name);
  }

  // ------------------------------------------------------------- login limits and lockout

  async hitIpAttempt(ip: string, now: number, windowMs: number, limit: number): Promise<{ allowed: boolean; retryAfterMs: number }> {
    return this.tx(() => {
      const since = now - windowMs;
      this.sql('DELETE FROM ip_attempts WHERE ip = ? AND at <= ?').run(ip, since);
      const row = this.sql('SELECT count(*) AS n, min(at) AS oldest FROM ip_attempts WHERE ip = ?').get(ip) as {
        n: number;
        oldest: number | null;
      };
      // Refused attempts are not recorded: at most `limit` rows per address, whatever a client sends.
      if (row.n >= limit) return { allowed: false, retryAfterMs: Math.max(1, (row.oldest ?? now) + windowMs - now) };
      this.sql('INSERT INTO ip_attempts (ip, at) VALUES (?, ?)').run(ip, now);
      return { allowed: true, retryAfterMs: 0 };
    });
  }

  async hitAdminLogin(keys: readonly string[], now: number, policy: AdminWaitPolicy): Promise<{ allowed: boolean; retryAfterMs: number }> {
    return this.tx(() => {
      const rows = keys.map((key) => {
        const row = this.sql('SELECT failures, last_failure_at, wait_until FROM admin_login_failures WHERE key = ?').get(key) as
          { failures: number; last_failure_at: number; wait_until: number } | undefined;
        return { key, row: row && now - row.last_failure_at < policy.failureResetMs ? row : undefined };
      });
      const waitUntil = Math.max(0, ...rows.map(({ row }) => row?.wait_until ?? 0));
      // A refused attempt is not counted: waiting out the wait is all it takes.
      if (waitUntil > now) return { allowed: false, retryAfterMs: waitUntil - now };
      for (const { key, row } of rows) {
        const failures = (row?.failures ?? 0) + 1;
        this.sql(
          `INSERT INTO admin_login_failures (key, failures, last_failure_at, wait_until) VALUES (?, ?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
               wait_until = excluded.wait_until`,
        ).run(key, failures, now, now + adminWaitMs(failures, policy));
      }
      return { allowed: true, retryAfterMs: 0 };
    });
  }

  async clearAdminLogin(keys: readonly string[]): Promise<void> {
    this.tx(() => {
      for (const key of keys) this.sql('DELETE FROM admin_login_failures WHERE key = ?').run(key);
    });
  }

  private readDevice(deviceId: string): DeviceRecord | null {
    const row = this.sql('SELECT * FROM devices WHERE device_id = ?').get(deviceId) as DeviceRow | undefined;
    return row ? toDevice(row) : null;
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | null> {
    return this.readDevice(deviceId);
  }

  async listDevices(filter: { username?: string } = {}): Promise<DeviceRecord[]> {
    const rows =
      filter.username === undefined
        ? this.sql('SELECT * FROM devices ORDER BY last_username, device_id').all()
        : this.sql('SELECT * FROM devices WHERE last_username = ? ORDER BY device_id').all(filter.username);
    return (rows as DeviceRow[]).map(toDevice);
  }

  async recordLoginFailure(deviceId: string, username: string, now: number, p: LockoutPolicy, userExists: boolean): Promise<FailureResult> {
    return this.tx(() => {
      const cur = this.readDevice(deviceId);
      if (cur?.lockedUntil != null && cur.lockedUntil > now)
        return { deviceLockedUntil: cur.lockedUntil, deviceLockedNow: false, userLockedUntil: null };
      // The counter resets T after the last failure.
      const stale = cur?.lastFailureAt == null || now - cur.lastFailureAt >= p.failureResetMs;
      const failures = (stale ? 0 : cur.failures) + 1;
      const lockNow = failures >= p.deviceFailures;
      const lockedUntil = lockNow ? now + p.deviceLockMs : null;
      this.sql(
        `INSERT INTO devices (device_id, failures, last_failure_at, last_username, last_seen_at, locked_at, locked_until) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (device_id) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
             last_username = excluded.last_username, last_seen_at = excluded.last_seen_at, locked_at = excluded.locked_at,
             locked_until = excluded.locked_until`,
      ).run(deviceId, lockNow ? 0 : failures, now, username, now, lockNow ? now : null, lockedUntil);
      if (!lockNow) return { deviceLockedUntil: null, deviceLockedNow: false, userLockedUntil: null };

      let userLockedUntil: number | null = null;
      if (userExists) {
        this.sql('INSERT INTO device_locks (username, device_id, locked_at) VALUES (?, ?, ?)').run(username, deviceId, now);
        this.sql('DELETE FROM device_locks WHERE username = ? AND locked_at <= ?').run(username, now - p.deviceLockWindowMs);
        const { n } = this.sql('SELECT count(*) AS n FROM device_locks WHERE username = ?').get(username) as { n: number };
        const user = this.readUser(username);
        const alreadyLocked = user?.lockedForSecurityReasons && (user.lockedUntil === null || user.lockedUntil > now);
        if (n >= p.userDeviceLocks && user && !alreadyLocked) {
          userLockedUntil = now + p.userLockMs;
          this.sql('UPDATE users SET locked = 1, locked_at = ?, locked_until = ? WHERE username = ?').run(now, userLockedUntil, username);
          this.sql('DELETE FROM device_locks WHERE username = ?').run(username);
          this.revokeUserSessions(username, now);
        }
      }
      return { deviceLockedUntil: lockedUntil, deviceLockedNow: true, userLockedUntil };
    });
  }

  async recordLoginSuccess(deviceId: string, username: string, now: number): Promise<boolean> {
    return this.tx(() => {
      const cur = this.readDevice(deviceId);
      if (cur?.lockedUntil != null && cur.lockedUntil > now) return false;
      this.sql(
        `INSERT INTO devices (device_id, failures, last_failure_at, last_username, last_seen_at) VALUES (?, 0, NULL, ?, ?)
           ON CONFLICT (device_id) DO UPDATE SET failures = 0, last_failure_at = NULL,
             last_username = excluded.last_username, last_seen_at = excluded.last_seen_at`,
      ).run(deviceId, username, now);
      return true;
    });
  }

  async unlockDevice(deviceId: string): Promise<boolean> {
    return (
      this.sql('UPDATE devices SET failures = 0, last_failure_at = NULL, locked_at = NULL, locked_until = NULL WHERE device_id = ?').run(
        deviceId,
      ).changes > 0
    );
  }

  // ------------------------------------------------------------- refresh-token families

  async createFamily(f: FamilyRecord): Promise<void> {
    this.sql(
      'INSERT INTO refresh_families (family_id, username, device_id, audience, current_jti_hash, created_at, last_used_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ).run(f.familyId, f.username, f.deviceId, f.audience, f.currentJtiHash, f.createdAt, f.lastUsedAt, f.expiresAt, f.revokedAt);
  }

  async getFamily(familyId: string): Promise<FamilyRecord | null> {
    const row = this.sql('SELECT * FROM refresh_families WHERE family_id = ?').get(familyId) as FamilyRow | undefined;
    return row ? toFamily(row) : null;
  }

  async rotateFamily(
    familyId: string,
    presentedJtiHash: string,
    nextJtiHash: string,
    now: number,
    expiresAt: number,
  ): Promise<RotateResult> {
    return this.tx(() => {
      const row = this.sql('SELECT * FROM refresh_families WHERE family_id = ?').get(familyId) as FamilyRow | undefined;
      if (!row) return 'missing';
      if (row.revoked_at !== null) return 'revoked';
      if (row.current_jti_hash !== presentedJtiHash) {
        // A spent refresh token came back: someone holds a copy. End the whole family (OAuth 2.0 Security BCP §4.14.2).
        this.sql('UPDATE refresh_families SET revoked_at = ? WHERE family_id = ?').run(now, familyId);
        return 'reused';
      }
      this.sql('UPDATE refresh_families SET current_jti_hash = ?, last_used_at = ?, expires_at = ? WHERE family_id = ?').run(
        nextJtiHash,
        now,
        expiresAt,
        familyId,
      );
      return 'rotated';
    });
  }

  async revokeFamily(familyId: string, now: number): Promise<void> {
    this.sql('UPDATE refresh_families SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL').run(now, familyId);
  }

  async touchFamily(familyId: string, now: number): Promise<void> {
    this.sql('UPDATE refresh_families SET last_used_at = max(last_used_at, ?) WHERE family_id = ?').run(now, familyId);
  }

  // ------------------------------------------------------------- mobile authenticators

  async putMobileToken(t: MobileTokenRecord): Promise<void> {
    this.sql('INSERT INTO mobile_tokens (token_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)').run(
      t.tokenHash,
      t.username,
      t.createdAt,
      t.expiresAt,
    );
  }

  async getMobileToken(tokenHash: string): Promise<MobileTokenRecord | null> {
    const row = this.sql('SELECT * FROM mobile_tokens WHERE token_hash = ?').get(tokenHash) as
      { token_hash: string; username: string; created_at: number; expires_at: number } | undefined;
    return row ? { tokenHash: row.token_hash, username: row.username, createdAt: row.created_at, expiresAt: row.expires_at } : null;
  }

  async putMobileSession(s: MobileSessionRecord): Promise<void> {
    this.sql('INSERT INTO mobile_sessions (session_hash, username, token_hash, created_at, last_seen_at) VALUES (?, ?, ?, ?, ?)').run(
      s.sessionHash,
      s.username,
      s.tokenHash,
      s.createdAt,
      s.lastSeenAt,
    );
  }

  async touchMobileSession(sessionHash: string, now: number, idleMs: number): Promise<MobileSessionRecord | null> {
    return this.tx(() => {
      const row = this.sql('SELECT * FROM mobile_sessions WHERE session_hash = ?').get(sessionHash) as
        { session_hash: string; username: string; token_hash: string | null; created_at: number; last_seen_at: number } | undefined;
      if (!row) return null;
      if (now - row.last_seen_at > idleMs) {
        this.sql('DELETE FROM mobile_sessions WHERE session_hash = ?').run(sessionHash);
        return null;
      }
      this.sql('UPDATE mobile_sessions SET last_seen_at = ? WHERE session_hash = ?').run(now, sessionHash);
      return {
        sessionHash: row.session_hash,
        username: row.username,
        tokenHash: row.token_hash,
        createdAt: row.created_at,
        lastSeenAt: now,
      };
    });
  }

  async prune(now: number): Promise<number> {
    return this.tx(() => {
      let n = 0;
      n += this.sql('DELETE FROM refresh_families WHERE expires_at <= ? OR (revoked_at IS NOT NULL AND revoked_at <= ? - 86400000)').run(
        now,
        now,
      ).changes;
      n += this.sql('DELETE FROM mobile_tokens WHERE expires_at <= ?').run(now).changes;
      n += this.sql('DELETE FROM ip_attempts WHERE at <= ? - 3600000').run(now).changes;
      n += this.sql('DELETE FROM admin_login_failures WHERE last_failure_at <= ? AND wait_until <= ?').run(
        now - adminWaitPolicy.failureResetMs,
        now,
      ).changes;
      // The longest session idle timeout is one day (mobile_session_idle_minutes <= 1440).
      n += this.sql('DELETE FROM mobile_sessions WHERE last_seen_at <= ? - 86400000').run(now).changes;
      // A failure counts until failureResetMs after the last one (up to a year): such a device stays however long ago it was seen.
      const { failureResetMs } = lockoutPolicy(this.readSettings().settings);
      n += this.sql(
        `DELETE FROM devices WHERE (last_seen_at IS NULL OR last_seen_at < @seenBefore)
             AND (locked_until IS NULL OR locked_until <= @now)
             AND (failures = 0 OR last_failure_at IS NULL OR last_failure_at <= @failedBefore)`,
      ).run({ now, seenBefore: now - DEVICE_RETENTION_MS, failedBefore: now - failureResetMs }).changes;
      return n;
    });
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
