/**
 * The administrators' surfaces (control panel and admin API) seen from the internet: a real relay
 * on loopback, the platform server's relay connection dialling it, a real SQLite store in a temp
 * folder. Without `adminThroughRelay` a client of the relay learns nothing of them; with it, the
 * HTTPS switch of the Control Panel covers the admin API as well.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../shared/clock.js';
import { agentConfig } from '../../../platform-agent/agent/agent.js';
import { PlatformServer, type PlatformServerOptions } from '../../../platform-agent/server/platform-server.js';
import { RelayConnection } from '../../../platform-agent/agent/relay-connection.js';
import type { Relay } from '../../../relay/relay.js';
import { bearer, json, jsonRequest, relayFingerprint, startRelay, testLogger, TOKEN, until, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };

interface World {
  relay: Relay;
  platform: PlatformServer;
  /** The relay's mobile ports, as the internet sees them. */
  edgeHttp: string;
  edgeHttps: string;
  /** The platform server's internal listener (HTTP and HTTPS on one port). */
  internal: string;
  internalTls: string;
  password: string;
}

const opened: { world: World; connection: RelayConnection; dir: string }[] = [];

afterEach(async () => {
  for (const { world, connection, dir } of opened.splice(0)) {
    await connection.close(0);
    await world.platform.close();
    await world.relay.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

async function openWorld(extra: Partial<PlatformServerOptions> = {}): Promise<World> {
  const relay = await startRelay({ connectWaitMs: 200 });
  const dir = mkdtempSync(join(os.tmpdir(), 'admin-surface-'));
  const clock = new ManualClock();
  const platform = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT, ...extra });
  const password = (await platform.ensureAdmin())!.password;
  const { port } = await platform.listen('127.0.0.1', 0);
  const connection = new RelayConnection({
    target: platform.streamTarget,
    store: platform.store,
    logger: testLogger(),
    clock,
    flags: { relays: [`wss://localhost:${relay.ports!.tunnelPort}`], token: TOKEN, relay_fingerprint: relayFingerprint(), connections: 1 },
    agent: agentConfig({ relays: [], token: '', trust: {}, reconnectMinMs: 20, reconnectMaxMs: 200, drainTimeoutMs: 500 }),
  });
  platform.attachRelayControl(connection);
  await connection.open();
  await until(() => relay.registry.list().length === 1);
  const world: World = {
    relay,
    platform,
    edgeHttp: `http://127.0.0.1:${relay.ports!.httpPort}`,
    edgeHttps: `https://127.0.0.1:${relay.ports!.httpsPort}`,
    internal: `http://127.0.0.1:${port}`,
    internalTls: `https://127.0.0.1:${port}`,
    password,
  };
  opened.push({ world, connection, dir });
  return world;
}

const adminLogin = (base: string, password: string): Promise<Reply> =>
  jsonRequest(`${base}/admin/api/v1/auth/login`, 'POST', { username: 'admin', password });

async function httpsForControlPanel(w: World): Promise<void> {
  await w.platform.settings.update({ https: { control_panel: true } }, 'test', 'api');
}

describe('the admin API stays inside', () => {
  it('through the relay, the admin API and the control panel answer as a path that does not exist', async () => {
    const w = await openWorld();
    const missing = await jsonRequest(`${w.edgeHttps}/no/such/path`, 'GET');
    expect(missing.status).toBe(404);
    expect(json(missing).error).toBe('not_found');
    for (const edge of [w.edgeHttp, w.edgeHttps]) {
      // The right password, from the internet: refused before it is looked at.
      const login = await adminLogin(edge, w.password);
      expect(login.status).toBe(404);
      expect(json(login)).toEqual(json(missing));
      for (const path of ['/admin/api/v1/users', '/admin/api/v1/settings/security', '/admin/api', '/console/login']) {
        const r = await jsonRequest(`${edge}${path}`, 'GET');
        expect(r.status, path).toBe(404);
        expect(json(r), path).toEqual(json(missing));
      }
    }
    // Inside, on the internal listener, the same password works.
    expect((await adminLogin(w.internal, w.password)).status).toBe(200);
  });

  it('HTTPS for the Control Panel covers the admin API on the internal listener: plain HTTP gets 403 https_required, TLS works', async () => {
    const w = await openWorld();
    const token = json(await adminLogin(w.internal, w.password)).access_token;
    await httpsForControlPanel(w);
    const plain = await adminLogin(w.internal, w.password);
    expect(plain.status).toBe(403);
    expect(json(plain).error).toBe('https_required');
    // Not even a valid token is looked at over plain HTTP.
    const users = await jsonRequest(`${w.internal}/admin/api/v1/users`, 'GET', undefined, bearer(token));
    expect(users.status).toBe(403);
    expect(json(users).error).toBe('https_required');
    expect((await adminLogin(w.internalTls, w.password)).status).toBe(200);
    expect((await jsonRequest(`${w.internalTls}/admin/api/v1/users`, 'GET', undefined, bearer(token))).status).toBe(200);
  });

  it('with adminThroughRelay, the relay serves the admin API, and with the switch on only on its HTTPS port', async () => {
    const w = await openWorld({ adminThroughRelay: true });
    expect((await adminLogin(w.edgeHttp, w.password)).status).toBe(200);
    await httpsForControlPanel(w);
    const plain = await adminLogin(w.edgeHttp, w.password);
    expect(plain.status).toBe(403);
    expect(json(plain).error).toBe('https_required');
    const overTls = await adminLogin(w.edgeHttps, w.password);
    expect(overTls.status).toBe(200);
    expect((await jsonRequest(`${w.edgeHttps}/admin/api/v1/users`, 'GET', undefined, bearer(json(overTls).access_token))).status).toBe(200);
  });
});
