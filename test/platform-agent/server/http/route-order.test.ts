/**
 * The order of the checks each surface's route table keeps (issue 13 moved the three routers to
 * http/router.ts, the behaviour stayed): an unknown path is 404 before any authentication; a known
 * admin path is authenticated, then authorised, then the thing it names must exist, then a wrong
 * method gets 405 with its allowed list; in the console an unknown page is 404 before the session
 * check, a known one needs the session before its method is checked or its form read.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../../shared/clock.js';
import { PlatformServer } from '../../../../platform-agent/server/platform-server.js';
import { bearer, json, jsonRequest, request, testLogger } from '../../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };

let dir: string;
let platform: PlatformServer;
let base: string;
let token: string;

beforeAll(async () => {
  dir = mkdtempSync(join(os.tmpdir(), 'route-order-'));
  platform = new PlatformServer({ dataDir: dir, logger: testLogger(), clock: new ManualClock(), scrypt: FAST_SCRYPT });
  const { password } = (await platform.ensureAdmin())!;
  const { port } = await platform.listen('127.0.0.1', 0);
  base = `http://127.0.0.1:${port}`;
  const login = await jsonRequest(`${base}/admin/api/v1/auth/login`, 'POST', { username: 'admin', password });
  token = json(login).access_token as string;
});

afterAll(async () => {
  await platform.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('route tables keep their order of checks', () => {
  it('platform paths: /healthz for any method, 405 of the auth routes, /api identified before a missing backend', async () => {
    expect((await request(`${base}/healthz`, { method: 'DELETE' })).status).toBe(200);
    const get = await request(`${base}/api/v1/auth/login`);
    expect(get.status).toBe(405);
    expect(json(get)).toMatchObject({ error: 'method_not_allowed', allowed: ['POST'] });
    expect((await request(`${base}/api/anything`)).status).toBe(401);
    expect((await request(`${base}/api`)).status).toBe(401);
    expect((await request(`${base}/api/v1/me`, { method: 'POST' })).status).toBe(401);
    expect((await request(`${base}/apis`)).status).toBe(404);
    expect((await request(`${base}/nowhere`)).status).toBe(404);
    const bare = await request(`${base}/console`, { method: 'POST' });
    expect(bare.status).toBe(303);
    expect(bare.headers.location).toBe('/console/');
  });

  it('admin API: 404 before authentication, then authentication, authorisation, existence, and 405', async () => {
    for (const path of ['nowhere', 'users/', 'ip-rules/graylist', '', 'users/a/b']) {
      expect((await request(`${base}/admin/api/v1/${path}`)).status, path).toBe(404);
    }
    expect((await request(`${base}/admin/api/v2/users`)).status).toBe(404);
    expect((await request(`${base}/admin/api`)).status).toBe(404);
    expect((await request(`${base}/admin/api/v1/users`, { method: 'PUT' })).status).toBe(401);
    const login = await request(`${base}/admin/api/v1/auth/login`);
    expect(json(login)).toMatchObject({ error: 'method_not_allowed', allowed: ['POST'] });
    const put = await request(`${base}/admin/api/v1/users/admin`, { method: 'PUT', headers: bearer(token) });
    expect(put.status).toBe(405);
    expect(json(put)).toMatchObject({ error: 'method_not_allowed', allowed: ['GET', 'PATCH', 'DELETE'] });
    const device = await request(`${base}/admin/api/v1/devices/nope`, { method: 'POST', headers: bearer(token) });
    expect(device.status).toBe(404);
    expect(json(device).error).toBe('device_not_found');
    const relay = await request(`${base}/admin/api/v1/settings/relay`, { method: 'DELETE', headers: bearer(token) });
    expect(relay.status).toBe(404);
    const list = await request(`${base}/admin/api/v1/ip-rules/whitelist`, { method: 'POST', headers: bearer(token) });
    expect(json(list)).toMatchObject({ error: 'method_not_allowed', allowed: ['GET', 'PUT'] });
    const user = await request(`${base}/admin/api/v1/users/%61dmin`, { headers: bearer(token) });
    expect(json(user).username).toBe('admin');
  });

  it('console: 404 before the session, the session before the method, the CSRF token before the page', async () => {
    expect((await request(`${base}/console/nowhere`)).status).toBe(404);
    expect((await request(`${base}/console/users/`)).status).toBe(404);
    expect((await request(`${base}/console/console.css`, { method: 'POST' })).status).toBe(404);
    expect((await request(`${base}/console/console.css`)).status).toBe(200);
    expect((await request(`${base}/console/login`, { method: 'PUT' })).status).toBe(200);
    const noSession = await request(`${base}/console/users`, { method: 'PUT' });
    expect(noSession.status).toBe(303);
    expect(noSession.headers.location).toBe('/console/login');
    const cookie = { cookie: `console_session=${token}` };
    expect((await request(`${base}/console/users`, { method: 'PUT', headers: cookie })).status).toBe(405);
    expect((await request(`${base}/console/users`, { headers: cookie })).status).toBe(200);
    expect((await request(`${base}/console/users`, { method: 'HEAD', headers: cookie })).status).toBe(200);
    const post = await request(`${base}/console/users`, {
      method: 'POST',
      headers: { ...cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'csrf=wrong',
    });
    expect(post.status).toBe(403);
    const edit = await request(`${base}/console/users/%61dmin/delete`, { headers: cookie });
    expect(edit.status).toBe(303);
    expect(edit.headers.location).toBe('/console/users/admin/edit');
  });
});
