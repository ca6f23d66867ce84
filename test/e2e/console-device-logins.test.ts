/**
 * What the control panel adds for the Mobile SMARTS documents (issue 14), in a real browser:
 * the device logins, the password policy, the per-address limit, generateTokens and the mobile
 * session idle time on Settings → Security (in English and in Russian); a user barcode set and
 * removed on the user's page (then tried by a device); the operations administrators define
 * offered to groups; and the certificate's holder and dates next to its fingerprint.
 * Screenshots: test-artifacts/console/device-logins-*.png.
 */
import type { Page } from 'playwright-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasChromium, openConsoleWorld, useChromium, type ConsoleWorld } from '../fixtures/browser.js';
import { request } from '../fixtures/harness.js';

describe.skipIf(!hasChromium)('control panel: device logins, password policy and operations in Chromium', () => {
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

  function deviceLogin(payload: Record<string, string>): Promise<number> {
    return request(`${base}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-device-id': 'tsd-1' },
      body: JSON.stringify(payload),
    }).then((r) => r.status);
  }

  it('turns the device logins and the password policy on from Settings → Security, with the other mobile settings', async () => {
    await world.logIn();
    await world.shot('device-logins-security-en');
    await page.getByLabel('Password-only login').check();
    await page.getByLabel('Login by barcode').check();
    await page.getByLabel('Minimum password length').fill('10');
    await page.getByLabel('Upper- and lower-case letters').check();
    await page.getByLabel('Digits').check();
    await page.getByLabel('Login attempts a minute from one address').fill('20');
    await page.getByLabel('Mobile session idle time').fill('45');
    await page.getByLabel('Generate tokens (generateTokens)').uncheck();
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await page.waitForURL(/\/console\/settings\/security\?saved=/);
    const { settings } = await world.server.settings.get();
    expect(settings.device_login).toEqual({ password_only: true, barcode: true });
    expect(settings.password_policy).toEqual({ min_length: 10, require_mixed_case: true, require_digit: true });
    expect(settings.ip_login_attempts_per_minute).toBe(20);
    expect(settings.mobile_session_idle_minutes).toBe(45);
    expect(settings.mobile_authorization.generate_tokens).toBe(false);
    // A value below the floor comes back next to its field.
    await page.getByLabel('Minimum password length').fill('7');
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await expect.poll(() => page.locator('.row.invalid').innerText()).toMatch(/^Minimum password length/);
    expect((await world.server.settings.get()).settings.password_policy.min_length).toBe(10);

    // The same page in Russian, with the documents' wording.
    await page.goto(`${base}/console/settings/security?lang=ru`);
    const ru = await main();
    for (const label of ['Вход по штрихкоду', 'Вход только по паролю', 'Минимальная длина пароля', 'Время простоя мобильной сессии'])
      expect(ru).toContain(label);
    await world.shot('device-logins-security-ru');
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(1280);
  });

  it('sets a user barcode on the user page, which a device then logs in with, and removes it', async () => {
    await world.server.settings.update({ device_login: { barcode: true } }, 'test', 'api');
    await world.logIn();
    await page.goto(`${base}/console/users/new`);
    await page.getByLabel('User name').fill('Иванов');
    await page.getByLabel('Password', { exact: true }).fill('Ivanov-Tsd-1');
    await page.getByLabel('Repeat password').fill('Ivanov-Tsd-1');
    await page.getByLabel('User barcode').fill('2000000012345');
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.waitForURL(`${base}/console/users?created=${encodeURIComponent('Иванов')}`);
    expect(await deviceLogin({ barcode: '2000000012345' })).toBe(200);

    await page.goto(`${base}/console/users/${encodeURIComponent('Иванов')}/edit`);
    const html = await page.content();
    expect(html).not.toContain('2000000012345');
    expect(await main()).toContain('A barcode is set.');
    await world.shot('device-logins-user-en');
    await page.getByLabel('Remove the barcode').check();
    await page.getByRole('button', { name: 'Save user' }).click();
    await page.waitForURL(/\/console\/users/);
    expect((await world.server.store.getUser('Иванов'))!.barcodeHash).toBeNull();
    expect(await deviceLogin({ barcode: '2000000012345' })).toBe(401);
  });

  it('offers the operations administrators defined to groups, and shows the certificate holder and dates', async () => {
    await world.server.groups.defineOperation({ name: 'doc.receipt', description: 'Приход товара' });
    await world.logIn();
    await page.goto(`${base}/console/groups`);
    const form = page.locator('form', { has: page.getByRole('button', { name: 'Create group' }) });
    await form.getByLabel('Name').fill('Операторы ТСД');
    await form.getByLabel('doc.receipt').check();
    await form.getByLabel('api.read').check();
    await page.getByRole('button', { name: 'Create group' }).click();
    await expect.poll(async () => (await world.server.store.getGroup('Операторы ТСД'))?.operations).toEqual(['api.read', 'doc.receipt']);
    expect(await main()).toContain('Приход товара');
    await world.shot('device-logins-groups-en');

    await world.server.settings.update({ https: { api: true } }, 'test', 'api');
    await page.goto(`${base}/console/settings/security`);
    expect(await main()).toMatch(
      /SHA-256: ([0-9A-F]{2}:){31}[0-9A-F]{2}; holder CN=platform-server, issued by CN=platform-server, valid from /,
    );
  });
});
