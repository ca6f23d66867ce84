/**
 * The control panel's Encryption switches, the Relay server form with the live tunnel state,
 * and forms kept across a session expiry — in Debian's Chromium against a platform server whose
 * relay connection dials a real relay on loopback.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MINUTE_MS } from '../../shared/clock.js';
import { agentConfig } from '../../platform-agent/agent/agent.js';
import { RelayConnection } from '../../platform-agent/agent/relay-connection.js';
import type { RelayFlags } from '../../platform-agent/server/relay-settings.js';
import type { Relay } from '../../relay/relay.js';
import { hasChromium, openConsoleWorld, useChromium, type ConsoleWorld } from '../fixtures/browser.js';
import { json, relayFingerprint, request, startRelay, testLogger, TOKEN } from '../fixtures/harness.js';

describe.skipIf(!hasChromium)('control panel in Chromium: encryption, relay server, kept forms', () => {
  const browser = useChromium();
  let world: ConsoleWorld | null = null;
  let relay: Relay | null = null;
  let connection: RelayConnection | null = null;

  afterEach(async () => {
    await connection?.close(0);
    await world?.close();
    await relay?.stop();
    connection = null;
    world = null;
    relay = null;
  });

  async function withRelay(flags: (tunnelUrl: string) => RelayFlags): Promise<ConsoleWorld> {
    relay = await startRelay({ connectWaitMs: 200 });
    const w = await openConsoleWorld(browser());
    connection = new RelayConnection({
      target: w.server.streamTarget,
      store: w.server.store,
      logger: testLogger(),
      clock: w.clock,
      flags: flags(`wss://localhost:${relay.ports!.tunnelPort}`),
      agent: agentConfig({ relays: [], token: '', trust: {}, reconnectMinMs: 20, reconnectMaxMs: 200, drainTimeoutMs: 500 }),
    });
    w.server.attachRelayControl(connection);
    await connection.open();
    world = w;
    return w;
  }

  const mobileStatus = (): Promise<number> => request(`http://127.0.0.1:${relay!.ports!.httpPort}/healthz`).then((r) => r.status);

  it('turns HTTPS on for the Control Panel (the browser moves to https:// on the same port) and for the API', async () => {
    const w = (world = await openConsoleWorld(browser(), {}, { ignoreHTTPSErrors: true }));
    const { page, base } = w;
    await w.logIn();
    expect(await page.getByLabel('HTTPS for the Control Panel').isChecked()).toBe(false);
    expect(await page.locator('main').innerText()).toContain('Default: off (HTTP).');
    await page.getByLabel('HTTPS for the Control Panel').check();
    await page.getByLabel('HTTPS for the API').check();
    await page.getByRole('button', { name: 'Save security settings' }).click();
    const httpsBase = base.replace('http://', 'https://');
    // The session that began over plain HTTP ends; the browser is on the HTTPS login page.
    await page.waitForURL(`${httpsBase}/console/login?m=https`);
    expect(await page.locator('main').innerText()).toContain('HTTPS is on for the control panel. Log in again, now over HTTPS');
    await w.shot('login-https');
    await w.submitLogin();
    await page.waitForURL(`${httpsBase}/console/settings/security`);
    const cookie = (await w.context.cookies()).find((c) => c.name === 'console_session');
    expect(cookie?.secure).toBe(true);
    const text = await page.locator('main').innerText();
    expect(text).toMatch(/HTTPS certificate, SHA-256: ([0-9A-F]{2}:){31}[0-9A-F]{2}/);
    expect(text).toMatch(/holder CN=platform-server, issued by CN=platform-server, valid from \d{4}-\d\d-\d\d \d\d:\d\d UTC to \d{4}-/);
    expect(await page.getByLabel('HTTPS for the Control Panel').isChecked()).toBe(true);
    expect(await page.getByLabel('HTTPS for the API').isChecked()).toBe(true);
    await w.shot('settings-https-on');

    // Plain HTTP now lands on HTTPS; the session carries on there.
    await page.goto(`${base}/console/users`);
    await page.waitForURL(`${httpsBase}/console/users`);
    // The API refuses plain HTTP, and works over TLS on the same port.
    const plain = await w.apiLogin('admin', w.adminPassword, 'phone-1');
    expect(plain.status).toBe(403);
    const overTls = await request(`${httpsBase}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-device-id': 'phone-1' },
      body: JSON.stringify({ username: 'nobody', password: 'wrong-password' }),
    });
    expect(json(overTls).error).toBe('invalid_credentials');

    // And off again, from the HTTPS page.
    await page.goto(`${httpsBase}/console/settings/security`);
    await page.getByLabel('HTTPS for the Control Panel').uncheck();
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await page.waitForURL(/saved=1/);
    expect((await request(`${base}/console/login`)).status).toBe(200);
  });

  it('shows the tunnel state and turns the relay connection off and on without a restart', async () => {
    const w = await withRelay((url) => ({ relays: [url], token: TOKEN, relay_fingerprint: relayFingerprint(), connections: 1 }));
    const { page } = w;
    await connection!.running!.waitConnected(1);
    await w.logIn();
    const state = page.locator('#relay-state');
    expect(await state.innerText()).toContain('Connected');
    const table = await page.getByRole('table', { name: 'Relay connections' }).innerText();
    expect(table).toMatch(/wss:\/\/localhost:\d+\s+Connected \(1 of 1\)\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC/);
    // Fields given on the command line are read-only, with the flag named.
    expect(await page.getByLabel('Relay addresses').getAttribute('readonly')).not.toBeNull();
    expect(await page.locator('#relay').innerText()).toContain('Set by --relay on the command line');
    expect(await page.getByLabel('Agent token').inputValue()).toBe('');
    expect(await page.content()).not.toContain(TOKEN);
    await w.shot('relay-connected');
    expect(await mobileStatus()).toBe(200);

    await page.getByLabel('Use Relay Server').uncheck();
    await page.getByRole('button', { name: 'Save relay settings' }).click();
    await page.waitForURL(/relay=saved/);
    expect(await page.locator('#relay').innerText()).toContain('Relay settings saved and applied.');
    expect(await state.innerText()).toContain('Off');
    expect(await page.getByLabel('Use Relay Server').isChecked()).toBe(false);
    await w.shot('relay-off');
    await expect.poll(() => relay!.registry.list().length).toBe(0);
    expect(await mobileStatus()).toBe(503);

    await page.getByLabel('Use Relay Server').check();
    await page.getByRole('button', { name: 'Save relay settings' }).click();
    await page.waitForURL(/relay=saved/);
    await expect
      .poll(async () => {
        await page.reload();
        return state.innerText();
      })
      .toContain('Connected');
    await w.shot('relay-on-again');
    expect(await mobileStatus()).toBe(200);
  });

  it('sets the relay up from the page: errors next to the field, the token kept out of the page, then connected', async () => {
    const w = await withRelay(() => ({}));
    const { page } = w;
    await w.logIn();
    expect(await page.locator('#relay-state').innerText()).toContain('Off');
    await page.getByLabel('Use Relay Server').check();
    await page.getByLabel('Connections per relay').fill('1');
    await page.getByRole('button', { name: 'Save relay settings' }).click();
    const invalid = page.locator('#relay .row.invalid');
    await expect.poll(() => invalid.innerText()).toMatch(/^Relay addresses[\s\S]*Give at least one relay/);
    expect(await page.getByLabel('Relay addresses').getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByLabel('Use Relay Server').isChecked()).toBe(true);
    await w.shot('relay-error');

    await page.getByLabel('Relay addresses').fill(`wss://localhost:${relay!.ports!.tunnelPort}`);
    await page.getByLabel('Relay certificate pin').fill(relayFingerprint());
    await page.getByLabel('Agent token').fill('short');
    await page.getByRole('button', { name: 'Save relay settings' }).click();
    await expect.poll(() => invalid.innerText()).toMatch(/^Agent token[\s\S]*relay token create/);
    expect(await page.getByLabel('Agent token').inputValue()).toBe(''); // never written back
    expect(await page.getByLabel('Relay addresses').inputValue()).toContain('wss://localhost:');

    await page.getByLabel('Agent token').fill(TOKEN);
    await page.getByRole('button', { name: 'Save relay settings' }).click();
    await page.waitForURL(/relay=saved/);
    await expect
      .poll(async () => {
        await page.reload();
        return page.locator('#relay-state').innerText();
      })
      .toContain('Connected');
    expect(await page.getByLabel('Agent token').getAttribute('placeholder')).toContain('set');
    expect(await page.content()).not.toContain(TOKEN);
    expect(await mobileStatus()).toBe(200);
  });

  it('keeps a half-filled form across a session expiry and gives it back after the login (passwords excepted)', async () => {
    const w = (world = await openConsoleWorld(browser()));
    const { page, base, server, clock } = w;
    await server.settings.update({ admin_inactivity_timeout: '00:30' }, 'test', 'api');
    await w.logIn();
    await page.goto(`${base}/console/users/new`);
    await page.getByLabel('User name', { exact: true }).fill('dora');
    await page.getByLabel('Password', { exact: true }).fill('correct-horse-9');
    await page.getByLabel('Repeat password').fill('correct-horse-9');
    await page.getByLabel('Description').fill('Warehouse tablet, second shift');
    clock.advance(31 * MINUTE_MS);
    await page.getByRole('button', { name: 'Create user' }).click();
    await page.waitForURL(`${base}/console/login?m=draft`);
    expect(await page.locator('main').innerText()).toContain('what you typed in the form is kept');
    await w.shot('login-draft-kept');
    expect(await server.store.getUser('dora')).toBeNull();

    await w.submitLogin();
    await page.waitForURL(`${base}/console/users/new`);
    expect(await page.locator('main').innerText()).toContain('What you typed is back (passwords excepted)');
    expect(await page.getByLabel('User name', { exact: true }).inputValue()).toBe('dora');
    expect(await page.getByLabel('Description').inputValue()).toBe('Warehouse tablet, second shift');
    expect(await page.getByLabel('Password', { exact: true }).inputValue()).toBe('');
    expect(await page.content()).not.toContain('correct-horse-9');
    await w.shot('users-new-draft-back');

    // Used once: the page comes back empty next time.
    await page.goto(`${base}/console/users/new`);
    expect(await page.getByLabel('User name', { exact: true }).inputValue()).toBe('');
  });

  it('keeps a Settings → Security form too, and never one posted without the session it was made for', async () => {
    const w = (world = await openConsoleWorld(browser()));
    const { page, base, server, clock } = w;
    await server.settings.update({ admin_inactivity_timeout: '00:30' }, 'test', 'api');
    await w.logIn();
    await page.getByLabel('Failures before a device lock').fill('7');
    clock.advance(31 * MINUTE_MS);
    await page.getByRole('button', { name: 'Save security settings' }).click();
    await page.waitForURL(`${base}/console/login?m=draft`);
    await w.submitLogin();
    await page.waitForURL(`${base}/console/settings/security`);
    expect(await page.getByLabel('Failures before a device lock').inputValue()).toBe('7');
    expect((await server.store.getSettings()).settings.lockout.device_failures).toBe(5); // kept, not applied

    // A forged post with an expired cookie but no matching CSRF token is not kept.
    const forged = await request(`${base}/console/settings/security`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: 'console_session=expired.token.value' },
      body: 'lockout.device_failures=1&csrf=forged',
    });
    expect(forged.status).toBe(303);
    expect(forged.headers.location).toBe('/console/login?m=expired');
    expect(String(forged.headers['set-cookie'])).not.toContain('console_draft');
  });
});
