/**
 * The PostgreSQL fixture itself (test/fixtures/postgres.ts): databases, a row written and read,
 * stop and start, a crash (SIGKILL) and a start after it, and TLS with a self-signed certificate.
 */
import { existsSync } from 'node:fs';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { generateSelfSigned } from '../../shared/cert-making.js';
import { PgCluster, hasPostgres, usePostgres } from '../fixtures/postgres.js';

async function withClient<T>(config: string | pg.ClientConfig, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(typeof config === 'string' ? { connectionString: config } : config);
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

describe.skipIf(!hasPostgres)('the PostgreSQL fixture', () => {
  const cluster = usePostgres();

  it('creates databases that each hold their own rows', async () => {
    const a = await cluster().createDatabase();
    const b = await cluster().createDatabase('second_db');
    expect(a).toMatch(/^postgres:\/\/platform:[^@]+@127\.0\.0\.1:\d+\/t_[0-9a-f]+$/);
    expect(b).toBe(cluster().url('second_db'));
    await withClient(a, async (c) => {
      await c.query('CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)');
      await c.query('INSERT INTO notes VALUES ($1, $2)', [1, 'привет']);
      const { rows } = await c.query('SELECT body FROM notes WHERE id = 1');
      expect(rows).toEqual([{ body: 'привет' }]);
      const { rows: enc } = await c.query('SHOW server_encoding');
      expect(enc[0].server_encoding).toBe('UTF8');
    });
    await withClient(b, async (c) => {
      const { rows } = await c.query("SELECT to_regclass('notes') AS t");
      expect(rows[0].t).toBeNull();
    });
  });

  it('refuses a wrong password', async () => {
    const url = cluster().adminUrl.replace(cluster().password, 'wrong');
    await expect(withClient(url, (c) => c.query('SELECT 1'))).rejects.toThrow(/password authentication failed/);
  });

  it('stops, starts again on the same port, survives a SIGKILL, and keeps the data', async () => {
    const url = await cluster().createDatabase();
    const port = cluster().port;
    await withClient(url, (c) => c.query('CREATE TABLE kept (v text); INSERT INTO kept VALUES ($$before$$)'));

    await cluster().stop();
    expect(cluster().running).toBe(false);
    await expect(withClient(url, (c) => c.query('SELECT 1'))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await cluster().start();
    expect(cluster().port).toBe(port);
    await withClient(url, async (c) => {
      expect((await c.query('SELECT v FROM kept')).rows).toEqual([{ v: 'before' }]);
      // the cluster runs with synchronous_commit=off: a commit may be lost in a crash unless it asks
      await c.query('SET synchronous_commit = on');
      await c.query("INSERT INTO kept VALUES ('after stop')");
    });

    // a client connected through the crash loses its connection
    const held = new pg.Client({ connectionString: url });
    held.on('error', () => {});
    await held.connect();
    await cluster().kill();
    expect(cluster().running).toBe(false);
    await expect(held.query('SELECT 1')).rejects.toThrow();
    await held.end().catch(() => {});
    await expect(withClient(url, (c) => c.query('SELECT 1'))).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    await cluster().start();
    await withClient(url, async (c) => {
      expect((await c.query('SELECT v FROM kept ORDER BY v')).rows).toEqual([{ v: 'after stop' }, { v: 'before' }]);
    });
  });

  it('destroy() removes the folder and may be called twice', async () => {
    const own = await PgCluster.start();
    const t0 = performance.now();
    await own.createDatabase();
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(existsSync(own.dir)).toBe(true);
    await own.destroy();
    await own.destroy();
    expect(existsSync(own.dir)).toBe(false);
    await expect(withClient(own.adminUrl, (c) => c.query('SELECT 1'))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});

describe.skipIf(!hasPostgres)('the PostgreSQL fixture with TLS', () => {
  const pair = generateSelfSigned({ commonName: 'localhost', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const cluster = usePostgres({ tls: pair });
  const config = (ssl: pg.ClientConfig['ssl']): pg.ClientConfig => ({ connectionString: cluster().adminUrl, ssl });

  it('serves TLS with the given certificate', async () => {
    await withClient(config({ ca: pair.cert, servername: 'localhost' }), async (c) => {
      const { rows } = await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      expect(rows).toEqual([{ ssl: true }]);
    });
    // checked against the IP address as well
    await withClient(config({ ca: pair.cert }), async (c) => {
      expect((await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows).toEqual([{ ssl: true }]);
    });
  });

  it('is refused by a client that checks the certificate and does not trust it', async () => {
    await expect(withClient(config({ rejectUnauthorized: true }), (c) => c.query('SELECT 1'))).rejects.toThrow(/self[- ]signed/);
  });

  it('still takes clients without TLS (the fixture does not require it)', async () => {
    await withClient(config(false), async (c) => {
      expect((await c.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows).toEqual([{ ssl: false }]);
    });
  });
});
