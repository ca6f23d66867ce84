/**
 * The control panel in a real browser: Debian's Chromium driven by playwright-core against a
 * PlatformServer in this process (internal listener on 127.0.0.1:0, real SQLite in a temp folder,
 * a ManualClock). Screenshots of each page go to test-artifacts/console/ (not committed).
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MINUTE_MS, type ManualClock } from '../../shared/clock.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import type { PlatformServer } from '../../platform-agent/server/platform-server.js';
import { hasChromium, openConsoleWorld, useChromium, type ConsoleWorld } from '../fixtures/browser.js';
import { request } from '../fixtures/harness.js';

describe.skipIf(!hasChromium)('control panel in Chromium', () => {
  const browser = useChromium();
  let world: ConsoleWorld;
  let context: BrowserContext;
  let page: Page;
  let dir: string;
  let clock: ManualClock;
  let server: PlatformServer;
  let base: string;

  beforeEach(async () => {
    world = await openConsoleWorld(browser());
    ({ context, page, dir, clock, server, base } = world);
  });

  afterEach(async () => {
    await world.close();
  });

  const shot = (name: string): Promise<Buffer> => world.shot(name);
  const logIn = (): Promise<void> => world.logIn();
  const apiLogin = (username: string, password: string, device: string): ReturnType<ConsoleWorld['apiLogin']> =>
    world.apiLogin(username, password, device);

  it('logs in and shows Settings → Security with units and defaults', async () => {
    await page.goto(`${base}/console/login`);
    await shot('login');
    await logIn();
    await expect.poll(() => page.getByLabel('JWT validity for API users, days').inputValue()).toBe('14');
    expect(await page.getByLabel('Failures before a device lock').inputValue()).toBe('5');
    expect(await page.getByLabel('Mobile token lifetime').inputValue()).toBe('2592000');
    const text = await page.locator('main').innerText();
    for (const s of [
      'Authentication',
      'Authorization failures',
      'Default: 45 days 0 hours.',
      'minutes',
      'hh:mm',
      'Changing token validity logs everyone out',
    ])
      expect(text).toContain(s);
    await shot('settings-security');
  });

  it('changes the API JWT validity only with the confirmation, and the old API token is then refused', async () => {
    await server.accounts.create({ username: 'alice', password: 'correct-horse-1', role: 'mobile' });
    const old = await apiLogin('alice', 'correct-horse-1', 'phone-1');
    expect(old.status).toBe(200);
    const me = () => request(`${base}/api/v1/me`, { headers: { authorization: `Bearer ${String(old.body.access_token)}` } });
    expect((await me()).status).toBe(200);

    await logIn();
    await page.getByLabel('JWT validity for API users, days').fill('7');
    await page.getByRole('button', { name: 'Save security settings' }).click();
    const confirmRow = page.locator('.row.invalid');
    await expect.poll(() => confirmRow.innerText()).toContain('tick the box to confirm');
    expect(await page.getByLabel('JWT validity for API users, days').inputValue()).toBe('7');
    await shot('settings-confirm-required');
    expect((await server.store.getSettings()).settings.api_token_validity.days).toBe(14);

    await page.getByLabel('I understand: a token validity change logs everyone out').check();
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await page.waitForURL(`${base}/console/login?m=tokens`);
    expect(await page.locator('main').innerText()).toContain('everyone, you included, must log in again');
    expect((await server.store.getSettings()).settings.api_token_validity.days).toBe(7);
    expect((await me()).status).toBe(401);
    // The administrator's own session ended too.
    await page.goto(`${base}/console/settings/security`);
    await page.waitForURL(/\/console\/login/);
  });

  it('switches smart lockout on and off with its checkbox (off by default)', async () => {
    await logIn();
    const box = page.getByLabel('Smart lockout');
    expect(await box.isChecked()).toBe(false);
    await box.check();
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await expect.poll(async () => (await server.store.getSettings()).settings.lockout.smart_lockout).toBe(true);
    await page.goto(`${base}/console/settings/security`);
    expect(await page.getByLabel('Smart lockout').isChecked()).toBe(true);
    await page.getByLabel('Smart lockout').uncheck();
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await expect.poll(async () => (await server.store.getSettings()).settings.lockout.smart_lockout).toBe(false);
  });

  it('shows a validation error next to its field and keeps what was typed', async () => {
    await logIn();
    await page.getByLabel('Refresh token validity, days').fill('10');
    await page.getByLabel('Failures before a device lock').fill('4');
    await page.getByRole('button', { name: 'Save security settings' }).click();
    const row = page.locator('.row.invalid');
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.innerText()).toMatch(/Refresh token validity[\s\S]*must exceed api_token_validity/);
    expect(await page.getByLabel('Failures before a device lock').inputValue()).toBe('4');
    expect(await page.getByLabel('Refresh token validity, days').getAttribute('aria-invalid')).toBe('true');
    await shot('settings-field-error');
    expect((await server.store.getSettings()).settings.lockout.device_failures).toBe(5);
  });

  it('shows a user locked by failed logins as "Locked until …" and unlocks them from the page', async () => {
    writeFileSync(join(dir, 'whitelist.dat'), '127.0.0.0/8\n::1\n');
    await server.ipGuard.refresh();
    await server.accounts.create({ username: 'alice', password: 'correct-horse-1', role: 'mobile' });
    await server.accounts.create({ username: 'bob', password: 'correct-horse-1', role: 'mobile' });
    for (const device of ['a', 'b', 'c'])
      for (let i = 0; i < 5; i++) expect((await apiLogin('alice', 'wrong-wrong', device)).status).toBe(401);
    expect((await apiLogin('alice', 'correct-horse-1', 'phone-0')).status).toBe(401);

    await logIn();
    await page.getByRole('link', { name: 'Users' }).click();
    await page.waitForURL(`${base}/console/users`);
    const alice = page.getByRole('row', { name: /alice/ });
    expect(await alice.innerText()).toMatch(/Locked until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/);
    await shot('users');

    await page.getByLabel('Search users').fill('ali');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForURL(`${base}/console/users?q=ali`);
    expect(await page.locator('tbody tr').count()).toBe(1);
    const box = page.getByLabel('Locked for Security Reasons');
    expect(await box.isChecked()).toBe(true);
    await box.uncheck();
    await page.getByRole('button', { name: 'Save lock of alice' }).click();
    await page.waitForURL(/unlocked=alice/);
    expect(await page.locator('main').innerText()).toContain('alice is unlocked.');
    expect(await page.getByRole('row', { name: /alice/ }).innerText()).toContain('Active');
    await shot('users-unlocked');
    expect((await apiLogin('alice', 'correct-horse-1', 'phone-0')).status).toBe(200);
  });

  it('creates a group only with an operation, shows the error next to the field, and lists it', async () => {
    await logIn();
    await page.getByRole('link', { name: 'Groups' }).click();
    await page.waitForURL(`${base}/console/groups`);
    const create = page.locator('#new-group');
    await create.getByLabel('Group name').fill('field-staff');
    await create.getByLabel('Role').selectOption('mobile');
    await create.getByLabel('Description').fill('Phones in the field');
    await page.getByRole('button', { name: 'Create group' }).click();
    const row = create.locator('.row.invalid');
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.innerText()).toMatch(/^Operations[\s\S]*A user group must have at least one operation/);
    expect(await create.getByLabel('Group name').inputValue()).toBe('field-staff');
    expect(await create.getByLabel('Description').inputValue()).toBe('Phones in the field');
    expect(await create.getByLabel('api.read').getAttribute('aria-invalid')).toBe('true');
    await shot('groups-no-operation');
    expect(await server.store.getGroup('field-staff')).toBeNull();

    await create.getByLabel('api.read').check();
    await create.getByLabel('profile.read').check();
    await page.getByRole('button', { name: 'Create group' }).click();
    await page.waitForURL(`${base}/console/groups?created=field-staff`);
    expect(await page.locator('main').innerText()).toContain('Group field-staff created.');
    const listed = page.getByRole('row', { name: /field-staff/ });
    expect(await listed.innerText()).toMatch(/field-staff\s+Mobile user\s+api\.read\s+profile\.read\s+0\s+Phones in the field/);
    expect((await server.store.getGroup('field-staff'))?.operations).toEqual(['api.read', 'profile.read']);

    // Editing it down to no operation is refused the same way; a group with users cannot be deleted.
    const edit = page.locator('#edit-g0');
    await edit.getByLabel('api.read').uncheck();
    await edit.getByLabel('profile.read').uncheck();
    await page.getByRole('button', { name: 'Save group field-staff' }).click();
    await expect.poll(() => edit.locator('.row.invalid').innerText()).toContain('A user group must have at least one operation');
    await server.accounts.create({ username: 'carol', password: 'correct-horse-1', role: 'mobile', group: 'field-staff' });
    await page.getByRole('button', { name: 'Delete group field-staff' }).click();
    await expect.poll(() => page.locator('.alert').innerText()).toContain('Group field-staff cannot be deleted: it still has 1 user.');
    await shot('groups');
    expect(await server.store.getGroup('field-staff')).not.toBeNull();
  });

  it('shows a device locked by failed logins and unlocks it from the Devices page', async () => {
    writeFileSync(join(dir, 'whitelist.dat'), '127.0.0.0/8\n::1\n');
    await server.ipGuard.refresh();
    await server.accounts.create({ username: 'alice', password: 'correct-horse-1', role: 'mobile' });
    for (let i = 0; i < 5; i++) expect((await apiLogin('alice', 'wrong-wrong', 'phone-7')).status).toBe(401);
    expect((await apiLogin('alice', 'correct-horse-1', 'phone-7')).status).not.toBe(200);

    await logIn();
    await page.getByRole('link', { name: 'Devices' }).click();
    await page.waitForURL(`${base}/console/devices`);
    const device = page.getByRole('row', { name: /phone-7/ });
    expect(await device.innerText()).toMatch(
      /phone-7\s+alice\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\s+\d+\s+Locked until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/,
    );
    await shot('devices');

    await page.getByRole('button', { name: 'Unlock device phone-7' }).click();
    await page.waitForURL(`${base}/console/devices?unlocked=phone-7`);
    expect(await page.locator('main').innerText()).toContain('Device phone-7 is unlocked.');
    // The device stays listed, now active, without an Unlock button.
    expect(await page.getByRole('row', { name: /phone-7/ }).innerText()).toMatch(
      /phone-7\s+alice\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\s+0\s+Active/,
    );
    expect(await page.getByRole('button', { name: 'Unlock device phone-7' }).count()).toBe(0);
    await shot('devices-unlocked');
    expect((await apiLogin('alice', 'correct-horse-1', 'phone-7')).status).toBe(200);
  });

  it('refuses a POST without the CSRF token bound to the session (403)', async () => {
    await logIn();
    const session = (await context.cookies()).find((c) => c.name === 'console_session');
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Strict');
    const post = (body: string): ReturnType<typeof request> =>
      request(`${base}/console/settings/security`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: `console_session=${session!.value}` },
        body,
      });
    const hostile = 'lockout.device_failures=1&api_token_validity.days=1&confirm_invalidate=on';
    expect((await post(hostile)).status).toBe(403);
    expect((await post(`${hostile}&csrf=${'A'.repeat(43)}`)).status).toBe(403);
    expect((await server.store.getSettings()).settings.lockout.device_failures).toBe(5);
    // The token from the page, for another session, is refused too.
    const csrf = await page.locator('input[name=csrf]').first().getAttribute('value');
    const other = await request(`${base}/console/users/alice/lock`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: 'console_session=not-a-session' },
      body: `csrf=${csrf}`,
    });
    expect(other.status).toBe(303);
    expect(other.headers.location).toBe('/console/login?m=expired');
  });

  it('sends an idle administrator to the login page with "Your session expired. Log in again."', async () => {
    await logIn();
    await page.getByLabel('Administrator inactivity timeout').fill('00:30');
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await page.waitForURL(`${base}/console/settings/security?saved=1`);
    expect(await page.locator('main').innerText()).toContain('Security settings saved.');
    clock.advance(31 * MINUTE_MS);
    await page.getByRole('link', { name: 'Users' }).click();
    await page.waitForURL(`${base}/console/login?m=expired`);
    expect(await page.locator('main').innerText()).toContain('Your session expired. Log in again.');
    await shot('login-expired');
  });

  it('generates a new signing key only with the confirmation', async () => {
    await logIn();
    await page.getByRole('button', { name: 'Generate new signing key' }).click();
    await expect.poll(() => page.locator('.row.invalid').innerText()).toContain('Tick the box to confirm');
    await page.getByLabel('I understand: everyone is logged out').check();
    await page.getByRole('button', { name: 'Generate new signing key' }).click();
    await page.waitForURL(`${base}/console/login?m=key`);
    expect(await page.locator('main').innerText()).toContain('A new signing key was generated.');
  });

  it('is not served to tunnel streams: /console is 404 there', async () => {
    // A tunnel-like connection: sockets of another listener handed to handleStream, as the tunnel does with streams.
    const tunnel = net.createServer((socket) => server.handleStream(socket as unknown as MuxStream));
    await new Promise<void>((resolve) => tunnel.listen(0, '127.0.0.1', resolve));
    try {
      const tunnelBase = `http://127.0.0.1:${(tunnel.address() as AddressInfo).port}`;
      expect((await request(`${tunnelBase}/healthz`)).status).toBe(200);
      for (const path of ['/console/login', '/console/', '/console', '/console/console.css'])
        expect((await request(`${tunnelBase}${path}`)).status, path).toBe(404);
      expect((await request(`${base}/console/login`)).status).toBe(200);
    } finally {
      tunnel.close();
      server.server.closeAllConnections();
    }
  });
});
