/**
 * The control panel's user pages in a real browser: create, edit (password reset, unlock),
 * delete, the last-administrator rule, escaping. Debian's Chromium driven by playwright-core
 * against a PlatformServer in this process (test/fixtures/browser.ts); screenshots go to
 * test-artifacts/console/users-*.png.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasChromium, openConsoleWorld, useChromium, type ConsoleWorld } from '../fixtures/browser.js';
import { request } from '../fixtures/harness.js';

describe.skipIf(!hasChromium)('control panel: users in Chromium', () => {
  const browser = useChromium();
  let world: ConsoleWorld;
  let page: Page;
  let base: string;

  beforeEach(async () => {
    world = await openConsoleWorld(browser());
    ({ page, base } = world);
  });

  afterEach(async () => {
    await world.close();
  });

  const main = (): Promise<string> => page.locator('main').innerText();
  const form = () => page.locator('#user-form');

  /** Logs in as `admin` and opens the page of `username` from the list. */
  async function openUser(username: string): Promise<void> {
    await world.logIn();
    await page.goto(`${base}/console/users`);
    await page.getByRole('link', { name: username, exact: true }).click();
    await page.waitForURL(`${base}/console/users/${encodeURIComponent(username)}/edit`);
  }

  it('creates a user from "New user", lists them, and they can log in', async () => {
    await world.server.groups.create({ name: 'field-staff', role: 'mobile', operations: ['api.read', 'profile.read'] });
    await world.logIn();
    await page.getByRole('link', { name: 'Users' }).click();
    await page.getByRole('link', { name: 'New user' }).click();
    await page.waitForURL(`${base}/console/users/new`);
    expect(await main()).toContain('the user’s own period overrides the global “Account validity for all users” setting');
    await world.shot('users-new');

    await page.getByLabel('User name').fill('carol');
    await page.getByLabel('Password', { exact: true }).fill('correct-horse-1');
    await page.getByLabel('Repeat password').fill('correct-horse-1');
    await page.getByLabel('Role').selectOption({ label: 'Mobile user' });
    await page.getByLabel('Group').selectOption({ label: 'field-staff (Mobile user)' });
    await page.getByLabel('Description').fill('Tablet in the warehouse');
    await page.getByLabel('Account valid until').fill('2027-06-30');
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.waitForURL(`${base}/console/users?created=carol`);
    expect(await main()).toContain('User carol created.');
    expect(await page.getByRole('row', { name: /carol/ }).innerText()).toMatch(
      /carol\s+Mobile user\s+field-staff\s+Tablet in the warehouse\s+Active/,
    );
    await world.shot('users-created');

    const carol = (await world.server.store.getUser('carol'))!;
    expect(carol).toMatchObject({ role: 'mobile', group: 'field-staff', description: 'Tablet in the warehouse', validFrom: null });
    expect(carol.validUntil).toBe(Date.UTC(2027, 5, 30));
    expect((await world.apiLogin('carol', 'correct-horse-1', 'phone-1')).status).toBe(200);
  });

  it('can be filled in and sent with the keyboard alone', async () => {
    await world.logIn();
    await page.goto(`${base}/console/users/new`);
    await page.getByLabel('User name').focus();
    await page.keyboard.type('kim');
    await page.keyboard.press('Tab');
    await page.keyboard.type('correct-horse-1');
    await page.keyboard.press('Tab');
    await page.keyboard.type('correct-horse-1');
    await page.keyboard.press('Tab'); // Role: Mobile user
    await page.keyboard.press('Tab'); // Group: none
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('u-description');
    await page.keyboard.type('typed by keyboard');
    await page.keyboard.press('Enter');
    await page.waitForURL(`${base}/console/users?created=kim`);
    expect((await world.server.store.getUser('kim'))?.description).toBe('typed by keyboard');
  });

  it('shows an error next to its field, keeps what was typed, and never echoes the password', async () => {
    const secret = 'correct-horse-secret-9';
    await world.logIn();
    await page.goto(`${base}/console/users/new`);
    await page.getByLabel('User name').fill('bad name!');
    await page.getByLabel('Password', { exact: true }).fill(secret);
    await page.getByLabel('Repeat password').fill(secret);
    await page.getByLabel('Role').selectOption('external');
    await page.getByLabel('Description').fill('ERP connector');
    await page.getByLabel('Account valid from').fill('2026-01-01');
    await page.getByRole('button', { name: 'Create user' }).click();

    const invalid = form().locator('.row.invalid');
    await expect.poll(() => invalid.count()).toBe(1);
    expect(await invalid.innerText()).toMatch(/^User name[\s\S]*Expected 1-64 characters: letters, digits/);
    expect(await page.getByLabel('User name').getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByLabel('User name').inputValue()).toBe('bad name!');
    expect(await page.getByLabel('Role').inputValue()).toBe('external');
    expect(await page.getByLabel('Description').inputValue()).toBe('ERP connector');
    expect(await page.getByLabel('Account valid from').inputValue()).toBe('2026-01-01');
    expect(await page.getByLabel('Password', { exact: true }).inputValue()).toBe('');
    expect(await page.getByLabel('Repeat password').inputValue()).toBe('');
    expect(await page.content()).not.toContain(secret);
    expect(await main()).toContain('type it again');
    await world.shot('users-new-error');

    // The validators of the admin API decide, through the same Accounts methods: a short password, a taken name, dates out of order.
    await page.getByLabel('User name').fill('erp');
    await page.getByLabel('Password', { exact: true }).fill('short');
    await page.getByLabel('Repeat password').fill('short');
    await page.getByRole('button', { name: 'Create user' }).click();
    await expect.poll(() => invalid.innerText()).toMatch(/^Password[\s\S]*A password needs at least 8 characters/);

    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password', { exact: true }).fill(secret);
    await page.getByLabel('Repeat password').fill(secret);
    await page.getByRole('button', { name: 'Create user' }).click();
    await expect.poll(() => invalid.innerText()).toMatch(/^User name[\s\S]*A user with that name already exists/);

    await page.getByLabel('User name').fill('erp');
    await page.getByLabel('Password', { exact: true }).fill(secret);
    await page.getByLabel('Repeat password').fill(secret);
    await page.getByLabel('Account valid until').fill('2025-12-31');
    await page.getByRole('button', { name: 'Create user' }).click();
    await expect.poll(() => invalid.innerText()).toMatch(/^Account valid until[\s\S]*Must be after “Account valid from”/);
    expect(await world.server.store.getUser('erp')).toBeNull();
  });

  it('refuses two different passwords, with the error next to "Repeat password"', async () => {
    await world.logIn();
    await page.goto(`${base}/console/users/new`);
    await page.getByLabel('User name').fill('dave');
    await page.getByLabel('Password', { exact: true }).fill('correct-horse-1');
    await page.getByLabel('Repeat password').fill('correct-horse-2');
    await page.getByRole('button', { name: 'Create user' }).click();
    const invalid = form().locator('.row.invalid');
    await expect.poll(() => invalid.innerText()).toMatch(/^Repeat password[\s\S]*The two passwords differ/);
    expect(await page.getByLabel('Repeat password').getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByLabel('User name').inputValue()).toBe('dave');
    await world.shot('users-new-mismatch');
    expect(await world.server.store.getUser('dave')).toBeNull();
  });

  it('changes role, group, description and validity, and resets the password', async () => {
    await world.server.groups.create({ name: 'erp-links', role: 'external', operations: ['api.read', 'api.write'] });
    await world.server.accounts.create({ username: 'dave', password: 'old-password-1', role: 'mobile', description: 'Phone' });
    expect((await world.apiLogin('dave', 'old-password-1', 'phone-1')).status).toBe(200);
    await openUser('dave');
    expect(await page.getByLabel('User name').getAttribute('readonly')).not.toBeNull();
    expect(await page.getByLabel('Description').inputValue()).toBe('Phone');
    await world.shot('users-edit');

    // A group of another role is refused next to the field the store names.
    await page.getByLabel('Group').selectOption('erp-links');
    await page.getByRole('button', { name: 'Save user' }).click();
    const invalid = form().locator('.row.invalid');
    await expect.poll(() => invalid.innerText()).toMatch(/^Group[\s\S]*Group erp-links is for role external, the user's role is mobile/);
    expect(await page.getByLabel('Group').inputValue()).toBe('erp-links');

    await page.getByLabel('Role').selectOption({ label: 'External connection' });
    await page.getByLabel('Description').fill('ERP link');
    await page.getByLabel('Account valid from').fill('2026-11-01');
    await page.getByLabel('Account valid until').fill('2027-11-01');
    await page.getByLabel('New password', { exact: true }).fill('new-password-2');
    await page.getByLabel('Repeat new password').fill('new-password-2');
    await page.getByRole('button', { name: 'Save user' }).click();
    await page.waitForURL(`${base}/console/users?saved=dave`);
    expect(await main()).toContain('User dave saved.');
    expect(await page.getByRole('row', { name: /dave/ }).innerText()).toMatch(/dave\s+External connection\s+erp-links\s+ERP link\s+Active/);
    const dave = (await world.server.store.getUser('dave'))!;
    expect(dave).toMatchObject({ role: 'external', group: 'erp-links', description: 'ERP link' });
    expect([dave.validFrom, dave.validUntil]).toEqual([Date.UTC(2026, 10, 1), Date.UTC(2027, 10, 1)]);
    expect((await world.apiLogin('dave', 'old-password-1', 'phone-2')).status).toBe(401);
    expect((await world.apiLogin('dave', 'new-password-2', 'phone-2')).status).toBe(200);

    // Empty password fields keep the password; clearing the dates brings back the global setting.
    await page.getByRole('link', { name: 'dave', exact: true }).click();
    await page.getByLabel('Account valid from').fill('');
    await page.getByLabel('Account valid until').fill('');
    await page.getByRole('button', { name: 'Save user' }).click();
    await page.waitForURL(`${base}/console/users?saved=dave`);
    expect(await world.server.store.getUser('dave')).toMatchObject({ validFrom: null, validUntil: null });
    expect((await world.apiLogin('dave', 'new-password-2', 'phone-3')).status).toBe(200);

    // One password field alone is a mismatch, never a reset.
    await page.getByRole('link', { name: 'dave', exact: true }).click();
    await page.getByLabel('New password', { exact: true }).fill('third-password-3');
    await page.getByRole('button', { name: 'Save user' }).click();
    await expect.poll(() => invalid.innerText()).toMatch(/^Repeat new password[\s\S]*The two passwords differ/);
    expect((await world.apiLogin('dave', 'new-password-2', 'phone-4')).status).toBe(200);
  });

  it('unlocks a user locked by failed logins from the user’s page', async () => {
    writeFileSync(join(world.dir, 'whitelist.dat'), '127.0.0.0/8\n::1\n');
    await world.server.ipGuard.refresh();
    await world.server.accounts.create({ username: 'alice', password: 'correct-horse-1', role: 'mobile' });
    for (const device of ['a', 'b', 'c'])
      for (let i = 0; i < 5; i++) expect((await world.apiLogin('alice', 'wrong-wrong', device)).status).toBe(401);
    expect((await world.apiLogin('alice', 'correct-horse-1', 'phone-0')).status).toBe(401);

    await openUser('alice');
    const box = page.getByLabel('Locked for Security Reasons');
    expect(await box.isChecked()).toBe(true);
    const lockRow = form().locator('.row', { has: box });
    expect(await lockRow.innerText()).toMatch(/Locked for Security Reasons\s+Locked until \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/);
    await world.shot('users-edit-locked');

    await box.uncheck();
    await page.getByRole('button', { name: 'Save user' }).click();
    await page.waitForURL(`${base}/console/users?saved=alice`);
    expect(await page.getByRole('row', { name: /alice/ }).innerText()).toContain('Active');
    expect((await world.apiLogin('alice', 'correct-horse-1', 'phone-0')).status).toBe(200);

    // As in the admin API, an administrator may lock by hand: until an administrator unlocks.
    await page.getByRole('link', { name: 'alice', exact: true }).click();
    expect(await box.isChecked()).toBe(false);
    await box.check();
    await page.getByRole('button', { name: 'Save user' }).click();
    await page.waitForURL(`${base}/console/users?saved=alice`);
    expect(await page.getByRole('row', { name: /alice/ }).innerText()).toContain('Locked until an administrator unlocks it');
    expect((await world.apiLogin('alice', 'correct-horse-1', 'phone-0')).status).toBe(401);
  });

  it('deletes a user only with the confirmation', async () => {
    await world.server.accounts.create({ username: 'erin', password: 'correct-horse-1', role: 'mobile' });
    await openUser('erin');
    await page.getByRole('button', { name: 'Delete user erin' }).click();
    const confirmRow = page.locator('#delete-user .row.invalid');
    await expect.poll(() => confirmRow.innerText()).toContain('Tick the box to confirm, then delete again.');
    expect(await page.getByLabel('I understand: erin is deleted').getAttribute('aria-invalid')).toBe('true');
    await world.shot('users-delete-confirm');
    expect(await world.server.store.getUser('erin')).not.toBeNull();

    await page.getByLabel('I understand: erin is deleted').check();
    await page.getByRole('button', { name: 'Delete user erin' }).click();
    await page.waitForURL(`${base}/console/users?deleted=erin`);
    expect(await main()).toContain('User erin deleted.');
    expect(await page.getByRole('row', { name: /erin/ }).count()).toBe(0);
    expect(await world.server.store.getUser('erin')).toBeNull();
    expect((await world.apiLogin('erin', 'correct-horse-1', 'phone-1')).status).toBe(401);
  });

  it('refuses, in words, to demote, expire or delete the last administrator', async () => {
    await openUser('admin');
    await page.getByLabel('Role').selectOption({ label: 'Mobile user' });
    await page.getByRole('button', { name: 'Save user' }).click();
    const alert = page.locator('main .alert');
    await expect
      .poll(() => alert.innerText())
      .toBe(
        'User admin was not saved: the last administrator who can manage users cannot be removed, demoted, locked, expired or lose admin.users.',
      );
    expect(await page.getByLabel('Role').inputValue()).toBe('mobile');
    await world.shot('users-last-admin');
    expect((await world.server.store.getUser('admin'))?.role).toBe('admin');

    await page.getByLabel('I understand: admin is deleted').check();
    await page.getByRole('button', { name: 'Delete user admin' }).click();
    await expect.poll(() => alert.innerText()).toMatch(/^User admin was not deleted: the last administrator/);
    expect(await world.server.store.getUser('admin')).not.toBeNull();

    await page.goto(`${base}/console/users/admin/edit`);
    await page.getByLabel('Account valid until').fill('2020-01-01');
    await page.getByRole('button', { name: 'Save user' }).click();
    await expect.poll(() => alert.innerText()).toMatch(/^User admin was not saved: the last administrator .* expired/);
    expect((await world.server.store.getUser('admin'))?.validUntil).toBeNull();
    // Still logged in.
    await page.goto(`${base}/console/users`);
    expect(page.url()).toBe(`${base}/console/users`);
  });

  it('ends the session of an administrator who deletes their own account', async () => {
    await world.server.accounts.create({ username: 'root2', password: 'correct-horse-1', role: 'admin' });
    await openUser('admin');
    await page.getByLabel('I understand: admin is deleted').check();
    await page.getByRole('button', { name: 'Delete user admin' }).click();
    await page.waitForURL(`${base}/console/login?m=self-deleted`);
    expect(await main()).toContain('You deleted your own account');
    expect(await world.server.store.getUser('admin')).toBeNull();
    await page.goto(`${base}/console/users`);
    await page.waitForURL(/\/console\/login/);
  });

  it('ends the session of an administrator who resets their own password', async () => {
    await openUser('admin');
    await page.getByLabel('New password', { exact: true }).fill('brand-new-password');
    await page.getByLabel('Repeat new password').fill('brand-new-password');
    await page.getByRole('button', { name: 'Save user' }).click();
    await page.waitForURL(`${base}/console/login?m=self`);
    expect(await main()).toContain('You changed your own account');
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill('brand-new-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${base}/console/settings/security`);
  });

  it('shows markup in a description as text', async () => {
    const markup = '<script>alert(1)</script><img src=x onerror=alert(2)>';
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    await world.logIn();
    await page.goto(`${base}/console/users/new`);
    await page.getByLabel('User name').fill('mallory');
    await page.getByLabel('Password', { exact: true }).fill('correct-horse-1');
    await page.getByLabel('Repeat password').fill('correct-horse-1');
    await page.getByLabel('Description').fill(markup);
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.waitForURL(`${base}/console/users?created=mallory`);
    expect(await page.getByRole('row', { name: /mallory/ }).innerText()).toContain(markup);
    expect(await page.content()).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(await page.locator('main script, main img').count()).toBe(0);
    await page.getByRole('link', { name: 'mallory', exact: true }).click();
    expect(await page.getByLabel('Description').inputValue()).toBe(markup);
    await page.getByLabel('Search users').count();
    expect(dialogs).toEqual([]);
  });

  it('serves the page of a user named "new"', async () => {
    await world.server.accounts.create({ username: 'new', password: 'correct-horse-1', role: 'mobile' });
    await openUser('new');
    expect(await page.locator('h2').innerText()).toBe('User new');
    await page.getByLabel('Description').fill('named new');
    await page.getByRole('button', { name: 'Save user' }).click();
    await page.waitForURL(`${base}/console/users?saved=new`);
    expect((await world.server.store.getUser('new'))?.description).toBe('named new');
  });

  it('needs admin.users: an administrator in a settings-only group gets 403', async () => {
    await world.server.groups.create({ name: 'settings-only', role: 'admin', operations: ['admin.settings'] });
    await world.server.accounts.create({ username: 'sam', password: 'correct-horse-1', role: 'admin', group: 'settings-only' });
    await page.goto(`${base}/console/login`);
    await page.getByLabel('User name').fill('sam');
    await page.getByLabel('Password').fill('correct-horse-1');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${base}/console/settings/security`);
    for (const path of ['/console/users/new', '/console/users/admin/edit']) {
      const response = await page.goto(`${base}${path}`);
      expect(response?.status(), path).toBe(403);
      expect(await main()).toContain('it lacks the operation admin.users');
    }
  });

  describe('over plain HTTP', () => {
    async function sessionCookie(): Promise<string> {
      await world.logIn();
      const session = (await world.context.cookies()).find((c) => c.name === 'console_session');
      return `console_session=${session!.value}`;
    }
    const post = (path: string, cookie: string, body: string): ReturnType<typeof request> =>
      request(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie }, body });

    it('refuses a create, save or delete without the CSRF token (403)', async () => {
      await world.server.accounts.create({ username: 'erin', password: 'correct-horse-1', role: 'mobile' });
      const cookie = await sessionCookie();
      const created = await post(
        '/console/users/new',
        cookie,
        'username=evil&password=correct-horse-1&password_repeat=correct-horse-1&role=admin',
      );
      expect(created.status).toBe(403);
      expect(await world.server.store.getUser('evil')).toBeNull();
      expect((await post('/console/users/erin/edit', cookie, 'role=admin&password=x12345678&password_repeat=x12345678')).status).toBe(403);
      expect((await post('/console/users/erin/delete', cookie, 'confirm_delete=on')).status).toBe(403);
      expect((await world.server.store.getUser('erin'))?.role).toBe('mobile');
    });

    it('answers 404 for an unknown user, 400 for a name with broken percent-encoding, and sends GET of a delete path to the user’s page', async () => {
      const cookie = await sessionCookie();
      expect((await request(`${base}/console/users/nobody/edit`, { headers: { cookie } })).status).toBe(404);
      expect((await request(`${base}/console/users/%E0%A4%A/edit`, { headers: { cookie } })).status).toBe(400);
      const get = await request(`${base}/console/users/admin/delete`, { headers: { cookie } });
      expect(get.status).toBe(303);
      expect(get.headers.location).toBe('/console/users/admin/edit');
    });

    it('never writes a password into a page it sends back', async () => {
      const cookie = await sessionCookie();
      const html = (await request(`${base}/console/users/new`, { headers: { cookie } })).body.toString();
      const csrf = /name="csrf" value="([^"]+)"/.exec(html)![1]!;
      const reply = await post(
        '/console/users/new',
        cookie,
        `csrf=${encodeURIComponent(csrf)}&username=bad%20name%21&password=hunter2-hunter2&password_repeat=hunter2-hunter2&role=mobile`,
      );
      expect(reply.status).toBe(400);
      expect(reply.body.toString()).not.toContain('hunter2');
    });
  });
});
