/**
 * Operations administrators define beside the built-in ones (Mobile SMARTS grants its document
 * types through groups), over real HTTP: defined, listed, held by groups, refused while held, and
 * passed to the backend in X-Platform-Operations with the user's name — in any script — in
 * X-Platform-User. A real SQLite store in a temp folder, a real backend on loopback.
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
let server: PlatformServer;
let base: string;
let admin: Record<string, string>;
let backend: http.Server;
const seen: http.IncomingHttpHeaders[] = [];

beforeAll(async () => {
  backend = http.createServer((req, res) => {
    seen.push(req.headers);
    res.end('ok');
  });
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
});
afterAll(() => backend.close());

beforeEach(async () => {
  dir = mkdtempSync(join(os.tmpdir(), 'custom-operations-'));
  const backendUrl = new URL(`http://127.0.0.1:${(backend.address() as AddressInfo).port}`);
  server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock: new ManualClock(), scrypt: FAST_SCRYPT, backend: backendUrl });
  const { password } = (await server.ensureAdmin())!;
  base = `http://127.0.0.1:${(await server.listen('127.0.0.1', 0)).port}`;
  writeFileSync(join(dir, 'whitelist.dat'), '127.0.0.0/8\n');
  await server.ipGuard.refresh();
  admin = bearer(json(await call('POST', '/admin/api/v1/auth/login', { username: 'admin', password })).access_token);
  seen.length = 0;
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> =>
  jsonRequest(`${base}${path}`, method, body, headers);
const api = (method: string, path: string, body?: unknown): Promise<Reply> => call(method, `/admin/api/v1/${path}`, body, admin);

describe('operations defined by administrators', () => {
  it('are defined, listed after the built-in ones, changed and deleted', async () => {
    const created = await api('POST', 'operations', { name: 'doc.receipt', description: 'Приход товара' });
    expect(created.status).toBe(201);
    expect(json(created)).toEqual({ name: 'doc.receipt', roles: ['mobile', 'external'], description: 'Приход товара', custom: true });
    expect(created.headers.location).toBe('/admin/api/v1/operations/doc.receipt');
    const list = json(await api('GET', 'operations')).operations as { name: string; custom: boolean }[];
    expect(list.at(-1)).toMatchObject({ name: 'doc.receipt', custom: true });
    expect(list.find((op) => op.name === 'api.read')).toMatchObject({ custom: false });
    expect(json(await api('PATCH', 'operations/doc.receipt', { description: 'Приёмка' }))).toMatchObject({ description: 'Приёмка' });
    expect((await api('DELETE', 'operations/doc.receipt')).status).toBe(204);
    expect(json(await api('DELETE', 'operations/doc.receipt')).error).toBe('operation_not_found');
  });

  it('refuses bad and taken names, and the built-in prefixes', async () => {
    expect((await api('POST', 'operations', { name: 'doc.receipt' })).status).toBe(201);
    expect(json(await api('POST', 'operations', { name: 'doc.receipt' })).error).toBe('operation_exists');
    for (const name of ['api.export', 'admin.x', 'profile.write', 'api.read', 'Doc', 'doc..x', 'док', '', 'a'.repeat(65), 7]) {
      const r = await api('POST', 'operations', { name });
      expect(r.status, JSON.stringify(name)).toBe(400);
      expect(json(r)).toMatchObject({ error: 'invalid_request', field: 'name' });
    }
    expect(json(await api('PATCH', 'operations/api.read', { description: 'x' })).error).toBe('operation_not_found');
  });

  it('are held by groups of mobile and external users, not admin ones, and cannot be deleted while held', async () => {
    await api('POST', 'operations', { name: 'doc.receipt', description: 'Приход' });
    const group = await api('POST', 'groups', { name: 'Операторы ТСД', role: 'mobile', operations: ['api.read', 'doc.receipt'] });
    expect(group.status, group.body.toString()).toBe(201);
    expect(json(group).operations).toEqual(['api.read', 'doc.receipt']);
    const adminGroup = await api('POST', 'groups', { name: 'Admins', role: 'admin', operations: ['admin.users', 'doc.receipt'] });
    expect(json(adminGroup)).toMatchObject({ error: 'invalid_request', field: 'operations' });
    const held = await api('DELETE', 'operations/doc.receipt');
    expect(held.status).toBe(409);
    expect(json(held)).toMatchObject({ error: 'operation_in_use', groups: ['Операторы ТСД'] });
  });

  it("pass the user's operations to the backend, and its name in any script, percent-encoded", async () => {
    await api('POST', 'operations', { name: 'doc.receipt' });
    await api('POST', 'operations', { name: 'doc.inventory' });
    await api('POST', 'groups', { name: 'Операторы ТСД', role: 'mobile', operations: ['api.read', 'doc.inventory'] });
    await api('POST', 'users', { username: 'Иванов Иван', password: PASSWORD, role: 'mobile', group: 'Операторы ТСД' });
    await api('POST', 'users', { username: 'bob', password: PASSWORD, role: 'mobile' });
    for (const username of ['Иванов Иван', 'bob']) {
      const login = await call('POST', '/api/v1/auth/login', { username, password: PASSWORD }, { 'x-device-id': 'tsd-1' });
      const r = await call('GET', '/api/v1/documents', undefined, {
        ...bearer(json(login).access_token),
        'x-platform-operations': 'admin.users',
      });
      expect(r.status).toBe(200);
    }
    expect(seen[0]!['x-platform-operations']).toBe('api.read,doc.inventory');
    expect(decodeURIComponent(String(seen[0]!['x-platform-user']))).toBe('Иванов Иван');
    expect(seen[0]!['x-platform-user']).toBe('%D0%98%D0%B2%D0%B0%D0%BD%D0%BE%D0%B2%20%D0%98%D0%B2%D0%B0%D0%BD');
    // A user without a group has every operation of its role, those defined by administrators included (after the built-in ones, by name).
    expect(seen[1]!['x-platform-operations']).toBe('api.read,api.write,profile.read,doc.inventory,doc.receipt');
    expect(seen[1]!['x-platform-user']).toBe('bob');
  });
});
