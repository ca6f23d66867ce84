import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import { defaultEdgeLimits } from '../../relay/edge/edge-limits.js';
import type { Relay } from '../../relay/relay.js';
import { ManualClock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';
import { json, request, startAgent, startRelay } from '../fixtures/harness.js';
import { outcome, rawExchange, tlsHandshake, workCounter } from './edge-clients.js';

const root = mkdtempSync(join(tmpdir(), 'edge-per-ip-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A relay with IP rules whose whitelist holds 127.0.0.3 (exempt from the per-IP limits). */
async function relayWith(limits: Partial<ReturnType<typeof defaultEdgeLimits>>, clock?: ManualClock): Promise<Relay> {
  const whitelistFile = join(mkdtempSync(join(root, 'case-')), 'whitelist.txt');
  writeFileSync(whitelistFile, '127.0.0.3\n');
  return startRelay({
    limits: { ...defaultEdgeLimits(), ...limits },
    ipRules: { whitelistFile, whitelistOnly: false, pollIntervalMs: 60_000, maxFileBytes: defaults.ipRulesMaxFileBytes },
    ...(clock ? { clock } : {}),
  });
}

/** Opens `n` TCP connections from `localAddress` and waits until the relay counts them. */
async function hold(relay: Relay, n: number, localAddress: string, port = relay.ports!.httpPort): Promise<net.Socket[]> {
  const before = relay.edge.clientLimits.connectionsOf(localAddress);
  const sockets = Array.from({ length: n }, () => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    socket.on('error', () => {});
    return socket;
  });
  await vi.waitFor(() => expect(relay.edge.clientLimits.connectionsOf(localAddress)).toBe(before + n), { timeout: 5_000 });
  return sockets;
}

describe('max connections per client IP', () => {
  let relay: Relay;
  let agent: PlatformAgent;
  beforeAll(async () => {
    relay = await relayWith({ maxConnectionsPerIp: 3 });
    agent = await startAgent(relay);
  });
  afterAll(async () => {
    await agent.stop(100);
    await relay.stop(100);
  });

  it('answers a plain-HTTP connection past the limit with 503 too_many_connections and Connection: close', async () => {
    const before = relay.edgeStats.rejected.per_ip_connections;
    const held = await hold(relay, 3, '127.0.0.2');
    const reply = await rawExchange(relay.ports!.httpPort, 'GET /hello HTTP/1.1\r\nHost: x\r\n\r\n', { localAddress: '127.0.0.2' });
    expect(reply.error).toBeNull();
    expect(reply.text).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/);
    expect(reply.text.toLowerCase()).toContain('connection: close');
    expect(JSON.parse(reply.text.slice(reply.text.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: 'too_many_connections' });
    // a Node client sees it as the answer to its request
    const node = await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`, { agent: false, localAddress: '127.0.0.2' });
    expect(node.status).toBe(503);
    expect(json(node).error).toBe('too_many_connections');
    expect(relay.edgeStats.rejected.per_ip_connections).toBe(before + 2);

    // other clients, and the whitelisted one past the limit, are served meanwhile
    expect(await outcome(`http://127.0.0.1:${relay.ports!.httpPort}/hello`)).toBe(200);
    const whitelisted = Array.from({ length: 5 }, () =>
      net.connect({ port: relay.ports!.httpPort, host: '127.0.0.1', localAddress: '127.0.0.3' }),
    );
    expect(await outcome(`http://127.0.0.1:${relay.ports!.httpPort}/hello`, { localAddress: '127.0.0.3' })).toBe(200);
    expect(relay.edge.clientLimits.connectionsOf('127.0.0.3')).toBe(0);
    for (const s of whitelisted) s.destroy();

    // once one closes, the client gets in again; when all close, it is forgotten
    held[0]!.destroy();
    await vi.waitFor(() => expect(relay.edge.clientLimits.connectionsOf('127.0.0.2')).toBe(2), { timeout: 5_000 });
    expect(await outcome(`http://127.0.0.1:${relay.ports!.httpPort}/hello`, { localAddress: '127.0.0.2' })).toBe(200);
    for (const s of held) s.destroy();
    await vi.waitFor(() => expect(relay.edge.clientLimits.size).toBe(0), { timeout: 5_000 });
  });

  it('resets an HTTPS connection past the limit before TLS, and counts HTTP and HTTPS together', async () => {
    const work = workCounter(relay.edge);
    const held = [...(await hold(relay, 2, '127.0.0.2')), ...(await hold(relay, 1, '127.0.0.2', relay.ports!.httpsPort))];
    expect(await tlsHandshake(relay.ports!.httpsPort, '127.0.0.1', '127.0.0.2')).toBe('ECONNRESET');
    expect(work).toEqual({ secure: 0, tlsErrors: 0, requests: 0 });
    expect(await outcome(`https://127.0.0.1:${relay.ports!.httpsPort}/hello`)).toBe(200);
    for (const s of held) s.destroy();
    await vi.waitFor(() => expect(relay.edge.clientLimits.size).toBe(0), { timeout: 5_000 });
  });

  it('keeps memory bounded under a flood past the limit: at most 8 refused connections linger for their 503, the rest are reset', async () => {
    const held = await hold(relay, 3, '127.0.0.2');
    // clients that read the 503 but never close their side: each would linger until refusalLingerMs
    const flood = Array.from({ length: 40 }, () => {
      const socket = net.connect({ port: relay.ports!.httpPort, host: '127.0.0.1', localAddress: '127.0.0.2', allowHalfOpen: true });
      const result = { text: '', error: null as string | null };
      socket.on('data', (c: Buffer) => (result.text += c.toString()));
      socket.on('error', (err: NodeJS.ErrnoException) => (result.error = err.code ?? err.message));
      return result;
    });
    await vi.waitFor(() => expect(flood.every((r) => r.text.startsWith('HTTP/1.1 503 ') || r.error === 'ECONNRESET')).toBe(true), {
      timeout: 5_000,
    });
    const answered = flood.filter((r) => r.text.startsWith('HTTP/1.1 503 '));
    expect(answered).toHaveLength(defaults.maxLingeringRefusalsPerIp);
    expect(flood.filter((r) => r.error === 'ECONNRESET')).toHaveLength(40 - defaults.maxLingeringRefusalsPerIp);
    expect(relay.edge.clientLimits.size).toBe(1);
    // the lingering ones are cut after refusalLingerMs: only then is the address forgotten
    for (const s of held) s.destroy();
    await vi.waitFor(() => expect(relay.edge.clientLimits.connectionsOf('127.0.0.2')).toBe(0), { timeout: 5_000 });
    expect(relay.edge.clientLimits.size).toBe(1);
    await vi.waitFor(() => expect(relay.edge.clientLimits.size).toBe(0), { timeout: defaults.refusalLingerMs + 3_000 });
    expect(await outcome(`http://127.0.0.1:${relay.ports!.httpPort}/hello`, { localAddress: '127.0.0.2' })).toBe(200);
  });
});

describe('max requests per second per client IP', () => {
  let relay: Relay;
  let agent: PlatformAgent;
  const clock = new ManualClock();
  beforeAll(async () => {
    relay = await relayWith({ maxRequestsPerSecondPerIp: 2, requestBurstPerIp: 3 }, clock);
    agent = await startAgent(relay);
  });
  afterAll(async () => {
    await agent.stop(100);
    await relay.stop(100);
  });

  it('answers 429 rate_limited with Retry-After past the burst, serves other clients, and serves again once the bucket refills', async () => {
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: '127.0.0.2' });
    const url = `http://127.0.0.1:${relay.ports!.httpPort}/hello`;
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await request(url, { agent: keepAlive })).status);
    expect(statuses).toEqual([200, 200, 200]);
    const limited = await request(url, { agent: keepAlive });
    expect(limited.status).toBe(429);
    expect(limited.headers['retry-after']).toBe('1');
    expect(json(limited).error).toBe('rate_limited');
    // the connection stays open for the next request (no body was left unread)
    expect(limited.headers.connection).not.toBe('close');
    // a new connection does not refill the bucket
    expect(await outcome(url, { localAddress: '127.0.0.2' })).toBe(429);
    expect(relay.edgeStats.rejected.per_ip_rate).toBe(2);

    expect(await outcome(url)).toBe(200);
    for (let i = 0; i < 6; i++) expect(await outcome(url, { localAddress: '127.0.0.3' })).toBe(200);

    clock.advance(500);
    expect((await request(url, { agent: keepAlive })).status).toBe(200);
    expect((await request(url, { agent: keepAlive })).status).toBe(429);
    keepAlive.destroy();
  });

  it('answers a WebSocket upgrade past the rate with 429 on the raw socket', async () => {
    clock.advance(10_000);
    const upgrade =
      'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
    const replies = [];
    for (let i = 0; i < 4; i++) {
      replies.push(await rawExchange(relay.ports!.httpPort, upgrade, { localAddress: '127.0.0.4', timeoutMs: 300 }));
    }
    expect(replies.slice(0, 3).map((r) => r.text.slice(0, 12))).toEqual(['HTTP/1.1 101', 'HTTP/1.1 101', 'HTTP/1.1 101']);
    expect(replies[3]!.text).toMatch(/^HTTP\/1\.1 429 Too Many Requests\r\n/);
    expect(replies[3]!.text).toContain('"error":"rate_limited"');
    expect(replies[3]!.text.toLowerCase()).toContain('retry-after: 1');
  });

  it('closes the connection of a rate-limited request that has a body, rather than read the body', async () => {
    clock.advance(10_000);
    const url = `http://127.0.0.1:${relay.ports!.httpPort}/echo`;
    for (let i = 0; i < 3; i++) expect(await outcome(url, { method: 'POST', body: 'x', localAddress: '127.0.0.5' })).toBe(200);
    const limited = await request(url, { method: 'POST', body: 'x'.repeat(1000), agent: false, localAddress: '127.0.0.5' });
    expect(limited.status).toBe(429);
    expect(limited.headers.connection).toBe('close');
  });
});

describe("the relay's connection limit, all clients together", () => {
  it('resets a connection past --max-connections before TLS, whatever its address, exempts the whitelist, and admits again once one closes', async () => {
    const relay = await relayWith({ maxConnections: 3, maxConnectionsPerIp: 0 });
    try {
      const open = (localAddress: string): Promise<net.Socket> =>
        new Promise((resolve) => {
          const socket = net.connect({ port: relay.ports!.httpPort, host: '127.0.0.1', localAddress }, () => resolve(socket));
          socket.on('error', () => {});
        });
      const held = [await open('127.0.0.2'), await open('127.0.0.2'), await open('127.0.0.1')];
      await vi.waitFor(() => expect(relay.edge.connectionCount).toBe(3), { timeout: 5_000 });
      const work = workCounter(relay.edge);
      // a fourth, from an address that holds nothing yet: reset before TLS
      expect(await tlsHandshake(relay.ports!.httpsPort, '127.0.0.1', '127.0.0.1')).toBe('ECONNRESET');
      expect(work).toEqual({ secure: 0, tlsErrors: 0, requests: 0 });
      expect(relay.edgeStats.rejected.max_connections).toBe(1);
      // the whitelisted 127.0.0.3 is exempt
      expect(await tlsHandshake(relay.ports!.httpsPort, '127.0.0.1', '127.0.0.3')).toBe('secure');
      held[0]!.destroy();
      await vi.waitFor(() => expect(relay.edge.connectionCount).toBe(2), { timeout: 5_000 });
      expect(await tlsHandshake(relay.ports!.httpsPort, '127.0.0.1', '127.0.0.2')).toBe('secure');
      for (const s of held) s.destroy();
    } finally {
      await relay.stop(100);
    }
  });
});
