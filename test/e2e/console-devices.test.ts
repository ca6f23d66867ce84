/**
 * The control panel's Devices page in a real browser: every device under the user of its last
 * login with its last sight, failures and lock, the search, unlocking from a search, the link
 * from a user's page, escaping. Debian's Chromium driven by playwright-core against a
 * PlatformServer in this process (test/fixtures/browser.ts); screenshots go to
 * test-artifacts/console/devices-*.png.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HOUR_MS, MINUTE_MS } from '../../shared/clock.js';
import { hasChromium, openConsoleWorld, useChromium, type ConsoleWorld } from '../fixtures/browser.js';

describe.skipIf(!hasChromium)('control panel: devices in Chromium', () => {
  const browser = useChromium();
  let world: ConsoleWorld;
  let page: Page;
  let base: string;

  beforeEach(async () => {
    world = await openConsoleWorld(browser());
    ({ page, base } = world);
    // Many logins from 127.0.0.1 in one test: keep clear of the per-IP login limit.
    writeFileSync(join(world.dir, 'whitelist.dat'), '127.0.0.0/8\n::1\n');
    await world.server.ipGuard.refresh();
  });

  afterEach(async () => {
    await world.close();
  });

  const deviceIds = (): Promise<string[]> => page.locator('table.devices td.device').allInnerTexts();
  const caption = (): Promise<string> => page.locator('table.devices caption').innerText();
  const row = (deviceId: string) => page.getByRole('row', { name: new RegExp(`^${deviceId} `) });

  /**
   * alice on phone-a (12:00 UTC) and tablet-a (13:30), bob on phone-b (14:30) and five wrong
   * passwords on bob-laptop (locked until 14:45), a guessed name on a made-up device.
   */
  async function twoUsersLogIn(): Promise<void> {
    for (const username of ['alice', 'bob']) await world.server.accounts.create({ username, password: 'correct-horse-1', role: 'mobile' });
    expect((await world.apiLogin('alice', 'correct-horse-1', 'phone-a')).status).toBe(200);
    world.clock.advance(90 * MINUTE_MS);
    expect((await world.apiLogin('alice', 'correct-horse-1', 'tablet-a')).status).toBe(200);
    world.clock.advance(HOUR_MS);
    expect((await world.apiLogin('bob', 'correct-horse-1', 'phone-b')).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await world.apiLogin('bob', 'wrong-wrong', 'bob-laptop')).status).toBe(401);
    expect((await world.apiLogin('<i>eve</i>', 'guess-guess', '<b>bot</b>')).status).toBe(401);
  }

  it("lists each user's devices with their last sight, failures and locks, and the search narrows to one user", async () => {
    await twoUsersLogIn();
    await world.logIn();
    await page.getByRole('link', { name: 'Devices' }).click();
    await page.waitForURL(`${base}/console/devices`);

    // By user name, then device id; the administrator's console login is a device too.
    expect(await deviceIds()).toEqual(['<b>bot</b>', 'admin-console@127.0.0.1', 'phone-a', 'tablet-a', 'bob-laptop', 'phone-b']);
    expect(await caption()).toBe('6 devices of 4 users · 1 locked');
    expect(await row('phone-a').innerText()).toMatch(/^phone-a\s+alice\s+2026-11-23 12:00 UTC\s+0\s+Active\s*$/);
    expect(await row('tablet-a').innerText()).toMatch(/^tablet-a\s+alice\s+2026-11-23 13:30 UTC\s+0\s+Active\s*$/);
    expect(await row('phone-b').innerText()).toMatch(/^phone-b\s+bob\s+2026-11-23 14:30 UTC\s+0\s+Active\s*$/);
    expect(await row('bob-laptop').innerText()).toMatch(
      /^bob-laptop\s+bob\s+2026-11-23 14:30 UTC\s+0\s+Locked until 2026-11-23 14:45 UTC\s+Unlock$/,
    );
    expect(await row('bob-laptop').getAttribute('class')).toBe('locked-row');
    expect(await page.locator('tr.locked-row').count()).toBe(1);
    // Escaped: a made-up name and device id show as text; a name without an account says so.
    expect(await row('<b>bot</b>').innerText()).toMatch(
      /^<b>bot<\/b>\s+<i>eve<\/i> \(no such user\)\s+2026-11-23 14:30 UTC\s+1\s+Active\s*$/,
    );
    expect(await page.locator('main b, main i').count()).toBe(0);
    // Each known user links to the user's page; the last sight is a machine-readable time too.
    expect(await row('phone-a').getByRole('link', { name: 'alice' }).getAttribute('href')).toBe('/console/users/alice/edit');
    expect(await row('phone-a').locator('time').getAttribute('datetime')).toBe('2026-11-23T12:00:00.000Z');
    await world.shot('devices-per-user');

    // The search, from the keyboard: bob's devices only, the lock still easy to see.
    await page.getByLabel('Search by user or device').fill('bob');
    await page.getByLabel('Search by user or device').press('Enter');
    await page.waitForURL(`${base}/console/devices?q=bob`);
    expect(await deviceIds()).toEqual(['bob-laptop', 'phone-b']);
    expect(await caption()).toBe('2 devices of 1 user matching “bob” · 1 locked');
    expect(await page.getByLabel('Search by user or device').inputValue()).toBe('bob');
    await world.shot('devices-search');

    // A device id matches too.
    await page.goto(`${base}/console/devices?q=TABLET`);
    expect(await deviceIds()).toEqual(['tablet-a']);
    await page.goto(`${base}/console/devices?q=nothing-like-this`);
    expect(await page.locator('table.devices tbody').innerText()).toBe('No device or user matches “nothing-like-this”.');
  });

  it('unlocks a device from a search and comes back to that search, the device still listed as Active', async () => {
    await twoUsersLogIn();
    await world.logIn();
    await page.goto(`${base}/console/devices?q=bob`);
    await page.getByRole('button', { name: 'Unlock device bob-laptop' }).click();
    await page.waitForURL(`${base}/console/devices?q=bob&unlocked=bob-laptop`);
    expect(await page.getByRole('status').innerText()).toBe('Device bob-laptop is unlocked.');
    expect(await deviceIds()).toEqual(['bob-laptop', 'phone-b']);
    expect(await row('bob-laptop').innerText()).toMatch(/^bob-laptop\s+bob\s+2026-11-23 14:30 UTC\s+0\s+Active\s*$/);
    expect(await caption()).toBe('2 devices of 1 user matching “bob”');
    expect((await world.apiLogin('bob', 'correct-horse-1', 'bob-laptop')).status).toBe(200);
  });

  it("leads from a user's page to that user's devices, and keeps a deleted user's devices, marked", async () => {
    await twoUsersLogIn();
    await world.logIn();
    await page.goto(`${base}/console/users/alice/edit`);
    await page.getByRole('link', { name: 'Devices of alice' }).click();
    await page.waitForURL(`${base}/console/devices?q=alice`);
    expect(await deviceIds()).toEqual(['phone-a', 'tablet-a']);
    await world.server.accounts.delete('alice');
    await page.reload();
    expect(await row('phone-a').innerText()).toMatch(/^phone-a\s+alice \(no such user\)\s+2026-11-23 12:00 UTC/);
    expect(await row('phone-a').getByRole('link').count()).toBe(0);
  });
});
