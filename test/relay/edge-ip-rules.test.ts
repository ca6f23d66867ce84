import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import type { Relay, RelayIpRules } from '../../relay/relay.js';
import { defaults } from '../../shared/defaults.js';
import { startAgent, startRelay } from '../fixtures/harness.js';
import { canListen, outcome, tlsHandshake, workCounter } from './edge-clients.js';

const ipv6 = await canListen('::1');
const root = mkdtempSync(join(tmpdir(), 'edge-ip-rules-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface Setup {
  relay: Relay;
  agent: PlatformAgent;
  work: ReturnType<typeof workCounter>;
  whitelist: string;
  blacklist: string;
}

const running: Setup[] = [];
afterEach(async () => {
  for (const { relay, agent } of running.splice(0)) {
    await agent.stop(100);
    await relay.stop(100);
  }
});

/** A relay (with an agent) whose rule files hold `files`; `host` `::` listens dual-stack. */
async function setup(
  files: { whitelist?: string; blacklist?: string },
  options: { whitelistOnly?: boolean; pollIntervalMs?: number; host?: string } = {},
): Promise<Setup> {
  const dir = mkdtempSync(join(root, 'case-'));
  const whitelist = join(dir, 'whitelist.txt');
  const blacklist = join(dir, 'blacklist.txt');
  writeFileSync(whitelist, files.whitelist ?? '');
  writeFileSync(blacklist, files.blacklist ?? '');
  const ipRules: RelayIpRules = {
    whitelistFile: whitelist,
    blacklistFile: blacklist,
    whitelistOnly: options.whitelistOnly ?? false,
    pollIntervalMs: options.pollIntervalMs ?? 60_000,
    maxFileBytes: defaults.ipRulesMaxFileBytes,
  };
  const relay = await startRelay({ ipRules, ...(options.host ? { host: options.host } : {}) });
  const agent = await startAgent(relay);
  const s = { relay, agent, work: workCounter(relay.edge), whitelist, blacklist };
  running.push(s);
  return s;
}

const https = (relay: Relay, host = '127.0.0.1'): string =>
  `https://${host.includes(':') ? `[${host}]` : host}:${relay.ports!.httpsPort}/hello`;
const http = (relay: Relay, host = '127.0.0.1'): string =>
  `http://${host.includes(':') ? `[${host}]` : host}:${relay.ports!.httpPort}/hello`;

describe('relay IP rules: IPv4', () => {
  it('drops a blacklisted client at TCP level before TLS (no handshake, no HTTP), counts it, and serves others', async () => {
    const { relay, work } = await setup({ blacklist: '127.0.0.2\n' });
    expect(await tlsHandshake(relay.ports!.httpsPort, '127.0.0.1', '127.0.0.2')).toBe('ECONNRESET');
    expect(await outcome(https(relay), { localAddress: '127.0.0.2' })).toBe('ECONNRESET');
    expect(await outcome(http(relay), { localAddress: '127.0.0.2' })).toBe('ECONNRESET');
    expect(work).toEqual({ secure: 0, tlsErrors: 0, requests: 0 });
    expect(relay.edgeStats.rejected.ip_blacklist).toBe(3);

    expect(await outcome(https(relay))).toBe(200);
    expect(await outcome(http(relay, '127.0.0.1'), { localAddress: '127.0.0.3' })).toBe(200);
    expect(work).toMatchObject({ secure: 1, requests: 2 });
  });

  it('lets the whitelist win over the blacklist', async () => {
    const { relay } = await setup({ whitelist: '127.0.0.3\n', blacklist: '127.0.0.0/8\n' });
    expect(await outcome(https(relay), { localAddress: '127.0.0.3' })).toBe(200);
    expect(await outcome(https(relay), { localAddress: '127.0.0.2' })).toBe('ECONNRESET');
    expect(relay.edgeStats.rejected).toMatchObject({ ip_blacklist: 1, ip_not_whitelisted: 0 });
  });

  it('admits clients on neither list, unless --whitelist-only', async () => {
    const open = await setup({ whitelist: '127.0.0.3\n' });
    expect(await outcome(http(open.relay), { localAddress: '127.0.0.2' })).toBe(200);

    const closed = await setup({ whitelist: '127.0.0.3\n127.0.0.1\n' }, { whitelistOnly: true });
    expect(await outcome(http(closed.relay), { localAddress: '127.0.0.2' })).toBe('ECONNRESET');
    expect(await tlsHandshake(closed.relay.ports!.httpsPort, '127.0.0.1', '127.0.0.2')).toBe('ECONNRESET');
    expect(closed.work).toEqual({ secure: 0, tlsErrors: 0, requests: 0 });
    expect(await outcome(https(closed.relay), { localAddress: '127.0.0.3' })).toBe(200);
    expect(closed.relay.edgeStats.rejected.ip_not_whitelisted).toBe(2);
  });

  it('reloads a rule file when it changes on disk, and resets open connections of a client now dropped', async () => {
    const { relay, blacklist } = await setup({ blacklist: '# nobody yet\n' }, { pollIntervalMs: 25 });
    // a kept-alive connection from 127.0.0.2, served before the change
    const socket = net.connect({ port: relay.ports!.httpPort, host: '127.0.0.1', localAddress: '127.0.0.2' });
    socket.on('error', () => {});
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString()));
    socket.write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n');
    await vi.waitFor(() => expect(received).toMatch(/^HTTP\/1\.1 200 /), { timeout: 5_000 });

    writeFileSync(blacklist, '127.0.0.2\n');
    await vi.waitFor(async () => expect(await outcome(http(relay), { localAddress: '127.0.0.2' })).toBe('ECONNRESET'), {
      timeout: 5_000,
      interval: 50,
    });
    // well before the 5 s keep-alive timeout
    await closed;
    expect(await outcome(http(relay))).toBe(200);
  });

  it('reloads on Relay.reloadIpRules() (SIGHUP) without waiting for the poll', async () => {
    const { relay, blacklist, whitelist } = await setup({ blacklist: '127.0.0.2\n' });
    expect(await outcome(http(relay), { localAddress: '127.0.0.2' })).toBe('ECONNRESET');
    writeFileSync(blacklist, '127.0.0.3\n');
    writeFileSync(whitelist, 'not an address\n');
    const summary = relay.reloadIpRules();
    expect(summary.blacklist).toMatchObject({ status: 'loaded', entries: 1 });
    expect(summary.whitelist?.problems).toEqual([{ line: 1, text: 'not an address', reason: expect.stringMatching(/not an IP address/) }]);
    expect(await outcome(http(relay), { localAddress: '127.0.0.2' })).toBe(200);
    expect(await outcome(http(relay), { localAddress: '127.0.0.3' })).toBe('ECONNRESET');
  });
});

describe.skipIf(!ipv6)('relay IP rules: IPv6 (dual-stack listener)', () => {
  it('drops a blacklisted IPv6 client before TLS and still serves IPv4 clients', async () => {
    const { relay, work } = await setup({ blacklist: '::1\n' }, { host: '::' });
    expect(await tlsHandshake(relay.ports!.httpsPort, '::1')).toBe('ECONNRESET');
    expect(await outcome(http(relay, '::1'))).toBe('ECONNRESET');
    expect(work).toEqual({ secure: 0, tlsErrors: 0, requests: 0 });
    expect(relay.edgeStats.rejected.ip_blacklist).toBe(2);
    // an IPv4 client on the dual-stack socket is ::ffff:127.0.0.1, which ::1 does not cover
    expect(await outcome(https(relay))).toBe(200);
  });

  it('matches an IPv4 client on a dual-stack listener by its IPv4 rule', async () => {
    const { relay, work } = await setup({ blacklist: '127.0.0.0/8\n' }, { host: '::' });
    expect(await tlsHandshake(relay.ports!.httpsPort, '127.0.0.1')).toBe('ECONNRESET');
    expect(work.secure).toBe(0);
    expect(await outcome(https(relay, '::1'))).toBe(200);
  });

  it('lets an IPv6 whitelist entry win over a blacklisted range', async () => {
    const { relay } = await setup({ whitelist: '::1\n', blacklist: '::/0\n127.0.0.1\n' }, { host: '::' });
    expect(await outcome(https(relay, '::1'))).toBe(200);
    expect(await outcome(https(relay))).toBe('ECONNRESET');
  });
});
