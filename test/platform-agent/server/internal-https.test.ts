/**
 * The internal listener's Encryption switches: one port speaks HTTP and HTTPS; `https.control_panel`
 * sends plain HTTP to the control panel over to https://, `https.api` refuses plain-HTTP API calls
 * (internal listener and relay HTTP port alike). Switching takes effect on the next request.
 */
import { statSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../shared/clock.js';
import { fingerprintSha256 } from '../../../shared/certs.js';
import type { MuxStream } from '../../../shared/mux/stream.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { json, relayTls, request, testLogger, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };

function expectErrorCode(reply: Reply, status: number, code: string): void {
  expect(reply.status).toBe(status);
  expect(json(reply).error).toBe(code);
}

describe('internal listener: HTTP and HTTPS on one port, Encryption switches', () => {
  let dir: string;
  let server: PlatformServer;
  let port: number;
  let clock: ManualClock;

  beforeEach(async () => {
    dir = mkdtempSync(join(os.tmpdir(), 'internal-https-'));
    clock = new ManualClock();
    server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT, firstByteTimeoutMs: 300 });
    ({ port } = await server.listen('127.0.0.1', 0));
  });

  afterEach(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function encryption(patch: { api?: boolean; control_panel?: boolean }): Promise<void> {
    await server.settings.update({ https: patch }, 'test', 'api');
  }

  it('serves plain HTTP and TLS on the same port, with a self-signed certificate made once in <data>/tls', async () => {
    expect(existsSync(join(dir, 'tls'))).toBe(false);
    expect((await request(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect(existsSync(join(dir, 'tls'))).toBe(false); // HTTP alone makes no certificate
    expect((await request(`https://127.0.0.1:${port}/healthz`)).status).toBe(200);
    const cert = readFileSync(join(dir, 'tls', 'internal.crt'), 'utf8');
    expect(statSync(join(dir, 'tls', 'internal.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'tls')).mode & 0o777).toBe(0o700);
    expect(server.internalTlsFingerprint()).toBe(fingerprintSha256(cert));
    // The client sees that certificate, and pinning by CA works.
    const reply = await request(`https://127.0.0.1:${port}/healthz`, { ca: cert, rejectUnauthorized: true });
    expect(reply.status).toBe(200);
  });

  it('keeps the certificate across restarts of the server', async () => {
    await request(`https://127.0.0.1:${port}/healthz`);
    const first = server.internalTlsFingerprint();
    await server.close();
    server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT });
    ({ port } = await server.listen('127.0.0.1', 0));
    expect(server.internalTlsFingerprint()).toBe(first);
  });

  it('uses the given certificate instead of making one', async () => {
    await server.close();
    const given = relayTls();
    server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT, internalTls: given });
    ({ port } = await server.listen('127.0.0.1', 0));
    expect((await request(`https://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect(server.internalTlsFingerprint()).toBe(fingerprintSha256(given.cert));
    expect(existsSync(join(dir, 'tls'))).toBe(false);
  });

  it('HTTPS for the Control Panel: plain HTTP is redirected (308) to https:// on the same port, at once and without a restart', async () => {
    expect((await request(`http://127.0.0.1:${port}/console/login`)).status).toBe(200);
    await encryption({ control_panel: true });
    const plain = await request(`http://127.0.0.1:${port}/console/login?m=out`);
    expect(plain.status).toBe(308);
    expect(plain.headers.location).toBe(`https://127.0.0.1:${port}/console/login?m=out`);
    expect((await request(`https://127.0.0.1:${port}/console/login`)).status).toBe(200);
    // The API is not affected by the Control Panel switch.
    expect((await request(`http://127.0.0.1:${port}/api/v1/me`)).status).toBe(401);
    // A Host that is not this listener's (here not even a host name) is refused before any redirect echoes it.
    const evil = await request(`http://127.0.0.1:${port}/console/login`, { headers: { host: 'evil.example/@x' } });
    expect(evil.status).toBe(421);
    expect(evil.headers.location).toBeUndefined();
    await encryption({ control_panel: false });
    expect((await request(`http://127.0.0.1:${port}/console/login`)).status).toBe(200);
  });

  it('HTTPS for the API: plain-HTTP API calls get 403 https_required, on the internal listener and from the relay HTTP port', async () => {
    await encryption({ api: true });
    const login = { method: 'POST', headers: { 'content-type': 'application/json', 'x-device-id': 'd1' }, body: '{}' };
    expectErrorCode(await request(`http://127.0.0.1:${port}/api/v1/auth/login`, login), 403, 'https_required');
    expectErrorCode(await request(`https://127.0.0.1:${port}/api/v1/auth/login`, login), 400, 'invalid_request');
    // Health checks stay on plain HTTP.
    expect((await request(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

    // Tunnel streams: the relay says in OPEN whether the mobile client used TLS (meta.tls).
    for (const viaTls of [false, true]) {
      const tunnel = net.createServer((socket) => {
        (socket as unknown as { meta: { tls: boolean } }).meta = { tls: viaTls };
        server.handleStream(socket as unknown as MuxStream);
      });
      await new Promise<void>((resolve) => tunnel.listen(0, '127.0.0.1', resolve));
      try {
        const reply = await request(`http://127.0.0.1:${(tunnel.address() as AddressInfo).port}/api/v1/auth/login`, login);
        if (viaTls) expectErrorCode(reply, 400, 'invalid_request');
        else expectErrorCode(reply, 403, 'https_required');
      } finally {
        tunnel.close();
        server.server.closeAllConnections();
      }
    }
  });

  it('serves the control panel to tunnel streams only with adminThroughRelay, and then over HTTPS only when the switch says so', async () => {
    const tunnelGet = async (viaTls: boolean, target: PlatformServer): Promise<number> => {
      const tunnel = net.createServer((socket) => {
        (socket as unknown as { meta: { tls: boolean } }).meta = { tls: viaTls };
        target.handleStream(socket as unknown as MuxStream);
      });
      await new Promise<void>((resolve) => tunnel.listen(0, '127.0.0.1', resolve));
      try {
        const reply = await request(`http://127.0.0.1:${(tunnel.address() as AddressInfo).port}/console/login`);
        if (reply.status === 403) expect(json(reply).error).toBe('https_required');
        return reply.status;
      } finally {
        tunnel.close();
        target.server.closeAllConnections();
      }
    };
    expect(await tunnelGet(false, server)).toBe(404);
    const otherDir = mkdtempSync(join(os.tmpdir(), 'console-relay-'));
    const other = new PlatformServer({
      dataDir: otherDir,
      logger: testLogger(),
      clock,
      adminThroughRelay: true,
    });
    try {
      expect(await tunnelGet(false, other)).toBe(200);
      await other.settings.update({ https: { control_panel: true } }, 'test', 'api');
      expect(await tunnelGet(false, other)).toBe(403);
      expect(await tunnelGet(true, other)).toBe(200);
    } finally {
      await other.close();
      rmSync(otherDir, { recursive: true, force: true });
    }
  });

  it('refuses TLS below 1.2 on the internal listener', async () => {
    await request(`https://127.0.0.1:${port}/healthz`);
    const outcome = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port, maxVersion: 'TLSv1.1', minVersion: 'TLSv1', rejectUnauthorized: false });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.once('error', () => resolve('refused'));
    });
    expect(outcome).toBe('refused');
  });

  it('closes a connection that sends nothing within the first-byte timeout', async () => {
    const socket = net.connect(port, '127.0.0.1');
    const closed = await new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 5_000).unref();
    });
    expect(closed).toBe(true);
  });
});
