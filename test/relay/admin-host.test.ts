/**
 * DNS rebinding against the relay's admin listener: a page on the internet whose name resolves to
 * 127.0.0.1 makes the browser send `Host: evil.example` to /status. The listener answers only the
 * names and addresses it is bound to, plus `--admin-allowed-hosts`; anything else gets 421.
 * Real relay on loopback, real sockets, raw requests so that Host is exactly what the test sends.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminServer } from '../../relay/admin/admin-server.js';
import { RelayMetrics } from '../../relay/admin/metrics.js';
import type { Relay } from '../../relay/relay.js';
import { parseAllowedHosts } from '../../shared/allowed-hosts.js';
import { startRelay, testLogger } from '../fixtures/harness.js';

/** Sends `head` as it is and resolves with the status code and the body of the answer. */
function rawRequest(port: number, head: string, host = '127.0.0.1'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host, () => socket.write(head));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
  });
}

const get = (
  port: number,
  hostHeader: string | null,
  path = '/status',
  connectTo = '127.0.0.1',
): Promise<{ status: number; body: string }> =>
  rawRequest(port, `GET ${path} HTTP/1.1\r\n${hostHeader === null ? '' : `Host: ${hostHeader}\r\n`}Connection: close\r\n\r\n`, connectTo);

let relay: Relay | null = null;
let admin: AdminServer | null = null;

afterEach(async () => {
  await admin?.close();
  await relay?.stop();
  relay = null;
  admin = null;
});

describe('relay admin listener: Host check (DNS rebinding)', () => {
  it('refuses a Host it is not bound to with 421 misdirected, and serves its own names', async () => {
    relay = await startRelay({ admin: { host: '127.0.0.1', port: 0 } });
    const port = relay.ports!.adminPort!;
    for (const path of ['/status', '/metrics', '/healthz', '/readyz']) {
      const evil = await get(port, 'evil.example', path);
      expect(evil.status, path).toBe(421);
      expect(JSON.parse(evil.body)).toMatchObject({ error: 'misdirected', message: 'this listener does not serve that host name' });
      expect(evil.body).not.toContain('agents');
    }
    for (const host of ['evil.example:' + port, '127.0.0.1.evil.example', 'localhost.evil.example', `127.0.0.1:${port + 1}`, '10.0.0.1'])
      expect((await get(port, host)).status, host).toBe(421);
    for (const host of ['127.0.0.1', `127.0.0.1:${port}`, 'localhost', `LOCALHOST:${port}`, '[::1]', `[::1]:${port}`])
      expect((await get(port, host)).status, host).toBe(200);
  });

  it('answers a missing Host on HTTP/1.1 with 400', async () => {
    relay = await startRelay({ admin: { host: '127.0.0.1', port: 0 } });
    expect((await get(relay.ports!.adminPort!, null)).status).toBe(400);
  });

  it('serves the names given in --admin-allowed-hosts, and no others', async () => {
    relay = await startRelay({
      admin: { host: '127.0.0.1', port: 0, allowedHosts: parseAllowedHosts('admin-allowed-hosts', ' status.dmz.example, Relay-1 ') },
    });
    const port = relay.ports!.adminPort!;
    expect((await get(port, 'status.dmz.example')).status).toBe(200);
    expect((await get(port, `relay-1:${port}`)).status).toBe(200);
    expect((await get(port, 'other.dmz.example')).status).toBe(421);
  });

  it('bound to a wildcard, takes this host’s address literals but no name unless configured', async () => {
    admin = new AdminServer({
      host: '0.0.0.0',
      port: 0,
      metrics: new RelayMetrics({ platforms: [], processMetrics: false }),
      status: { platforms: () => [], agents: () => [] },
      logger: testLogger(),
    });
    const { port } = await admin.listen();
    expect((await get(port, `127.0.0.1:${port}`)).status).toBe(200);
    expect((await get(port, '127.0.0.2', '/status', '127.0.0.2')).status).toBe(200);
    expect((await get(port, 'localhost')).status).toBe(421);
    expect((await get(port, 'evil.example')).status).toBe(421);
    expect((await get(port, '203.0.113.9')).status).toBe(421);
  });

  it('refuses a bad --admin-allowed-hosts entry, naming the option', () => {
    expect(() => parseAllowedHosts('admin-allowed-hosts', 'ok.example,bad host')).toThrow(/--admin-allowed-hosts: .*"bad host"/);
    expect(parseAllowedHosts('admin-allowed-hosts', undefined)).toEqual([]);
    expect(parseAllowedHosts('admin-allowed-hosts', '[FD00::5],a.example.')).toEqual(['fd00::5', 'a.example']);
  });
});
