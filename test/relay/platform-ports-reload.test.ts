/**
 * Platform ports changed while the relay runs (Relay.setPlatformPorts, what SIGHUP calls with the
 * config file's list): new ports answer for their platform, removed ones drain as on shutdown
 * (the request in flight is answered, then the connection closes; new connections are refused),
 * unchanged ones and the main listeners keep their connections. Real sockets on loopback.
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Logger } from '../../shared/logger.js';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import { Relay, relayConfig, type PlatformPort } from '../../relay/relay.js';
import { createToken, parseCredentials } from '../../relay/tunnel/agent-credentials.js';
import { json, pipeTo, relayTls, request, startAgent, startRelay, testLogger } from '../fixtures/harness.js';
import { connectClient, type RawConn } from './raw-peers.js';
import { freePort } from '../fixtures/ports.js';

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

interface Upstream {
  url: URL;
  /** Requests to /slow wait for this to be called. */
  release(): void;
  /** Resolves when a /slow request has arrived. */
  slowArrived: Promise<void>;
}

/** A platform server that names itself; `/slow` answers only once released. */
async function upstream(name: string): Promise<Upstream> {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let arrived!: () => void;
  const slowArrived = new Promise<void>((r) => (arrived = r));
  const server = http.createServer((req, res) => {
    const body = JSON.stringify({ platform: name, path: req.url });
    if (req.url === '/slow') {
      arrived();
      void released.then(() => res.end(body));
    } else res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => {
    release();
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return { url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`), release, slowArrived };
}

const courier = createToken('courier-1', 'courier');
const base = createToken('base-1', 'base');
const shop = createToken('shop-1', 'shop');

/** A relay serving courier (main ports) with agents for courier, base and shop, and the given platform ports. */
async function rig(platformPorts: PlatformPort[]): Promise<{ relay: Relay; upstreams: Record<string, Upstream>; logs: Logs }> {
  const relay = await startRelay({
    credentials: parseCredentials([courier.line, base.line, shop.line]),
    defaultPlatform: 'courier',
    platformPorts,
    connectWaitMs: 200,
    drainTimeoutMs: 5_000,
    admin: { host: '127.0.0.1', port: 0 },
  });
  cleanup.push(() => relay.stop(200));
  const logs = spyLogs(relay);
  const upstreams: Record<string, Upstream> = {};
  for (const [name, token] of [
    ['courier', courier.token],
    ['base', base.token],
    ['shop', shop.token],
  ] as const) {
    upstreams[name] = await upstream(name);
    const a: PlatformAgent = await startAgent(relay, { token, target: pipeTo(upstreams[name].url) });
    cleanup.push(() => a.stop(0));
  }
  return { relay, upstreams, logs };
}

type Logs = { info: ReturnType<typeof vi.fn>; error: ReturnType<typeof vi.fn>; events(): string[] };

/** The relay's log events (its logger is private: the test reaches it as the relay does). */
function spyLogs(relay: Relay): Logs {
  const logger = (relay as unknown as { logger: Logger }).logger;
  const info = vi.spyOn(logger, 'info') as unknown as ReturnType<typeof vi.fn>;
  const error = vi.spyOn(logger, 'error') as unknown as ReturnType<typeof vi.fn>;
  return {
    info,
    error,
    events: () => [...info.mock.calls, ...error.mock.calls].map((c) => (c[0] as { event?: string }).event ?? ''),
  };
}

const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: relay\r\n\r\n`;

/** Sends a request on a kept-alive raw connection and waits for the `n`th response's body. */
async function exchange(conn: RawConn, path: string, n: number): Promise<string> {
  conn.write(GET(path));
  const text = await conn.waitFor((t) => t.split(`"path":"${path}"`).length - 1 >= 1 && t.split('HTTP/1.1 ').length - 1 >= n);
  return text;
}

function refused(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('platform ports reloaded', () => {
  it('adds a port: its requests reach its platform, and the admin status lists the platform', async () => {
    const { relay, logs } = await rig([{ platform: 'base', port: 0, tls: true }]);
    const [baseP] = relay.ports!.platformPorts;
    const change = await relay.setPlatformPorts([baseP!, { platform: 'shop', port: 0, tls: false }]);
    expect(change.removed).toEqual([]);
    expect(change.added).toHaveLength(1);
    const shopPort = change.added[0]!.port;
    expect(shopPort).not.toBe(0);
    expect(relay.ports!.platformPorts).toEqual([baseP, { platform: 'shop', port: shopPort, tls: false }]);

    expect(json(await request(`http://127.0.0.1:${shopPort}/s`)).platform).toBe('shop');
    expect(json(await request(`https://127.0.0.1:${baseP!.port}/b`)).platform).toBe('base');
    expect(json(await request(`http://127.0.0.1:${relay.ports!.httpPort}/c`)).platform).toBe('courier');
    const status = json(await request(`http://127.0.0.1:${relay.ports!.adminPort}/status`)) as { platforms: { id: string }[] };
    expect(status.platforms.map((p) => p.id)).toEqual(['base', 'courier', 'shop']);

    const line = logs.info.mock.calls.find((c) => (c[0] as { event?: string }).event === 'platform_ports_reloaded')![0];
    expect(line).toMatchObject({ added: [`shop=http:${shopPort}`], removed: [] });
  });

  it('removes a port while a request is in flight on it: answered, then closed; new connections refused; other connections stay', async () => {
    const { relay, upstreams, logs } = await rig([
      { platform: 'base', port: 0, tls: true },
      { platform: 'shop', port: 0, tls: false },
    ]);
    const [baseP, shopP] = relay.ports!.platformPorts;
    // kept-alive connections on the port that stays, the one that goes, and the main listener
    const kept = await connectClient(shopP!.port);
    const main = await connectClient(relay.ports!.httpPort);
    cleanup.push(
      () => kept.destroy(),
      () => main.destroy(),
    );
    expect(await exchange(kept, '/k1', 1)).toContain('"platform":"shop"');
    expect(await exchange(main, '/m1', 1)).toContain('"platform":"courier"');

    const slow = await connectClient(baseP!.port, { tls: true });
    cleanup.push(() => slow.destroy());
    slow.write(GET('/slow'));
    await upstreams.base!.slowArrived;

    const change = await relay.setPlatformPorts([shopP!]);
    expect(change.removed).toEqual([baseP]);
    expect(change.added).toEqual([]);
    expect(logs.events()).toContain('platform_ports_reloaded');
    expect(await refused(baseP!.port)).toBe('ECONNREFUSED');
    expect(slow.closed).toBe(false);

    upstreams.base!.release();
    const text = await slow.waitFor((t) => t.includes('"path":"/slow"'));
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(text.toLowerCase()).toContain('connection: close');
    expect(text).toContain('"platform":"base"');
    await slow.waitClosed(3_000);
    expect(slow.error).toBeNull();

    // same sockets: the unchanged port and the main listener answer on the connections they had
    expect(await exchange(kept, '/k2', 2)).toContain('"path":"/k2"');
    expect(await exchange(main, '/m2', 2)).toContain('"path":"/m2"');
    expect(kept.closed || main.closed).toBe(false);
    expect(relay.registry.size).toBe(6);
  });

  it('counts a changed platform or TLS flag as a removal and an addition', async () => {
    const { relay } = await rig([{ platform: 'base', port: 0, tls: false }]);
    const [baseP] = relay.ports!.platformPorts;
    const old = await connectClient(baseP!.port);
    cleanup.push(() => old.destroy());
    expect(await exchange(old, '/o', 1)).toContain('"platform":"base"');

    const change = await relay.setPlatformPorts([{ platform: 'shop', port: baseP!.port, tls: true }]);
    expect(change.removed).toEqual([baseP]);
    expect(change.added).toEqual([{ platform: 'shop', port: baseP!.port, tls: true }]);
    // the connection of the old one drains (idle: closed after the drain-idle time)
    await old.waitClosed(3_000);
    expect(json(await request(`https://127.0.0.1:${baseP!.port}/n`)).platform).toBe('shop');
  });

  it('refuses a port given twice, a main port, or a port in use, and keeps the previous set', async () => {
    const { relay, logs } = await rig([{ platform: 'base', port: 0, tls: false }]);
    const before = relay.ports!.platformPorts;
    const [baseP] = before;
    const conn = await connectClient(baseP!.port);
    cleanup.push(() => conn.destroy());
    expect(await exchange(conn, '/a', 1)).toContain('"platform":"base"');

    const free = await freePort();
    await expect(
      relay.setPlatformPorts([baseP!, { platform: 'shop', port: free, tls: false }, { platform: 'courier', port: free, tls: true }]),
    ).rejects.toThrow(`--platform-port: port ${free} is given twice`);
    await expect(relay.setPlatformPorts([{ platform: 'shop', port: relay.ports!.httpsPort, tls: true }])).rejects.toThrow(
      `--platform-port: port ${relay.ports!.httpsPort} is given twice (it is the --https-port)`,
    );

    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => blocker.close(r)));
    const busy = (blocker.address() as AddressInfo).port;
    // a free port given with the busy one is not left open either
    const other = await freePort();
    await expect(
      relay.setPlatformPorts([
        { platform: 'shop', port: other, tls: false },
        { platform: 'courier', port: busy, tls: false },
      ]),
    ).rejects.toThrow(`--platform-port: port ${busy} is in use`);
    expect(await refused(other)).toBe('ECONNREFUSED');

    expect(relay.ports!.platformPorts).toEqual(before);
    expect(logs.error.mock.calls.map((c) => (c[0] as { event?: string }).event)).toEqual([
      'platform_ports_reload_failed',
      'platform_ports_reload_failed',
      'platform_ports_reload_failed',
    ]);
    expect(logs.events()).not.toContain('platform_ports_reloaded');
    // the port in force still answers, on the same connection
    expect(await exchange(conn, '/b', 2)).toContain('"path":"/b"');
  });

  it('refuses at start a platform port given twice or in use', async () => {
    const relayOn = (platformPorts: PlatformPort[]): Relay => {
      const relay = new Relay(
        relayConfig({ tls: relayTls(), host: '127.0.0.1', httpPort: 0, httpsPort: 0, tunnelPort: 0, platformPorts }),
        testLogger(),
      );
      cleanup.push(() => relay.stop(0));
      return relay;
    };
    await expect(
      relayOn([
        { platform: 'a', port: 10561, tls: false },
        { platform: 'b', port: 10561, tls: true },
      ]).start(),
    ).rejects.toThrow('--platform-port: port 10561 is given twice');
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise((r) => blocker.close(r)));
    const busy = (blocker.address() as AddressInfo).port;
    await expect(relayOn([{ platform: 'a', port: busy, tls: false }]).start()).rejects.toThrow(`--platform-port: port ${busy} is in use`);
  });
});
