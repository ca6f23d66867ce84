/**
 * The relay connection managed at run time: validation of the stored settings, flags seeding
 * and overriding them, and the tunnel started, stopped and reconnected by a change, against a
 * real relay on loopback; the admin API's settings/relay route over real HTTP.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import { pino } from 'pino';
import { createCertificateAuthority } from '../../../relay/cert-issuing.js';
import type { Logger } from '../../../shared/logger.js';
import { agentConfig } from '../../../platform-agent/agent/agent.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { RelayConnection } from '../../../platform-agent/agent/relay-connection.js';
import {
  applyRelayPatch,
  defaultRelayConnection,
  MAX_RELAYS,
  RELAY_CONFIG_KEY,
  storedRelayConnection,
  type RelayFlags,
} from '../../../platform-agent/server/relay-settings.js';
import type { Relay } from '../../../relay/relay.js';
import { json, relayFingerprint, request, startRelay, TOKEN, until } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(RelayError);
    expect((err as RelayError).code).toBe('PLATFORM_ERR_INVALID_SETTING');
    return String((err as RelayError).details?.field);
  }
  throw new Error('expected PLATFORM_ERR_INVALID_SETTING');
}

describe('relay connection settings: validation', () => {
  const base = { ...defaultRelayConnection };

  it('accepts a complete connection and normalises the pin and the list', () => {
    const next = applyRelayPatch(base, {
      enabled: true,
      relays: [' wss://relay.dmz.example:10900 ', 'wss://relay.dmz.example:10900', 'wss://b.example:10900'],
      token: TOKEN,
      relay_fingerprint: relayFingerprint().replace(/:/g, '').toLowerCase(),
      connections: 4,
    });
    expect(next.relays).toEqual(['wss://relay.dmz.example:10900', 'wss://b.example:10900']);
    expect(next.relay_fingerprint).toBe(relayFingerprint());
    expect(next.connections).toBe(4);
    expect(base.enabled).toBe(false); // the input is never changed
  });

  it('names the bad field of each kind of bad input', () => {
    expect(fieldOf(() => applyRelayPatch(base, { relays: ['ws://relay:10900'] }))).toBe('relays');
    expect(fieldOf(() => applyRelayPatch(base, { relays: ['wss://user:pw@relay:10900'] }))).toBe('relays');
    expect(fieldOf(() => applyRelayPatch(base, { relays: 'wss://relay:10900' }))).toBe('relays');
    const many = Array.from({ length: MAX_RELAYS + 1 }, (_, i) => `wss://r${i}.example:10900`);
    expect(fieldOf(() => applyRelayPatch(base, { relays: many }))).toBe('relays');
    expect(fieldOf(() => applyRelayPatch(base, { token: 'short' }))).toBe('token');
    expect(fieldOf(() => applyRelayPatch(base, { token: `${TOKEN} with spaces` }))).toBe('token');
    expect(fieldOf(() => applyRelayPatch(base, { token: 'x'.repeat(4097) }))).toBe('token');
    expect(fieldOf(() => applyRelayPatch(base, { relay_ca: 'not a certificate' }))).toBe('relay_ca');
    expect(fieldOf(() => applyRelayPatch(base, { relay_ca: 'A'.repeat(64 * 1024 + 1) }))).toBe('relay_ca');
    expect(fieldOf(() => applyRelayPatch(base, { relay_fingerprint: 'abc' }))).toBe('relay_fingerprint');
    expect(fieldOf(() => applyRelayPatch(base, { connections: 0 }))).toBe('connections');
    expect(fieldOf(() => applyRelayPatch(base, { connections: 65 }))).toBe('connections');
    expect(fieldOf(() => applyRelayPatch(base, { connections: '2' }))).toBe('connections');
    expect(fieldOf(() => applyRelayPatch(base, { enabled: 'yes' }))).toBe('enabled');
    expect(fieldOf(() => applyRelayPatch(base, { insecure: true }))).toBe('insecure');
    expect(fieldOf(() => applyRelayPatch(base, ['enabled']))).toBe('(body)');
  });

  it('turns on only with a relay and a token, which flags may supply', () => {
    expect(fieldOf(() => applyRelayPatch(base, { enabled: true, token: TOKEN }))).toBe('relays');
    expect(fieldOf(() => applyRelayPatch(base, { enabled: true, relays: ['wss://r:1'] }))).toBe('token');
    expect(applyRelayPatch(base, { enabled: true }, { flags: { relays: ['wss://r:1'], token: TOKEN } }).enabled).toBe(true);
  });

  it('asks for the token again when the relays, the CA or the pin change (it would be sent there), unless a flag gives it', () => {
    const set = applyRelayPatch(base, { relays: ['wss://a.example:10900'], token: TOKEN, relay_fingerprint: relayFingerprint() });
    expect(fieldOf(() => applyRelayPatch(set, { relays: ['wss://evil.example:10900'] }))).toBe('token');
    expect(fieldOf(() => applyRelayPatch(set, { relay_fingerprint: null }))).toBe('token');
    expect(applyRelayPatch(set, { relays: ['wss://b.example:10900'], token: TOKEN }).relays).toEqual(['wss://b.example:10900']);
    expect(applyRelayPatch(set, { relays: ['wss://b.example:10900'] }, { flags: { token: TOKEN } }).relays).toEqual([
      'wss://b.example:10900',
    ]);
    // Unchanged values, as the page sends them back, need no token.
    expect(
      applyRelayPatch(set, { relays: ['wss://a.example:10900'], relay_fingerprint: relayFingerprint(), connections: 3 }).connections,
    ).toBe(3);
  });

  it('keeps the token when the patch leaves it out, clears it with null', () => {
    const withToken = applyRelayPatch(base, { token: TOKEN });
    expect(applyRelayPatch(withToken, { connections: 3 }).token).toBe(TOKEN);
    expect(applyRelayPatch(withToken, { token: null }).token).toBeNull();
  });

  it('reads a stored document back, and ignores one that is not valid', () => {
    expect(storedRelayConnection({ enabled: true, relays: ['wss://r:1'], token: TOKEN })).toMatchObject({ enabled: true, connections: 2 });
    expect(storedRelayConnection({ relays: 'nope' })).toBeNull();
    expect(storedRelayConnection(null)).toBeNull();
  });
});

/** A logger that keeps every line (JSON) for assertions. */
function recordingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

describe('relay connection at run time, against a real relay', () => {
  let relay: Relay;
  let dir: string;
  let platform: PlatformServer;
  let connection: RelayConnection | null;
  let log: ReturnType<typeof recordingLogger>;
  const clock = new ManualClock();

  beforeEach(async () => {
    relay = await startRelay({ connectWaitMs: 200 });
    dir = mkdtempSync(join(os.tmpdir(), 'relay-connection-'));
    log = recordingLogger();
    platform = new PlatformServer({ dataDir: dir, logger: log.logger, clock, scrypt: FAST_SCRYPT });
    connection = null;
  });

  afterEach(async () => {
    await connection?.close(0);
    await platform.close();
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const tunnelUrl = (): string => `wss://localhost:${relay.ports!.tunnelPort}`;
  const agents = (): number => relay.registry.list().length;

  async function open(flags: RelayFlags, server = platform): Promise<RelayConnection> {
    const c = new RelayConnection({
      target: server.streamTarget,
      store: server.store,
      logger: log.logger,
      clock,
      flags,
      agent: agentConfig({ relays: [], token: '', trust: {}, reconnectMinMs: 20, reconnectMaxMs: 200, drainTimeoutMs: 500 }),
    });
    server.attachRelayControl(c);
    await c.open();
    return c;
  }

  const mobile = (): Promise<number> => request(`http://127.0.0.1:${relay.ports!.httpPort}/healthz`).then((r) => r.status);

  it('without flags or stored settings: off, and says how to set it up', async () => {
    connection = await open({});
    expect(connection.status()).toEqual({ enabled: false, state: 'off', relays: [] });
    expect(log.lines.find((l) => l.event === 'relay_off')?.msg).toMatch(/control panel/);
    expect(await platform.store.getConfig(RELAY_CONFIG_KEY)).toBeUndefined();
  });

  it('seeds the stored settings from the flags on the first start and connects; the platform answers through the relay', async () => {
    connection = await open({ relays: [tunnelUrl()], token: TOKEN, relay_fingerprint: relayFingerprint(), connections: 2 });
    await until(() => connection!.status().state === 'connected');
    expect(agents()).toBe(2);
    expect(await mobile()).toBe(200);
    expect(await platform.store.getConfig(RELAY_CONFIG_KEY)).toMatchObject({ enabled: true, relays: [tunnelUrl()], connections: 2 });
    const status = connection.status();
    expect(status.relays).toEqual([
      expect.objectContaining({ url: tunnelUrl(), connected: 2, connections: 2, since: expect.stringMatching(/^\d{4}-/) as unknown }),
    ]);
    expect(log.lines.some((l) => l.event === 'relay_settings_seeded')).toBe(true);
    expect(JSON.stringify(log.lines)).not.toContain(TOKEN);
  });

  it('a flag that differs from the stored value wins for the run and is logged; the stored value stays', async () => {
    connection = await open({ relays: [tunnelUrl()], token: TOKEN, relay_fingerprint: relayFingerprint(), connections: 1 });
    await connection.close(0);
    connection = await open({ connections: 2 });
    expect(connection.overrides()).toEqual(['connections']);
    expect(connection.effective().connections).toBe(2);
    expect(connection.settings().connections).toBe(1);
    const line = log.lines.find((l) => l.event === 'relay_setting_overridden');
    expect(line).toMatchObject({ setting: 'connections', flag: '--connections' });
    await until(() => agents() === 2);
    // Same value as stored: no override.
    await connection.close(0);
    connection = await open({ connections: 1 });
    expect(connection.overrides()).toEqual([]);
  });

  it('turning it off stops the tunnel (the relay then has no agent: 503), turning it on brings it back, without a restart', async () => {
    connection = await open({ relays: [tunnelUrl()], token: TOKEN, relay_fingerprint: relayFingerprint() });
    await until(() => agents() === 2);
    await connection.update({ enabled: false }, 'admin', 'api');
    expect(connection.status().state).toBe('off');
    await until(() => agents() === 0);
    expect(await mobile()).toBe(503);
    expect((await platform.store.getConfig(RELAY_CONFIG_KEY)) as { enabled: boolean }).toMatchObject({ enabled: false });
    await connection.update({ enabled: true }, 'admin', 'api');
    await until(() => connection!.status().state === 'connected');
    expect(await mobile()).toBe(200);
    expect(log.lines.filter((l) => l.event === 'relay_settings_changed').map((l) => l.fields)).toEqual([['enabled'], ['enabled']]);
  });

  it('follows a change another instance saved in the shared store (refresh)', async () => {
    connection = await open({ relays: [tunnelUrl()], token: TOKEN, relay_fingerprint: relayFingerprint() });
    // a second instance on the same store, started without flags: it uses what the first saved
    const other = await open({});
    try {
      await until(() => agents() === 4);
      expect(await other.refresh()).toBe(false); // nothing changed
      await connection.update({ enabled: false }, 'admin', 'console');
      expect(await other.refresh()).toBe(true);
      expect(other.status().state).toBe('off');
      await until(() => agents() === 0);
      expect(log.lines.find((l) => l.event === 'relay_settings_followed')).toMatchObject({ fields: ['enabled'], enabled: false });
      await connection.update({ enabled: true, connections: 1 }, 'admin', 'console');
      await other.refresh();
      await until(() => agents() === 2);
    } finally {
      await other.close(0);
    }
  });

  it('stays off across a restart when turned off, even with --relay given', async () => {
    connection = await open({ relays: [tunnelUrl()], token: TOKEN, relay_fingerprint: relayFingerprint() });
    await connection.update({ enabled: false }, 'admin', 'console');
    await connection.close(0);
    connection = await open({ relays: [tunnelUrl()], token: TOKEN, relay_fingerprint: relayFingerprint() });
    expect(connection.status().state).toBe('off');
    expect(agents()).toBe(0);
  });

  it('a wrong token shows as the last error; the right one reconnects', async () => {
    connection = await open({});
    await connection.update(
      { enabled: true, relays: [tunnelUrl()], token: 'wrong-token-0123456789', relay_fingerprint: relayFingerprint(), connections: 1 },
      'admin',
      'api',
    );
    await until(() => connection!.status().relays[0]?.lastError !== null);
    expect(connection.status()).toMatchObject({
      state: 'connecting',
      relays: [{ connected: 0, lastError: expect.stringMatching(/401/) as unknown }],
    });
    await connection.update({ token: TOKEN }, 'admin', 'api');
    await until(() => connection!.status().state === 'connected');
    expect(JSON.stringify(log.lines)).not.toContain('wrong-token-0123456789');
  });

  it('verifies the relay: a CA that did not sign its certificate never connects', async () => {
    connection = await open({});
    const other = await createCertificateAuthority({ commonName: 'some other CA', keyBits: 2048 });
    await connection.update({ enabled: true, relays: [tunnelUrl()], token: TOKEN, relay_ca: other.cert, connections: 1 }, 'admin', 'api');
    await until(() => (connection!.status().relays[0]?.lastError ?? null) !== null);
    expect(agents()).toBe(0);
  });

  it('admin API: GET and PATCH settings/relay (admin.settings), never returning the token; 404 without a relay connection', async () => {
    const admin = await platform.ensureAdmin();
    const { port } = await platform.listen('127.0.0.1', 0);
    const base = `http://127.0.0.1:${port}/admin/api/v1`;
    const login = await request(`${base}/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: admin!.username, password: admin!.password }),
    });
    const auth = { authorization: `Bearer ${String(json(login).access_token)}`, 'content-type': 'application/json' };
    expect((await request(`${base}/settings/relay`, { headers: auth })).status).toBe(404);

    connection = await open({});
    const patch = await request(`${base}/settings/relay`, {
      method: 'PATCH',
      headers: auth,
      body: JSON.stringify({ enabled: true, relays: [tunnelUrl()], token: TOKEN, relay_fingerprint: relayFingerprint(), connections: 1 }),
    });
    expect(patch.status).toBe(200);
    expect(patch.body.toString()).not.toContain(TOKEN);
    expect(json(patch)).toMatchObject({ settings: { enabled: true, token_set: true, connections: 1 }, flags: [], overridden_by_flags: [] });
    await until(() => agents() === 1);
    const bad = await request(`${base}/settings/relay`, { method: 'PATCH', headers: auth, body: JSON.stringify({ connections: 100 }) });
    expect(bad.status).toBe(400);
    expect(json(bad)).toMatchObject({ error: 'invalid_setting', field: 'connections' });
    const get = await request(`${base}/settings/relay`, { headers: auth });
    expect(json(get)).toMatchObject({ status: { state: 'connected', enabled: true } });
    expect((await request(`${base}/settings/relay`, { method: 'DELETE', headers: auth })).status).toBe(405);
  });
});
