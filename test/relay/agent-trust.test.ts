/**
 * Agent credentials at the tunnel endpoint: tokens bound to platform ids (stored as hashes),
 * refusals rate-limited per address, `relay token create`. Real TLS, real agents.
 */
import https from 'node:https';
import { afterEach, describe, expect, it, vi } from 'vitest';
import yargs from 'yargs';
import { ManualClock } from '../../shared/clock.js';
import { CredentialSet, createToken, parseCredentials } from '../../relay/tunnel/agent-credentials.js';
import { TunnelEndpoint } from '../../relay/tunnel/tunnel-endpoint.js';
import { TunnelRegistry } from '../../relay/tunnel/tunnel-registry.js';
import { registerTokenCommands } from '../../relay/token-cli.js';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import { relayTls, startAgent, testLogger } from '../fixtures/harness.js';
import { thrownCode } from '../fixtures/error-code.js';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function endpoint(credentials: CredentialSet, extra: Partial<ConstructorParameters<typeof TunnelEndpoint>[0]> = {}) {
  const registry = new TunnelRegistry();
  const ep = new TunnelEndpoint({ tls: relayTls(), credentials: () => credentials, registry, logger: testLogger(), ...extra });
  const port = await ep.listen(0, '127.0.0.1');
  cleanup.push(() => ep.close());
  return { registry, port };
}

function upgrade(port: number, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      port,
      rejectUnauthorized: false,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
        authorization: `Bearer ${token}`,
      },
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      resolve(101);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('agent credentials', () => {
  it('binds each token to its platform: streams for a platform go only to its agents', async () => {
    const a = createToken('courier-1', 'courier');
    const b = createToken('base-1', 'base');
    const { registry, port } = await endpoint(new CredentialSet(parseCredentials([a.line, b.line])));
    const agents: PlatformAgent[] = [await startAgent(port, { token: a.token }), await startAgent(port, { token: b.token })];
    cleanup.push(() => Promise.all(agents.map((x) => x.stop(0))).then(() => undefined));
    await vi.waitFor(() => expect(registry.size).toBe(4), { timeout: 5_000 });
    expect(registry.pick('courier')).toMatchObject({ credential: 'courier-1', platform: 'courier' });
    expect(registry.pick('base')).toMatchObject({ credential: 'base-1', platform: 'base' });
    expect(registry.pick()).toBeNull();
    await expect(registry.acquire(50, 'nobody')).rejects.toMatchObject({ code: 'RELAY_ERR_NO_AGENT' });
  });

  it('stores only hashes: the credential line never holds the token', () => {
    const { token, line } = createToken('agent-7', 'courier');
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(JSON.stringify(line)).not.toContain(token);
    expect(line.token_sha256).toMatch(/^[0-9a-f]{64}$/);
    const set = new CredentialSet(parseCredentials([line]));
    expect(set.matchBearer(`Bearer ${token}`)?.id).toBe('agent-7');
    expect(set.matchBearer(`Bearer ${token}x`)).toBeNull();
    expect(set.matchBearer(undefined)).toBeNull();
  });

  it('refuses a malformed credentials file, naming the entry and field', () => {
    expect(thrownCode(() => parseCredentials({}))).toBe('RELAY_ERR_CONFIG');
    expect(() => parseCredentials([{ id: 'a', platform: 'p', token_sha256: 'zz' }])).toThrow(/\[0\]\.token_sha256/);
    expect(() => parseCredentials([{ id: 'a', platform: 'p' }])).toThrow(/token_sha256, cert_cn, or both/);
    expect(() => parseCredentials([{ id: 'a', platform: 'p', cert_cn: 'a', extra: 1 }])).toThrow(/\[0\]\.extra: unknown field/);
    const line = createToken('a', 'p').line;
    expect(() => parseCredentials([line, line])).toThrow(/appears twice/);
  });

  it('answers 401 to a bad token and 429 once an address has failed 10 times in a minute, yet the right token always passes', async () => {
    const clock = new ManualClock();
    const good = createToken('good', 'default');
    const { port } = await endpoint(new CredentialSet(parseCredentials([good.line])), { clock, authFailuresPerMinute: 10 });
    for (let i = 0; i < 10; i++) expect(await upgrade(port, 'wrong-token-0123456789')).toBe(401);
    expect(await upgrade(port, 'wrong-token-0123456789')).toBe(429);
    // The credential is checked first: the right token passes from a limited address…
    expect(await upgrade(port, good.token)).toBe(101);
    // …and does not lift the limit for guesses
    expect(await upgrade(port, 'wrong-token-0123456789')).toBe(429);
    clock.advance(60_000);
    expect(await upgrade(port, 'wrong-token-0123456789')).toBe(401);
  });

  it('relay token create prints the token once and the line to store', async () => {
    let out = '';
    await registerTokenCommands(yargs(['token', 'create', '--id', 'courier-9', '--platform', 'courier', '--json']), {
      out: (t) => (out += t),
    }).parseAsync();
    const { token, credential } = JSON.parse(out) as { token: string; credential: Record<string, string> };
    expect(credential).toMatchObject({ id: 'courier-9', platform: 'courier' });
    expect(new CredentialSet(parseCredentials([credential])).matchBearer(`Bearer ${token}`)?.platform).toBe('courier');
  });
});
