/**
 * The shared store: PostgreSQL through node-postgres (`pg`), for several platform server
 * instances behind one relay (or several) that must be one platform — one set of users, one
 * lockout count, one refresh-token family per login, one settings document.
 *
 * - Every method that checks and updates runs in one SERIALIZABLE transaction, retried from the
 *   start when PostgreSQL reports a serialization failure or a deadlock (40001, 40P01): the
 *   outcome is as if the transactions of every instance had run one after another, which is what
 *   the embedded store's IMMEDIATE transactions give within one file. No read-then-write race
 *   crosses instances: five failures spread over two instances lock at exactly five.
 * - Nothing is cached: settings, the signing key, the token generation and locks are read per
 *   request, so a change made through one instance is in force on the others for their next
 *   request (README: the cost, measured).
 * - A lost database: every call fails with 503 PLATFORM_ERR_STORE_UNAVAILABLE (never a guess,
 *   never an unlock), the pool drops the broken connections, and the next call after the
 *   database is back connects again.
 * - Migrations are numbered in `schema_migrations` and applied at start under an advisory lock,
 *   one instance at a time.
 * - The lookup tags' key stays outside the database (a file, the same on every instance); the
 *   database keeps only a check value, so an instance started with another key refuses to start
 *   instead of failing every password-only login.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import pg from 'pg';
import { RelayError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { nameKey } from '../security/names.js';
import { adminWaitPolicy, type AdminWaitPolicy } from '../security/admin-waits.js';
import { cloneSettings, defaultSettings, lockoutPolicy, type LockoutPolicy, type SecuritySettings } from '../security/settings.js';
import { KeyedMutex } from './exclusive.js';
import {
  adminLoginStep,
  failureStep,
  type AdminFailureRow,
  COPIED_TABLES,
  type CopiedTable,
  type TableRows,
  invalidField,
  readOrCreateKey,
  summarise,
  toDevice,
  toDeviceUser,
  toFamily,
  toGroup,
  toUser,
  withDefaults,
  type DeviceRow,
  type DeviceUserRow,
  type FamilyRow,
  type GroupRow,
  type UserRow,
} from './rows.js';
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

/** Migrations in order; index + 1 is the version after it. Never edit one that shipped: add another. */
export const PG_MIGRATIONS: readonly string[] = [
  // 1: the schema of the embedded store at its migration 9, in PostgreSQL's types (times are
  // milliseconds since the epoch in BIGINT). Names are unique by their key from the start: there
  // are no names from before that rule here.
  `
  CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE settings (id INTEGER PRIMARY KEY CHECK (id = 1), json JSON NOT NULL, token_generation BIGINT NOT NULL);
  CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, private_jwk TEXT NOT NULL, public_jwk TEXT NOT NULL, created_at BIGINT NOT NULL);
  CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    name_key TEXT NOT NULL CONSTRAINT groups_name_key_unique UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('mobile', 'external', 'admin')),
    description TEXT,
    operations JSONB NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE TABLE users (
    username TEXT PRIMARY KEY,
    name_key TEXT NOT NULL CONSTRAINT users_name_key_unique UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('mobile', 'external', 'admin')),
    created_at BIGINT NOT NULL,
    valid_from BIGINT,
    valid_until BIGINT,
    locked BOOLEAN NOT NULL DEFAULT false,
    locked_at BIGINT,
    locked_until BIGINT,
    group_name TEXT REFERENCES groups (name),
    description TEXT,
    password_tag TEXT,
    barcode_hash TEXT,
    barcode_tag TEXT
  );
  CREATE INDEX users_group ON users (group_name);
  CREATE INDEX users_password_tag ON users (password_tag) WHERE password_tag IS NOT NULL;
  CREATE UNIQUE INDEX users_barcode_tag ON users (barcode_tag) WHERE barcode_tag IS NOT NULL;
  CREATE TABLE custom_operations (name TEXT PRIMARY KEY, description TEXT, created_at BIGINT NOT NULL);
  CREATE TABLE config (key TEXT PRIMARY KEY, json JSON NOT NULL, updated_at BIGINT NOT NULL);
  CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure_at BIGINT,
    last_username TEXT,
    last_seen_at BIGINT,
    locked_at BIGINT,
    locked_until BIGINT
  );
  CREATE INDEX devices_user ON devices (last_username, device_id);
  CREATE INDEX devices_last_seen ON devices (last_seen_at);
  CREATE TABLE device_users (
    username TEXT NOT NULL,
    device_id TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure_at BIGINT,
    locked_at BIGINT,
    locked_until BIGINT,
    last_seen_at BIGINT NOT NULL,
    known BOOLEAN NOT NULL DEFAULT false,
    wrong_tags JSONB NOT NULL DEFAULT '[]',
    PRIMARY KEY (username, device_id)
  );
  CREATE INDEX device_users_device ON device_users (device_id);
  CREATE TABLE device_locks (username TEXT NOT NULL, device_id TEXT NOT NULL, locked_at BIGINT NOT NULL);
  CREATE INDEX device_locks_user ON device_locks (username, locked_at);
  CREATE TABLE ip_attempts (id BIGSERIAL PRIMARY KEY, ip TEXT NOT NULL, at BIGINT NOT NULL);
  CREATE INDEX ip_attempts_ip ON ip_attempts (ip, at);
  CREATE TABLE admin_login_failures (key TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure_at BIGINT NOT NULL, wait_until BIGINT NOT NULL);
  CREATE TABLE refresh_families (
    family_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    device_id TEXT,
    audience TEXT NOT NULL,
    current_jti_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
  );
  CREATE INDEX refresh_families_user ON refresh_families (username);
  CREATE TABLE mobile_tokens (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    generation BIGINT NOT NULL
  );
  CREATE INDEX mobile_tokens_user ON mobile_tokens (username);
  CREATE TABLE mobile_sessions (
    session_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    token_hash TEXT,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    generation BIGINT NOT NULL
  );
  CREATE INDEX mobile_sessions_user ON mobile_sessions (username);
  CREATE TABLE ip_lists (
    list TEXT PRIMARY KEY CHECK (list IN ('whitelist', 'blacklist')),
    text TEXT NOT NULL,
    updated_at BIGINT NOT NULL
  );
  `,
];

/** The advisory lock key of migrations (any constant; "relay" "mig" in ASCII). */
const MIGRATION_LOCK = 0x72656c61796d6967n;

export interface PgStoreOptions {
  /** postgres://user:password@host:port/database[?sslmode=disable|verify-full] (`--store`). */
  url: string;
  /** Connections per instance (`--store-pool-size`); at least 2 (an `exclusive` section holds one). Default 10. */
  poolSize?: number;
  /** Longest a statement may run, and a connection attempt take (`--store-statement-timeout-ms`). Default 5000. */
  statementTimeoutMs?: number;
  /** PEM CA bundle the database's certificate must chain to (`--store-ca`); default the system's. */
  ca?: string;
  /** The lookup tags' key file (`lookup.key` in the data folder): the same file on every instance. */
  lookupKeyFile: string;
  logger: Logger;
}

const DEFAULT_POOL_SIZE = 10;
const DEFAULT_STATEMENT_TIMEOUT_MS = 5000;
/** A transaction that keeps conflicting is given up (503) after this many tries. */
const MAX_TRIES = 30;

/** The connection settings and how the URL reads in messages (no password). */
interface Target {
  config: pg.PoolConfig;
  shown: string;
  tls: boolean;
}

const isLoopback = (host: string): boolean =>
  host === 'localhost' || host.startsWith('/') || (isIP(host) === 4 && host.startsWith('127.')) || host === '::1' || host === '[::1]';

/**
 * Reads `--store`. TLS is verified (the host name against the certificate, the chain against
 * `--store-ca` or the system's CAs) unless `sslmode=disable`; a database on loopback or a Unix
 * socket is reached without TLS unless `sslmode=verify-full` asks for it. libpq's modes that
 * encrypt without verifying (`require`, `prefer`, `allow`, `verify-ca`) are refused: they protect
 * against nobody who can answer in the database's place.
 */
export function storeTarget(url: string, ca?: string): Target {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RelayError('RELAY_ERR_CONFIG', `--store: not a URL; expected postgres://user:password@host:port/database`);
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:')
    throw new RelayError('RELAY_ERR_CONFIG', `--store: expected postgres://user:password@host:port/database, or sqlite (the default)`);
  const socket = u.searchParams.get('host');
  const host = socket ?? u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw new RelayError('RELAY_ERR_CONFIG', '--store: the URL names no host');
  const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (!database) throw new RelayError('RELAY_ERR_CONFIG', '--store: the URL names no database (postgres://…/database)');
  for (const key of u.searchParams.keys())
    if (key !== 'sslmode' && key !== 'host' && key !== 'application_name')
      throw new RelayError('RELAY_ERR_CONFIG', `--store: unknown URL parameter ${key}; known: sslmode, host, application_name`);
  const mode = u.searchParams.get('sslmode') ?? (isLoopback(host) ? 'disable' : 'verify-full');
  if (mode !== 'disable' && mode !== 'verify-full')
    throw new RelayError(
      'RELAY_ERR_CONFIG',
      `--store: sslmode=${mode} does not verify the database server; use sslmode=verify-full (with --store-ca for a private CA) or sslmode=disable`,
    );
  const tls = mode === 'verify-full';
  const shown = `${u.protocol}//${u.username ? `${decodeURIComponent(u.username)}@` : ''}${u.host}${u.pathname}`;
  return {
    config: {
      host,
      ...(u.port ? { port: Number(u.port) } : {}),
      database,
      ...(u.username ? { user: decodeURIComponent(u.username) } : {}),
      ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
      application_name: u.searchParams.get('application_name') ?? 'platform-agent',
      ssl: tls ? { rejectUnauthorized: true, ...(ca ? { ca } : {}), ...(isIP(host) ? {} : { servername: host }) } : false,
    },
    shown,
    tls,
  };
}

/** Errors that say the database cannot be reached now (as opposed to a bug or a constraint). */
function isUnavailable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (typeof e.code === 'string') {
    // connection exceptions, operator intervention (shutdown, crash recovery), statement timeout, too many connections
    if (/^(08|57P0|53300)/.test(e.code) || e.code === '57014') return true;
    if (/^E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT|HOSTUNREACH|NETUNREACH|NOTFOUND|AI_AGAIN)$/.test(e.code)) return true;
  }
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout/i.test(
    e.message ?? '',
  );
}

const unavailable = (err: unknown): RelayError =>
  new RelayError('PLATFORM_ERR_STORE_UNAVAILABLE', undefined, { cause: err, retryAfterSeconds: 1 });

const isConflict = (err: unknown): boolean => {
  const code = (err as { code?: string }).code;
  return code === '40001' || code === '40P01';
};

/** A unique violation of `constraint` (23505). */
const violates = (err: unknown, ...constraints: string[]): boolean =>
  (err as { code?: string }).code === '23505' && constraints.includes((err as { constraint?: string }).constraint ?? '');

/** BIGINT and count(*) arrive as numbers: every value here is a millisecond time or a count, far below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

type Query = <R = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<R[]>;

const KEY_CHECK = 'lookup_key_check';
const keyCheck = (key: Buffer): string => createHmac('sha256', key).update('platform lookup key check').digest('hex');

export class PgStore implements PlatformStore {
  /** How the store reads in logs and messages (no password). */
  readonly shown: string;
  private readonly pool: pg.Pool;
  private readonly names = new Map<string, string>();
  private readonly sections = new KeyedMutex();
  private key: Buffer = Buffer.alloc(0);

  private constructor(
    target: Target,
    private readonly opts: PgStoreOptions,
  ) {
    this.shown = target.shown;
    const timeout = opts.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
    this.pool = new pg.Pool({
      ...target.config,
      max: opts.poolSize ?? DEFAULT_POOL_SIZE,
      connectionTimeoutMillis: timeout,
      statement_timeout: timeout,
      // The client's own limit, for a database that stops answering without closing the connection.
      query_timeout: timeout + 1000,
      idle_in_transaction_session_timeout: timeout * 2,
      keepAlive: true,
      // A lock written for a failed login must survive a crash of the database too, whatever the server's default.
      options: '-c synchronous_commit=on',
      types,
    });
    // An idle connection that breaks (the database restarted) is dropped by the pool; without a listener it would end the process.
    this.pool.on('error', (err) =>
      opts.logger.warn({ event: 'store_connection_lost', store: this.shown, err: err.message }, 'a database connection was lost'),
    );
  }

  /**
   * Connects, migrates (one instance at a time) and checks the lookup key. A database that cannot
   * be reached is a start-up error naming `--store` (the platform does not start on a guess).
   */
  static async open(opts: PgStoreOptions): Promise<PgStore> {
    const target = storeTarget(opts.url, opts.ca);
    const store = new PgStore(target, opts);
    try {
      await store.migrate();
      await store.checkLookupKey();
    } catch (err) {
      await store.pool.end().catch(() => undefined);
      if (err instanceof RelayError && err.code !== 'PLATFORM_ERR_STORE_UNAVAILABLE') throw err;
      const cause = err instanceof RelayError ? (err.cause as Error) : (err as Error);
      throw new RelayError(
        'RELAY_ERR_CONFIG',
        `--store ${target.shown}: cannot use the database (${cause.message}); check the address, the credentials${target.tls ? ', --store-ca' : ''} and that PostgreSQL runs`,
        { cause },
      );
    }
    return store;
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
      try {
        await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
        const rows = (await client.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations')).rows;
        const version = rows[0]?.v ?? 0;
        if (version > PG_MIGRATIONS.length)
          throw new RelayError(
            'PLATFORM_ERR_STORE',
            `--store ${this.shown} has schema version ${version}, newer than this program knows (${PG_MIGRATIONS.length}); run the newer version`,
          );
        for (let v = version; v < PG_MIGRATIONS.length; v++) {
          await client.query('BEGIN');
          try {
            await client.query(PG_MIGRATIONS[v]!);
            await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [v + 1, Date.now()]);
            await client.query('COMMIT');
          } catch (err) {
            await client.query('ROLLBACK').catch(() => undefined);
            throw err;
          }
          this.opts.logger.info({ event: 'store_migrated', store: this.shown, version: v + 1 }, `database migrated to version ${v + 1}`);
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
      }
    } finally {
      client.release();
    }
  }

  /** The key file's check value must match the database's (the first instance records it). */
  private async checkLookupKey(): Promise<void> {
    const key = readOrCreateKey(this.opts.lookupKeyFile);
    const mine = keyCheck(key);
    await this.q('INSERT INTO store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [KEY_CHECK, mine]);
    const stored = (await this.q<{ value: string }>('SELECT value FROM store_meta WHERE key = $1', [KEY_CHECK]))[0]!.value;
    if (stored.length !== mine.length || !timingSafeEqual(Buffer.from(stored), Buffer.from(mine)))
      throw new RelayError(
        'PLATFORM_ERR_STORE',
        `${this.opts.lookupKeyFile} is not the lookup key this database was used with: every instance on one database needs the same file; copy it from an instance already using ${this.shown}`,
      );
    this.key = key;
  }

  /** A prepared statement's name for `text` (each connection prepares it on first use). */
  private named(text: string): string {
    let name = this.names.get(text);
    if (!name) {
      name = `s${this.names.size}`;
      this.names.set(text, name);
    }
    return name;
  }

  /** One statement outside a transaction (on any pooled connection). */
  private readonly q: Query = async <R>(text: string, values: unknown[] = []): Promise<R[]> => {
    try {
      return (await this.pool.query({ name: this.named(text), text, values })).rows as R[];
    } catch (err) {
      throw isUnavailable(err) ? unavailable(err) : err;
    }
  };

  /**
   * Runs `fn` in one SERIALIZABLE transaction on one connection, from the start again on a
   * conflict with another transaction (of this instance or another). `fn` must do nothing but
   * queries through the `Query` it is given: it may run several times.
   */
  private async tx<T>(fn: (q: Query) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw isUnavailable(err) ? unavailable(err) : err;
      }
      const q: Query = async <R>(text: string, values: unknown[] = []) =>
        (await client.query({ name: this.named(text), text, values })).rows as R[];
      let broken = false;
      try {
        await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        const result = await fn(q);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => (broken = true));
        if (isConflict(err) && attempt < MAX_TRIES) {
          // A short random wait, growing with the tries: those that collided do not collide again in step.
          await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(50, 2 * attempt)));
          continue;
        }
        if (isUnavailable(err)) {
          broken = true;
          throw unavailable(err);
        }
        if (isConflict(err)) throw unavailable(err);
        throw err;
      } finally {
        // A connection whose state is unknown is closed, not given to the next caller.
        client.release(broken);
      }
    }
  }

  // ------------------------------------------------------------- settings and keys

  private async readSettings(q: Query): Promise<StoredSettings> {
    const row = (
      await q<{ json: Partial<SecuritySettings>; token_generation: number }>('SELECT json, token_generation FROM settings WHERE id = 1')
    )[0];
    if (!row) return { settings: cloneSettings(defaultSettings), tokenGeneration: 1 };
    return { settings: withDefaults(row.json), tokenGeneration: row.token_generation };
  }

  async getSettings(): Promise<StoredSettings> {
    return this.readSettings(this.q);
  }

  async getConfig(key: string): Promise<unknown> {
    const row = (await this.q<{ json: unknown }>('SELECT json FROM config WHERE key = $1', [key]))[0];
    return row ? row.json : undefined;
  }

  async putConfig(key: string, value: unknown, now: number): Promise<void> {
    await this.q(
      'INSERT INTO config (key, json, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at',
      [key, JSON.stringify(value), now],
    );
  }

  private async bumpGeneration(q: Query): Promise<void> {
    const cur = await this.readSettings(q);
    await q(
      'INSERT INTO settings (id, json, token_generation) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET token_generation = excluded.token_generation',
      [JSON.stringify(cur.settings), cur.tokenGeneration + 1],
    );
  }

  async saveSettings(
    next: SecuritySettings,
    opts: { invalidateTokens: boolean; recalculateLocks: LockoutPolicy | null; now: number },
  ): Promise<StoredSettings> {
    return this.tx(async (q) => {
      const cur = await this.readSettings(q);
      const generation = cur.tokenGeneration + (opts.invalidateTokens ? 1 : 0);
      await q(
        'INSERT INTO settings (id, json, token_generation) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET json = excluded.json, token_generation = excluded.token_generation',
        [JSON.stringify(next), generation],
      );
      const policy = opts.recalculateLocks;
      if (policy) {
        // Locks in force end at lockedAt + the new duration (the vendor: "locking time is recalculated").
        await q('UPDATE devices SET locked_until = locked_at + $1 WHERE locked_until IS NOT NULL AND locked_until > $2', [
          policy.deviceLockMs,
          opts.now,
        ]);
        await q('UPDATE device_users SET locked_until = locked_at + $1 WHERE locked_until IS NOT NULL AND locked_until > $2', [
          policy.deviceLockMs,
          opts.now,
        ]);
        await q('UPDATE users SET locked_until = locked_at + $1 WHERE locked AND locked_until IS NOT NULL AND locked_until > $2', [
          policy.userLockMs,
          opts.now,
        ]);
      }
      return { settings: next, tokenGeneration: generation };
    });
  }

  private async readSigningKey(q: Query): Promise<SigningKeyRecord | null> {
    const row = (
      await q<{ kid: string; private_jwk: string; public_jwk: string; created_at: number }>(
        'SELECT kid, private_jwk, public_jwk, created_at FROM signing_keys ORDER BY created_at DESC LIMIT 1',
      )
    )[0];
    return row ? { kid: row.kid, privateJwk: row.private_jwk, publicJwk: row.public_jwk, createdAt: row.created_at } : null;
  }

  async getSigningKey(): Promise<SigningKeyRecord | null> {
    return this.readSigningKey(this.q);
  }

  async initSigningKey(key: SigningKeyRecord): Promise<SigningKeyRecord> {
    return this.tx(async (q) => {
      await q(
        'INSERT INTO signing_keys (kid, private_jwk, public_jwk, created_at) SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)',
        [key.kid, key.privateJwk, key.publicJwk, key.createdAt],
      );
      return (await this.readSigningKey(q))!;
    });
  }

  async rotateSigningKey(key: SigningKeyRecord): Promise<void> {
    await this.tx(async (q) => {
      // Only one key is kept: a token signed by the previous key must fail, and the private key must not linger.
      await q('DELETE FROM signing_keys');
      await q('INSERT INTO signing_keys (kid, private_jwk, public_jwk, created_at) VALUES ($1, $2, $3, $4)', [
        key.kid,
        key.privateJwk,
        key.publicJwk,
        key.createdAt,
      ]);
      await this.bumpGeneration(q);
    });
  }

  // ------------------------------------------------------------- accounts

  /** A user's group must exist and be for the user's role (checked in the writing transaction); returns the group's stored name. */
  private async checkUserGroup(q: Query, group: string | null, role: Role, field: 'group' | 'role'): Promise<string | null> {
    if (group === null) return null;
    const row = await this.readGroup(q, group);
    if (!row) throw invalidField('group', `no such group: ${group}`);
    if (row.role !== role) throw invalidField(field, `group ${group} is for role ${row.role}, the user's role is ${role}`);
    return row.name;
  }

  /** The secrets' uniqueness, checked inside the write's transaction: a barcode always, a password when asked. */
  private async checkSecrets(
    q: Query,
    username: string | null,
    next: Pick<UserRecord, 'passwordTag' | 'barcodeTag'>,
    opts: UserWriteOptions,
  ): Promise<void> {
    const other = async (column: 'password_tag' | 'barcode_tag', tag: string): Promise<boolean> =>
      (await q(`SELECT 1 FROM users WHERE ${column} = $1 AND username IS DISTINCT FROM $2`, [tag, username])).length > 0;
    if (next.barcodeTag !== null && (await other('barcode_tag', next.barcodeTag))) throw new RelayError('PLATFORM_ERR_BARCODE_IN_USE');
    if (opts.uniquePassword && next.passwordTag !== null && (await other('password_tag', next.passwordTag)))
      throw new RelayError('PLATFORM_ERR_PASSWORD_IN_USE');
  }

  async createUser(u: UserRecord, opts: UserWriteOptions = {}): Promise<void> {
    try {
      await this.tx(async (q) => {
        const group = await this.checkUserGroup(q, u.group, u.role, 'group');
        // Unique without regard to case: `Alice` is taken once `alice` exists.
        if ((await q('SELECT 1 FROM users WHERE name_key = $1', [nameKey(u.username)])).length > 0)
          throw new RelayError('PLATFORM_ERR_USER_EXISTS');
        await this.checkSecrets(q, null, u, opts);
        await q(
          `INSERT INTO users (username, password_hash, role, created_at, valid_from, valid_until, locked, locked_at, locked_until, group_name,
                              description, name_key, password_tag, barcode_hash, barcode_tag)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
          [
            u.username,
            u.passwordHash,
            u.role,
            u.createdAt,
            u.validFrom,
            u.validUntil,
            u.lockedForSecurityReasons,
            u.lockedAt,
            u.lockedUntil,
            group,
            u.description,
            nameKey(u.username),
            u.passwordTag,
            u.barcodeHash,
            u.barcodeTag,
          ],
        );
      });
    } catch (err) {
      throw this.uniqueUserError(err);
    }
  }

  /** A unique violation that a concurrent write caused, as the error the check before it would have given. */
  private uniqueUserError(err: unknown): unknown {
    if (violates(err, 'users_pkey', 'users_name_key_unique')) return new RelayError('PLATFORM_ERR_USER_EXISTS');
    if (violates(err, 'users_barcode_tag')) return new RelayError('PLATFORM_ERR_BARCODE_IN_USE');
    return err;
  }

  /** The user named `name` without regard to case (names are unique by their key here). */
  private async readUser(q: Query, name: string): Promise<UserRecord | null> {
    const row = (await q<UserRow>('SELECT * FROM users WHERE name_key = $1', [nameKey(name)]))[0];
    return row ? toUser(row) : null;
  }

  async getUser(username: string): Promise<UserRecord | null> {
    return this.readUser(this.q, username);
  }

  async getLoginUser(name: string): Promise<UserRecord | null> {
    return this.readUser(this.q, name);
  }

  /** None: the schema has made names unique by their key from its first version. */
  async ambiguousNames(): Promise<{ users: string[][]; groups: string[][] }> {
    return { users: [], groups: [] };
  }

  async usersBySecretTag(kind: SecretKind, tag: string): Promise<UserRecord[]> {
    const column = kind === 'password' ? 'password_tag' : 'barcode_tag';
    return (await this.q<UserRow>(`SELECT * FROM users WHERE ${column} = $1 ORDER BY username COLLATE "C"`, [tag])).map(toUser);
  }

  async sharedPasswords(): Promise<string[][]> {
    return (
      await this.q<{ names: string[] }>(
        `SELECT array_agg(username ORDER BY username COLLATE "C") AS names FROM users WHERE password_tag IS NOT NULL
           GROUP BY password_tag HAVING count(*) > 1 ORDER BY password_tag COLLATE "C"`,
      )
    ).map((r) => r.names);
  }

  async lookupKey(): Promise<Buffer> {
    return this.key;
  }

  async listCustomOperations(): Promise<CustomOperationRecord[]> {
    return (
      await this.q<{ name: string; description: string | null; created_at: number }>(
        'SELECT * FROM custom_operations ORDER BY name COLLATE "C"',
      )
    ).map((r) => ({ name: r.name, description: r.description, createdAt: r.created_at }));
  }

  async createCustomOperation(op: CustomOperationRecord): Promise<void> {
    try {
      await this.q('INSERT INTO custom_operations (name, description, created_at) VALUES ($1, $2, $3)', [
        op.name,
        op.description,
        op.createdAt,
      ]);
    } catch (err) {
      if (violates(err, 'custom_operations_pkey')) throw new RelayError('PLATFORM_ERR_OPERATION_EXISTS');
      throw err;
    }
  }

  async updateCustomOperation(name: string, description: string | null): Promise<CustomOperationRecord | null> {
    const row = (
      await this.q<{ name: string; description: string | null; created_at: number }>(
        'UPDATE custom_operations SET description = $1 WHERE name = $2 RETURNING *',
        [description, name],
      )
    )[0];
    return row ? { name: row.name, description: row.description, createdAt: row.created_at } : null;
  }

  async deleteCustomOperation(name: string): Promise<boolean> {
    return this.tx(async (q) => {
      const holders = (await q<{ name: string }>('SELECT name FROM groups WHERE operations ? $1 ORDER BY name COLLATE "C"', [name])).map(
        (r) => r.name,
      );
      if (holders.length > 0)
        throw new RelayError('PLATFORM_ERR_OPERATION_IN_USE', `user groups still hold the operation ${name}: ${holders.join(', ')}`, {
          details: { groups: holders },
        });
      return (await q('DELETE FROM custom_operations WHERE name = $1 RETURNING 1', [name])).length > 0;
    });
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.q<UserRow>('SELECT * FROM users ORDER BY username COLLATE "C"')).map(toUser);
  }

  async updateUser(name: string, patch: UserPatch, now: number, opts: UserWriteOptions = {}): Promise<UserRecord | null> {
    try {
      return await this.tx(async (q) => {
        const cur = await this.readUser(q, name);
        if (!cur) return null;
        const username = cur.username;
        const next = { ...cur, ...patch };
        if (patch.group !== undefined || patch.role !== undefined)
          next.group = await this.checkUserGroup(q, next.group, next.role, patch.group !== undefined ? 'group' : 'role');
        await this.checkSecrets(q, username, { passwordTag: patch.passwordTag ?? null, barcodeTag: patch.barcodeTag ?? null }, opts);
        await q(
          `UPDATE users SET password_hash = $1, role = $2, valid_from = $3, valid_until = $4, group_name = $5, description = $6,
                            password_tag = $7, barcode_hash = $8, barcode_tag = $9 WHERE username = $10`,
          [
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
          ],
        );
        const secretChanged = patch.passwordHash !== undefined || patch.barcodeHash !== undefined;
        if (secretChanged || (patch.role !== undefined && patch.role !== cur.role)) await this.revokeUserSessions(q, username, now);
        return next;
      });
    } catch (err) {
      throw this.uniqueUserError(err);
    }
  }

  /** Ends every session of a user: refresh families revoked (their access tokens fail with them), mobile tokens and sessions deleted. */
  private async revokeUserSessions(q: Query, username: string, now: number): Promise<void> {
    await q('UPDATE refresh_families SET revoked_at = $1 WHERE username = $2 AND revoked_at IS NULL', [now, username]);
    await q('DELETE FROM mobile_tokens WHERE username = $1', [username]);
    await q('DELETE FROM mobile_sessions WHERE username = $1', [username]);
  }

  async setUserLock(name: string, lock: { lockedAt: number; lockedUntil: number | null } | null): Promise<UserRecord | null> {
    return this.tx(async (q) => {
      const username = (await this.readUser(q, name))?.username;
      if (username === undefined) return null;
      if (lock) {
        await q('UPDATE users SET locked = true, locked_at = $1, locked_until = $2 WHERE username = $3', [
          lock.lockedAt,
          lock.lockedUntil,
          username,
        ]);
        await this.revokeUserSessions(q, username, lock.lockedAt);
      } else {
        await q('UPDATE users SET locked = false, locked_at = NULL, locked_until = NULL WHERE username = $1', [username]);
        // A fresh start: old device locks no longer count towards the next user lock.
        await q('DELETE FROM device_locks WHERE username = $1', [username]);
      }
      return this.readUser(q, username);
    });
  }

  async deleteUser(name: string): Promise<boolean> {
    return this.tx(async (q) => {
      const username = (await this.readUser(q, name))?.username;
      if (username === undefined) return false;
      const gone = (await q('DELETE FROM users WHERE username = $1 RETURNING 1', [username])).length > 0;
      if (gone) {
        await q('DELETE FROM refresh_families WHERE username = $1', [username]);
        await q('DELETE FROM mobile_tokens WHERE username = $1', [username]);
        await q('DELETE FROM mobile_sessions WHERE username = $1', [username]);
        await q('DELETE FROM device_locks WHERE username = $1', [username]);
        // Its (user, device) locks stay until they end, but no device stays known to a later account of the same name.
        await q('UPDATE device_users SET known = false WHERE username = $1', [username]);
      }
      return gone;
    });
  }

  async countAdmins(): Promise<number> {
    return (await this.q<{ n: number }>("SELECT count(*) AS n FROM users WHERE role = 'admin'"))[0]!.n;
  }

  // ------------------------------------------------------------- user groups

  async createGroup(g: GroupRecord): Promise<void> {
    try {
      await this.tx(async (q) => {
        if ((await q('SELECT 1 FROM groups WHERE name_key = $1', [nameKey(g.name)])).length > 0)
          throw new RelayError('PLATFORM_ERR_GROUP_EXISTS');
        await q('INSERT INTO groups (name, role, description, operations, created_at, name_key) VALUES ($1, $2, $3, $4, $5, $6)', [
          g.name,
          g.role,
          g.description,
          JSON.stringify(g.operations),
          g.createdAt,
          nameKey(g.name),
        ]);
      });
    } catch (err) {
      if (violates(err, 'groups_pkey', 'groups_name_key_unique')) throw new RelayError('PLATFORM_ERR_GROUP_EXISTS');
      throw err;
    }
  }

  private async readGroup(q: Query, name: string): Promise<GroupRecord | null> {
    const row = (await q<GroupRow>('SELECT * FROM groups WHERE name_key = $1', [nameKey(name)]))[0];
    return row ? toGroup(row) : null;
  }

  async getGroup(name: string): Promise<GroupRecord | null> {
    return this.readGroup(this.q, name);
  }

  async listGroups(): Promise<GroupRecord[]> {
    return (await this.q<GroupRow>('SELECT * FROM groups ORDER BY name COLLATE "C"')).map(toGroup);
  }

  private async usersInGroup(q: Query, name: string): Promise<number> {
    return (await q<{ n: number }>('SELECT count(*) AS n FROM users WHERE group_name = $1', [name]))[0]!.n;
  }

  async updateGroup(given: string, patch: GroupPatch): Promise<GroupRecord | null> {
    return this.tx(async (q) => {
      const cur = await this.readGroup(q, given);
      if (!cur) return null;
      const name = cur.name;
      const next = { ...cur, ...patch };
      const users = next.role === cur.role ? 0 : await this.usersInGroup(q, name);
      if (users > 0)
        throw new RelayError(
          'PLATFORM_ERR_GROUP_IN_USE',
          `group ${name} has ${users} user(s) with role ${cur.role}: its role cannot change`,
          {
            details: { field: 'role' },
          },
        );
      await q('UPDATE groups SET role = $1, description = $2, operations = $3 WHERE name = $4', [
        next.role,
        next.description,
        JSON.stringify(next.operations),
        name,
      ]);
      return next;
    });
  }

  async deleteGroup(given: string): Promise<boolean> {
    return this.tx(async (q) => {
      const name = (await this.readGroup(q, given))?.name;
      if (name === undefined) return false;
      const users = await this.usersInGroup(q, name);
      if (users > 0)
        throw new RelayError('PLATFORM_ERR_GROUP_IN_USE', `group ${name} still has ${users} user(s); move or delete them first`);
      return (await q('DELETE FROM groups WHERE name = $1 RETURNING 1', [name])).length > 0;
    });
  }

  async countUsersInGroup(name: string): Promise<number> {
    return this.usersInGroup(this.q, (await this.readGroup(this.q, name))?.name ?? name);
  }

  // ------------------------------------------------------------- login limits and lockout

  async hitIpAttempt(
    ip: string,
    now: number,
    windowMs: number,
    limit: number,
  ): Promise<{ allowed: boolean; retryAfterMs: number; attemptId: number }> {
    return this.tx(async (q) => {
      await q('DELETE FROM ip_attempts WHERE ip = $1 AND at <= $2', [ip, now - windowMs]);
      const row = (
        await q<{ n: number; oldest: number | null }>('SELECT count(*) AS n, min(at) AS oldest FROM ip_attempts WHERE ip = $1', [ip])
      )[0]!;
      // Refused attempts are not recorded: at most `limit` rows per address, whatever a client sends.
      if (row.n >= limit) return { allowed: false, retryAfterMs: Math.max(1, (row.oldest ?? now) + windowMs - now), attemptId: 0 };
      const id = (await q<{ id: number }>('INSERT INTO ip_attempts (ip, at) VALUES ($1, $2) RETURNING id', [ip, now]))[0]!.id;
      return { allowed: true, retryAfterMs: 0, attemptId: id };
    });
  }

  async releaseIpAttempt(attemptId: number): Promise<void> {
    await this.q('DELETE FROM ip_attempts WHERE id = $1', [attemptId]);
  }

  async hitAdminLogin(keys: readonly string[], now: number, policy: AdminWaitPolicy): Promise<{ allowed: boolean; retryAfterMs: number }> {
    return this.tx(async (q) => {
      const found = await q<AdminFailureRow & { key: string }>(
        'SELECT key, failures, last_failure_at, wait_until FROM admin_login_failures WHERE key = ANY($1)',
        [keys],
      );
      const step = adminLoginStep(keys, (key) => found.find((r) => r.key === key), now, policy);
      if (!step.allowed) return step;
      for (const { key, failures, waitUntil } of step.counts) {
        await q(
          `INSERT INTO admin_login_failures (key, failures, last_failure_at, wait_until) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
               wait_until = excluded.wait_until`,
          [key, failures, now, waitUntil],
        );
      }
      return { allowed: true, retryAfterMs: 0 };
    });
  }

  async clearAdminLogin(keys: readonly string[]): Promise<void> {
    await this.q('DELETE FROM admin_login_failures WHERE key = ANY($1)', [keys]);
  }

  private async readDeviceRow(q: Query, deviceId: string): Promise<DeviceRecord | null> {
    const row = (await q<DeviceRow>('SELECT * FROM devices WHERE device_id = $1', [deviceId]))[0];
    return row ? toDevice(row) : null;
  }

  /** The (user, device) rows of these devices, by device. */
  private async readDeviceUsers(q: Query, deviceIds: string[]): Promise<Map<string, DeviceUserRecord[]>> {
    const byDevice = new Map<string, DeviceUserRecord[]>();
    for (const row of await q<DeviceUserRow>('SELECT * FROM device_users WHERE device_id = ANY($1)', [deviceIds])) {
      const list = byDevice.get(row.device_id) ?? [];
      list.push(toDeviceUser(row));
      byDevice.set(row.device_id, list);
    }
    return byDevice;
  }

  private async readDeviceUser(q: Query, deviceId: string, username: string): Promise<DeviceUserRow | null> {
    return (await q<DeviceUserRow>('SELECT * FROM device_users WHERE username = $1 AND device_id = $2', [username, deviceId]))[0] ?? null;
  }

  async getDevice(deviceId: string): Promise<DeviceRecord | null> {
    const device = await this.readDeviceRow(this.q, deviceId);
    return device ? summarise(device, (await this.readDeviceUsers(this.q, [deviceId])).get(deviceId) ?? []) : null;
  }

  async listDevices(filter: { username?: string } = {}): Promise<DeviceRecord[]> {
    const rows =
      filter.username === undefined
        ? await this.q<DeviceRow>('SELECT * FROM devices ORDER BY last_username COLLATE "C" NULLS FIRST, device_id COLLATE "C"')
        : await this.q<DeviceRow>('SELECT * FROM devices WHERE last_username = $1 ORDER BY device_id COLLATE "C"', [
            (await this.readUser(this.q, filter.username))?.username ?? filter.username,
          ]);
    const users = await this.readDeviceUsers(
      this.q,
      rows.map((r) => r.device_id),
    );
    return rows.map((r) => summarise(toDevice(r), users.get(r.device_id) ?? []));
  }

  async getDeviceUser(deviceId: string, username: string): Promise<DeviceUserRecord | null> {
    const row = await this.readDeviceUser(this.q, deviceId, username);
    return row ? toDeviceUser(row) : null;
  }

  /** The later of the (user, device) lock and a device-wide lock, if still in force (one round trip). */
  private async lockedUntil(q: Query, deviceId: string, username: string, now: number): Promise<number | null> {
    const row = (
      await q<{ legacy: number | null; own: number | null }>(
        `SELECT (SELECT locked_until FROM devices WHERE device_id = $1) AS legacy,
                (SELECT locked_until FROM device_users WHERE username = $2 AND device_id = $1) AS own`,
        [deviceId, username],
      )
    )[0]!;
    const until = Math.max(row.legacy ?? 0, row.own ?? 0);
    return until > now ? until : null;
  }

  async deviceLockedUntil(deviceId: string, username: string, now: number): Promise<number | null> {
    return this.lockedUntil(this.q, deviceId, username, now);
  }

  /** Records that `username` tried a login on the device at `now` (the device's own row; no counting). */
  private async seeDevice(q: Query, deviceId: string, username: string, now: number, success: boolean): Promise<void> {
    await q(
      `INSERT INTO devices (device_id, failures, last_failure_at, last_username, last_seen_at) VALUES ($1, 0, NULL, $2, $3)
         ON CONFLICT (device_id) DO UPDATE SET last_username = excluded.last_username, last_seen_at = excluded.last_seen_at`,
      [deviceId, username, now],
    );
    if (success) await q('UPDATE devices SET failures = 0, last_failure_at = NULL WHERE device_id = $1', [deviceId]);
  }

  async recordLoginFailure(
    deviceId: string,
    username: string,
    now: number,
    p: LockoutPolicy,
    userExists: boolean,
    passwordTag?: string,
  ): Promise<FailureResult> {
    return this.tx(async (q) => {
      const lockedUntil0 = await this.lockedUntil(q, deviceId, username, now);
      if (lockedUntil0 !== null) return { deviceLockedUntil: lockedUntil0, deviceLockedNow: false, userLockedUntil: null };
      await this.seeDevice(q, deviceId, username, now, false);
      const cur = await this.readDeviceUser(q, deviceId, username);
      const step = failureStep(cur, now, p, passwordTag);
      if (step.repeated) {
        await q('UPDATE device_users SET last_seen_at = $1, wrong_tags = $2 WHERE username = $3 AND device_id = $4', [
          now,
          JSON.stringify(step.tags),
          username,
          deviceId,
        ]);
        return { deviceLockedUntil: null, deviceLockedNow: false, userLockedUntil: null, repeated: true };
      }
      const { lockedUntil } = step;
      const lockNow = lockedUntil !== null;
      await q(
        `INSERT INTO device_users (username, device_id, failures, last_failure_at, locked_at, locked_until, last_seen_at, known, wrong_tags)
           VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8)
           ON CONFLICT (username, device_id) DO UPDATE SET failures = excluded.failures, last_failure_at = excluded.last_failure_at,
             locked_at = excluded.locked_at, locked_until = excluded.locked_until, last_seen_at = excluded.last_seen_at,
             wrong_tags = excluded.wrong_tags`,
        [username, deviceId, step.failures, now, lockNow ? now : null, lockedUntil, now, JSON.stringify(step.tags)],
      );
      if (!lockNow) return { deviceLockedUntil: null, deviceLockedNow: false, userLockedUntil: null };

      let userLockedUntil: number | null = null;
      // A name that is no account locks nothing beyond its own (user, device) row.
      if (userExists) {
        await q('INSERT INTO device_locks (username, device_id, locked_at) VALUES ($1, $2, $3)', [username, deviceId, now]);
        await q('DELETE FROM device_locks WHERE username = $1 AND locked_at <= $2', [username, now - p.deviceLockWindowMs]);
        const n = (await q<{ n: number }>('SELECT count(*) AS n FROM device_locks WHERE username = $1', [username]))[0]!.n;
        const user = await this.readUser(q, username);
        const alreadyLocked = user?.lockedForSecurityReasons && (user.lockedUntil === null || user.lockedUntil > now);
        if (n >= p.userDeviceLocks && user && !alreadyLocked) {
          userLockedUntil = now + p.userLockMs;
          await q('UPDATE users SET locked = true, locked_at = $1, locked_until = $2 WHERE username = $3', [
            now,
            userLockedUntil,
            username,
          ]);
          // Smart lockout exempts known devices from a lock caused elsewhere: a device whose
          // failures helped cause this one is no longer known (it must log in again once free).
          await q(
            'UPDATE device_users SET known = false WHERE username = $1 AND device_id IN (SELECT device_id FROM device_locks WHERE username = $1)',
            [username],
          );
          await q('DELETE FROM device_locks WHERE username = $1', [username]);
          await this.revokeUserSessions(q, username, now);
        }
      }
      return { deviceLockedUntil: lockedUntil, deviceLockedNow: true, userLockedUntil };
    });
  }

  async recordLoginSuccess(deviceId: string, username: string, now: number): Promise<boolean> {
    return this.tx(async (q) => {
      if ((await this.lockedUntil(q, deviceId, username, now)) !== null) return false;
      await this.seeDevice(q, deviceId, username, now, true);
      await q(
        `INSERT INTO device_users (username, device_id, failures, last_failure_at, locked_at, locked_until, last_seen_at, known, wrong_tags)
           VALUES ($1, $2, 0, NULL, NULL, NULL, $3, true, '[]')
           ON CONFLICT (username, device_id) DO UPDATE SET failures = 0, last_failure_at = NULL,
             last_seen_at = excluded.last_seen_at, known = true, wrong_tags = '[]'`,
        [username, deviceId, now],
      );
      return true;
    });
  }

  async unlockDevice(deviceId: string): Promise<boolean> {
    return this.tx(async (q) => {
      const found =
        (
          await q(
            'UPDATE devices SET failures = 0, last_failure_at = NULL, locked_at = NULL, locked_until = NULL WHERE device_id = $1 RETURNING 1',
            [deviceId],
          )
        ).length > 0;
      await q(
        "UPDATE device_users SET failures = 0, last_failure_at = NULL, locked_at = NULL, locked_until = NULL, wrong_tags = '[]' WHERE device_id = $1",
        [deviceId],
      );
      return found;
    });
  }

  // ------------------------------------------------------------- refresh-token families

  async createFamily(f: FamilyRecord): Promise<void> {
    await this.q(
      'INSERT INTO refresh_families (family_id, username, device_id, audience, current_jti_hash, created_at, last_used_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
      [f.familyId, f.username, f.deviceId, f.audience, f.currentJtiHash, f.createdAt, f.lastUsedAt, f.expiresAt, f.revokedAt],
    );
  }

  async getFamily(familyId: string): Promise<FamilyRecord | null> {
    const row = (await this.q<FamilyRow>('SELECT * FROM refresh_families WHERE family_id = $1', [familyId]))[0];
    return row ? toFamily(row) : null;
  }

  async rotateFamily(
    familyId: string,
    presentedJtiHash: string,
    nextJtiHash: string,
    now: number,
    expiresAt: number,
  ): Promise<RotateResult> {
    return this.tx(async (q) => {
      const row = (await q<FamilyRow>('SELECT * FROM refresh_families WHERE family_id = $1 FOR UPDATE', [familyId]))[0];
      if (!row) return 'missing';
      if (row.revoked_at !== null) return 'revoked';
      if (row.current_jti_hash !== presentedJtiHash) {
        // A spent refresh token came back: someone holds a copy. End the whole family (OAuth 2.0 Security BCP §4.14.2).
        await q('UPDATE refresh_families SET revoked_at = $1 WHERE family_id = $2', [now, familyId]);
        return 'reused';
      }
      await q('UPDATE refresh_families SET current_jti_hash = $1, last_used_at = $2, expires_at = $3 WHERE family_id = $4', [
        nextJtiHash,
        now,
        expiresAt,
        familyId,
      ]);
      return 'rotated';
    });
  }

  async revokeFamily(familyId: string, now: number): Promise<void> {
    await this.q('UPDATE refresh_families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL', [now, familyId]);
  }

  async touchFamily(familyId: string, now: number): Promise<void> {
    await this.q('UPDATE refresh_families SET last_used_at = greatest(last_used_at, $1) WHERE family_id = $2', [now, familyId]);
  }

  // ------------------------------------------------------------- mobile authenticators

  /** The token generation in force, inside a statement (1 before any settings were saved). */
  private static readonly GENERATION = 'coalesce((SELECT token_generation FROM settings WHERE id = 1), 1)';

  async putMobileToken(t: Omit<MobileTokenRecord, 'generation'>): Promise<void> {
    await this.q(
      `INSERT INTO mobile_tokens (token_hash, username, created_at, expires_at, generation) VALUES ($1, $2, $3, $4, ${PgStore.GENERATION})`,
      [t.tokenHash, t.username, t.createdAt, t.expiresAt],
    );
  }

  async getMobileToken(tokenHash: string): Promise<MobileTokenRecord | null> {
    // A token of an older generation is void, as a JWT of one is: a key rotation or a validity change ended it.
    const row = (
      await this.q<{ token_hash: string; username: string; created_at: number; expires_at: number; generation: number }>(
        `SELECT * FROM mobile_tokens WHERE token_hash = $1 AND generation = ${PgStore.GENERATION}`,
        [tokenHash],
      )
    )[0];
    return row
      ? {
          tokenHash: row.token_hash,
          username: row.username,
          createdAt: row.created_at,
          expiresAt: row.expires_at,
          generation: row.generation,
        }
      : null;
  }

  async putMobileSession(s: Omit<MobileSessionRecord, 'generation'>): Promise<void> {
    await this.q(
      `INSERT INTO mobile_sessions (session_hash, username, token_hash, created_at, last_seen_at, generation)
         VALUES ($1, $2, $3, $4, $5, ${PgStore.GENERATION})`,
      [s.sessionHash, s.username, s.tokenHash, s.createdAt, s.lastSeenAt],
    );
  }

  async touchMobileSession(sessionHash: string, now: number, idleMs: number): Promise<SessionLookup> {
    return this.tx(async (q) => {
      const row = (
        await q<{
          session_hash: string;
          username: string;
          token_hash: string | null;
          created_at: number;
          last_seen_at: number;
          generation: number;
          current: number;
        }>(`SELECT *, ${PgStore.GENERATION} AS current FROM mobile_sessions WHERE session_hash = $1`, [sessionHash])
      )[0];
      if (!row) return { refused: 'missing' as const };
      const refused = row.generation !== row.current ? ('void' as const) : now - row.last_seen_at > idleMs ? ('idle' as const) : null;
      if (refused) {
        await q('DELETE FROM mobile_sessions WHERE session_hash = $1', [sessionHash]);
        return { refused };
      }
      await q('UPDATE mobile_sessions SET last_seen_at = $1 WHERE session_hash = $2', [now, sessionHash]);
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
    return this.tx(async (q) => {
      const count = async (text: string, values: unknown[]): Promise<number> => (await q(`${text} RETURNING 1`, values)).length;
      let n = 0;
      n += await count('DELETE FROM refresh_families WHERE expires_at <= $1 OR (revoked_at IS NOT NULL AND revoked_at <= $2)', [
        now,
        now - 86400000,
      ]);
      n += await count('DELETE FROM mobile_tokens WHERE expires_at <= $1', [now]);
      n += await count('DELETE FROM ip_attempts WHERE at <= $1', [now - 3600000]);
      n += await count('DELETE FROM admin_login_failures WHERE last_failure_at <= $1 AND wait_until <= $2', [
        now - adminWaitPolicy.failureResetMs,
        now,
      ]);
      // The longest session idle timeout is one day (mobile_session_idle_minutes <= 1440).
      n += await count('DELETE FROM mobile_sessions WHERE last_seen_at <= $1', [now - 86400000]);
      // A failure counts until failureResetMs after the last one (up to a year): such a device stays however long ago it was seen.
      const { failureResetMs } = lockoutPolicy((await this.readSettings(q)).settings);
      const values = [now, now - DEVICE_RETENTION_MS, now - failureResetMs];
      // (user, device) rows go by the same rule, except that one which is not known (no successful
      // login) goes as soon as it holds no lock and no failure that counts.
      await q(
        `DELETE FROM device_users WHERE (NOT known OR last_seen_at < $2)
             AND (locked_until IS NULL OR locked_until <= $1)
             AND (failures = 0 OR last_failure_at IS NULL OR last_failure_at <= $3)`,
        values,
      );
      n += await count(
        `DELETE FROM devices WHERE (last_seen_at IS NULL OR last_seen_at < $2)
             AND (locked_until IS NULL OR locked_until <= $1)
             AND (failures = 0 OR last_failure_at IS NULL OR last_failure_at <= $3)
             AND NOT EXISTS (SELECT 1 FROM device_users u WHERE u.device_id = devices.device_id)`,
        values,
      );
      return n;
    });
  }

  // ---- IP lists (ip-guard) ----
  /**
   * The IP whitelist and blacklist (table `ip_lists`, migration 1), one row per list once saved
   * or imported: every instance's IpGuard loads them at start and polls `versions` (one query).
   * Each call is one statement; a lost database fails as every call does (503), and the guard
   * keeps the rules in force.
   */
  readonly ipLists: NonNullable<PlatformStore['ipLists']> = {
    describe: () => this.shown,
    get: async (list) => {
      const row = (await this.q<{ text: string; updated_at: number }>('SELECT text, updated_at FROM ip_lists WHERE list = $1', [list]))[0];
      return row ? { text: row.text, updatedAt: row.updated_at } : null;
    },
    put: async (list, text, now) => {
      const rows = await this.q<{ updated_at: number }>(
        `INSERT INTO ip_lists (list, text, updated_at) VALUES ($1, $2, $3)
           ON CONFLICT (list) DO UPDATE SET text = EXCLUDED.text, updated_at = GREATEST(EXCLUDED.updated_at, ip_lists.updated_at + 1)
           RETURNING updated_at`,
        [list, text, now],
      );
      return rows[0]!.updated_at;
    },
    versions: async () => {
      const rows = await this.q<{ list: 'whitelist' | 'blacklist'; updated_at: number }>('SELECT list, updated_at FROM ip_lists');
      const versions: Record<'whitelist' | 'blacklist', number | null> = { whitelist: null, blacklist: null };
      for (const row of rows) versions[row.list] = row.updated_at;
      return versions;
    },
  };
  // ---- end of IP lists ----

  /**
   * Writes the rows `platform-agent store copy` read from an embedded store, in one transaction,
   * into this database, which must hold no user yet (refused otherwise: nothing is merged).
   * Returns the rows written per table.
   */
  async importTables(rows: TableRows): Promise<Record<CopiedTable, number>> {
    return this.tx(async (q) => {
      if ((await q('SELECT 1 FROM users LIMIT 1')).length > 0)
        throw new RelayError('PLATFORM_ERR_STORE', `${this.shown} already holds users: copy only into a database no platform has used`);
      // The copy replaces what an instance may have made on its own before any user (a first key, settings).
      for (const table of ['settings', 'signing_keys', 'config', 'custom_operations'] as const) await q(`DELETE FROM ${table}`);
      const written = {} as Record<CopiedTable, number>;
      for (const [table, columns] of Object.entries(COPIED_TABLES) as [CopiedTable, readonly string[]][]) {
        const insert = `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')})`;
        for (const row of rows[table]) await q(insert, row);
        written[table] = rows[table].length;
      }
      return written;
    });
  }

  /**
   * Across instances: a session advisory lock on one pooled connection, held while `fn` runs on
   * the others. Sections of this process queue before it, so a process holds at most one
   * connection waiting for the lock.
   */
  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.sections.run(name, async () => {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw isUnavailable(err) ? unavailable(err) : err;
      }
      let broken = false;
      try {
        await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [`platform:${name}`]);
        try {
          return await fn();
        } finally {
          await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [`platform:${name}`]).catch(() => (broken = true));
        }
      } catch (err) {
        if (isUnavailable(err)) {
          broken = true;
          throw unavailable(err);
        }
        throw err;
      } finally {
        client.release(broken);
      }
    });
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
  }
}
