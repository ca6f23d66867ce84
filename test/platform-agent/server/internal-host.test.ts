/**
 * DNS rebinding against the platform server's internal listener (the control panel and the admin
 * API): a page whose name resolves to the internal address makes the browser send its own name
 * as Host. The listener answers only its bound names and addresses plus `listenAllowedHosts`
 * (421 otherwise), over HTTP and HTTPS alike; tunnel streams, whose Host is the public name,
 * are not checked. Real sockets, real SQLite in a temp folder, a real relay for the tunnel.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../shared/clock.js';
import { agentConfig } from '../../../platform-agent/agent/agent.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { RelayConnection } from '../../../platform-agent/agent/relay-connection.js';
import type { Relay } from '../../../relay/relay.js';
import { relayFingerprint, startRelay, testLogger, TOKEN, until } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };

let dir: string;
let server: PlatformServer;
let relay: Relay | null = null;
let connection: RelayConnection | null = null;

afterEach(async () => {
  await connection?.close(0);
  await server.close();
  await relay?.stop();
  relay = null;
  connection = null;
  rmSync(dir, { recursive: true, force: true });
});

async function open(bind: string, listenAllowedHosts: string[] = []): Promise<number> {
  dir = mkdtempSync(join(os.tmpdir(), 'internal-host-'));
  server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock: new ManualClock(), scrypt: FAST_SCRYPT, listenAllowedHosts });
  await server.ensureAdmin();
  return (await server.listen(bind, 0)).port;
}

/** One raw request (HTTP, or HTTPS with `secure`), Host exactly as given; resolves with status and body. */
function get(port: number, hostHeader: string | null, path = '/console/login', opts: { secure?: boolean; connectTo?: string } = {}) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const head = `GET ${path} HTTP/1.1\r\n${hostHeader === null ? '' : `Host: ${hostHeader}\r\n`}Connection: close\r\n\r\n`;
    const host = opts.connectTo ?? '127.0.0.1';
    const socket = opts.secure
      ? tls.connect({ port, host, rejectUnauthorized: false }, () => socket.write(head))
      : net.connect(port, host, () => socket.write(head));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
  });
}

describe('internal listener: Host check (DNS rebinding)', () => {
  it('refuses a foreign Host with 421 misdirected on the control panel, the admin API and /healthz, over HTTP and HTTPS', async () => {
    const port = await open('127.0.0.1');
    for (const secure of [false, true])
      for (const path of ['/console/login', '/admin/api/v1/users', '/healthz']) {
        const evil = await get(port, 'evil.example', path, { secure });
        expect(evil.status, `${path} ${secure}`).toBe(421);
        expect(JSON.parse(evil.body)).toMatchObject({ error: 'misdirected' });
      }
    for (const host of [`evil.example:${port}`, `127.0.0.1:${port + 1}`, '127.0.0.1.nip.io'])
      expect((await get(port, host)).status, host).toBe(421);
    for (const host of ['127.0.0.1', `127.0.0.1:${port}`, `localhost:${port}`, '[::1]'])
      expect((await get(port, host)).status, host).toBe(200);
    expect((await get(port, `localhost:${port}`, '/console/login', { secure: true })).status).toBe(200);
    expect((await get(port, null)).status).toBe(400);
  });

  it('serves the names in listenAllowedHosts', async () => {
    const port = await open('127.0.0.1', ['panel.corp.example']);
    expect((await get(port, `panel.corp.example:${port}`)).status).toBe(200);
    expect((await get(port, 'panel2.corp.example')).status).toBe(421);
  });

  it('bound to a wildcard, takes address literals of this host, and names only when configured', async () => {
    const port = await open('0.0.0.0', ['panel.corp.example']);
    expect((await get(port, `127.0.0.3:${port}`, '/healthz', { connectTo: '127.0.0.3' })).status).toBe(200);
    expect((await get(port, 'panel.corp.example')).status).toBe(200);
    expect((await get(port, 'localhost')).status).toBe(421);
    expect((await get(port, 'evil.example')).status).toBe(421);
  });

  it('does not check tunnel streams: their Host is the public name', async () => {
    await open('127.0.0.1');
    relay = await startRelay({ connectWaitMs: 200 });
    connection = new RelayConnection({
      target: server.streamTarget,
      store: server.store,
      logger: testLogger(),
      clock: new ManualClock(),
      flags: {
        relays: [`wss://localhost:${relay.ports!.tunnelPort}`],
        token: TOKEN,
        relay_fingerprint: relayFingerprint(),
        connections: 1,
      },
      agent: agentConfig({ relays: [], token: '', trust: {}, reconnectMinMs: 20, reconnectMaxMs: 200, drainTimeoutMs: 500 }),
    });
    server.attachRelayControl(connection);
    await connection.open();
    await until(() => relay!.registry.list().length === 1);
    // It reaches the platform server (401: no token), not a Host check.
    const reply = await get(relay.ports!.httpPort, 'mobile.example.com', '/api/v1/me');
    expect(reply.status).toBe(401);
    expect(JSON.parse(reply.body)).toMatchObject({ error: 'invalid_token' });
  });
});
