/**
 * Several platforms behind one relay (routed by the port a client arrived on), agents bound to
 * platforms by their credentials, mTLS with client certificates made by the relay's own CA
 * tools, and the admin listener's view of it all. Real TLS, real agents, real upstreams.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createCertificateAuthority, issueClientCertificate } from '../../relay/cert-issuing.js';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import type { Relay } from '../../relay/relay.js';
import { createToken, parseCredentials } from '../../relay/tunnel/agent-credentials.js';
import { json, pipeTo, relayFingerprint, request, startAgent, startRelay } from '../fixtures/harness.js';

const cleanup: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

/** A tiny platform server that names itself. */
async function upstream(name: string): Promise<URL> {
  const server = http.createServer((req, res) => res.end(JSON.stringify({ platform: name, path: req.url })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanup.push(() => new Promise((r) => server.close(r)));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
}

async function relayWith(overrides: Parameters<typeof startRelay>[0]): Promise<Relay> {
  const relay = await startRelay(overrides);
  cleanup.push(() => relay.stop(500));
  return relay;
}

async function agent(relay: Relay, overrides: Parameters<typeof startAgent>[1]): Promise<PlatformAgent> {
  const a = await startAgent(relay, overrides);
  cleanup.push(() => a.stop(0));
  return a;
}

describe('several platforms', () => {
  it('routes each port to its platform, and a port whose platform has no agent answers 503', async () => {
    const courier = createToken('courier-1', 'courier');
    const base = createToken('base-1', 'base');
    const relay = await relayWith({
      credentials: parseCredentials([courier.line, base.line, createToken('shop-1', 'shop').line]),
      defaultPlatform: 'courier',
      platformPorts: [
        { platform: 'base', port: 0, tls: true },
        { platform: 'shop', port: 0, tls: false },
      ],
      connectWaitMs: 100,
      admin: { host: '127.0.0.1', port: 0 },
    });
    await agent(relay, { token: courier.token, target: pipeTo(await upstream('courier')) });
    await agent(relay, { token: base.token, target: pipeTo(await upstream('base')) });
    const [basePort, shopPort] = relay.ports!.platformPorts.map((p) => p.port);

    expect(json(await request(`https://127.0.0.1:${relay.ports!.httpsPort}/x`)).platform).toBe('courier');
    expect(json(await request(`http://127.0.0.1:${relay.ports!.httpPort}/x`)).platform).toBe('courier');
    expect(json(await request(`https://127.0.0.1:${basePort}/y`)).platform).toBe('base');
    const none = await request(`http://127.0.0.1:${shopPort}/z`);
    expect(none.status).toBe(503);
    expect(json(none).error).toBe('no_agent');

    // The admin listener: not ready while "shop" has no agent; status lists agents by platform.
    const admin = `http://127.0.0.1:${relay.ports!.adminPort}`;
    const ready = await request(`${admin}/readyz`);
    expect(ready.status).toBe(503);
    expect(json(ready).missing).toEqual(['shop']);
    const status = json(await request(`${admin}/status`)) as { agents: { platform: string }[] };
    expect(status.agents.map((a) => a.platform).sort()).toEqual(['base', 'base', 'courier', 'courier']);
    const metrics = (await request(`${admin}/metrics`)).body.toString();
    expect(metrics).toMatch(/relay_requests_total\{platform="base",status="2xx"\} 1/);
    expect(metrics).toMatch(/relay_requests_total\{platform="courier",status="2xx"\} 2/);
    expect(metrics).toMatch(/relay_rejected_total\{reason="no_agent"\} 1/);
  });

  it('shares one platform between two agents and fails over when one stops', async () => {
    const a = createToken('a', 'courier');
    const b = createToken('b', 'courier');
    const relay = await relayWith({ credentials: parseCredentials([a.line, b.line]), defaultPlatform: 'courier' });
    const first = await agent(relay, { token: a.token, target: pipeTo(await upstream('courier')) });
    await agent(relay, { token: b.token, target: pipeTo(await upstream('courier')) });
    await vi.waitFor(() => expect(relay.registry.size).toBe(4));
    await first.stop(0);
    for (let i = 0; i < 10; i++) expect((await request(`http://127.0.0.1:${relay.ports!.httpPort}/r${i}`)).status).toBe(200);
    expect(relay.registry.list().every((c) => c.credential === 'b')).toBe(true);
  });
});

describe('mTLS on the tunnel endpoint', () => {
  it('accepts an agent with a certificate from the agent CA and refuses one without', async () => {
    const ca = await createCertificateAuthority({ commonName: 'test agent CA', keyBits: 2048 });
    const client = await issueClientCertificate(ca, { commonName: 'agent-7' });
    const token = createToken('agent-7', 'default');
    const relay = await relayWith({ credentials: parseCredentials([token.line]), agentCa: ca.cert });

    // Token right, no certificate: refused, and it keeps trying.
    const noCert = await startAgent(relay, { token: token.token }, 0);
    cleanup.push(() => noCert.stop(0));
    await vi.waitFor(
      async () => expect((await relay.metrics.render()).body).toMatch(/relay_tunnel_auth_failures_total\{reason="bad_certificate"\} [1-9]/),
      {
        timeout: 5_000,
      },
    );
    expect(relay.registry.size).toBe(0);
    await noCert.stop(0);

    // Token and certificate: accepted, and requests flow.
    await agent(relay, { token: token.token, trust: { fingerprint: relayFingerprint(), clientCert: client } });
    expect((await request(`https://127.0.0.1:${relay.ports!.httpsPort}/hello`)).status).toBe(200);

    // A certificate whose name is bound to a credential stands in for the token.
    const certOnly = await relayWith({
      credentials: parseCredentials([{ id: 'c', platform: 'default', cert_cn: 'agent-7' }]),
      agentCa: ca.cert,
    });
    await agent(certOnly, { token: 'not-a-registered-token-0000', trust: { fingerprint: relayFingerprint(), clientCert: client } });
    expect(certOnly.registry.list()[0]).toMatchObject({ credential: 'c', platform: 'default' });
  });
});
