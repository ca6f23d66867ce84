/**
 * What is particular to the SQLite store: its file and folder, their modes, the schema migrations
 * from older `user_version`s (old schemas built by raw SQL), the lookup key file. Its behaviour
 * through the `PlatformStore` interface is the shared contract (store-contract.ts), run here on a
 * fresh folder per test, a second instance being a second `SqliteStore` on the same folder.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DAY_MS, MINUTE_MS } from '../../../../shared/clock.js';
import { RelayError } from '../../../../shared/errors.js';
import { cloneSettings, defaultSettings, type SecuritySettings } from '../../../../platform-agent/server/security/settings.js';
import { DB_FILE, LOOKUP_KEY_FILE, MIGRATIONS, SqliteStore } from '../../../../platform-agent/server/store/sqlite-store.js';
import { groupRecord, userRecord } from '../../../fixtures/records.js';
import { describeStoreContract, type StoreFactory } from './store-contract.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);

/** Stores on a fresh mkdtemp folder per `open()`; `openSecond()` is another `SqliteStore` on the last one. */
function sqliteFactory(): StoreFactory {
  const dirs: string[] = [];
  const stores: SqliteStore[] = [];
  const on = (folder: string): SqliteStore => {
    const store = new SqliteStore(folder);
    stores.push(store);
    return store;
  };
  return {
    async open() {
      const folder = mkdtempSync(join(tmpdir(), 'sqlite-store-contract-'));
      dirs.push(folder);
      return on(folder);
    },
    async openSecond() {
      const folder = dirs.at(-1);
      if (folder === undefined) throw new Error('openSecond() before open()');
      return on(folder);
    },
    async cleanup() {
      for (const store of stores.splice(0)) await store.close();
      for (const folder of dirs.splice(0)) rmSync(folder, { recursive: true, force: true });
    },
  };
}

describeStoreContract('SqliteStore', sqliteFactory);

describe('SqliteStore only', () => {
  let dir: string;
  const open: SqliteStore[] = [];

  /** A store on this test's folder; closed after the test. */
  function openStore(): SqliteStore {
    const store = new SqliteStore(dir);
    open.push(store);
    return store;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sqlite-store-test-'));
  });
  afterEach(async () => {
    for (const store of open.splice(0)) await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function expectStoreError(fn: () => unknown): RelayError {
    try {
      fn();
    } catch (err) {
      expect(err).toBeInstanceOf(RelayError);
      expect((err as RelayError).code).toBe('PLATFORM_ERR_STORE');
      return err as RelayError;
    }
    throw new Error('expected PLATFORM_ERR_STORE, but nothing was thrown');
  }

  describe('SqliteStore: opening', () => {
    it('creates platform.db readable by its owner only, in WAL mode, at the newest schema version', async () => {
      const store = openStore();
      expect(store.file).toBe(join(dir, DB_FILE));
      expect(statSync(store.file).mode & 0o777).toBe(0o600);
      await store.close();
      const db = new Database(join(dir, DB_FILE), { readonly: true });
      try {
        expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
        expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
      } finally {
        db.close();
      }
    });

    it('creates a missing data folder with mode 0700', () => {
      const nested = join(dir, 'data');
      const store = new SqliteStore(nested);
      open.push(store);
      expect(statSync(nested).mode & 0o777).toBe(0o700);
    });

    it('refuses a database with a newer schema version than it knows, with PLATFORM_ERR_STORE', async () => {
      await openStore().close();
      const db = new Database(join(dir, DB_FILE));
      db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
      db.close();
      const err = expectStoreError(() => openStore());
      expect(err.message).toContain(`schema version ${MIGRATIONS.length + 1}`);
    });

    it('refuses a file that is not a SQLite database with PLATFORM_ERR_STORE', () => {
      writeFileSync(join(dir, DB_FILE), 'this is not a database, just some text that is long enough to have a header'.repeat(20));
      expectStoreError(() => openStore());
    });

    it('refuses a data folder it cannot create with PLATFORM_ERR_STORE', () => {
      writeFileSync(join(dir, 'a-file'), '');
      expectStoreError(() => new SqliteStore(join(dir, 'a-file', 'data')));
    });

    it('fills settings saved by an older version with the defaults of fields added since', async () => {
      await openStore().close();
      // What an older version saved: without the fields added since.
      const older: Partial<SecuritySettings> = cloneSettings(defaultSettings);
      delete older.mobile_token;
      delete older.mobile_session_idle_minutes;
      const db = new Database(join(dir, DB_FILE));
      db.prepare('INSERT INTO settings (id, json, token_generation) VALUES (1, ?, 7)').run(
        JSON.stringify({ ...older, lockout: { device_failures: 3 } }),
      );
      db.close();
      const { settings, tokenGeneration } = await openStore().getSettings();
      expect(tokenGeneration).toBe(7);
      expect(settings.mobile_token).toEqual({ enabled: false });
      expect(settings.mobile_session_idle_minutes).toBe(30);
      expect(settings.lockout).toEqual({ ...defaultSettings.lockout, device_failures: 3 });
    });
  });

  describe('SqliteStore: settings and keys', () => {
    it('keeps one signing key: rotation replaces it and bumps the generation', async () => {
      const store = openStore();
      await store.rotateSigningKey({ kid: 'k1', privateJwk: '{"d":"1"}', publicJwk: '{}', createdAt: T0 });
      await store.rotateSigningKey({ kid: 'k2', privateJwk: '{"d":"2"}', publicJwk: '{}', createdAt: T0 });
      expect((await store.getSigningKey())?.kid).toBe('k2');
      expect((await store.getSettings()).tokenGeneration).toBe(3);
      await store.close();
      const db = new Database(join(dir, DB_FILE), { readonly: true });
      try {
        expect(db.prepare('SELECT count(*) AS n FROM signing_keys').get()).toEqual({ n: 1 });
      } finally {
        db.close();
      }
    });
  });

  describe('SqliteStore: migrations', () => {
    const group = groupRecord;

    it('migrates a version 1 database: its users keep their data and get no group', async () => {
      const db = new Database(join(dir, DB_FILE));
      db.exec(MIGRATIONS[0]!);
      db.pragma('user_version = 1');
      db.prepare("INSERT INTO users (username, password_hash, role, created_at) VALUES ('old', 'h', 'mobile', ?)").run(T0);
      db.close();
      const store = openStore();
      expect(await store.getUser('old')).toMatchObject({ username: 'old', role: 'mobile', group: null, description: null });
      await store.createGroup(group('readers'));
      expect(await store.listGroups()).toEqual([group('readers')]);
    });

    it('migrates a version 2 database: a device gets its last failure as its last sight, or none', async () => {
      const db = new Database(join(dir, DB_FILE));
      db.exec(MIGRATIONS[0]!);
      db.exec(MIGRATIONS[1]!);
      db.pragma('user_version = 2');
      db.prepare("INSERT INTO devices (device_id, failures, last_failure_at, last_username) VALUES ('failing', 2, ?, 'alice')").run(T0);
      db.prepare("INSERT INTO devices (device_id, failures, last_username) VALUES ('cleared', 0, 'bob')").run();
      db.close();
      const store = openStore();
      expect(await store.getDevice('failing')).toMatchObject({ failures: 2, lastUsername: 'alice', lastSeenAt: T0 });
      expect(await store.getDevice('cleared')).toMatchObject({ lastUsername: 'bob', lastSeenAt: null });
      // Never seen since the upgrade, no lock, no failures: forgotten at the first prune.
      expect(await store.prune(T0)).toBe(1);
      expect(await store.getDevice('cleared')).toBeNull();
      expect(await store.getDevice('failing')).not.toBeNull();
    });

    it('migration 4 (per (user, device) lockout, token generations) keeps a device-wide lock in force for every user until it ends, and a user lock as it was', async () => {
      const db = new Database(join(dir, DB_FILE));
      for (let v = 0; v < 3; v++) db.exec(MIGRATIONS[v]!);
      db.pragma('user_version = 3');
      db.prepare(
        "INSERT INTO devices (device_id, failures, last_failure_at, last_username, last_seen_at, locked_at, locked_until) VALUES ('phone', 0, ?, 'alice', ?, ?, ?)",
      ).run(T0, T0, T0, T0 + 15 * MINUTE_MS);
      db.prepare(
        "INSERT INTO users (username, password_hash, role, created_at, locked, locked_at, locked_until) VALUES ('bob', 'x', 'mobile', ?, 1, ?, ?)",
      ).run(T0, T0, T0 + DAY_MS);
      db.prepare(
        "INSERT INTO refresh_families (family_id, username, device_id, audience, current_jti_hash, created_at, last_used_at, expires_at) VALUES ('f', 'carol', 'tablet', 'api', 'h', ?, ?, ?)",
      ).run(T0, T0 + 1, T0 + DAY_MS);
      db.prepare("INSERT INTO settings (id, json, token_generation) VALUES (1, '{}', 7)").run();
      db.prepare("INSERT INTO mobile_tokens (token_hash, username, created_at, expires_at) VALUES ('t', 'carol', ?, ?)").run(
        T0,
        T0 + DAY_MS,
      );
      db.close();
      const store = openStore();
      for (const name of ['alice', 'bob', 'anyone']) expect(await store.deviceLockedUntil('phone', name, T0 + 1)).toBe(T0 + 15 * MINUTE_MS);
      expect(await store.recordLoginSuccess('phone', 'anyone', T0 + 1)).toBe(false);
      expect(await store.getDevice('phone')).toMatchObject({ lockedUntil: T0 + 15 * MINUTE_MS });
      expect(await store.deviceLockedUntil('phone', 'alice', T0 + 15 * MINUTE_MS)).toBeNull();
      expect(await store.getUser('bob')).toMatchObject({ lockedForSecurityReasons: true, lockedUntil: T0 + DAY_MS });
      // A device with a refresh family saw a successful login: it starts known for that user.
      expect(await store.getDeviceUser('tablet', 'carol')).toMatchObject({ known: true, lastSeenAt: T0 + 1 });
      // A mobile token issued before keeps working: it gets the generation in force.
      expect(await store.getMobileToken('t')).toMatchObject({ generation: 7 });
    });

    it('migration 5 keeps users that collide, all of them, lists them, and lets none of them log in; exact names still reach each', async () => {
      const db = new Database(join(dir, DB_FILE));
      for (let v = 0; v < 4; v++) db.exec(MIGRATIONS[v]!);
      db.pragma('user_version = 4');
      const insert = db.prepare(
        "INSERT INTO users (username, password_hash, role, created_at, locked, locked_at, locked_until) VALUES (?, 'x', 'mobile', ?, ?, ?, ?)",
      );
      insert.run('Alice', T0, 0, null, null);
      insert.run('alice', T0, 1, T0, T0 + DAY_MS);
      insert.run('bob', T0, 0, null, null);
      db.prepare("INSERT INTO groups (name, role, operations, created_at) VALUES ('Staff', 'mobile', '[\"api.read\"]', ?)").run(T0);
      db.prepare("INSERT INTO groups (name, role, operations, created_at) VALUES ('staff', 'mobile', '[\"api.read\"]', ?)").run(T0);
      db.close();
      const store = openStore();
      expect(await store.ambiguousNames()).toEqual({ users: [['Alice', 'alice']], groups: [['Staff', 'staff']] });
      expect(await store.getLoginUser('alice')).toBeNull();
      expect(await store.getLoginUser('ALICE')).toBeNull();
      expect(await store.getLoginUser('BOB')).toMatchObject({ username: 'bob' });
      // The lock survives the migration.
      expect(await store.getUser('alice')).toMatchObject({ username: 'alice', lockedForSecurityReasons: true, lockedUntil: T0 + DAY_MS });
      expect(await store.getUser('Alice')).toMatchObject({ username: 'Alice', lockedForSecurityReasons: false });
      expect(await store.getUser('ALICE')).toBeNull();
      // Once an administrator deletes one, the name works again.
      expect(await store.deleteUser('Alice')).toBe(true);
      expect(await store.getLoginUser('ALICE')).toMatchObject({ username: 'alice' });
      expect((await store.ambiguousNames()).users).toEqual([]);
    });

    it('migration 7 makes every key again with full case folding: names that only folding joins are listed, and log in by any case', async () => {
      const db = new Database(join(dir, DB_FILE));
      db.function('name_key', { deterministic: true }, (name: unknown) => String(name).normalize('NFC').toLowerCase());
      for (let v = 0; v < 6; v++) db.exec(MIGRATIONS[v]!);
      db.pragma('user_version = 6');
      const insert = db.prepare(
        "INSERT INTO users (username, password_hash, role, created_at, locked, name_key) VALUES (?, 'x', 'mobile', ?, 0, lower(?))",
      );
      // Under the old key (lower case only) these two were different names; folding makes them one.
      insert.run('STRASSE', T0, 'strasse');
      insert.run('straße', T0, 'straße');
      insert.run('Иванов', T0, 'иванов');
      db.close();
      const store = openStore();
      expect(await store.ambiguousNames()).toEqual({ users: [['STRASSE', 'straße']], groups: [] });
      expect(await store.getLoginUser('Strasse')).toBeNull();
      expect(await store.getLoginUser('ИВАНОВ')).toMatchObject({ username: 'Иванов' });
    });
  });

  describe('SqliteStore: in memory', () => {
    it("keeps everything in memory for ':memory:', with a lookup key of its own", async () => {
      const store = new SqliteStore(':memory:');
      try {
        expect(store.file).toBe(':memory:');
        await store.createUser(userRecord());
        expect((await store.getUser('alice'))?.username).toBe('alice');
        const key = await store.lookupKey();
        expect(key.length).toBe(32);
        expect((await store.lookupKey()).equals(key)).toBe(true);
        const other = new SqliteStore(':memory:');
        expect((await other.lookupKey()).equals(key)).toBe(false);
        expect(await other.getUser('alice')).toBeNull();
        await other.close();
      } finally {
        await store.close();
      }
    });
  });

  describe('SqliteStore: the lookup key (device logins)', () => {
    it('is made once, 32 bytes, mode 0600, beside platform.db and not in it; every store on the folder reads the same key', async () => {
      const [a, b] = [openStore(), openStore()];
      const [ka, kb] = await Promise.all([a.lookupKey(), b.lookupKey()]);
      expect(ka.length).toBe(32);
      expect(kb.equals(ka)).toBe(true);
      expect(statSync(join(dir, LOOKUP_KEY_FILE)).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(dir, LOOKUP_KEY_FILE)).equals(ka)).toBe(true);
      expect(readFileSync(join(dir, DB_FILE)).includes(ka)).toBe(false);
      // No temporary file is left behind.
      expect(readdirSync(dir).filter((f) => f.startsWith(`${LOOKUP_KEY_FILE}.`))).toEqual([]);
      await a.close();
      await b.close();
    });

    it('refuses a key file of the wrong size rather than use it', async () => {
      writeFileSync(join(dir, LOOKUP_KEY_FILE), 'short');
      const store = openStore();
      await expect(store.lookupKey()).rejects.toMatchObject({ code: 'PLATFORM_ERR_STORE' });
      await store.close();
    });
  });
});
