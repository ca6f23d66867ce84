/**
 * Two platform server instances on one PostgreSQL database are one platform: over their real
 * HTTP listeners (127.0.0.1:0), a user, a token, a settings change, a key rotation, a lock and the
 * lockout counts made through one are in force on the other for its next request; refreshes and
 * administrator removals racing across both have one winner; a lost database answers 503 and
 * unlocks nothing. A private real PostgreSQL (test/fixtures/postgres.ts); one ManualClock.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../shared/clock.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { PgStore } from '../../../platform-agent/server/store/pg-store.js';
import { agentConfig } from '../../../platform-agent/agent/agent.js';
import { RelayConnection } from '../../../platform-agent/agent/relay-connection.js';
import { bearer, json, jsonRequest, request, testLogger, type Reply } from '../../fixtures/harness.js';
import { hasPostgres, usePostgres } from '../../fixtures/postgres.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };

interface Instance {
  server: PlatformServer;
  base: string;
}

describe.skipIf(!hasPostgres)('two platform server instances on one PostgreSQL', () => {
  const cluster = usePostgres();
  let dir: string;
  let clock: ManualClock;
  let a: Instance;
  let b: Instance;
  let adminPassword: string;

  async function instance(url: string, name: string): Promise<Instance> {
    const dataDir = join(dir, name);
    const store = await PgStore.open({ url, lookupKeyFile: join(dir, 'lookup.key'), logger: testLogger() });
    const server = new PlatformServer({ dataDir, store, logger: testLogger(), clock, scrypt: FAST_SCRYPT });
    await server.ready();
    const { port } = await server.listen('127.0.0.1', 0);
    return { server, base: `http://127.0.0.1:${port}` };
  }

  beforeEach(async () => {
    dir = mkdtempSync(join(os.tmpdir(), 'shared-store-'));
    clock = new ManualClock();
    const url = await cluster().createDatabase();
    a = await instance(url, 'a');
    b = await instance(url, 'b');
    const [first, second] = await Promise.all([a.server.ensureAdmin(), b.server.ensureAdmin()]);
    // instances started at once on an empty database make one administrator between them
    expect([first, second].filter((x) => x !== null)).toHaveLength(1);
    adminPassword = (first ?? second)!.password;
    // many logins from 127.0.0.1 in one test: the per-address limit is not what these tests are about
    await patchSettings(a, { ip_login_attempts_per_minute: 100_000 });
  });

  afterEach(async () => {
    await a.server.close();
    await b.server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const call = (on: Instance, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
    jsonRequest(`${on.base}${path}`, method, body, headers);

  async function adminToken(on: Instance, username = 'admin', password = adminPassword): Promise<string> {
    const r = await call(on, 'POST', '/admin/api/v1/auth/login', { username, password });
    expect(r.status, r.body.toString()).toBe(200);
    return json(r).access_token as string;
  }

  async function patchSettings(on: Instance, patch: Record<string, unknown>): Promise<void> {
    const r = await call(on, 'PATCH', '/admin/api/v1/settings/security', patch, bearer(await adminToken(on)));
    expect(r.status, r.body.toString()).toBe(200);
  }

  async function addUser(on: Instance, username: string, role = 'mobile', password = 'correct-horse-1'): Promise<void> {
    const r = await call(on, 'POST', '/admin/api/v1/users', { username, password, role }, bearer(await adminToken(on)));
    expect(r.status, r.body.toString()).toBe(201);
  }

  const login = (on: Instance, username: string, password: string, device = 'phone-1'): Promise<Reply> =>
    call(on, 'POST', '/api/v1/auth/login', { username, password }, { 'x-device-id': device });

  const code = (r: Reply): unknown => (r.body.length > 0 ? json(r).error : undefined);

  it('a user created through one logs in through the other, and each accepts the tokens of the other', async () => {
    await addUser(a, 'Иванов');
    const r = await login(b, 'иванов', 'correct-horse-1');
    expect(r.status).toBe(200);
    const token = json(r).access_token as string;
    for (const on of [a, b]) {
      const me = await call(on, 'GET', '/api/v1/me', undefined, bearer(token));
      expect(me.status).toBe(200);
      expect(json(me).username).toBe('Иванов');
    }
  });

  it('a settings change, a key rotation and a lock made through one are in force on the other for its next request', async () => {
    await addUser(a, 'alice');
    const token = json(await login(a, 'alice', 'correct-horse-1')).access_token as string;
    expect((await call(b, 'GET', '/api/v1/me', undefined, bearer(token))).status).toBe(200);

    // a token validity change voids every token issued so far
    await patchSettings(a, { api_token_validity: { days: 7, hours: 0 } });
    expect(code(await call(b, 'GET', '/api/v1/me', undefined, bearer(token)))).toBe('invalid_token');

    const second = json(await login(b, 'alice', 'correct-horse-1')).access_token as string;
    expect((await call(a, 'GET', '/api/v1/me', undefined, bearer(second))).status).toBe(200);
    const rotate = await call(b, 'POST', '/admin/api/v1/settings/security/rotate-signing-key', {}, bearer(await adminToken(b)));
    expect(rotate.status, rotate.body.toString()).toBe(204);
    expect(code(await call(a, 'GET', '/api/v1/me', undefined, bearer(second)))).toBe('invalid_token');

    const third = json(await login(a, 'alice', 'correct-horse-1')).access_token as string;
    const lock = await call(b, 'PATCH', '/admin/api/v1/users/alice', { locked_for_security_reasons: true }, bearer(await adminToken(b)));
    expect(lock.status, lock.body.toString()).toBe(200);
    expect((await call(a, 'GET', '/api/v1/me', undefined, bearer(third))).status).toBe(401);
    expect((await login(a, 'alice', 'correct-horse-1')).status).toBe(401);
  });

  it('failures spread over both lock the device at exactly N and the user at exactly M device locks', async () => {
    await addUser(a, 'bob');
    const [n, m] = [5, 3]; // the default lockout: N failures lock a device, M device locks lock the user
    for (let device = 1; device <= m; device++) {
      const scanner = `scanner-${device}`;
      // N-1 failures, alternating instances, do not lock: the right password still works there (and resets the count)
      for (let i = 1; i < n; i++) expect(code(await login(i % 2 === 0 ? a : b, 'bob', `wrong-${i}`, scanner))).toBe('invalid_credentials');
      expect((await login(device % 2 === 0 ? a : b, 'bob', 'correct-horse-1', scanner)).status).toBe(200);
      // N failures do: the N-th answers as the others did, and from then on both refuse the right password
      for (let i = 1; i <= n; i++) expect(code(await login(i % 2 === 0 ? a : b, 'bob', `wrong-${i}`, scanner))).toBe('invalid_credentials');
      for (const on of [a, b]) expect(code(await login(on, 'bob', 'correct-horse-1', scanner))).toBe('device_locked');
      // before the M-th device lock, another device still logs in
      if (device < m) expect((await login(device % 2 === 0 ? a : b, 'bob', 'correct-horse-1', `other-${device}`)).status).toBe(200);
    }
    // M device locks: the user is locked, on every device and through both
    for (const on of [a, b]) expect((await login(on, 'bob', 'correct-horse-1', 'fresh-phone')).status).toBe(401);
    const user = await call(a, 'GET', '/admin/api/v1/users/bob', undefined, bearer(await adminToken(a)));
    expect(json(user).locked_for_security_reasons).toBe(true);
  });

  it('ten parallel refreshes of one token across both give exactly one new pair', async () => {
    await addUser(a, 'carol');
    const pair = json(await login(a, 'carol', 'correct-horse-1'));
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        call(i % 2 === 0 ? a : b, 'POST', '/api/v1/auth/refresh', { refresh_token: pair.refresh_token }),
      ),
    );
    expect(answers.filter((r) => r.status === 200)).toHaveLength(1);
    expect(answers.filter((r) => r.status === 401)).toHaveLength(9);
    // the reuse revoked the family: the winner's new refresh token is dead too
    const winner = json(answers.find((r) => r.status === 200)!);
    expect((await call(b, 'POST', '/api/v1/auth/refresh', { refresh_token: winner.refresh_token })).status).toBe(401);
  });

  it('two administrators removed at once, one through each instance: never both (one is refused as the last)', async () => {
    const creds = new Map<string, string>([['admin', adminPassword]]);
    for (let round = 1; round <= 5; round++) {
      const keeper = [...creds.keys()][0]!;
      const other = `admin-${round}`;
      await call(
        a,
        'POST',
        '/admin/api/v1/users',
        { username: other, password: `${other}-password`, role: 'admin' },
        bearer(await adminToken(a, keeper, creds.get(keeper)!)),
      );
      creds.set(other, `${other}-password`);
      // each deletes the other, through different instances, at once
      const [tKeeper, tOther] = [await adminToken(a, keeper, creds.get(keeper)!), await adminToken(b, other, creds.get(other)!)];
      const answers = await Promise.all([
        call(a, 'DELETE', `/admin/api/v1/users/${other}`, undefined, bearer(tKeeper)),
        call(b, 'DELETE', `/admin/api/v1/users/${keeper}`, undefined, bearer(tOther)),
      ]);
      const deleted = answers.filter((r) => r.status === 204);
      expect(deleted, answers.map((r) => r.body.toString()).join(' ')).toHaveLength(1);
      // the loser is refused as the last administrator, or finds its own account already gone (its token void, or no operations left)
      const loser = answers.find((r) => r.status !== 204)!;
      expect(['last_admin', 'invalid_token', 'forbidden']).toContain(code(loser));
      creds.delete(answers[0]!.status === 204 ? other : keeper);
      const left = [...creds.keys()][0]!;
      const users = await call(b, 'GET', '/admin/api/v1/users', undefined, bearer(await adminToken(b, left, creds.get(left)!)));
      expect(
        (json(users).users as { role: string }[]).filter((u) => u.role === 'admin'),
        `round ${round}`,
      ).toHaveLength(1);
    }
  });

  it('a control panel form served by one instance is accepted by the other (behind a relay either may answer)', async () => {
    const page = await request(`${a.base}/console/login`);
    expect(page.status).toBe(200);
    const nonce = /console_login=([^;]+)/.exec(String(page.headers['set-cookie']))![1]!;
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body.toString())![1]!;
    const body = new URLSearchParams({ csrf, username: 'admin', password: adminPassword }).toString();
    const posted = await request(`${b.base}/console/login`, {
      method: 'POST',
      body,
      headers: {
        cookie: `console_login=${nonce}`,
        'content-type': 'application/x-www-form-urlencoded',
        'content-length': Buffer.byteLength(body),
      },
    });
    expect(posted.status, posted.body.toString()).toBe(303);
    const session = /console_session=([^;]+)/.exec(String(posted.headers['set-cookie']))![1]!;
    // and the session one gave is good on the other
    expect((await request(`${a.base}/console/settings/security`, { headers: { cookie: `console_session=${session}` } })).status).toBe(200);
  });

  it('relay connection settings saved through one are applied by the other; a lost database keeps those in force', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const connection = (on: Instance): RelayConnection =>
      new RelayConnection({
        target: on.server.streamTarget,
        store: on.server.store,
        logger,
        clock,
        flags: {},
        agent: agentConfig({ relays: [], token: '', trust: {}, drainTimeoutMs: 0 }),
      });
    const [ca, cb] = [connection(a), connection(b)];
    try {
      await ca.open();
      await cb.open();
      await ca.update({ relays: ['wss://relay-1.dmz.example:10900'], token: 'x'.repeat(40), connections: 3 }, 'admin', 'api');
      expect(await cb.refresh()).toBe(true);
      expect(cb.settings()).toMatchObject({ relays: ['wss://relay-1.dmz.example:10900'], connections: 3, enabled: false });
      await cluster().stop();
      try {
        expect(await cb.refresh()).toBe(false);
        expect(await cb.refresh()).toBe(false);
      } finally {
        await cluster().start();
      }
      expect(cb.settings().connections).toBe(3);
      expect(lines.filter((l) => l.event === 'relay_settings_refresh_failed')).toHaveLength(1);
    } finally {
      await ca.close(0);
      await cb.close(0);
    }
  });

  it('answers 503 store_unavailable while the database is down, unlocks nothing, and serves again when it is back', async () => {
    await addUser(a, 'dave');
    for (let i = 1; i <= 5; i++) await login(i % 2 === 0 ? a : b, 'dave', `wrong-${i}`, 'locked-scanner');
    const token = json(await login(b, 'dave', 'correct-horse-1', 'phone-ok')).access_token as string;
    await cluster().stop();
    try {
      for (const on of [a, b]) {
        const locked = await login(on, 'dave', 'correct-horse-1', 'locked-scanner');
        expect(locked.status).toBe(503);
        expect(code(locked)).toBe('store_unavailable');
        expect(locked.headers['retry-after']).toBe('1');
        const me = await call(on, 'GET', '/api/v1/me', undefined, bearer(token));
        expect(me.status).toBe(503);
        expect(code(me)).toBe('store_unavailable');
      }
    } finally {
      await cluster().start();
    }
    // the lock held through the outage; the rest works again
    expect(code(await login(a, 'dave', 'correct-horse-1', 'locked-scanner'))).toBe('device_locked');
    expect((await call(a, 'GET', '/api/v1/me', undefined, bearer(token))).status).toBe(200);
  });
});
