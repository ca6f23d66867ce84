/**
 * User groups and their operations over real HTTP: the admin API for groups, and the operation
 * check on `/api/v1/me`, on requests forwarded to a real backend, and on the admin API. A real
 * SQLite store in a temp folder and a ManualClock, as in platform-api.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../shared/clock.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { bearer, json, jsonRequest, testLogger, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };
const PASSWORD = 'correct-horse-1';

let dir: string;
let clock: ManualClock;
let server: PlatformServer;
let base: string;
let adminPassword: string;
let backend: http.Server;
let backendUrl: URL;

async function open(): Promise<void> {
  server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT, backend: backendUrl });
  const created = await server.ensureAdmin();
  if (created) adminPassword = created.password;
  const { port } = await server.listen('127.0.0.1', 0);
  base = `http://127.0.0.1:${port}`;
  // Many logins per test: keep the per-IP limit out of the way.
  writeFileSync(join(dir, 'whitelist.dat'), '127.0.0.0/8\n::1\n');
  await server.ipGuard.refresh();
}

beforeAll(async () => {
  backend = http.createServer((req, res) => res.end(`backend ${req.method} ${req.url}`));
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  backendUrl = new URL(`http://127.0.0.1:${(backend.address() as AddressInfo).port}`);
});

afterAll(() => backend.close());

beforeEach(async () => {
  dir = mkdtempSync(join(os.tmpdir(), 'groups-api-'));
  clock = new ManualClock();
  await open();
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
  jsonRequest(`${base}${path}`, method, body, headers);

async function adminLogin(username = 'admin', password = adminPassword): Promise<Record<string, string>> {
  const r = await call('POST', '/admin/api/v1/auth/login', { username, password });
  expect(r.status, r.body.toString()).toBe(200);
  return bearer(json(r).access_token);
}

async function apiLogin(username: string): Promise<Record<string, string>> {
  const r = await call('POST', '/api/v1/auth/login', { username, password: PASSWORD }, { 'x-device-id': 'phone-1' });
  expect(r.status, r.body.toString()).toBe(200);
  return bearer(json(r).access_token);
}

async function addGroup(admin: Record<string, string>, name: string, role: string, operations: string[]): Promise<void> {
  const r = await call('POST', '/admin/api/v1/groups', { name, role, operations }, admin);
  expect(r.status, r.body.toString()).toBe(201);
}

async function addUser(admin: Record<string, string>, username: string, role: string, group?: string): Promise<void> {
  const r = await call('POST', '/admin/api/v1/users', { username, password: PASSWORD, role, ...(group ? { group } : {}) }, admin);
  expect(r.status, r.body.toString()).toBe(201);
}

describe('groups in the admin API', () => {
  it('refuses a group without operations with the vendor message, on create and on change', async () => {
    const admin = await adminLogin();
    const created = await call('POST', '/admin/api/v1/groups', { name: 'empty', role: 'mobile', operations: [] }, admin);
    expect(created.status).toBe(400);
    expect(json(created)).toEqual({
      error: 'invalid_request',
      field: 'operations',
      message: 'A user group must have at least one operation',
    });
    await addGroup(admin, 'readers', 'mobile', ['api.read']);
    const changed = await call('PATCH', '/admin/api/v1/groups/readers', { operations: [] }, admin);
    expect(changed.status).toBe(400);
    expect(json(changed)).toEqual(json(created));
  });

  it('creates, lists, shows, changes and deletes groups; lists the operations catalog', async () => {
    const admin = await adminLogin();
    const created = await call(
      'POST',
      '/admin/api/v1/groups',
      { name: 'field-crew', role: 'mobile', operations: ['profile.read', 'api.read'], description: 'Crews on site' },
      admin,
    );
    expect(created.status).toBe(201);
    expect(created.headers.location).toBe('/admin/api/v1/groups/field-crew');
    expect(json(created)).toMatchObject({
      name: 'field-crew',
      role: 'mobile',
      operations: ['api.read', 'profile.read'],
      description: 'Crews on site',
      users: 0,
    });
    expect(
      (await call('POST', '/admin/api/v1/groups', { name: 'field-crew', role: 'mobile', operations: ['api.read'] }, admin)).status,
    ).toBe(409);
    const unknown = await call('POST', '/admin/api/v1/groups', { name: 'x', role: 'mobile', operations: ['api.delete'] }, admin);
    expect(json(unknown)).toMatchObject({ error: 'invalid_request', field: 'operations' });
    const adminOp = await call('POST', '/admin/api/v1/groups', { name: 'x', role: 'mobile', operations: ['admin.users'] }, admin);
    expect(json(adminOp)).toMatchObject({ error: 'invalid_request', field: 'operations' });

    const patched = await call('PATCH', '/admin/api/v1/groups/field-crew', { operations: ['api.write'], description: null }, admin);
    expect(json(patched)).toMatchObject({ operations: ['api.write'], description: null });
    const list = json(await call('GET', '/admin/api/v1/groups', undefined, admin)).groups as { name: string }[];
    expect(list.map((g) => g.name)).toEqual(['field-crew']);
    expect(json(await call('GET', '/admin/api/v1/groups/field-crew', undefined, admin)).operations).toEqual(['api.write']);

    const catalog = json(await call('GET', '/admin/api/v1/operations', undefined, admin)).operations as {
      name: string;
      description: string;
    }[];
    expect(catalog.map((op) => op.name)).toEqual([
      'api.read',
      'api.write',
      'profile.read',
      'admin.users',
      'admin.settings',
      'admin.devices',
    ]);
    expect(catalog.every((op) => op.description.length > 0)).toBe(true);

    expect((await call('DELETE', '/admin/api/v1/groups/field-crew', undefined, admin)).status).toBe(204);
    const gone = await call('GET', '/admin/api/v1/groups/field-crew', undefined, admin);
    expect(gone.status).toBe(404);
    expect(json(gone).error).toBe('group_not_found');
    expect((await call('PUT', '/admin/api/v1/groups', undefined, admin)).status).toBe(405);
  });

  it("puts a user in a group of the user's role only (400 naming the field)", async () => {
    const admin = await adminLogin();
    await addGroup(admin, 'readers', 'mobile', ['api.read']);
    const mismatch = await call(
      'POST',
      '/admin/api/v1/users',
      { username: 'ext', password: PASSWORD, role: 'external', group: 'readers' },
      admin,
    );
    expect(mismatch.status).toBe(400);
    expect(json(mismatch)).toMatchObject({ error: 'invalid_request', field: 'group' });
    const missing = await call(
      'POST',
      '/admin/api/v1/users',
      { username: 'ext', password: PASSWORD, role: 'external', group: 'nope' },
      admin,
    );
    expect(json(missing)).toMatchObject({ error: 'invalid_request', field: 'group' });
    expect((await call('GET', '/admin/api/v1/users/ext', undefined, admin)).status).toBe(404);

    const created = await call(
      'POST',
      '/admin/api/v1/users',
      { username: 'alice', password: PASSWORD, role: 'mobile', group: 'readers', description: 'Site A' },
      admin,
    );
    expect(json(created)).toMatchObject({ username: 'alice', group: 'readers', description: 'Site A' });
    const demote = await call('PATCH', '/admin/api/v1/users/alice', { role: 'external' }, admin);
    expect(demote.status).toBe(400);
    expect(json(demote)).toMatchObject({ error: 'invalid_request', field: 'role' });
    const moved = await call('PATCH', '/admin/api/v1/users/alice', { role: 'external', group: null, description: null }, admin);
    expect(json(moved)).toMatchObject({ role: 'external', group: null, description: null });
  });

  it('refuses to delete a group that still has users (409 group_in_use), and to change its role', async () => {
    const admin = await adminLogin();
    await addGroup(admin, 'readers', 'mobile', ['api.read']);
    await addUser(admin, 'alice', 'mobile', 'readers');
    const del = await call('DELETE', '/admin/api/v1/groups/readers', undefined, admin);
    expect(del.status).toBe(409);
    expect(json(del).error).toBe('group_in_use');
    expect(json(await call('GET', '/admin/api/v1/groups/readers', undefined, admin)).users).toBe(1);
    const role = await call('PATCH', '/admin/api/v1/groups/readers', { role: 'external' }, admin);
    expect(role.status).toBe(409);
    expect(json(role).error).toBe('group_in_use');
    expect((await call('DELETE', '/admin/api/v1/users/alice', undefined, admin)).status).toBe(204);
    expect((await call('DELETE', '/admin/api/v1/groups/readers', undefined, admin)).status).toBe(204);
  });
});

describe('operations enforced on requests', () => {
  it('answers 403 forbidden on /api/v1/me without profile.read, and on the backend without api.read / api.write', async () => {
    const admin = await adminLogin();
    await addGroup(admin, 'readers', 'mobile', ['api.read']);
    await addGroup(admin, 'profile-only', 'mobile', ['profile.read']);
    await addUser(admin, 'reader', 'mobile', 'readers');
    await addUser(admin, 'viewer', 'mobile', 'profile-only');
    await addUser(admin, 'plain', 'mobile');
    const reader = await apiLogin('reader');
    const viewer = await apiLogin('viewer');
    const plain = await apiLogin('plain');

    const me = await call('GET', '/api/v1/me', undefined, reader);
    expect(me.status).toBe(403);
    expect(json(me)).toMatchObject({ error: 'forbidden', operation: 'profile.read' });
    expect((await call('GET', '/api/v1/me', undefined, viewer)).status).toBe(200);

    const read = await call('GET', '/api/v1/orders', undefined, reader);
    expect(read.status).toBe(200);
    expect(read.body.toString()).toBe('backend GET /api/v1/orders');
    expect((await call('HEAD', '/api/v1/orders', undefined, reader)).status).toBe(200);
    const write = await call('POST', '/api/v1/orders', { item: 1 }, reader);
    expect(write.status).toBe(403);
    expect(json(write)).toMatchObject({ error: 'forbidden', operation: 'api.write' });
    expect((await call('GET', '/api/v1/orders', undefined, viewer)).status).toBe(403);
    expect((await call('DELETE', '/api/v1/orders/1', undefined, viewer)).status).toBe(403);

    // Without a group: every operation of the role, as before groups existed.
    expect((await call('GET', '/api/v1/me', undefined, plain)).status).toBe(200);
    expect((await call('POST', '/api/v1/orders', { item: 1 }, plain)).status).toBe(200);
    // Unauthenticated is still 401, not 403.
    expect((await call('GET', '/api/v1/orders')).status).toBe(401);
  });

  it('answers 403 on the admin API routes whose operation the administrator’s group lacks', async () => {
    const admin = await adminLogin();
    await addGroup(admin, 'settings-admins', 'admin', ['admin.settings']);
    await addUser(admin, 'sam', 'admin', 'settings-admins');
    const sam = await adminLogin('sam', PASSWORD);
    for (const path of ['/admin/api/v1/users', '/admin/api/v1/users/admin', '/admin/api/v1/groups', '/admin/api/v1/operations']) {
      const r = await call('GET', path, undefined, sam);
      expect(r.status, path).toBe(403);
      expect(json(r)).toMatchObject({ error: 'forbidden', operation: 'admin.users' });
    }
    expect((await call('POST', '/admin/api/v1/groups', { name: 'g', role: 'mobile', operations: ['api.read'] }, sam)).status).toBe(403);
    const devices = await call('GET', '/admin/api/v1/devices', undefined, sam);
    expect(json(devices)).toMatchObject({ error: 'forbidden', operation: 'admin.devices' });
    expect((await call('GET', '/admin/api/v1/settings/security', undefined, sam)).status).toBe(200);
    // The administrator without a group keeps every admin operation.
    expect((await call('GET', '/admin/api/v1/users', undefined, admin)).status).toBe(200);
  });

  it('applies a group change to tokens already issued, at the next request', async () => {
    const admin = await adminLogin();
    await addGroup(admin, 'crew', 'mobile', ['profile.read', 'api.read']);
    await addUser(admin, 'alice', 'mobile', 'crew');
    const alice = await apiLogin('alice');
    expect((await call('GET', '/api/v1/me', undefined, alice)).status).toBe(200);
    expect((await call('POST', '/api/v1/orders', {}, alice)).status).toBe(403);

    await call('PATCH', '/admin/api/v1/groups/crew', { operations: ['api.read', 'api.write'] }, admin);
    expect((await call('GET', '/api/v1/me', undefined, alice)).status).toBe(403);
    expect((await call('POST', '/api/v1/orders', {}, alice)).status).toBe(200);

    // Leaving the group gives back every operation of the role, with the same token.
    await call('PATCH', '/admin/api/v1/users/alice', { group: null }, admin);
    expect((await call('GET', '/api/v1/me', undefined, alice)).status).toBe(200);
  });
});

describe('restart', () => {
  it('keeps groups, their operations and their users after the server restarts', async () => {
    const admin = await adminLogin();
    await addGroup(admin, 'readers', 'mobile', ['api.read']);
    await addUser(admin, 'alice', 'mobile', 'readers');
    await server.close();
    await open();
    const again = await adminLogin();
    expect(json(await call('GET', '/admin/api/v1/groups/readers', undefined, again))).toMatchObject({
      role: 'mobile',
      operations: ['api.read'],
      users: 1,
    });
    expect(json(await call('GET', '/admin/api/v1/users/alice', undefined, again)).group).toBe('readers');
    const alice = await apiLogin('alice');
    expect((await call('GET', '/api/v1/me', undefined, alice)).status).toBe(403);
    expect((await call('DELETE', '/admin/api/v1/groups/readers', undefined, again)).status).toBe(409);
  });
});
