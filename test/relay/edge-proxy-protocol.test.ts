/**
 * PROXY protocol on the mobile listeners (`proxyProtocolFrom`): raw sockets on loopback, 127.0.0.2
 * as the listed load balancer and 127.0.0.3 as an address not listed. The addresses inside the
 * headers (198.51.100.7, 2001:db8::7) are only data: no traffic goes there.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import { defaultEdgeLimits } from '../../relay/edge/edge-limits.js';
import type { Relay, RelayConfig } from '../../relay/relay.js';
import { DEFAULT_PLATFORM } from '../../relay/tunnel/agent-credentials.js';
import { defaults } from '../../shared/defaults.js';
import { startAgent, startRelay } from '../fixtures/harness.js';
import type { RawReply } from './edge-clients.js';
import { v2Header, v4Block, v6Block } from './proxy-headers.js';

const BALANCER = '127.0.0.2';
const OTHER = '127.0.0.3';
const root = mkdtempSync(join(tmpdir(), 'edge-proxy-protocol-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const running: { relay: Relay; agent: PlatformAgent }[] = [];
afterEach(async () => {
  for (const { relay, agent } of running.splice(0)) {
    await agent.stop(100);
    await relay.stop(100);
  }
});

async function setup(overrides: Partial<RelayConfig> = {}): Promise<Relay> {
  const relay = await startRelay({ proxyProtocolFrom: [`${BALANCER}/32`], ...overrides });
  const agent = await startAgent(relay);
  running.push({ relay, agent });
  return relay;
}

/**
 * As edge-clients' rawExchange, with bytes: strings are sent as latin1 (one byte a character, so
 * a v2 header built with toString('latin1') goes out as it is), each part a separate write.
 */
function rawExchange(
  port: number,
  data: string | Buffer | (string | Buffer)[],
  options: { localAddress: string; pauseMs?: number },
): Promise<RawReply> {
  const parts = (Array.isArray(data) ? data : [data]).map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p));
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | null = null;
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: options.localAddress });
    socket.on('connect', async () => {
      for (const part of parts) {
        if (socket.destroyed) return;
        socket.write(part);
        if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
      }
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => resolve({ text: Buffer.concat(chunks).toString(), error }));
    socket.setTimeout(10_000, () => socket.destroy(new Error('server never closed the connection')));
  });
}

const GET = 'GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';

/** The sample app's answer to GET /hello: what the platform saw. */
function seen(text: string): { status: number; forwardedFor: string | null; socketAddress: string | null } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  const parsed = status === 200 ? (JSON.parse(body) as { forwardedFor: string | null; socketAddress: string | null }) : null;
  return { status, forwardedFor: parsed?.forwardedFor ?? null, socketAddress: parsed?.socketAddress ?? null };
}

const v1 = (src: string, port: number): string => `PROXY TCP4 ${src} 127.0.0.1 40001 ${port}\r\n`;

/** HTTPS behind a balancer: the header on the TCP connection, then TLS, then GET /hello. */
function httpsThroughHeader(port: number, header: Buffer, localAddress: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      raw.write(header);
      const secure = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: false }, () => secure.write(GET));
      const chunks: Buffer[] = [];
      secure.on('data', (c: Buffer) => chunks.push(c));
      secure.on('error', reject);
      secure.on('close', () => resolve(Buffer.concat(chunks).toString()));
    });
    raw.on('error', reject);
    raw.setTimeout(10_000, () => raw.destroy(new Error('hung')));
  });
}

describe('PROXY protocol from a listed load balancer', () => {
  it('v1 TCP4 over HTTP: the agent sees the header’s client (OPEN metadata and X-Forwarded-For)', async () => {
    const relay = await setup();
    const port = relay.ports!.httpPort;
    const reply = await rawExchange(port, v1('198.51.100.7', port) + GET, { localAddress: BALANCER });
    expect(seen(reply.text)).toEqual({ status: 200, forwardedFor: '198.51.100.7', socketAddress: '198.51.100.7' });
    expect(relay.edgeStats.rejected.proxy_protocol).toBe(0);
  });

  it('v2 AF_INET6 over HTTP, and v2 LOCAL (a health check: the balancer is the client)', async () => {
    const relay = await setup();
    const port = relay.ports!.httpPort;
    const six = await rawExchange(port, [v2Header(v6Block(40002, port), { family: 0x21 }), GET], {
      localAddress: BALANCER,
    });
    expect(seen(six.text)).toMatchObject({ status: 200, forwardedFor: '2001:db8::7' });
    const local = await rawExchange(port, v2Header(Buffer.alloc(0), { command: 0, family: 0 }).toString('latin1') + GET, {
      localAddress: BALANCER,
    });
    expect(seen(local.text)).toMatchObject({ status: 200, forwardedFor: BALANCER });
    const unknown = await rawExchange(port, 'PROXY UNKNOWN\r\n' + GET, { localAddress: BALANCER });
    expect(seen(unknown.text)).toMatchObject({ status: 200, forwardedFor: BALANCER });
  });

  it('a header sent byte by byte, the request following in the same chunks', async () => {
    const relay = await setup();
    const port = relay.ports!.httpPort;
    const bytes = v2Header(v4Block('198.51.100.7', '127.0.0.1', 40003, port)).toString('latin1') + GET;
    const reply = await rawExchange(port, [...bytes], { localAddress: BALANCER, pauseMs: 1 });
    expect(seen(reply.text)).toMatchObject({ status: 200, forwardedFor: '198.51.100.7' });
    const text = await rawExchange(port, [...(v1('198.51.100.8', port) + GET)], { localAddress: BALANCER, pauseMs: 1 });
    expect(seen(text.text)).toMatchObject({ status: 200, forwardedFor: '198.51.100.8' });
  });

  it('HTTPS: the header is read before TLS, the ClientHello after it is handed on untouched', async () => {
    const relay = await setup();
    const port = relay.ports!.httpsPort;
    const v2 = await httpsThroughHeader(port, v2Header(v4Block('198.51.100.7', '127.0.0.1', 40004, port)), BALANCER);
    expect(seen(v2)).toEqual({ status: 200, forwardedFor: '198.51.100.7', socketAddress: '198.51.100.7' });
    const text = await httpsThroughHeader(port, Buffer.from(`PROXY TCP6 2001:db8::7 ::1 40005 ${port}\r\n`), BALANCER);
    expect(seen(text)).toMatchObject({ status: 200, forwardedFor: '2001:db8::7' });
  });

  it('a platform port takes PROXY headers too, and keeps its platform', async () => {
    const relay = await setup({ platformPorts: [{ platform: DEFAULT_PLATFORM, port: 0, tls: false }] });
    const port = relay.ports!.platformPorts[0]!.port;
    const reply = await rawExchange(port, v1('198.51.100.9', port) + GET, { localAddress: BALANCER });
    expect(seen(reply.text)).toMatchObject({ status: 200, forwardedFor: '198.51.100.9' });
  });

  it('IP rules apply to the header’s client: a blacklisted one is reset, the balancer itself is not judged', async () => {
    const dir = mkdtempSync(join(root, 'rules-'));
    const blacklist = join(dir, 'blacklist.txt');
    writeFileSync(blacklist, `198.51.100.7\n${BALANCER}\n`);
    const relay = await setup({
      ipRules: { blacklistFile: blacklist, whitelistOnly: false, pollIntervalMs: 60_000, maxFileBytes: defaults.ipRulesMaxFileBytes },
    });
    const port = relay.ports!.httpPort;
    const blocked = await rawExchange(port, v1('198.51.100.7', port) + GET, { localAddress: BALANCER });
    expect(blocked).toEqual({ text: '', error: 'ECONNRESET' });
    expect(relay.edgeStats.rejected.ip_blacklist).toBe(1);
    const other = await rawExchange(port, v1('198.51.100.8', port) + GET, { localAddress: BALANCER });
    expect(seen(other.text)).toMatchObject({ status: 200, forwardedFor: '198.51.100.8' });
  });

  it('per-IP connection limits count the header’s client, not the balancer', async () => {
    const relay = await setup({ limits: { ...defaultEdgeLimits(), maxConnectionsPerIp: 1 } });
    const port = relay.ports!.httpPort;
    // one connection held open by client A, through the balancer
    const held = net.connect({ port, host: '127.0.0.1', localAddress: BALANCER });
    await new Promise((r) => held.once('connect', r));
    held.write(v1('198.51.100.7', port));
    await new Promise((r) => setTimeout(r, 100));
    try {
      const sameClient = await rawExchange(port, v1('198.51.100.7', port) + GET, { localAddress: BALANCER });
      expect(sameClient.text).toMatch(/^HTTP\/1\.1 503/);
      const otherClient = await rawExchange(port, v1('198.51.100.8', port) + GET, { localAddress: BALANCER });
      expect(seen(otherClient.text)).toMatchObject({ status: 200, forwardedFor: '198.51.100.8' });
    } finally {
      held.destroy();
    }
  });
});

describe('PROXY protocol refusals', () => {
  it('a listed balancer without a header is refused: closed, nothing answered, counted', async () => {
    const relay = await setup();
    const port = relay.ports!.httpPort;
    const reply = await rawExchange(port, GET, { localAddress: BALANCER });
    expect(reply.text).toBe('');
    const broken = await rawExchange(port, 'PROXY TCP4 198.51.100.7 1.2.3.4 1\r\n' + GET, { localAddress: BALANCER });
    expect(broken.text).toBe('');
    const tlsFirst = await rawExchange(port, '\x16\x03\x01\x00\x05hello', { localAddress: BALANCER });
    expect(tlsFirst.text).toBe('');
    expect(relay.edgeStats.rejected.proxy_protocol).toBe(3);
    expect(relay.edge.requestCount).toBe(0);
  });

  it('a listed balancer that sends nothing is closed after --headers-timeout-ms', async () => {
    const relay = await setup({ limits: { ...defaultEdgeLimits(), headersTimeoutMs: 300 } });
    const started = Date.now();
    const reply = await rawExchange(relay.ports!.httpsPort, [], { localAddress: BALANCER });
    expect(reply.text).toBe('');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(relay.edgeStats.rejected.proxy_protocol).toBe(1);
  });

  it('an address not listed that sends a header is refused (never trusted); without one it is served as before', async () => {
    const relay = await setup();
    const port = relay.ports!.httpPort;
    expect((await rawExchange(port, v1('198.51.100.7', port) + GET, { localAddress: OTHER })).text).toBe('');
    const v2 = v2Header(v4Block('198.51.100.7', '127.0.0.1', 1, port)).toString('latin1');
    expect((await rawExchange(port, v2 + GET, { localAddress: OTHER })).text).toBe('');
    expect((await rawExchange(port, [...'PROXY '], { localAddress: OTHER, pauseMs: 1 })).text).toBe('');
    expect(relay.edgeStats.rejected.proxy_protocol).toBe(3);
    const plain = await rawExchange(port, GET, { localAddress: OTHER });
    expect(seen(plain.text)).toEqual({ status: 200, forwardedFor: OTHER, socketAddress: OTHER });
    // a method that starts like the v1 signature is not one
    const propfind = await rawExchange(port, 'PROPFIND /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { localAddress: OTHER });
    expect(propfind.text).toMatch(/^HTTP\/1\.1 \d{3}/);
    // HTTPS from an address not listed: TLS as before
    const https = await httpsThroughHeader(relay.ports!.httpsPort, Buffer.alloc(0), OTHER);
    expect(seen(https)).toMatchObject({ status: 200, forwardedFor: OTHER });
  });
});
