/**
 * The embedded store: SQLite through better-sqlite3, one file `platform.db` in the data folder
 * (mode 0700 folder, 0600 file), WAL journal, schema migrations numbered by `user_version`.
 * Every method that checks and updates runs in one `IMMEDIATE` transaction, so a second process
 * (the `platform-agent user …` CLI while the server runs) never sees half an update, and a crash
 * never loses a lock: a lock is committed before the login answer leaves.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { RelayError } from '../../../shared/errors.js';
import { nameKey } from '../security/names.js';
import { adminWaitPolicy, type AdminWaitPolicy } from '../security/admin-waits.js';
import { cloneSettings, defaultSettings, lockoutPolicy, type LockoutPolicy, type SecuritySettings } from '../security/settings.js';
import {
  DEVICE_RETENTION_MS,
  type CustomOperationRecord,
  type DeviceRecord,
  type DeviceUserRecord,
  type FailureResult,
  type FamilyRecord,
  type GroupPatch,
  type GroupRecord,
  type MobileSessionRecord,
  type MobileTokenRecord,
  type PlatformStore,
  type Role,
  type RotateResult,
  type SecretKind,
  type SessionLookup,
  type SigningKeyRecord,
  type StoredSettings,
  type UserPatch,
  type UserRecord,
  type UserWriteOptions,
} from './store.js';
import { KeyedMutex } from './exclusive.js';
import {
  adminLoginStep,
  failureStep,
  type AdminFailureRow,
  COPIED_TABLES,
  type CopiedTable,
  type TableRows,
  LOOKUP_KEY_FILE,
  readOrCreateKey,
  summarise,
  toDevice,
  toDeviceUser,
  toFamily,
  toGroup,
  toUser,
  withDefaults,
  invalidField,
  type DeviceRow,
  type DeviceUserRow,
  type FamilyRow,
  type GroupRow,
  type UserRow,
} from './rows.js';

export const DB_FILE = 'platform.db';

/** `exclusive` sections of every SqliteStore in this process, keyed by file (':memory:' stores share one key: harmless). */
const sections = new KeyedMutex();
export { LOOKUP_KEY_FILE };

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
  // 4: a device id is a claim, not an identity: failures and locks per (user, device). The
  // device-wide lock columns of `devices` are no longer set, but a lock already in them is
  // honoured for every user until it ends (a migration never unlocks anyone). A (user, device)
  // that has a refresh family had a successful login there: it starts known (smart lockout).
  // Mobile tokens and sessions carry the token generation they were issued under, like JWTs.
  `
  CREATE TABLE device_users (
    username TEXT NOT NULL,
    device_id TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure_at INTEGER,
    locked_at INTEGER,
    locked_until INTEGER,
    last_seen_at INTEGER NOT NULL,
    known INTEGER NOT NULL DEFAULT 0,
    wrong_tags TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (username, device_id)
  );
  CREATE INDEX device_users_device ON device_users (device_id);
  INSERT INTO device_users (username, device_id, last_seen_at, known)
    SELECT username, device_id, max(last_used_at), 1 FROM refresh_families WHERE device_id IS NOT NULL GROUP BY username, device_id;
  ALTER TABLE mobile_tokens ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
  ALTER TABLE mobile_sessions ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
  UPDATE mobile_tokens SET generation = coalesce((SELECT token_generation FROM settings WHERE id = 1), 1);
  UPDATE mobile_sessions SET generation = coalesce((SELECT token_generation FROM settings WHERE id = 1), 1);
  `,
  // 5: user and group names are unique without regard to case: each row keeps its comparison key
  // (\`name_key()\`, the SQL face of security/names.ts, registered on every open). Names that already
  // collide are kept, all of them; \`ambiguousNames\` lists them for a warning at start, and no login
  // is accepted to such a name until an administrator deletes all but one (lookups by the exact
  // name still reach each of them).
  `
  ALTER TABLE users ADD COLUMN name_key TEXT;
  UPDATE users SET name_key = name_key(username);
  CREATE INDEX users_name_key ON users (name_key);
  ALTER TABLE groups ADD COLUMN name_key TEXT;
  UPDATE groups SET name_key = name_key(name);
  CREATE INDEX groups_name_key ON groups (name_key);
  `,
  // 6: administrators' failed logins, counted per key ("ip:<address>", "user:<name>"); the wait
  // each key is in ends at wait_until. Administrators are slowed down, never locked.
  `
  CREATE TABLE admin_login_failures (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL,
    wait_until INTEGER NOT NULL
  );
  `,
  // 7: names take every script, and their comparison key is NFC with full Unicode case folding
  // (security/names.ts): every key is made again. Names that collide under the wider rule are
  // kept and listed by \`ambiguousNames\`, as in 5.
  `
  UPDATE users SET name_key = name_key(username);
  UPDATE groups SET name_key = name_key(name);
  `,
  // 8: the device logins of Mobile SMARTS: a lookup tag beside each password set from now on (a
  // password alone finds its user), and a barcode per user (hash and tag, unique).
  `
  ALTER TABLE users ADD COLUMN password_tag TEXT;
  ALTER TABLE users ADD COLUMN barcode_hash TEXT;
  ALTER TABLE users ADD COLUMN barcode_tag TEXT;
  CREATE INDEX users_password_tag ON users (password_tag) WHERE password_tag IS NOT NULL;
  CREATE UNIQUE INDEX users_barcode_tag ON users (barcode_tag) WHERE barcode_tag IS NOT NULL;
  `,
  // 9: operations administrators define beside the built-in ones (security/groups.ts).
  `
  CREATE TABLE custom_operations (
    name TEXT PRIMARY KEY,
    description TEXT,
    created_at INTEGER NOT NULL
  );
  `,
];

export class SqliteStore implements PlatformStore {
  readonly file: string;
  /** The IP lists stay files in the data folder (whitelist.dat, blacklist.dat) with the embedded store. */
  readonly ipLists = null;
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();
  private lookupKeyValue: Buffer | undefined;

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
        throw new RelayError('PLATFORM_ERR_STORE', `--data ${dir}: cannot open ${DB_FILE} there (${(err as Error).message})`, {
          cause: err,
        });
      }
    }
    try {
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('journal_mode = WAL');
      // FULL: a lock written for a failed login must survive a power loss, not only a process crash.
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.db.function('name_key', { deterministic: true }, (name: unknown) => nameKey(String(name)));
      this.migrate();
    } catch (err) {
      this.db.close();
      if (err instanceof RelayError) throw err;
      throw new RelayError('PLATFORM_ERR_STORE', `${this.file}: not a usable platform database (${(err as Error).message})`, {
        cause: err,
      });
    }
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length)
      throw new RelayError(
        'PLATFORM_ERR_STORE',
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
        this.sql('UPDATE device_users SET locked_until = locked_at + ? WHERE locked_until IS NOT NULL AND locked_until > ?').run(
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
  /** Returns the group's stored name (the user row holds it, whatever case the caller wrote). */
  private checkUserGroup(group: string | null, role: Role, field: 'group' | 'role'): string | null {
    if (group === null) return null;
    const row = this.readGroup(group);
    if (!row) throw invalidField('group', `no such group: ${group}`);
    if (row.role !== role) throw invalidField(field, `group ${group} is for role ${row.role}, the user's role is ${role}`);
    return row.name;
  }

  /** The secrets' uniqueness, checked inside the write's transaction: a barcode always, a password when asked. */
  private checkSecrets(username: string | null, next: Pick<UserRecord, 'passwordTag' | 'barcodeTag'>, opts: UserWriteOptions): void {
    const other = (column: 'password_tag' | 'barcode_tag', tag: string): boolean =>
      this.sql(`SELECT 1 FROM users WHERE ${column} = ? AND username IS NOT ?`).get(tag, username) !== undefined;
    if (next.barcodeTag !== null && other('barcode_tag', next.barcodeTag)) throw new RelayError('PLATFORM_ERR_BARCODE_IN_USE');
    if (opts.uniquePassword && next.passwordTag !== null && other('password_tag', next.passwordTag))
      throw new RelayError('PLATFORM_ERR_PASSWORD_IN_USE');
  }

  async createUser(u: UserRecord, opts: UserWriteOptions = {}): Promise<void> {
    this.tx(() => {
      const group = this.checkUserGroup(u.group, u.role, 'group');
      // Unique without regard to case: `Alice` is taken once `alice` exists.
      if (this.sql('SELECT 1 FROM users WHERE name_key = ?').get(nameKey(u.username))) throw new RelayError('PLATFORM_ERR_USER_EXISTS');
      this.checkSecrets(null, u, opts);
      try {
        this.sql(
          `INSERT INTO users (username, password_hash, role, created_at, valid_from, valid_until, locked, locked_at, locked_until, group_name, description, name_key,
                              password_tag, barcode_hash, barcode_tag)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
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
          group,
          u.description,
          nameKey(u.username),
          u.passwordTag,
          u.barcodeHash,
          u.barcodeTag,
        );
      } catch (err) {
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new RelayError('PLATFORM_ERR_USER_EXISTS');
        throw err;
      }
    });
  }

  /** The users whose name has the key of `name` (several only for names that collided before migration 5). */
  private usersByKey(name: string): UserRow[] {
    return this.sql('SELECT * FROM users WHERE name_key = ?').all(nameKey(name)) as UserRow[];
  }

  /** The user named `name` without regard to case; among names that collide, only the exact one. */
  private readUser(name: string): UserRecord | null {
    const rows = this.usersByKey(name);
    const row = rows.length === 1 ? rows[0] : rows.find((r) => r.username === name);
    return row ? toUser(row) : null;
  }

  async getUser(username: string): Promise<UserRecord | null> {
    return this.readUser(username);
  }

  async getLoginUser(name: string): Promise<UserRecord | null> {
    const rows = this.usersByKey(name);
    return rows.length === 1 ? toUser(rows[0]!) : null;
  }

  async ambiguousNames(): Promise<{ users: string[][]; groups: string[][] }> {
    const collect = (table: 'users' | 'groups', column: 'username' | 'name'): string[][] =>
      (
        this.sql(
          `SELECT group_concat(${column}, char(10)) AS names FROM (SELECT ${column}, name_key FROM ${table} ORDER BY ${column}) GROUP BY name_key HAVING count(*) > 1`,
        ).all() as { names: string }[]
      ).map((r) => r.names.split('\n'));
    return { users: collect('users', 'username'), groups: collect('groups', 'name') };
  }

  async usersBySecretTag(kind: SecretKind, tag: string): Promise<UserRecord[]> {
    const column = kind === 'password' ? 'password_tag' : 'barcode_tag';
    return (this.sql(`SELECT * FROM users WHERE ${column} = ? ORDER BY username`).all(tag) as UserRow[]).map(toUser);
  }

  async sharedPasswords(): Promise<string[][]> {
    return (
      this.sql(
        `SELECT group_concat(username, char(10)) AS names FROM (SELECT username, password_tag FROM users WHERE password_tag IS NOT NULL ORDER BY username)
           GROUP BY password_tag HAVING count(*) > 1`,
      ).all() as { names: string }[]
    ).map((r) => r.names.split('\n'));
  }

  async lookupKey(): Promise<Buffer> {
    this.lookupKeyValue ??= this.file === ':memory:' ? randomBytes(32) : readOrCreateKey(join(dirname(this.file), LOOKUP_KEY_FILE));
    return this.lookupKeyValue;
  }

  async listCustomOperations(): Promise<CustomOperationRecord[]> {
    return (
      this.sql('SELECT * FROM custom_operations ORDER BY name').all() as { name: string; description: string | null; created_at: number }[]
    ).map((r) => ({ name: r.name, description: r.description, createdAt: r.created_at }));
  }

  async createCustomOperation(op: CustomOperationRecord): Promise<void> {
    try {
      this.sql('INSERT INTO custom_operations (name, description, created_at) VALUES (?, ?, ?)').run(op.name, op.description, op.createdAt);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new RelayError('PLATFORM_ERR_OPERATION_EXISTS');
      throw err;
    }
  }

  async updateCustomOperation(name: string, description: string | null): Promise<CustomOperationRecord | null> {
    if (this.sql('UPDATE custom_operations SET description = ? WHERE name = ?').run(description, name).changes === 0) return null;
    return (await this.listCustomOperations()).find((op) => op.name === name) ?? null;
  }

  async deleteCustomOperation(name: string): Promise<boolean> {
    return this.tx(() => {
      const holders = (
        this.sql(
          'SELECT DISTINCT groups.name AS name FROM groups, json_each(groups.operations) WHERE json_each.value = ? ORDER BY groups.name',
        ).all(name) as { name: string }[]
      ).map((r) => r.name);
      if (holders.length > 0)
        throw new RelayError('PLATFORM_ERR_OPERATION_IN_USE', `user groups still hold the operation ${name}: ${holders.join(', ')}`, {
          details: { groups: holders },
        });
      return this.sql('DELETE FROM custom_operations WHERE name = ?').run(name).changes > 0;
    });
  }

  async listUsers(): Promise<UserRecord[]> {
    return (this.sql('SELECT * FROM users ORDER BY username').all() as UserRow[]).map(toUser);
  }

  async updateUser(name: string, patch: UserPatch, now: number, opts: UserWriteOptions = {}): Promise<UserRecord | null> {
    return this.tx(() => {
      const cur = this.readUser(name);
      if (!cur) return null;
      const username = cur.username;
      const next = { ...cur, ...patch };
      if (patch.group !== undefined || patch.role !== undefined)
        next.group = this.checkUserGroup(next.group, next.role, patch.group !== undefined ? 'group' : 'role');
      this.checkSecrets(username, { passwordTag: patch.passwordTag ?? null, barcodeTag: patch.barcodeTag ?? null }, opts);
      this.sql(
        `UPDATE users SET password_hash = ?, role = ?, valid_from = ?, valid_until = ?, group_name = ?, description = ?,
                          password_tag = ?, barcode_hash = ?, barcode_tag = ? WHERE username = ?`,
      ).run(
        next.passwordHash,
        next.role,
        next.validFrom,
        next.validUntil,
        next.group,
        next.description,
        next.passwordTag,
        next.barcodeHash,
        next.barcodeTag,
        username,
      );
      const secretChanged = patch.passwordHash !== undefined || patch.barcodeHash !== undefined;
      if (secretChanged || (patch.role !== undefined && patch.role !== cur.role)) this.revokeUserSessions(username, now);
      return next;
    });
  }

  /** Ends every session of a user: refresh families revoked (their access tokens fail with them), mobile tokens and sessions deleted. */
  private revokeUserSessions(username: string, now: number): void {
    this.sql('UPDATE refresh_families SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL').run(now, username);
    this.sql('DELETE FROM mobile_tokens WHERE username = ?').run(username);
    this.sql('DELETE FROM mobile_sessions WHERE username = ?').run(username);
  }

  async setUserLock(name: string, lock: { lockedAt: number; lockedUntil: number | null } | null): Promise<UserRecord | null> {
    return this.tx(() => {
      const username = this.readUser(name)?.username;
      if (username === undefined) return null;
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

  async deleteUser(name: string): Promise<boolean> {
    return this.tx(() => {
      const username = this.readUser(name)?.username;
      if (username === undefined) return false;
      const gone = this.sql('DELETE FROM users WHERE username = ?').run(username).changes > 0;
      if (gone) {
        this.sql('DELETE FROM refresh_families WHERE username = ?').run(username);
        this.sql('DELETE FROM mobile_tokens WHERE username = ?').run(username);
        this.sql('DELETE FROM mobile_sessions WHERE username = ?').run(username);
        this.sql('DELETE FROM device_locks WHERE username = ?').run(username);
        // Its (user, device) locks stay until they end, but no device stays known to a later account of the same name.
        this.sql('UPDATE device_users SET known = 0 WHERE username = ?').run(username);
      }
      return gone;
    });
  }

  async countAdmins(): Promise<number> {
    return (this.sql("SELECT count(*) AS n FROM users WHERE role = 'admin'").get() as { n: number }).n;
  }

  // ------------------------------------------------------------- user groups

  async createGroup(g: GroupRecord): Promise<void> {
    this.tx(() => {
      if (this.sql('SELECT 1 FROM groups WHERE name_key = ?').get(nameKey(g.name))) throw new RelayError('PLATFORM_ERR_GROUP_EXISTS');
      try {
        this.sql('INSERT INTO groups (name, role, description, operations, created_at, name_key) VALUES (?, ?, ?, ?, ?, ?)').run(
          g.name,
          g.role,
          g.description,
          JSON.stringify(g.operations),
          g.createdAt,
          nameKey(g.name),
        );
      } catch (err) {
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new RelayError('PLATFORM_ERR_GROUP_EXISTS');
        throw err;
      }
    });
  }

  /** The group named `name` without regard to case; among names that collide, only the exact one. */
  private readGroup(name: string): GroupRecord | null {
    const rows = this.sql('SELECT * FROM groups WHERE name_key = ?').all(nameKey(name)) as GroupRow[];
    const row = rows.length === 1 ? rows[0] : rows.find((r) => r.name === name);
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

  async updateGroup(given: string, patch: GroupPatch): Promise<GroupRecord | null> {
    return this.tx(() => {
      const cur = this.readGroup(given);
      if (!cur) return null;
      const name = cur.name;
      const next = { ...cur, ...patch };
      const users = next.role === cur.role ? 0 : this.usersInGroup(name);
      if (users > 0)
        throw new RelayError(
          'PLATFORM_ERR_GROUP_IN_USE',
          `group ${name} has ${users} user(s) with role ${cur.role}: its role cannot change`,
          {
            details: { field: 'role' },
          },
        );
      this.sql('UPDATE groups SET role = ?, description = ?, operations = ? WHERE name = ?').run(
        next.role,
        next.description,
        JSON.stringify(next.operations),
        name,
      );
      return next;
    });
  }

  async deleteGroup(given: string): Promise<boolean> {
    return this.tx(() => {
      const name = this.readGroup(given)?.name;
      if (name === undefined) return false;
      const users = this.usersInGroup(name);
      if (users > 0)
        throw new RelayError('PLATFORM_ERR_GROUP_IN_USE', `group ${name} still has ${users} user(s); move or delete them first`);
      return this.sql('DELETE FROM groups WHERE name = ?').run(name).changes > 0;
    });
  }

  async countUsersInGroup(name: string): Promise<number> {
    return this.usersInGroup(this.readGroup(name)?.name ?? name);
  }

  // ------------------------------------------------------------- login limits and lockout

  async hitIpAttempt(
    ip: string,
    now: number,
    windowMs: number,
    limit: number,
  ): Promise<{ allowed: boolean; retryAfterMs: number; attemptId: number }> {
    return this.tx(() => {
      const since = now - windowMs;
      this.sql('DELETE FROM ip_attempts WHERE ip = ? AND at <= ?').run(ip, since);
      const row = this.sql('SELECT count(*) AS n, min(at) AS oldest FROM ip_attempts WHERE ip = ?').get(ip) as {
        n: number;
        oldest: number | null;
      };
      // Refused attempts are not recorded: at most `limit` rows per address, whatever a client sends.
      if (row.n >= limit) return { allowed: false, retryAfterMs: Math.max(1, (row.oldest ?? now) + windowMs - now), attemptId: 0 };
      const { lastInsertRowid } = this.sql('INSERT INTO ip_attempts (ip, at) VALUES (?, ?)').run(ip, now);
      return { allowed: true, retryAfterMs: 0, attemptId: Number(lastInsertRowid) };
    });
  }

  async releaseIpAttempt(attemptId: number): Promise<void> {
    this.sql('DELETE FROM ip_attempts WHERE rowid = ?').run(attemptId);
  }

  private readDeviceUsers(deviceId: string): DeviceUserRecord[] {
    return (this.sql('SELECT * FROM device_users WHERE device_id = ?').all(deviceId) as DeviceUserRow[]).map(toDeviceUser);
  }

  private readDeviceUser(deviceId: string, username: string): DeviceUserRow | null {
    return (
      (this.sql('SELECT * FROM device_users WHERE username = ? AND device_id = ?').get(username, deviceId) as DeviceUserRow | undefined) ??
      null
    );
  }

  async hitAdminLogin(keys: readonly string[], now: number, policy: AdminWaitPolicy): Promise<{ allowed: boolean; retryAfterMs: number }> {
    return this.tx(() => {
      const step = adminLoginStep(
        keys,
        (key) =>
          this.sql('SELECT failures, last_failure_at, wait_until FROM admin_login_failures WHERE key = ?').get(key) as
            AdminFailureRow | undefined,
        now,
        policy,
      );
      if (!step.allowed) return step;
      for (const { key, failures, waitUntil } of step.counts) {
        this.sql(
          `INSERT INTO admin_login_failures (key, failures, last_failure_at, wait_until) VALUES (?, ?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
               wait_until = excluded.wait_until`,
        ).run(key, failures, now, waitUntil);
      }
      return { allowed: true, retryAfterMs: 0 };
    });
  }

  async clearAdminLogin(keys: readonly string[]): Promise<void> {
    this.tx(() => {
      for (const key of keys) this.sql('DELETE FROM admin_login_failures WHERE key = ?').run(key);
    });
  }

  /** The device's own row: last login, and a device-wide lock from before migration 4. */
  private readDeviceRow(deviceId: string): DeviceRecord | null {
    const row = this.sql('SELECT * FROM devices WHERE device_id = ?').get(deviceId) as DeviceRow | undefined;
    return row ? toDevice(row) : null;
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | null> {
    const device = this.readDeviceRow(deviceId);
    return device ? summarise(device, this.readDeviceUsers(deviceId)) : null;
  }

  async listDevices(filter: { username?: string } = {}): Promise<DeviceRecord[]> {
    const rows =
      filter.username === undefined
        ? this.sql('SELECT * FROM devices ORDER BY last_username, device_id').all()
        : this.sql('SELECT * FROM devices WHERE last_username = ? ORDER BY device_id').all(
            this.readUser(filter.username)?.username ?? filter.username,
          );
    return (rows as DeviceRow[]).map((r) => summarise(toDevice(r), this.readDeviceUsers(r.device_id)));
  }

  async getDeviceUser(deviceId: string, username: string): Promise<DeviceUserRecord | null> {
    const row = this.readDeviceUser(deviceId, username);
    return row ? toDeviceUser(row) : null;
  }

  private lockedUntil(deviceId: string, username: string, now: number): number | null {
    const legacy = this.readDeviceRow(deviceId)?.lockedUntil ?? null;
    const own = this.readDeviceUser(deviceId, username)?.locked_until ?? null;
    const until = Math.max(legacy ?? 0, own ?? 0);
    return until > now ? until : null;
  }

  async deviceLockedUntil(deviceId: string, username: string, now: number): Promise<number | null> {
    return this.lockedUntil(deviceId, username, now);
  }

  /** Records that `username` tried a login on the device at `now` (the device's own row; no counting). */
  private seeDevice(deviceId: string, username: string, now: number, success: boolean): void {
    this.sql(
      `INSERT INTO devices (device_id, failures, last_failure_at, last_username, last_seen_at) VALUES (?, 0, NULL, ?, ?)
         ON CONFLICT (device_id) DO UPDATE SET last_username = excluded.last_username, last_seen_at = excluded.last_seen_at`,
    ).run(deviceId, username, now);
    // A success ends what is left of a pre-migration device-wide failure count (never its lock).
    if (success) this.sql('UPDATE devices SET failures = 0, last_failure_at = NULL WHERE device_id = ?').run(deviceId);
  }

  async recordLoginFailure(
    deviceId: string,
    username: string,
    now: number,
    p: LockoutPolicy,
    userExists: boolean,
    passwordTag?: string,
  ): Promise<FailureResult> {
    return this.tx(() => {
      const lockedUntil0 = this.lockedUntil(deviceId, username, now);
      if (lockedUntil0 !== null) return { deviceLockedUntil: lockedUntil0, deviceLockedNow: false, userLockedUntil: null };
      this.seeDevice(deviceId, username, now, false);
      const cur = this.readDeviceUser(deviceId, username);
      const step = failureStep(cur, now, p, passwordTag);
      if (step.repeated) {
        this.sql('UPDATE device_users SET last_seen_at = ?, wrong_tags = ? WHERE username = ? AND device_id = ?').run(
          now,
          JSON.stringify(step.tags),
          username,
          deviceId,
        );
        return { deviceLockedUntil: null, deviceLockedNow: false, userLockedUntil: null, repeated: true };
      }
      const { lockedUntil } = step;
      const lockNow = lockedUntil !== null;
      this.sql(
        `INSERT INTO device_users (username, device_id, failures, last_failure_at, locked_at, locked_until, last_seen_at, known, wrong_tags)
           VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)
           ON CONFLICT (username, device_id) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
             locked_at = excluded.locked_at, locked_until = excluded.locked_until, last_seen_at = excluded.last_seen_at,
             wrong_tags = excluded.wrong_tags`,
      ).run(username, deviceId, step.failures, now, lockNow ? now : null, lockedUntil, now, JSON.stringify(step.tags));
      if (!lockNow) return { deviceLockedUntil: null, deviceLockedNow: false, userLockedUntil: null };

      let userLockedUntil: number | null = null;
      // A name that is no account locks nothing beyond its own (user, device) row.
      if (userExists) {
        this.sql('INSERT INTO device_locks (username, device_id, locked_at) VALUES (?, ?, ?)').run(username, deviceId, now);
        this.sql('DELETE FROM device_locks WHERE username = ? AND locked_at <= ?').run(username, now - p.deviceLockWindowMs);
        const { n } = this.sql('SELECT count(*) AS n FROM device_locks WHERE username = ?').get(username) as { n: number };
        const user = this.readUser(username);
        const alreadyLocked = user?.lockedForSecurityReasons && (user.lockedUntil === null || user.lockedUntil > now);
        if (n >= p.userDeviceLocks && user && !alreadyLocked) {
          userLockedUntil = now + p.userLockMs;
          this.sql('UPDATE users SET locked = 1, locked_at = ?, locked_until = ? WHERE username = ?').run(now, userLockedUntil, username);
          // Smart lockout exempts known devices from a lock caused elsewhere: a device whose
          // failures helped cause this one is no longer known (it must log in again once free).
          this.sql(
            'UPDATE device_users SET known = 0 WHERE username = ? AND device_id IN (SELECT device_id FROM device_locks WHERE username = ?)',
          ).run(username, username);
          this.sql('DELETE FROM device_locks WHERE username = ?').run(username);
          this.revokeUserSessions(username, now);
        }
      }
      return { deviceLockedUntil: lockedUntil, deviceLockedNow: true, userLockedUntil };
    });
  }

  async recordLoginSuccess(deviceId: string, username: string, now: number): Promise<boolean> {
    return this.tx(() => {
      if (this.lockedUntil(deviceId, username, now) !== null) return false;
      this.seeDevice(deviceId, username, now, true);
      this.sql(
        `INSERT INTO device_users (username, device_id, failures, last_failure_at, locked_at, locked_until, last_seen_at, known, wrong_tags)
           VALUES (?, ?, 0, NULL, NULL, NULL, ?, 1, '[]')
           ON CONFLICT (username, device_id) DO UPDATE SET failures = 0, last_failure_at = NULL,
             last_seen_at = excluded.last_seen_at, known = 1, wrong_tags = '[]'`,
      ).run(username, deviceId, now);
      return true;
    });
  }

  async unlockDevice(deviceId: string): Promise<boolean> {
    return this.tx(() => {
      const found =
        this.sql('UPDATE devices SET failures = 0, last_failure_at = NULL, locked_at = NULL, locked_until = NULL WHERE device_id = ?').run(
          deviceId,
        ).changes > 0;
      this.sql(
        "UPDATE device_users SET failures = 0, last_failure_at = NULL, locked_at = NULL, locked_until = NULL, wrong_tags = '[]' WHERE device_id = ?",
      ).run(deviceId);
      return found;
    });
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

  private generation(): number {
    return this.readSettings().tokenGeneration;
  }

  async putMobileToken(t: Omit<MobileTokenRecord, 'generation'>): Promise<void> {
    this.tx(() => {
      this.sql('INSERT INTO mobile_tokens (token_hash, username, created_at, expires_at, generation) VALUES (?, ?, ?, ?, ?)').run(
        t.tokenHash,
        t.username,
        t.createdAt,
        t.expiresAt,
        this.generation(),
      );
    });
  }

  async getMobileToken(tokenHash: string): Promise<MobileTokenRecord | null> {
    const row = this.sql('SELECT * FROM mobile_tokens WHERE token_hash = ?').get(tokenHash) as
      { token_hash: string; username: string; created_at: number; expires_at: number; generation: number } | undefined;
    // A token of an older generation is void, as a JWT of one is: a key rotation or a validity change ended it.
    if (!row || row.generation !== this.generation()) return null;
    return {
      tokenHash: row.token_hash,
      username: row.username,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
      generation: row.generation,
    };
  }

  async putMobileSession(s: Omit<MobileSessionRecord, 'generation'>): Promise<void> {
    this.tx(() => {
      this.sql(
        'INSERT INTO mobile_sessions (session_hash, username, token_hash, created_at, last_seen_at, generation) VALUES (?, ?, ?, ?, ?, ?)',
      ).run(s.sessionHash, s.username, s.tokenHash, s.createdAt, s.lastSeenAt, this.generation());
    });
  }

  async touchMobileSession(sessionHash: string, now: number, idleMs: number): Promise<SessionLookup> {
    return this.tx(() => {
      const row = this.sql('SELECT * FROM mobile_sessions WHERE session_hash = ?').get(sessionHash) as
        | {
            session_hash: string;
            username: string;
            token_hash: string | null;
            created_at: number;
            last_seen_at: number;
            generation: number;
          }
        | undefined;
      if (!row) return { refused: 'missing' as const };
      const refused = row.generation !== this.generation() ? ('void' as const) : now - row.last_seen_at > idleMs ? ('idle' as const) : null;
      if (refused) {
        this.sql('DELETE FROM mobile_sessions WHERE session_hash = ?').run(sessionHash);
        return { refused };
      }
      this.sql('UPDATE mobile_sessions SET last_seen_at = ? WHERE session_hash = ?').run(now, sessionHash);
      return {
        session: {
          sessionHash: row.session_hash,
          username: row.username,
          tokenHash: row.token_hash,
          createdAt: row.created_at,
          lastSeenAt: now,
          generation: row.generation,
        },
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
      // (user, device) rows go by the same rule (they are not counted apart from their devices),
      // except that one which is not known (no successful login) goes as soon as it holds no lock
      // and no failure that counts: names made up by a password-guessing client do not pile up.
      this.sql(
        `DELETE FROM device_users WHERE (known = 0 OR last_seen_at < @seenBefore)
             AND (locked_until IS NULL OR locked_until <= @now)
             AND (failures = 0 OR last_failure_at IS NULL OR last_failure_at <= @failedBefore)`,
      ).run({ now, seenBefore: now - DEVICE_RETENTION_MS, failedBefore: now - failureResetMs });
      n += this.sql(
        `DELETE FROM devices WHERE (last_seen_at IS NULL OR last_seen_at < @seenBefore)
             AND (locked_until IS NULL OR locked_until <= @now)
             AND (failures = 0 OR last_failure_at IS NULL OR last_failure_at <= @failedBefore)
             AND NOT EXISTS (SELECT 1 FROM device_users u WHERE u.device_id = devices.device_id)`,
      ).run({ now, seenBefore: now - DEVICE_RETENTION_MS, failedBefore: now - failureResetMs }).changes;
      return n;
    });
  }

  /** Every row `platform-agent store copy` moves (rows.ts COPIED_TABLES), read in one transaction. */
  exportTables(): TableRows {
    return this.db
      .transaction(() => {
        const out = {} as TableRows;
        for (const [table, columns] of Object.entries(COPIED_TABLES) as [CopiedTable, readonly string[]][])
          out[table] = this.db
            .prepare(`SELECT ${columns.join(', ')} FROM ${table}`)
            .raw()
            .all() as unknown[][];
        return out;
      })
      .immediate();
  }

  /** Per database file, in this process: the CLI in another process is not held off (the shared store's lock is). */
  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return sections.run(`${this.file}\0${name}`, fn);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
