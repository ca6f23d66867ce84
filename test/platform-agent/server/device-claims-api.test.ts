/**
 * Issue 11 over real HTTP: device ids are claims, the per-IP limit counts failures only,
 * `Authorization: Mobile` without a device id, and "all current tokens" meaning every kind of
 * token. Clients come from two loopback addresses (127.0.0.2, 127.0.0.3) to the internal
 * listener on 127.0.0.1:0, with a real SQLite store in a temp folder and a ManualClock.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MINUTE_MS, ManualClock } from '../../../shared/clock.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { bearer, json, request, testLogger, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };
const PASSWORD = 'correct-horse-1';
const A = '127.0.0.2';
const B = '127.0.0.3';

let dir: string;
let clock: ManualClock;
let server: PlatformServer;
let base: string;
let adminPassword: string;

beforeEach(async () => {
  dir = mkdtempSync(join(os.tmpdir(), 'device-claims-'));
  clock = new ManualClock();
  server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT });
  adminPassword = (await server.ensureAdmin())!.password;
  const { port } = await server.listen('127.0.0.1', 0);
  base = `http://127.0.0.1:${port}`;
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A request from client address `from` (a loopback address of its own). */
function call(from: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return request(`${base}${path}`, {
    method,
    localAddress: from,
    headers: { ...(text !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(text !== undefined ? { body: text } : {}),
  });
}

const login = (from: string, username: string, password: string, device: string): Promise<Reply> =>
  call(from, 'POST', '/api/v1/auth/login', { username, password }, { 'x-device-id': device });

async function admin(): Promise<Record<string, string>> {
  const r = await call('127.0.0.1', 'POST', '/admin/api/v1/auth/login', { username: 'admin', password: adminPassword });
  expect(r.status).toBe(200);
  return bearer(json(r).access_token);
}

async function addUser(username: string, headers: Record<string, string>): Promise<void> {
  const r = await call('127.0.0.1', 'POST', '/admin/api/v1/users', { username, password: PASSWORD, role: 'mobile' }, headers);
  expect(r.status, r.body.toString()).toBe(201);
}

const mobileAuthorization = (username: string, password: string): string =>
  `Mobile ${Buffer.from(`${username}:${password}`).toString('base64')}`;

describe('device ids are claims', () => {
  it("five failures for a name that is no account, sent with erin's device id, do not lock erin's phone", async () => {
    await addUser('erin', await admin());
    for (let i = 0; i < 5; i++) expect((await login(A, 'no-such-user', 'wrong-password', 'erin-phone')).status).toBe(401);
    // The attacker's claim now answers 429 for that name, as it would for a real one…
    expect(json(await login(A, 'no-such-user', 'wrong-password', 'erin-phone')).error).toBe('device_locked');
    // …but erin's own logins from her phone are untouched.
    expect((await login(B, 'erin', PASSWORD, 'erin-phone')).status).toBe(200);
  });

  it("five failures for erin under her device id lock only that (user, device); another user's failures there lock nothing of erin's", async () => {
    const headers = await admin();
    await addUser('erin', headers);
    await addUser('mallory', headers);
    for (let i = 0; i < 5; i++) expect((await login(A, 'mallory', 'wrong-password', 'erin-phone')).status).toBe(401);
    expect((await login(B, 'erin', PASSWORD, 'erin-phone')).status).toBe(200);
    expect(json(await login(A, 'mallory', PASSWORD, 'erin-phone')).error).toBe('device_locked');
  });

  it('refuses the names the server gives its own devices as X-Device-Id (400 device_id_reserved), so the console login cannot be locked', async () => {
    const headers = await admin();
    await addUser('alice', headers);
    for (const device of ['admin-console@127.0.0.1', 'ADMIN-CONSOLE@127.0.0.1', 'mobile@127.0.0.2']) {
      const r = await login(A, 'admin', 'wrong-password', device);
      expect(r.status).toBe(400);
      expect(json(r).error).toBe('device_id_reserved');
    }
    for (let i = 0; i < 5; i++) await login(A, 'nobody', 'wrong-password', 'admin-console@127.0.0.1');
    // The console's own device for the administrator still logs in.
    const console = await call('127.0.0.1', 'POST', '/admin/api/v1/auth/login', { username: 'admin', password: adminPassword });
    expect(console.status).toBe(200);
    // Nothing was recorded under the reserved name from those refused attempts.
    const list = json(await call('127.0.0.1', 'GET', '/admin/api/v1/devices', undefined, headers)).devices as Record<string, unknown>[];
    expect(list.find((d) => d.device_id === 'admin-console@127.0.0.1')).toMatchObject({ failures: 0, locked: false });
  });
});

describe('per-IP limit: failed logins only', () => {
  it('lets 11 devices behind one address log in within a minute, and refuses the 11th failure with 429 too_many_attempts', async () => {
    const headers = await admin();
    for (let i = 0; i < 11; i++) await addUser(`user${i}`, headers);
    for (let i = 0; i < 11; i++) expect((await login(A, `user${i}`, PASSWORD, `phone-${i}`)).status).toBe(200);
    for (let i = 0; i < 10; i++) expect((await login(B, `user${i}`, 'wrong-password', `tablet-${i}`)).status).toBe(401);
    const limited = await login(B, 'user10', 'wrong-password', 'tablet-10');
    expect(limited.status).toBe(429);
    expect(json(limited).error).toBe('too_many_attempts');
    // The other address, all successes, is not limited.
    expect((await login(A, 'user10', PASSWORD, 'phone-10')).status).toBe(200);
  });
});

describe('Authorization: Mobile', () => {
  it('logs in without X-Device-Id on the derived device mobile@<client address>', async () => {
    const headers = await admin();
    await addUser('alice', headers);
    await call('127.0.0.1', 'PATCH', '/admin/api/v1/settings/security', { mobile_authorization: { enabled: true } }, headers);
    const r = await call(A, 'GET', '/api/v1/me', undefined, { authorization: mobileAuthorization('alice', PASSWORD) });
    expect(r.status, r.body.toString()).toBe(200);
    expect(json(r)).toMatchObject({ username: 'alice', device_id: `mobile@${A}`, authenticated_by: 'mobile-authorization' });
  });

  it('answers a session and a token of a switched-off authenticator with 401 authenticator_off', async () => {
    const headers = await admin();
    await addUser('alice', headers);
    const on = { mobile_authorization: { enabled: true }, mobile_token: { enabled: true } };
    await call('127.0.0.1', 'PATCH', '/admin/api/v1/settings/security', on, headers);
    const r = await call(A, 'GET', '/api/v1/me', undefined, { authorization: mobileAuthorization('alice', PASSWORD), 'x-device-id': 'p1' });
    const cookie = (r.headers['set-cookie']![0] ?? '').split(';')[0]!;
    const token = r.headers['twx-mobile-token'] as string;
    const off = { mobile_authorization: { enabled: false }, mobile_token: { enabled: false } };
    await call('127.0.0.1', 'PATCH', '/admin/api/v1/settings/security', off, headers);
    const refusedCredentials: Record<string, string>[] = [{ cookie }, { 'twx-mobile-token': token }];
    for (const credential of refusedCredentials) {
      const refused = await call(A, 'GET', '/api/v1/me', undefined, credential);
      expect(refused.status).toBe(401);
      expect(json(refused).error).toBe('authenticator_off');
    }
  });
});

describe('all current tokens means all', () => {
  /** Every kind of credential a client or administrator holds: access and refresh JWTs, mobile token, mobile session, console session. */
  async function credentials(headers: Record<string, string>) {
    const pair = json(await login(A, 'alice', PASSWORD, 'phone-1'));
    const r = await call(A, 'GET', '/api/v1/me', undefined, { authorization: mobileAuthorization('alice', PASSWORD), 'x-device-id': 'p2' });
    expect(r.status).toBe(200);
    const adminToken = headers.authorization!.slice('Bearer '.length);
    return {
      access: bearer(pair.access_token),
      refresh: pair.refresh_token as string,
      mobileToken: { 'twx-mobile-token': r.headers['twx-mobile-token'] as string },
      session: { cookie: (r.headers['set-cookie']![0] ?? '').split(';')[0]! },
      console: { cookie: `console_session=${adminToken}` },
    };
  }

  async function expectAllValid(c: Awaited<ReturnType<typeof credentials>>): Promise<void> {
    for (const h of [c.access, c.mobileToken, c.session]) expect((await call(A, 'GET', '/api/v1/me', undefined, h)).status).toBe(200);
    expect((await call('127.0.0.1', 'GET', '/console/users', undefined, c.console)).status).toBe(200);
  }

  async function expectAllVoid(c: Awaited<ReturnType<typeof credentials>>): Promise<void> {
    for (const h of [c.access, c.mobileToken, c.session]) expect((await call(A, 'GET', '/api/v1/me', undefined, h)).status).toBe(401);
    expect((await call(A, 'POST', '/api/v1/auth/refresh', { refresh_token: c.refresh })).status).toBe(401);
    const console = await call('127.0.0.1', 'GET', '/console/users', undefined, c.console);
    expect(console.status).toBeGreaterThanOrEqual(300);
    expect(console.status).toBeLessThan(400);
    expect(console.headers.location).toMatch(/^\/console\/login/);
  }

  async function setUp(): Promise<Record<string, string>> {
    const headers = await admin();
    await addUser('alice', headers);
    const on = { mobile_authorization: { enabled: true }, mobile_token: { enabled: true } };
    expect((await call('127.0.0.1', 'PATCH', '/admin/api/v1/settings/security', on, headers)).status).toBe(200);
    return headers;
  }

  it('voids access and refresh JWTs, mobile tokens, mobile sessions and console sessions when the signing key is rotated', async () => {
    const headers = await setUp();
    const c = await credentials(headers);
    await expectAllValid(c);
    expect((await call('127.0.0.1', 'POST', '/admin/api/v1/settings/security/rotate-signing-key', undefined, headers)).status).toBe(204);
    await expectAllVoid(c);
  });

  it('voids every kind of token when a token validity changes', async () => {
    const headers = await setUp();
    const c = await credentials(headers);
    await expectAllValid(c);
    clock.advance(MINUTE_MS);
    const patch = await call('127.0.0.1', 'PATCH', '/admin/api/v1/settings/security', { api_token_validity: { days: 7 } }, headers);
    expect(patch.status).toBe(200);
    await expectAllVoid(c);
  });
});

describe('names without regard to case', () => {
  it('answers 409 for a user or group whose name differs from a taken one only in case, and logs in by any case', async () => {
    const headers = await admin();
    await addUser('alice', headers);
    const again = await call(
      '127.0.0.1',
      'POST',
      '/admin/api/v1/users',
      { username: 'Alice', password: PASSWORD, role: 'mobile' },
      headers,
    );
    expect(again.status).toBe(409);
    expect(json(again).error).toBe('user_exists');
    const admin2 = await call(
      '127.0.0.1',
      'POST',
      '/admin/api/v1/users',
      { username: 'ADMIN', password: PASSWORD, role: 'admin' },
      headers,
    );
    expect(admin2.status).toBe(409);
    const staff = { name: 'staff', role: 'mobile', operations: ['api.read'] };
    expect((await call('127.0.0.1', 'POST', '/admin/api/v1/groups', staff, headers)).status).toBe(201);
    const staff2 = await call('127.0.0.1', 'POST', '/admin/api/v1/groups', { ...staff, name: 'STAFF' }, headers);
    expect(staff2.status).toBe(409);
    expect(json(staff2).error).toBe('group_exists');
    const r = await login(A, 'ALICE', PASSWORD, 'phone-1');
    expect(r.status).toBe(200);
    expect(json(await call(A, 'GET', '/api/v1/me', undefined, bearer(json(r).access_token))).username).toBe('alice');
  });
});
