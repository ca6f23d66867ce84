/**
 * What only the PostgreSQL store does, on a real private cluster (test/fixtures/postgres.ts):
 * reading `--store`, TLS to the database, migrations under the advisory lock, the lookup key
 * check, a lost database (503, then recovery) and `exclusive` across instances. Its behaviour
 * through the store interface is the shared contract (store-contract.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateSelfSigned } from '../../../../shared/cert-making.js';
import { RelayError } from '../../../../shared/errors.js';
import { PG_MIGRATIONS, PgStore, storeTarget, type PgStoreOptions } from '../../../../platform-agent/server/store/pg-store.js';
import { PgCluster, hasPostgres, usePostgres } from '../../../fixtures/postgres.js';
import { userRecord, T0 } from '../../../fixtures/records.js';
import { cloneSettings, defaultSettings, lockoutPolicy } from '../../../../platform-agent/server/security/settings.js';
import { testLogger } from '../../../fixtures/harness.js';
import { describeStoreContract, type StoreFactory } from './store-contract.js';
import { rejectedRelayError } from '../../../fixtures/error-code.js';

let dir: string;
const open: PgStore[] = [];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pg-store-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

async function openStore(url: string, over: Partial<PgStoreOptions> = {}): Promise<PgStore> {
  const store = await PgStore.open({ url, lookupKeyFile: join(dir, 'lookup.key'), logger: testLogger(), ...over });
  open.push(store);
  return store;
}

describe.skipIf(!hasPostgres)('the store contract on PostgreSQL', () => {
  const cluster = usePostgres();
  describeStoreContract('PgStore', (): StoreFactory => {
    let url = '';
    let keyFile = '';
    const mine: PgStore[] = [];
    const openOn = async (): Promise<PgStore> => {
      const store = await PgStore.open({ url, lookupKeyFile: keyFile, logger: testLogger() });
      mine.push(store);
      return store;
    };
    return {
      async open() {
        url = await cluster().createDatabase();
        keyFile = join(dir, `${url.split('/').pop()!}.key`);
        return openOn();
      },
      openSecond: openOn,
      async cleanup() {
        for (const store of mine.splice(0)) await store.close();
      },
    };
  });
});

describe('--store URLs', () => {
  it('reads host, port, database and credentials, and shows the URL without the password', () => {
    const t = storeTarget('postgres://pl%40tform:s%3Acret@db.example:6432/plat%20form?sslmode=verify-full');
    expect(t.config).toMatchObject({ host: 'db.example', port: 6432, database: 'plat form', user: 'pl@tform', password: 's:cret' });
    expect(t.shown).toBe('postgres://pl@tform@db.example:6432/plat%20form');
    expect(t.shown).not.toContain('s:cret');
    expect(t.tls).toBe(true);
  });

  it('verifies TLS by default off loopback, and speaks plain TCP on loopback unless asked', () => {
    expect(storeTarget('postgres://u@db.example/p').config.ssl).toEqual({ rejectUnauthorized: true, servername: 'db.example' });
    expect(storeTarget('postgres://u@10.1.2.3/p', 'CA').config.ssl).toEqual({ rejectUnauthorized: true, ca: 'CA' });
    expect(storeTarget('postgres://u@127.0.0.1/p').tls).toBe(false);
    expect(storeTarget('postgres://u@[::1]/p').tls).toBe(false);
    expect(storeTarget('postgres://u@localhost/p?sslmode=verify-full').tls).toBe(true);
    expect(storeTarget('postgresql://u@db.example/p?sslmode=disable').tls).toBe(false);
    expect(storeTarget('postgres://u@x/p?host=/run/postgresql').config).toMatchObject({ host: '/run/postgresql', ssl: false });
  });

  it.each([
    ['not a url', /not a URL/],
    ['mysql://u@h/db', /expected postgres:\/\//],
    ['postgres://u@h', /names no database/],
    ['postgres://u@h/db?sslmode=require', /sslmode=require does not verify/],
    ['postgres://u@h/db?sslmode=prefer', /sslmode=prefer does not verify/],
    ['postgres://u@h/db?sslmode=verify-ca', /sslmode=verify-ca does not verify/],
    ['postgres://u@h/db?connect_timeout=3', /unknown URL parameter connect_timeout/],
  ])('refuses %s naming --store', (url, message) => {
    let err: unknown;
    try {
      storeTarget(url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).code).toBe('RELAY_ERR_CONFIG');
    expect((err as RelayError).message).toMatch(/^--store/);
    expect((err as RelayError).message).toMatch(message);
  });
});

describe.skipIf(!hasPostgres)('PgStore on a real PostgreSQL', () => {
  const cluster = usePostgres();

  it('migrates an empty database once, even when several instances start at once', async () => {
    const url = await cluster().createDatabase();
    const stores = await Promise.all([openStore(url), openStore(url), openStore(url), openStore(url)]);
    expect(stores).toHaveLength(4);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r: { version: number }) => r.version)).toEqual(PG_MIGRATIONS.map((_, i) => i + 1));
    } finally {
      await client.end();
    }
  });

  it('refuses a database migrated by a newer version', async () => {
    const url = await cluster().createDatabase();
    await (await openStore(url)).close();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [PG_MIGRATIONS.length + 1]);
    await client.end();
    const err = await rejectedRelayError(openStore(url));
    expect(err.code).toBe('PLATFORM_ERR_STORE');
    expect(err.message).toMatch(/newer than this program knows/);
  });

  it('refuses to start with another lookup key than the one the database was used with', async () => {
    const url = await cluster().createDatabase();
    await openStore(url, { lookupKeyFile: join(dir, 'first.key') });
    const err = await rejectedRelayError(openStore(url, { lookupKeyFile: join(dir, 'second.key') }));
    expect(err.code).toBe('PLATFORM_ERR_STORE');
    expect(err.message).toContain('second.key is not the lookup key this database was used with');
    expect(err.message).not.toContain(cluster().password);
    // the same file works on a second instance, and both derive the same key
    const again = await openStore(url, { lookupKeyFile: join(dir, 'first.key') });
    expect((await again.lookupKey()).length).toBe(32);
  });

  it('names --store and never the password when the database cannot be reached or refuses the login', async () => {
    const wrongPort = `postgres://platform:${cluster().password}@127.0.0.1:1/x`;
    let err = await rejectedRelayError(openStore(wrongPort, { statementTimeoutMs: 1000 }));
    expect(err.code).toBe('RELAY_ERR_CONFIG');
    expect(err.message).toMatch(/^--store postgres:\/\/platform@127\.0\.0\.1:1\/x: cannot use the database \(.*ECONNREFUSED/);
    expect(err.message).not.toContain(cluster().password);
    err = await rejectedRelayError(openStore(cluster().adminUrl.replace(cluster().password, 'wrong-password')));
    expect(err.code).toBe('RELAY_ERR_CONFIG');
    expect(err.message).toMatch(/password authentication failed/);
    expect(err.message).not.toContain('wrong-password');
  });

  it('answers 503 PLATFORM_ERR_STORE_UNAVAILABLE while the database is down, and works again when it is back', async () => {
    const url = await cluster().createDatabase();
    const store = await openStore(url, { statementTimeoutMs: 2000 });
    await store.createUser(userRecord({ username: 'alice' }));
    await store.getUser('alice'); // a pooled connection exists when the database goes
    await cluster().stop();
    try {
      for (const call of [
        () => store.getUser('alice'),
        () => store.getSettings(),
        () => store.deviceLockedUntil('d1', 'alice', T0),
        () => store.recordLoginFailure('d1', 'alice', T0, { deviceFailures: 5 } as never, true),
        () => store.exclusive('x', async () => 1),
      ]) {
        const err = await rejectedRelayError(call());
        expect(err.code).toBe('PLATFORM_ERR_STORE_UNAVAILABLE');
        expect(err.httpStatus).toBe(503);
        expect(err.retryAfterSeconds).toBe(1);
      }
    } finally {
      await cluster().start();
    }
    expect((await store.getUser('alice'))?.username).toBe('alice');
  });

  it('recovers after the database is killed (SIGKILL) and restarted', async () => {
    const url = await cluster().createDatabase();
    const store = await openStore(url);
    await store.createUser(userRecord({ username: 'bob' }));
    await cluster().kill();
    expect((await rejectedRelayError(store.listUsers())).code).toBe('PLATFORM_ERR_STORE_UNAVAILABLE');
    await cluster().start();
    // the pool's broken connections are dropped; a few calls may still meet one, then all succeed
    let last: unknown = 'not tried';
    for (let i = 0; i < 50 && last !== null; i++) {
      last = await store.listUsers().then(
        () => null,
        (e: unknown) => e,
      );
      if (last !== null) await new Promise((r) => setTimeout(r, 100));
    }
    expect(last).toBeNull();
    expect((await store.listUsers()).map((u) => u.username)).toContain('bob');
  });

  it('under heavy contention on one row, retried transactions all succeed: 200 failures at once lock once, 200 attempts from one address allow exactly the limit', async () => {
    const url = await cluster().createDatabase();
    const [a, b] = [await openStore(url), await openStore(url)];
    const policy = lockoutPolicy(cloneSettings(defaultSettings));
    const failures = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).recordLoginFailure('hot-device', 'hot-user', T0, policy, false)),
    );
    expect(failures.filter((r) => r.status === 'rejected')).toEqual([]);
    const fulfilled = failures.map((r) => (r as PromiseFulfilledResult<{ deviceLockedNow: boolean }>).value);
    expect(fulfilled.filter((r) => r.deviceLockedNow)).toHaveLength(1);
    const attempts = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).hitIpAttempt('198.51.100.1', T0, 60_000, 10)),
    );
    expect(attempts.filter((r) => r.status === 'rejected')).toEqual([]);
    expect(attempts.filter((r) => (r as PromiseFulfilledResult<{ allowed: boolean }>).value.allowed)).toHaveLength(10);
  });

  it('runs exclusive sections one at a time across instances', async () => {
    const url = await cluster().createDatabase();
    const [a, b] = [await openStore(url), await openStore(url)];
    const trace: string[] = [];
    const section = (store: PgStore, who: string) =>
      store.exclusive('user-managers', async () => {
        trace.push(`${who}+`);
        await new Promise((r) => setTimeout(r, 30));
        trace.push(`${who}-`);
      });
    await Promise.all([section(a, 'a1'), section(b, 'b1'), section(a, 'a2'), section(b, 'b2')]);
    // every entry is followed by its own exit
    for (let i = 0; i < trace.length; i += 2) expect(trace[i + 1]).toBe(trace[i]!.replace('+', '-'));
    expect(trace).toHaveLength(8);
  });
});

describe.skipIf(!hasPostgres)('PgStore over TLS', () => {
  let cluster: PgCluster;
  const cert = generateSelfSigned({ commonName: 'localhost', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const other = generateSelfSigned({ commonName: 'localhost', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  beforeAll(async () => {
    cluster = await PgCluster.start({ tls: { cert: cert.cert, key: cert.key } });
  });
  afterAll(async () => cluster.destroy());

  it('connects with sslmode=verify-full and --store-ca', async () => {
    const url = `${(await cluster.createDatabase()).replace('127.0.0.1', 'localhost')}?sslmode=verify-full`;
    const store = await openStore(url, { ca: cert.cert });
    await store.createUser(userRecord({ username: 'tls-user' }));
    expect((await store.getUser('tls-user'))?.username).toBe('tls-user');
  });

  it('refuses a database whose certificate does not chain to --store-ca', async () => {
    const url = `${(await cluster.createDatabase()).replace('127.0.0.1', 'localhost')}?sslmode=verify-full`;
    const err = await rejectedRelayError(openStore(url, { ca: other.cert }));
    expect(err.code).toBe('RELAY_ERR_CONFIG');
    expect(err.message).toMatch(/--store-ca/);
    expect(err.message).toMatch(/signature|self.signed|certificate/i);
  });
});
