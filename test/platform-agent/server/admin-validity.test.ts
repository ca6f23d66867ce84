/**
 * Account validity for administrators, over real HTTP on the internal listener (SQLite in a temp
 * folder, ManualClock): it applies to them, except that the last administrator who can manage
 * users can never be expired — neither by a change of their own dates (409 last_admin) nor by
 * the global account validity.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DAY_MS, ManualClock } from '../../../shared/clock.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { bearer, json, jsonRequest, testLogger, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };
const OPS_PASSWORD = 'ops-password-1';

let dir: string;
let clock: ManualClock;
let server: PlatformServer;
let base: string;
let password: string;

beforeEach(async () => {
  dir = mkdtempSync(join(os.tmpdir(), 'admin-validity-'));
  clock = new ManualClock(Date.parse('2026-06-01T00:00:00Z'));
  server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT });
  password = (await server.ensureAdmin())!.password;
  base = `http://127.0.0.1:${(await server.listen('127.0.0.1', 0)).port}`;
  // Many logins from one address in these tests: the per-minute address limit is not the subject here.
  writeFileSync(join(dir, 'whitelist.dat'), '127.0.0.0/8\n');
  await server.ipGuard.refresh();
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
  jsonRequest(`${base}${path}`, method, body, headers);
const login = (username: string, pw: string): Promise<Reply> => call('POST', '/admin/api/v1/auth/login', { username, password: pw });

async function admin(username = 'admin', pw = password): Promise<Record<string, string>> {
  const r = await login(username, pw);
  expect(r.status, r.body.toString()).toBe(200);
  return bearer(json(r).access_token);
}

async function addOps(extra: Record<string, unknown> = {}): Promise<void> {
  const r = await call('POST', '/admin/api/v1/users', { username: 'ops', password: OPS_PASSWORD, role: 'admin', ...extra }, await admin());
  expect(r.status, r.body.toString()).toBe(201);
}

async function setGlobalValidity(days: number | null): Promise<void> {
  const r = await call('PATCH', '/admin/api/v1/settings/security', { account_validity_days: days }, await admin());
  expect(r.status, r.body.toString()).toBe(200);
}

describe('account validity for administrators', () => {
  it('refuses to expire the last administrator who can manage users (409 last_admin), by either date', async () => {
    const auth = await admin();
    for (const patch of [{ account_valid_until: '2020-01-01' }, { account_valid_from: '2999-01-01' }]) {
      const r = await call('PATCH', '/admin/api/v1/users/admin', patch, auth);
      expect(r.status).toBe(409);
      expect(json(r).error).toBe('last_admin');
    }
    expect((await server.store.getUser('admin'))?.validUntil).toBeNull();
    expect((await login('admin', password)).status).toBe(200);
  });

  it('applies to another administrator: ops expires and can no longer log in, or use its token', async () => {
    await addOps();
    const opsToken = await admin('ops', OPS_PASSWORD);
    const r = await call('PATCH', '/admin/api/v1/users/ops', { account_valid_until: '2020-01-01' }, await admin());
    expect(r.status, r.body.toString()).toBe(200);
    expect(json(await login('ops', OPS_PASSWORD)).error).toBe('invalid_credentials');
    expect((await call('GET', '/admin/api/v1/users', undefined, opsToken)).status).toBe(401);
    // With ops expired, admin is the last one again: its own expiry is refused.
    expect(json(await call('PATCH', '/admin/api/v1/users/admin', { account_valid_until: '2020-01-01' }, await admin())).error).toBe(
      'last_admin',
    );
  });

  it('a global account validity expires other administrators, never the last one', async () => {
    await addOps();
    await setGlobalValidity(30);
    clock.advance(31 * DAY_MS);
    // Both ran out at the same moment (a tie goes to the older account, then the name): admin is the last one and stays usable.
    const users = await call('GET', '/admin/api/v1/users', undefined, await admin());
    expect(users.status).toBe(200);
    // Shown as what it is: active, and why; ops as expired.
    const status = Object.fromEntries((json(users).users as { username: string; status: string }[]).map((u) => [u.username, u.status]));
    expect(status.admin).toBe('Active: the last administrator who can manage users is never expired');
    expect(status.ops).toMatch(/^Expired on /);
    expect(json(await login('ops', OPS_PASSWORD)).error).toBe('invalid_credentials');
  });

  it('with a global validity, the administrator whose own validity lasts longest is the one kept', async () => {
    await addOps({ account_valid_until: '2026-09-01' });
    await setGlobalValidity(30);
    clock.advance(31 * DAY_MS); // admin ran out with the global 30 days; ops is valid until September
    expect((await login('ops', OPS_PASSWORD)).status).toBe(200);
    expect(json(await login('admin', password)).error).toBe('invalid_credentials');
    clock.advance(Date.parse('2026-10-01T00:00:00Z') - clock.now()); // now both ran out: ops ended last, ops is kept
    expect((await login('ops', OPS_PASSWORD)).status).toBe(200);
    expect(json(await login('admin', password)).error).toBe('invalid_credentials');
  });
});
