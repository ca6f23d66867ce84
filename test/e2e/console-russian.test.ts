/**
 * The control panel in Russian, in Chromium: a browser that asks for ru-RU gets the Russian
 * pages (`<html lang="ru">`, the vendor's field names), the switch in the page frame changes the
 * language on every page and the choice is remembered (for the account, across a new browser),
 * and full-page screenshots of the main pages in both languages go to test-artifacts/console/
 * (console-ru-*.png, console-en-*.png) to be looked at.
 */
import type { Page } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { hasChromium, openConsoleWorld, useChromium, type ConsoleWorld } from '../fixtures/browser.js';

const RUSSIAN = { locale: 'ru-RU', extraHTTPHeaders: { 'accept-language': 'ru-RU,ru;q=0.9,en;q=0.5' } };

describe.skipIf(!hasChromium)('control panel in Russian, in Chromium', () => {
  const browser = useChromium();
  let world: ConsoleWorld | undefined;

  afterEach(async () => {
    await world?.close();
    world = undefined;
  });

  const logInRussian = async (w: ConsoleWorld): Promise<void> => {
    const { page, base } = w;
    await page.goto(`${base}/console/`);
    await expect.poll(() => page.url()).toBe(`${base}/console/login`);
    await page.getByLabel('Имя пользователя').fill('admin');
    await page.getByLabel('Пароль').fill(w.adminPassword);
    await page.getByRole('button', { name: 'Войти' }).click();
    await page.waitForURL(`${base}/console/settings/security`);
  };

  const lang = (page: Page): Promise<string | null> => page.locator('html').getAttribute('lang');

  it('follows Accept-Language: ru-RU, shows Settings → Security in Russian, and switches to English and back', async () => {
    world = await openConsoleWorld(browser(), {}, RUSSIAN);
    const { page, base } = world;
    await page.goto(`${base}/console/login`);
    expect(await lang(page)).toBe('ru');
    expect(await page.locator('h2').innerText()).toBe('Вход администратора');
    await world.shot('console-ru-login');
    await logInRussian(world);
    expect(await lang(page)).toBe('ru');
    await expect.poll(() => page.getByLabel('Срок действия JWT токена для пользователей API, дни').inputValue()).toBe('14');
    expect(await page.getByLabel('Срок действия JWT токена для администраторов, дни').inputValue()).toBe('14');
    const text = await page.locator('main').innerText();
    for (const s of [
      'Настройки → Безопасность',
      'Аутентификация',
      'Срок действия refresh JWT для пользователей API и администраторов',
      'Срок действия учётной записи пользователя (в днях)',
      'Время жизни сессии при неактивности администратора',
      'По умолчанию: 45 дней 0 часов.',
      'По умолчанию: 14 дней 0 часов.',
      'По умолчанию: 1 день.',
      'По умолчанию: 15 минут.',
      'По умолчанию: 2\u00a0592\u00a0000 секунд (30 дней).',
    ])
      expect(text).toContain(s);
    expect(await page.locator('header').innerText()).toContain('Пользователи');

    // A validation error stays next to its field, the page in Russian.
    await page.getByLabel('Срок действия JWT токена для пользователей API, дни').fill('7');
    await page.getByRole('button', { name: 'Сохранить настройки безопасности' }).click();
    await expect.poll(() => page.locator('.row.invalid').innerText()).toContain('отметьте флажок для подтверждения');
    expect(await lang(page)).toBe('ru');

    // The switch: English on this page and the next, then Russian again.
    await page.goto(`${base}/console/settings/security`);
    await page.getByRole('navigation', { name: 'Язык' }).getByRole('link', { name: 'English' }).click();
    await page.waitForURL(`${base}/console/settings/security`);
    expect(await lang(page)).toBe('en');
    expect(await page.getByLabel('JWT validity for API users, days').inputValue()).toBe('14');
    await page.getByRole('link', { name: 'Users', exact: true }).click();
    await page.waitForURL(`${base}/console/users`);
    expect(await lang(page)).toBe('en');
    expect(await page.locator('h2').innerText()).toBe('Users');
    await page.getByRole('navigation', { name: 'Language' }).getByRole('link', { name: 'Русский' }).click();
    await page.waitForURL(`${base}/console/users`);
    expect(await lang(page)).toBe('ru');
    expect(await page.locator('h2').innerText()).toBe('Пользователи');
  });

  it('remembers the choice for the administrator: English in a new Russian browser after logging in', async () => {
    world = await openConsoleWorld(browser(), {}, RUSSIAN);
    await logInRussian(world);
    await world.page.getByRole('link', { name: 'English' }).click();
    await world.page.waitForURL(`${world.base}/console/settings/security`);
    expect(await world.server.store.getConfig('console.language.admin')).toBe('en');

    // Another browser (no cookie) that asks for Russian: the login page in Russian, the console in English once logged in.
    const other = await browser().newContext(RUSSIAN);
    try {
      const page = await other.newPage();
      await page.goto(`${world.base}/console/login`);
      expect(await lang(page)).toBe('ru');
      await page.getByLabel('Имя пользователя').fill('admin');
      await page.getByLabel('Пароль').fill(world.adminPassword);
      await page.getByRole('button', { name: 'Войти' }).click();
      await page.waitForURL(`${world.base}/console/settings/security`);
      expect(await lang(page)).toBe('en');
      expect(await page.locator('h2').innerText()).toBe('Settings → Security');
    } finally {
      await other.close();
    }
  });

  it('takes full-page screenshots of the main pages in both languages', async () => {
    world = await openConsoleWorld(browser(), {}, RUSSIAN);
    const { page, base, server } = world;
    await server.groups.create({
      name: 'warehouse',
      role: 'mobile',
      operations: ['api.read'],
      description: 'Склад, терминалы сбора данных',
    });
    await server.accounts.create({
      username: 'ivanov',
      password: 'correct-horse-1',
      role: 'mobile',
      group: 'warehouse',
      description: 'Кладовщик',
    });
    for (let i = 0; i < 6; i++) await world.apiLogin('ivanov', 'wrong-password', 'tsd-01');
    await logInRussian(world);
    const pages: Array<[string, string]> = [
      ['settings-security', '/console/settings/security'],
      ['ip-rules', '/console/settings/ip-rules'],
      ['users', '/console/users'],
      ['user-new', '/console/users/new'],
      ['user-edit', '/console/users/ivanov/edit'],
      ['groups', '/console/groups'],
      ['devices', '/console/devices'],
    ];
    for (const language of ['ru', 'en'] as const) {
      for (const [name, path] of pages) {
        await page.goto(`${base}${path}`);
        expect(await lang(page)).toBe(language);
        await world.shot(`console-${language}-${name}`);
        // Nothing wider than the window: long Russian labels wrap instead of overflowing.
        expect(await page.evaluate(() => document.documentElement.scrollWidth), `${language} ${name}`).toBeLessThanOrEqual(1280);
      }
      if (language === 'ru') {
        await page.getByRole('link', { name: 'English' }).click();
        await page.waitForURL(`${base}/console/devices`);
      }
    }
  });
});
