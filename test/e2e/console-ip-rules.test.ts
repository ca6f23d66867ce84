/**
 * Settings → IP rules in Chromium (test/fixtures/browser.ts): the whitelist and blacklist
 * textareas, bad lines listed next to their list with the typed text kept, saving to
 * whitelist.dat / blacklist.dat, and the confirmation asked before the administrator blocks their
 * own address. The browser is on 127.0.0.1, so rules for other addresses are checked with
 * `server.ipGuard.decide`. The IP rule files are polled once an hour: what changes at once was
 * put in force by the save. Screenshots go to test-artifacts/console/ip-rules*.png.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hasChromium, openConsoleWorld, useChromium, type ConsoleWorld } from '../fixtures/browser.js';

describe.skipIf(!hasChromium)('control panel: IP rules in Chromium', () => {
  const browser = useChromium();
  let world: ConsoleWorld;
  let page: Page;

  beforeEach(async () => {
    world = await openConsoleWorld(browser(), { ipRulesPollMs: 3_600_000 });
    ({ page } = world);
  });

  afterEach(async () => {
    await world.close();
  });

  const file = (list: string): string => join(world.dir, `${list}.dat`);
  const whitelist = (): ReturnType<Page['getByLabel']> => page.getByLabel('Whitelist entries');
  const blacklist = (): ReturnType<Page['getByLabel']> => page.getByLabel('Blacklist entries');
  const save = (): Promise<void> => page.getByRole('button', { name: 'Save IP rules' }).click();

  async function openIpRules(): Promise<void> {
    await world.logIn();
    await page.getByRole('link', { name: 'IP rules' }).click();
    await page.waitForURL(`${world.base}/console/settings/ip-rules`);
  }

  it('shows both files as they are, how the lists work, the entries in force and lines skipped at load', async () => {
    writeFileSync(file('whitelist'), '# head office\n10.1.0.0/16\n\n2001:db8:1::/48\n');
    writeFileSync(file('blacklist'), '203.0.113.0/24  # abuse\n198.51.100.300\n');
    await world.server.ipGuard.refresh();
    await openIpRules();
    expect(await page.getByRole('link', { name: 'IP rules' }).getAttribute('aria-current')).toBe('page');
    expect(await whitelist().inputValue()).toBe('# head office\n10.1.0.0/16\n\n2001:db8:1::/48\n');
    expect(await blacklist().inputValue()).toBe('203.0.113.0/24  # abuse\n198.51.100.300\n');
    const text = await page.locator('main').innerText();
    for (const s of [
      'The whitelist wins over the blacklist',
      'Whitelisted addresses are exempt from the per-address login limit (10 attempts a minute); device and user locks still apply',
      'the whitelist does not restrict who may connect',
      'Your address: 127.0.0.1, on neither list.',
      '2 entries in force.',
      '1 entry in force.',
      '10.0.0.1-10.0.0.9',
      '2001:db8::/32',
    ])
      expect(text).toContain(s);
    const skipped = page.locator('#ip-blacklist-skipped');
    expect(await skipped.innerText()).toContain('blacklist.dat has 1 line that is skipped');
    expect(await skipped.innerText()).toContain('Line 2: 198.51.100.300 — entry "198.51.100.300" is not an IP address');
    expect(await whitelist().evaluate((el) => getComputedStyle(el).fontFamily)).toMatch(/mono/i);
    await world.shot('ip-rules');
  });

  it('lists each bad line next to its list, keeps what was typed and saves nothing; fixed, it saves the file', async () => {
    writeFileSync(file('whitelist'), '10.1.0.0/16\n');
    await world.server.ipGuard.refresh();
    await openIpRules();
    const typed = '# abusive networks\n203.0.113.0/24\n198.51.100.0/33\n\n2001:db8:bad::/48';
    await blacklist().fill(typed);
    await whitelist().fill('10.1.0.0/16\n10.2.0.0/16\nintranet');
    await save();
    const blacklistRow = page.locator('.row.invalid', { has: page.locator('#ip-blacklist') });
    await expect.poll(() => blacklistRow.count()).toBe(1);
    expect(await blacklistRow.locator('.error').innerText()).toMatch(
      /^The blacklist was not saved: 1 line is not valid\. Nothing was saved\.\s+Line 3: 198\.51\.100\.0\/33 — prefix length "33" must be an integer from 0 to 32 for IPv4$/,
    );
    const whitelistRow = page.locator('.row.invalid', { has: page.locator('#ip-whitelist') });
    expect(await whitelistRow.locator('.error').innerText()).toContain('Line 3: intranet — entry "intranet" is not an IP address');
    expect(await blacklist().inputValue()).toBe(typed);
    expect(await whitelist().inputValue()).toBe('10.1.0.0/16\n10.2.0.0/16\nintranet');
    expect(await blacklist().getAttribute('aria-invalid')).toBe('true');
    expect(await blacklist().getAttribute('aria-describedby')).toContain('ip-blacklist-error');
    await world.shot('ip-rules-errors');
    // Nothing was saved, not even the valid part of the form.
    expect(existsSync(file('blacklist'))).toBe(false);
    expect(readFileSync(file('whitelist'), 'utf8')).toBe('10.1.0.0/16\n');

    await blacklist().fill(typed.replace('/33', '/24'));
    await whitelist().fill('10.1.0.0/16\n10.2.0.0/16\n# intranet');
    await save();
    await page.waitForURL(`${world.base}/console/settings/ip-rules?saved=whitelist,blacklist`);
    expect(await page.locator('.notice').innerText()).toBe('Whitelist saved: 2 entries. Blacklist saved: 3 entries.');
    expect(readFileSync(file('blacklist'), 'utf8')).toBe('# abusive networks\n203.0.113.0/24\n198.51.100.0/24\n\n2001:db8:bad::/48\n');
    expect(readFileSync(file('whitelist'), 'utf8')).toBe('10.1.0.0/16\n10.2.0.0/16\n# intranet\n');
    expect(await blacklist().inputValue()).toBe('# abusive networks\n203.0.113.0/24\n198.51.100.0/24\n\n2001:db8:bad::/48\n');
    expect(world.server.ipGuard.decide('203.0.113.7')).toBe('blacklisted');
    expect(world.server.ipGuard.decide('2001:db8:bad::1')).toBe('blacklisted');
    expect(world.server.ipGuard.decide('10.2.3.4')).toBe('whitelisted');
    await world.shot('ip-rules-saved');
  });

  it('saves only the list that was edited: a change made meanwhile to the other one stays', async () => {
    writeFileSync(file('whitelist'), '10.1.0.0/16\n');
    await world.server.ipGuard.refresh();
    await openIpRules();
    // Someone edits the whitelist on the server while the page is open.
    writeFileSync(file('whitelist'), '10.1.0.0/16\n10.9.0.0/16\n');
    await blacklist().fill('203.0.113.0/24');
    await save();
    await page.waitForURL(`${world.base}/console/settings/ip-rules?saved=blacklist`);
    expect(await page.locator('.notice').innerText()).toBe('Blacklist saved: 1 entry.');
    expect(readFileSync(file('whitelist'), 'utf8')).toBe('10.1.0.0/16\n10.9.0.0/16\n');
    expect(await whitelist().inputValue()).toBe('10.1.0.0/16\n10.9.0.0/16\n');
    await save();
    await page.waitForURL(`${world.base}/console/settings/ip-rules?saved=`);
    expect(await page.locator('.notice').innerText()).toBe('Nothing to save: neither list was changed.');
  });

  it('asks before blocking the administrator’s own address; whitelisting it in the same save needs no confirmation', async () => {
    await openIpRules();
    await blacklist().fill('# every loopback address\n127.0.0.0/8');
    await save();
    const confirm = page.getByLabel('I understand: save anyway and block my own address 127.0.0.1');
    await expect.poll(() => confirm.count()).toBe(1);
    const row = page.locator('.row.invalid', { has: page.locator('#ip-blacklist') });
    expect(await row.locator('.error').innerText()).toBe(
      'Not saved: these rules would block your own address 127.0.0.1 (blacklist line 2: 127.0.0.0/8), and you could no longer reach this control panel from it. Whitelist your address, or tick the box to confirm and save again.',
    );
    expect(await confirm.isChecked()).toBe(false);
    expect(await blacklist().inputValue()).toBe('# every loopback address\n127.0.0.0/8');
    await world.shot('ip-rules-self-block');
    expect(existsSync(file('blacklist'))).toBe(false);

    await whitelist().fill('127.0.0.1 # this console');
    await save();
    await page.waitForURL(`${world.base}/console/settings/ip-rules?saved=whitelist,blacklist`);
    expect(await page.locator('main').innerText()).toContain('Your address: 127.0.0.1, on the whitelist.');
    expect(world.server.ipGuard.decide('127.0.0.2')).toBe('blacklisted');
    expect(world.server.ipGuard.decide('127.0.0.1')).toBe('whitelisted');
  });

  it('blocks the administrator’s own address once the box is ticked: the next page is refused', async () => {
    await openIpRules();
    await blacklist().fill('127.0.0.1');
    await save();
    await page.getByLabel('I understand: save anyway and block my own address 127.0.0.1').check();
    const [response] = await Promise.all([page.waitForResponse(`${world.base}/console/settings/ip-rules?saved=blacklist`), save()]);
    expect(response.status()).toBe(403);
    expect(JSON.parse(await response.text())).toMatchObject({ error: 'ip_blocked' });
    expect(readFileSync(file('blacklist'), 'utf8')).toBe('127.0.0.1\n');
    expect(world.server.ipGuard.decide('127.0.0.1')).toBe('blacklisted');
  });

  it('shows an unreadable file without letting it be overwritten, and still saves the other list', async () => {
    writeFileSync(file('blacklist'), '203.0.113.0/24\n');
    await world.server.ipGuard.refresh();
    // A folder where the file should be: unreadable whoever runs the test (root ignores chmod).
    renameSync(file('blacklist'), join(world.dir, 'old-blacklist.dat'));
    mkdirSync(file('blacklist'));
    await openIpRules();
    expect(await blacklist().isDisabled()).toBe(true);
    expect(await page.locator('.alert').innerText()).toContain(
      'blacklist.dat cannot be read (not a regular file): the rules loaded before stay in force (1 entry).',
    );
    await whitelist().fill('10.1.0.0/16');
    await save();
    await page.waitForURL(`${world.base}/console/settings/ip-rules?saved=whitelist`);
    expect(readFileSync(file('whitelist'), 'utf8')).toBe('10.1.0.0/16\n');
    expect(world.server.ipGuard.decide('203.0.113.7')).toBe('blacklisted');
  });

  it('needs the admin.settings operation', async () => {
    await world.server.groups.create({ name: 'user-admins', role: 'admin', operations: ['admin.users'] });
    await world.server.accounts.create({ username: 'uma', password: 'correct-horse-1', role: 'admin', group: 'user-admins' });
    await page.goto(`${world.base}/console/login`);
    await page.getByLabel('User name').fill('uma');
    await page.getByLabel('Password').fill('correct-horse-1');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(/\/console\/settings\/security/);
    const response = await page.goto(`${world.base}/console/settings/ip-rules`);
    expect(response?.status()).toBe(403);
    expect(await page.locator('.alert').innerText()).toContain('admin.settings');
  });
});
