/**
 * The platform server's HTTP API over real HTTP (its internal listener on 127.0.0.1:0), with a
 * real SQLite store in a temp folder and a ManualClock the tests move.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DAY_MS, MINUTE_MS, ManualClock } from '../../../shared/clock.js';
import { pino } from 'pino';
import { PlatformServer, routePath } from '../../../platform-agent/server/platform-server.js';
import { bearer, json, jsonRequest, testLogger, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };

let dir: string;
let clock: ManualClock;
let server: PlatformServer;
let base: string;
let adminPassword: string;

async function open(extra: Partial<ConstructorParameters<typeof PlatformServer>[0]> = {}): Promise<void> {
  server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT, ...extra });
  const created = await server.ensureAdmin();
  if (created) adminPassword = created.password;
  const { port } = await server.listen('127.0.0.1', 0);
  base = `http://127.0.0.1:${port}`;
}

beforeEach(async () => {
  dir = mkdtempSync(join(os.tmpdir(), 'platform-api-'));
  clock = new ManualClock();
  await open();
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
  jsonRequest(`${base}${path}`, method, body, headers);

async function adminToken(): Promise<string> {
  const r = await call('POST', '/admin/api/v1/auth/login', { username: 'admin', password: adminPassword });
  expect(r.status).toBe(200);
  return json(r).access_token as string;
}

async function addUser(
  username: string,
  password = 'correct-horse-1',
  role = 'mobile',
  extra: Record<string, unknown> = {},
): Promise<void> {
  const r = await call('POST', '/admin/api/v1/users', { username, password, role, ...extra }, bearer(await adminToken()));
  expect(r.status, r.body.toString()).toBe(201);
}

function login(username: string, password: string, device = 'phone-1'): Promise<Reply> {
  return call('POST', '/api/v1/auth/login', { username, password }, { 'x-device-id': device });
}

/** Whitelists loopback so that many logins in one test do not meet the per-IP limit. */
async function whitelistLoopback(): Promise<void> {
  writeFileSync(join(dir, 'whitelist.dat'), '127.0.0.0/8\n::1\n');
  await server.ipGuard.refresh();
}

describe('login', () => {
  it('returns an access and a refresh token with their lifetimes', async () => {
    await addUser('alice');
    const r = await login('alice', 'correct-horse-1');
    expect(r.status).toBe(200);
    const body = json(r);
    expect(body).toMatchObject({ token_type: 'Bearer', expires_in: 14 * 86400, refresh_expires_in: 45 * 86400 });
    expect(typeof body.access_token).toBe('string');
    expect(r.headers['cache-control']).toBe('no-store');
    const me = await call('GET', '/api/v1/me', undefined, bearer(body.access_token));
    expect(me.status).toBe(200);
    expect(json(me)).toMatchObject({ username: 'alice', role: 'mobile', device_id: 'phone-1' });
    expect(json(me).expires_at).toBe(new Date(clock.now() - (clock.now() % 1000) + 14 * DAY_MS).toISOString());
  });

  it('needs X-Device-Id (400 device_id_required)', async () => {
    const r = await call('POST', '/api/v1/auth/login', { username: 'alice', password: 'x' });
    expect(r.status).toBe(400);
    expect(json(r).error).toBe('device_id_required');
  });

  it('answers wrong password, unknown user, locked user and expired account with the same 401', async () => {
    await whitelistLoopback();
    await addUser('alice');
    await addUser('locked-bob');
    await addUser('old-carol', 'correct-horse-1', 'mobile', { account_valid_until: '2026-01-01' });
    const patch = await call('PATCH', '/admin/api/v1/users/locked-bob', { locked_for_security_reasons: true }, bearer(await adminToken()));
    expect(patch.status).toBe(200);
    const replies = [
      await login('alice', 'wrong-password', 'd1'),
      await login('nobody', 'correct-horse-1', 'd2'),
      await login('locked-bob', 'correct-horse-1', 'd3'),
      await login('old-carol', 'correct-horse-1', 'd4'),
    ];
    for (const r of replies) {
      expect(r.status).toBe(401);
      expect(r.body.toString()).toBe(replies[0]!.body.toString());
    }
    expect(json(replies[0]!).error).toBe('invalid_credentials');
  });

  it('locks the device after 5 failures: 429 device_locked with Retry-After, and the admin sees and clears it', async () => {
    await whitelistLoopback();
    await addUser('alice');
    for (let i = 0; i < 5; i++) expect((await login('alice', 'nope-nope', 'phone-9')).status).toBe(401);
    const locked = await login('alice', 'correct-horse-1', 'phone-9');
    expect(locked.status).toBe(429);
    expect(json(locked).error).toBe('device_locked');
    expect(Number(locked.headers['retry-after'])).toBe(15 * 60);
    // Another device of the same user is not locked.
    expect((await login('alice', 'correct-horse-1', 'phone-2')).status).toBe(200);

    const admin = bearer(await adminToken());
    const list = json(await call('GET', '/admin/api/v1/devices', undefined, admin)).devices as Record<string, unknown>[];
    expect(list.find((d) => d.device_id === 'phone-9')).toMatchObject({ locked: true, last_username: 'alice' });
    const unlock = await call('PATCH', '/admin/api/v1/devices/phone-9', { locked: false }, admin);
    expect(unlock.status).toBe(200);
    expect(json(unlock).locked).toBe(false);
    expect((await login('alice', 'correct-horse-1', 'phone-9')).status).toBe(200);
  });

  it('limits login attempts per IP to 10 a minute (429 too_many_attempts with Retry-After), whitelisted IPs exempt', async () => {
    await addUser('alice');
    clock.advance(MINUTE_MS); // the administrator's login above counted too
    for (let i = 0; i < 10; i++) expect((await login('alice', 'nope-nope', `d${i}`)).status).toBe(401);
    const limited = await login('alice', 'correct-horse-1', 'd-new');
    expect(limited.status).toBe(429);
    expect(json(limited).error).toBe('too_many_attempts');
    expect(Number(limited.headers['retry-after'])).toBe(60);
    clock.advance(MINUTE_MS);
    expect((await login('alice', 'correct-horse-1', 'd-new')).status).toBe(200);
    await whitelistLoopback();
    for (let i = 0; i < 12; i++) expect((await login('alice', 'correct-horse-1', 'd-new')).status).toBe(200);
  });

  it('refuses every request from a blacklisted IP with 403 ip_blocked, unless whitelisted', async () => {
    writeFileSync(join(dir, 'blacklist.dat'), '# everyone local\n127.0.0.0/8\n');
    await server.ipGuard.refresh();
    for (const path of ['/api/v1/auth/login', '/api/v1/me', '/admin/api/v1/users', '/healthz']) {
      const r = await call('POST', path, {});
      expect(r.status).toBe(403);
      expect(json(r).error).toBe('ip_blocked');
    }
    writeFileSync(join(dir, 'whitelist.dat'), '127.0.0.1\n');
    await server.ipGuard.refresh();
    expect((await call('GET', '/healthz')).status).toBe(200);
  });
});

describe('tokens', () => {
  it('rotates refresh tokens and revokes the family when a spent one comes back', async () => {
    await addUser('alice');
    const first = json(await login('alice', 'correct-horse-1'));
    const second = await call('POST', '/api/v1/auth/refresh', { refresh_token: first.refresh_token });
    expect(second.status).toBe(200);
    const pair = json(second);
    expect((await call('GET', '/api/v1/me', undefined, bearer(pair.access_token))).status).toBe(200);
    const reuse = await call('POST', '/api/v1/auth/refresh', { refresh_token: first.refresh_token });
    expect(reuse.status).toBe(401);
    expect(json(reuse).error).toBe('invalid_token');
    // The whole family is gone: the newest pair too.
    expect((await call('GET', '/api/v1/me', undefined, bearer(pair.access_token))).status).toBe(401);
    expect((await call('POST', '/api/v1/auth/refresh', { refresh_token: pair.refresh_token })).status).toBe(401);
  });

  it('logout answers 204 and ends the session', async () => {
    await addUser('alice');
    const pair = json(await login('alice', 'correct-horse-1'));
    expect((await call('POST', '/api/v1/auth/logout', undefined, bearer(pair.access_token))).status).toBe(204);
    expect((await call('GET', '/api/v1/me', undefined, bearer(pair.access_token))).status).toBe(401);
    expect((await call('POST', '/api/v1/auth/refresh', { refresh_token: pair.refresh_token })).status).toBe(401);
  });

  it('refuses an access token after its validity, an access token as refresh, and an API token on the admin API', async () => {
    await addUser('alice');
    const pair = json(await login('alice', 'correct-horse-1'));
    expect((await call('POST', '/api/v1/auth/refresh', { refresh_token: pair.access_token })).status).toBe(401);
    expect((await call('GET', '/api/v1/me', undefined, bearer(pair.refresh_token))).status).toBe(401);
    expect((await call('GET', '/admin/api/v1/users', undefined, bearer(pair.access_token))).status).toBe(401);
    clock.advance(14 * DAY_MS);
    const expired = await call('GET', '/api/v1/me', undefined, bearer(pair.access_token));
    expect(expired.status).toBe(401);
    expect(expired.headers['www-authenticate']).toBe('Bearer');
    // The refresh token still works until day 45.
    expect((await call('POST', '/api/v1/auth/refresh', { refresh_token: pair.refresh_token })).status).toBe(200);
  });

  it('changing a token validity or rotating the signing key invalidates every current token', async () => {
    await addUser('alice');
    const admin = bearer(await adminToken());
    const user = json(await login('alice', 'correct-horse-1'));
    const patch = await call('PATCH', '/admin/api/v1/settings/security', { api_token_validity: { days: 7 } }, admin);
    expect(patch.status).toBe(200);
    expect(json(patch).api_token_validity).toEqual({ days: 7, hours: 0 });
    expect((await call('GET', '/api/v1/me', undefined, bearer(user.access_token))).status).toBe(401);
    expect((await call('GET', '/admin/api/v1/users', undefined, admin)).status).toBe(401);

    const admin2 = bearer(await adminToken());
    const user2 = json(await login('alice', 'correct-horse-1'));
    expect(user2.expires_in).toBe(7 * 86400);
    expect((await call('POST', '/admin/api/v1/settings/security/rotate-signing-key', undefined, admin2)).status).toBe(204);
    expect((await call('GET', '/api/v1/me', undefined, bearer(user2.access_token))).status).toBe(401);
    expect((await call('GET', '/admin/api/v1/users', undefined, admin2)).status).toBe(401);
  });

  it('ends an idle administrator session after the inactivity timeout (401 session_expired)', async () => {
    const admin = bearer(await adminToken());
    expect((await call('PATCH', '/admin/api/v1/settings/security', { admin_inactivity_timeout: '00:30' }, admin)).status).toBe(200);
    clock.advance(29 * MINUTE_MS);
    expect((await call('GET', '/admin/api/v1/users', undefined, admin)).status).toBe(200);
    clock.advance(29 * MINUTE_MS);
    expect((await call('GET', '/admin/api/v1/users', undefined, admin)).status).toBe(200);
    clock.advance(31 * MINUTE_MS);
    const idle = await call('GET', '/admin/api/v1/users', undefined, admin);
    expect(idle.status).toBe(401);
    expect(json(idle).error).toBe('session_expired');
  });
});

describe('admin API', () => {
  it('validates settings with a 400 that names the field', async () => {
    const admin = bearer(await adminToken());
    const cases: [unknown, string][] = [
      [{ refresh_token_validity: { days: 10 } }, 'refresh_token_validity'],
      [{ lockout: { device_failures: 0 } }, 'lockout.device_failures'],
      [{ admin_inactivity_timeout: '99' }, 'admin_inactivity_timeout'],
      [{ no_such_setting: 1 }, 'no_such_setting'],
    ];
    for (const [body, field] of cases) {
      const r = await call('PATCH', '/admin/api/v1/settings/security', body, admin);
      expect(r.status).toBe(400);
      expect(json(r)).toMatchObject({ error: 'invalid_setting', field });
    }
    const settings = json(await call('GET', '/admin/api/v1/settings/security', undefined, admin));
    expect(settings.refresh_token_validity).toEqual({ days: 45, hours: 0 });
  });

  it('creates, shows, changes and deletes users; the last administrator stays', async () => {
    const admin = bearer(await adminToken());
    expect(
      (await call('POST', '/admin/api/v1/users', { username: 'ext', password: 'long-enough-1', role: 'external' }, admin)).status,
    ).toBe(201);
    expect(
      (await call('POST', '/admin/api/v1/users', { username: 'ext', password: 'long-enough-1', role: 'external' }, admin)).status,
    ).toBe(409);
    const bad = await call('POST', '/admin/api/v1/users', { username: 'x', password: 'short', role: 'mobile' }, admin);
    expect(json(bad)).toMatchObject({ error: 'invalid_request', field: 'password' });
    const changed = await call('PATCH', '/admin/api/v1/users/ext', { account_valid_until: '2027-01-31', role: 'mobile' }, admin);
    expect(json(changed)).toMatchObject({ role: 'mobile', account_valid_until: '2027-01-31T00:00:00.000Z', status: 'Active' });
    const users = json(await call('GET', '/admin/api/v1/users', undefined, admin)).users as { username: string }[];
    expect(users.map((u) => u.username)).toEqual(['admin', 'ext']);
    expect((await call('DELETE', '/admin/api/v1/users/ext', undefined, admin)).status).toBe(204);
    expect((await call('GET', '/admin/api/v1/users/ext', undefined, admin)).status).toBe(404);
    const last = await call('DELETE', '/admin/api/v1/users/admin', undefined, admin);
    expect(last.status).toBe(409);
    expect(json(last).error).toBe('last_admin');
  });

  it('shows a user lock as "Locked until <date>" and unlocks on {"locked_for_security_reasons": false}', async () => {
    await whitelistLoopback();
    await addUser('alice');
    const pair = json(await login('alice', 'correct-horse-1', 'phone-0'));
    // 3 device locks within 24 h lock the user for 1 day.
    for (const device of ['a', 'b', 'c']) for (let i = 0; i < 5; i++) await login('alice', 'wrong-wrong', device);
    const admin = bearer(await adminToken());
    const view = json(await call('GET', '/admin/api/v1/users/alice', undefined, admin));
    const until = new Date(clock.now() + DAY_MS);
    expect(view).toMatchObject({ locked_for_security_reasons: true, locked_until: until.toISOString() });
    expect(view.status).toBe(`Locked until ${until.toISOString().slice(0, 16).replace('T', ' ')} UTC`);
    // The lock ended the session on every device.
    expect((await call('GET', '/api/v1/me', undefined, bearer(pair.access_token))).status).toBe(401);
    expect((await login('alice', 'correct-horse-1', 'phone-0')).status).toBe(401);

    // Changing the user lock duration recalculates the lock in force.
    await call('PATCH', '/admin/api/v1/settings/security', { lockout: { user_lock_days: 2 } }, admin);
    const longer = json(await call('GET', '/admin/api/v1/users/alice', undefined, admin));
    expect(longer.locked_until).toBe(new Date(until.getTime() + DAY_MS).toISOString());

    const unlocked = await call('PATCH', '/admin/api/v1/users/alice', { locked_for_security_reasons: false }, admin);
    expect(json(unlocked)).toMatchObject({ locked_for_security_reasons: false, locked_until: null, status: 'Active' });
    expect((await login('alice', 'correct-horse-1', 'phone-0')).status).toBe(200);
  });

  it("lists every device with its last user and last login (last_seen_at), and one user's with ?user=", async () => {
    await whitelistLoopback();
    await addUser('alice');
    await addUser('bob');
    const t1 = clock.now();
    expect((await login('alice', 'correct-horse-1', 'phone-1')).status).toBe(200);
    clock.advance(MINUTE_MS);
    expect((await login('bob', 'correct-horse-1', 'tablet')).status).toBe(200);
    clock.advance(MINUTE_MS);
    expect((await login('alice', 'nope-nope', 'phone-2')).status).toBe(401);
    const iso = (ms: number): string => new Date(ms).toISOString();

    const admin = bearer(await adminToken());
    const all = json(await call('GET', '/admin/api/v1/devices', undefined, admin)).devices as Record<string, unknown>[];
    // The administrator's own logins (no X-Device-Id) are a device too, ordered by user name.
    expect(all.map((d) => `${String(d.last_username)}/${String(d.device_id)}`)).toEqual([
      'admin/admin-console@127.0.0.1',
      'alice/phone-1',
      'alice/phone-2',
      'bob/tablet',
    ]);
    const alice = await call('GET', '/admin/api/v1/devices?user=alice', undefined, admin);
    expect(alice.status).toBe(200);
    expect(json(alice).devices).toEqual([
      {
        device_id: 'phone-1',
        failures: 0,
        last_failure_at: null,
        last_username: 'alice',
        last_seen_at: iso(t1),
        locked: false,
        locked_until: null,
      },
      {
        device_id: 'phone-2',
        failures: 1,
        last_failure_at: iso(t1 + 2 * MINUTE_MS),
        last_username: 'alice',
        last_seen_at: iso(t1 + 2 * MINUTE_MS),
        locked: false,
        locked_until: null,
      },
    ]);
    expect(json(await call('GET', '/admin/api/v1/devices/tablet', undefined, admin))).toMatchObject({ last_seen_at: iso(t1 + MINUTE_MS) });
    expect(json(await call('GET', '/admin/api/v1/devices?user=nobody', undefined, admin)).devices).toEqual([]);
    const empty = await call('GET', '/admin/api/v1/devices?user=', undefined, admin);
    expect(empty.status).toBe(400);
    expect(json(empty)).toMatchObject({ error: 'invalid_request', field: 'user' });
  });

  it('answers bad requests with stable codes: 404, 405, 413, invalid JSON', async () => {
    const admin = bearer(await adminToken());
    expect(json(await call('GET', '/nowhere')).error).toBe('not_found');
    expect((await call('GET', '/api/v1/auth/login')).status).toBe(405);
    expect(json(await call('POST', '/admin/api/v1/users', '{not json', admin)).error).toBe('invalid_json');
    const big = await call('POST', '/admin/api/v1/users', JSON.stringify({ pad: 'x'.repeat(70 * 1024) }), admin);
    expect(big.status).toBe(413);
    expect(json(big).error).toBe('body_too_large');
    // The server is still fine.
    expect((await call('GET', '/healthz')).status).toBe(200);
  });
});

describe('request paths', () => {
  /** One request with the target exactly as given (no URL parser in between). */
  function raw(target: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
    const port = new URL(base).port;
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => {
        const extra = Object.entries(headers)
          .map(([k, v]) => `${k}: ${v}\r\n`)
          .join('');
        socket.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n${extra}Connection: close\r\n\r\n`);
      });
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
      socket.on('error', reject);
      socket.on('close', () =>
        resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) }),
      );
    });
  }

  it('answers 400 bad_request, not 500, to malformed percent-encoding in admin API, console and other paths', async () => {
    const admin = bearer(await adminToken());
    for (const target of [
      '/admin/api/v1/users/%E0%A4%A',
      '/admin/api/v1/groups/%ZZ',
      '/%ZZ',
      '/console/%ZZ',
      '/console/users/%E0%A4%A',
      '/api/v1/%C0',
    ]) {
      const r = await raw(target, admin);
      expect(r.status, target).toBe(400);
      expect((JSON.parse(r.body) as { error: string }).error, target).toBe('bad_request');
    }
    // well-formed encoding still reaches the route
    expect((await raw('/admin/api/v1/users/%61dmin', admin)).status).toBe(200);
  });

  it('merges runs of slashes once, and logs the path it served', async () => {
    const lines: string[] = [];
    await server.close();
    server = new PlatformServer({
      dataDir: dir,
      logger: pino({ level: 'debug' }, { write: (line: string) => lines.push(line) }),
      clock,
      scrypt: FAST_SCRYPT,
    });
    const { port } = await server.listen('127.0.0.1', 0);
    base = `http://127.0.0.1:${port}`;
    const admin = bearer(await adminToken());
    const r = await raw('//admin/api/v1//users?x=1', admin);
    expect(r.status).toBe(200);
    const logged = lines.map((l) => JSON.parse(l) as { event?: string; path?: string }).filter((l) => l.event === 'request');
    expect(logged.map((l) => l.path)).toContain('/admin/api/v1/users');
    expect(logged.some((l) => (l.path ?? '').includes('//'))).toBe(false);
    expect(routePath('//a///b?c=//d')).toEqual({ path: '/a/b', malformed: false });
    expect(routePath('/a/%E0%A4%A')).toEqual({ path: '/a/%E0%A4%A', malformed: true });
  });
});

describe('gateway and mobile authenticators', () => {
  it("keeps both the session cookie and the backend's own cookie on a forwarded answer", async () => {
    const backend = http.createServer((_req, res) => {
      res.setHeader('set-cookie', 'backend_pref=dark; Path=/');
      res.end('ok');
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    try {
      await server.close();
      await open({ backend: new URL(`http://127.0.0.1:${(backend.address() as AddressInfo).port}`) });
      await whitelistLoopback();
      await addUser('alice');
      const admin = bearer(await adminToken());
      await call('PATCH', '/admin/api/v1/settings/security', { mobile_authorization: { enabled: true } }, admin);
      const r = await call('GET', '/api/v1/orders', undefined, {
        authorization: `Mobile ${Buffer.from('alice:correct-horse-1').toString('base64')}`,
        'x-device-id': 'phone-1',
      });
      expect(r.status).toBe(200);
      const cookies = (r.headers['set-cookie'] ?? []).map((c) => c.split('=')[0]);
      expect(cookies.sort()).toEqual(['backend_pref', 'platform_session']);
      expect(r.headers['twx-mobile-token']).toMatch(/^[A-Za-z0-9_-]{43}$/);
    } finally {
      backend.close();
    }
  });

  it('needs authentication for /api/ and forwards to the backend with verified identity headers only', async () => {
    const seen: http.IncomingHttpHeaders[] = [];
    const backend = http.createServer((req, res) => {
      seen.push(req.headers);
      res.end(`backend saw ${req.url}`);
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    try {
      await server.close();
      await open({ backend: new URL(`http://127.0.0.1:${(backend.address() as AddressInfo).port}`) });
      await addUser('alice');
      expect((await call('GET', '/api/v1/orders')).status).toBe(401);
      const pair = json(await login('alice', 'correct-horse-1'));
      const r = await call('GET', '/api/v1/orders?page=2', undefined, {
        ...bearer(pair.access_token),
        'x-platform-user': 'admin',
        'x-device-id': 'phone-1',
      });
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe('backend saw /api/v1/orders?page=2');
      expect(seen[0]).toMatchObject({
        'x-platform-user': 'alice',
        'x-platform-role': 'mobile',
        'x-platform-device': 'phone-1',
        'x-platform-client-ip': '127.0.0.1',
      });
      expect(seen[0]!.authorization).toBeUndefined();
    } finally {
      backend.close();
    }
  });

  it('drops header names with an underscore before the backend, so no spelling of a trusted field gets through', async () => {
    const seen: string[][] = [];
    // raw: records the header names and values as they came on the wire
    const backend = http.createServer((req, res) => {
      seen.push(req.rawHeaders);
      res.end('ok');
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
    try {
      await server.close();
      await open({ backend: new URL(`http://127.0.0.1:${(backend.address() as AddressInfo).port}`) });
      await addUser('alice');
      const pair = json(await login('alice', 'correct-horse-1'));
      const r = await call('GET', '/api/v1/orders', undefined, {
        ...bearer(pair.access_token),
        'X-Platform-User': 'admin',
        X_Platform_User: 'admin',
        X_Platform_Role: 'admin',
        'X-Forwarded-For': '127.0.0.1',
        X_Forwarded_For: '6.6.6.6',
        'X-Real-IP': '127.0.0.1',
        X_Real_IP: '6.6.6.6',
        Custom_Header: 'v',
      });
      expect(r.status).toBe(200);
      const raw = seen[0]!;
      const names = raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      expect(names.filter((n) => n.includes('_'))).toEqual([]);
      const values = (name: string): string[] => raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === name);
      expect(values('x-platform-user')).toEqual(['alice']);
      expect(values('x-platform-role')).toEqual(['mobile']);
      // the dashed forwarding fields are the relay's on tunnel connections: they pass as they came
      expect(values('x-forwarded-for')).toEqual(['127.0.0.1']);
      expect(values('x-real-ip')).toEqual(['127.0.0.1']);
    } finally {
      backend.close();
    }
  });

  it('honours Authorization: Mobile only when enabled, then returns a session cookie and a twx-mobile-token', async () => {
    await whitelistLoopback();
    await addUser('alice');
    const mobile = { authorization: `Mobile ${Buffer.from('alice:correct-horse-1').toString('base64')}`, 'x-device-id': 'phone-1' };
    expect((await call('GET', '/api/v1/me', undefined, mobile)).status).toBe(401);
    const admin = bearer(await adminToken());
    await call(
      'PATCH',
      '/admin/api/v1/settings/security',
      { mobile_authorization: { enabled: true }, mobile_token: { enabled: true } },
      admin,
    );
    const r = await call('GET', '/api/v1/me', undefined, mobile);
    expect(r.status).toBe(200);
    expect(json(r)).toMatchObject({ username: 'alice', authenticated_by: 'mobile-authorization' });
    const token = r.headers['twx-mobile-token'] as string;
    const cookie = (r.headers['set-cookie']![0] ?? '').split(';')[0]!;
    expect(cookie).toMatch(/^platform_session=/);
    expect(json(await call('GET', '/api/v1/me', undefined, { cookie })).authenticated_by).toBe('session');
    expect(json(await call('GET', '/api/v1/me', undefined, { 'twx-mobile-token': token })).authenticated_by).toBe('mobile-token');
    clock.advance(31 * MINUTE_MS);
    expect((await call('GET', '/api/v1/me', undefined, { cookie })).status).toBe(401);
    clock.advance(30 * DAY_MS);
    expect((await call('GET', '/api/v1/me', undefined, { 'twx-mobile-token': token })).status).toBe(401);
  });
});

describe('restart', () => {
  it('keeps a locked device and a locked user locked after the server restarts', async () => {
    await whitelistLoopback();
    await addUser('alice');
    for (const device of ['a', 'b', 'c']) for (let i = 0; i < 5; i++) await login('alice', 'wrong-wrong', device);
    await server.close();
    clock.advance(5 * MINUTE_MS);
    await open();
    await whitelistLoopback();
    expect(json(await login('alice', 'correct-horse-1', 'a')).error).toBe('device_locked');
    expect((await login('alice', 'correct-horse-1', 'fresh-device')).status).toBe(401);
    const view = json(await call('GET', '/admin/api/v1/users/alice', undefined, bearer(await adminToken())));
    expect(view.locked_for_security_reasons).toBe(true);
  });
});
