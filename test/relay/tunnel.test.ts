import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { encodeFrame, FrameType } from '../../shared/mux/frame-codec.js';
import type { AgentConfig, PlatformAgent } from '../../platform-agent/agent/agent.js';
import type { Relay } from '../../relay/relay.js';
import { TOKEN, json, pipeTo, relayFingerprint, relayTls, request, startAgent, startRelay, until } from '../fixtures/harness.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function relayUp(overrides = {}): Promise<Relay> {
  const relay = await startRelay(overrides);
  cleanups.push(() => relay.stop(100));
  return relay;
}

async function agentUp(relay: Relay | number, overrides: Partial<AgentConfig> = {}, waitFor = 1): Promise<PlatformAgent> {
  const agent = await startAgent(relay, overrides, waitFor);
  cleanups.push(() => agent.stop(100));
  return agent;
}

describe('no agent, lost agent', () => {
  it('answers 503 with Retry-After and a JSON error when no agent connects in time', async () => {
    const relay = await relayUp({ connectWaitMs: 150, retryAfterSeconds: 7 });
    const started = Date.now();
    const reply = await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`);
    expect(reply.status).toBe(503);
    expect(reply.headers['retry-after']).toBe('7');
    expect(reply.headers['content-type']).toBe('application/json');
    expect(json(reply).error).toBe('no_agent');
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('survives a client that resets its WebSocket upgrade while waiting for an agent', async () => {
    const relay = await relayUp({ connectWaitMs: 1_000 });
    const socket = net.connect(relay.ports!.httpPort, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.write(
      'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    await new Promise((r) => setTimeout(r, 100));
    socket.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 1_200));
    await agentUp(relay);
    expect((await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`)).status).toBe(200);
  });

  it('holds a request until an agent connects within the wait', async () => {
    const relay = await relayUp({ connectWaitMs: 5_000 });
    const pending = request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`);
    await new Promise((r) => setTimeout(r, 100));
    await agentUp(relay);
    expect((await pending).status).toBe(200);
  });

  it('answers 502 agent_lost when the tunnel drops before the response starts', async () => {
    const relay = await relayUp();
    const agent = await agentUp(relay, { connections: 1 });
    const pending = request(`http://127.0.0.1:${relay.ports!.httpPort}/slow?ms=5000`);
    await until(() => relay.registry.list().some((c) => c.session.streamCount > 0));
    for (const c of agent.clients) c.stop();
    const reply = await pending;
    expect(reply.status).toBe(502);
    expect(json(reply).error).toBe('agent_lost');
  });

  it('cuts the client connection when the tunnel drops mid-body', async () => {
    const relay = await relayUp();
    const agent = await agentUp(relay, { connections: 1 });
    const outcome = await new Promise<string>((resolve) => {
      http
        .get(`http://127.0.0.1:${relay.ports!.httpPort}/bytes?n=${512 * 1024 * 1024}`, (res) => {
          let got = 0;
          res.on('data', (c: Buffer) => {
            got += c.length;
            if (got > 1024 * 1024 && got - c.length <= 1024 * 1024) for (const client of agent.clients) client.stop();
          });
          res.on('end', () => resolve(`complete after ${got}`));
          res.on('error', () => resolve('cut'));
          res.on('aborted', () => resolve('cut'));
        })
        .on('error', () => resolve('cut'));
    });
    expect(outcome).toBe('cut');
  });

  it('fails over to the remaining agent when one drops', async () => {
    const relay = await relayUp();
    const a = await agentUp(relay, { agentId: 'a', connections: 1 });
    await agentUp(relay, { agentId: 'b', connections: 1 });
    await until(() => relay.registry.size === 2);
    for (const c of a.clients) c.stop();
    await until(() => relay.registry.size === 1);
    const replies = await Promise.all(Array.from({ length: 20 }, () => request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`)));
    expect(replies.every((r) => r.status === 200)).toBe(true);
  });

  it('spreads streams over connections, fewest open streams first', async () => {
    const relay = await relayUp();
    await agentUp(relay, { connections: 2 }, 2);
    const slow = Array.from({ length: 6 }, () => request(`http://127.0.0.1:${relay.ports!.httpPort}/slow?ms=300`));
    await until(() => relay.registry.list().reduce((n, c) => n + c.session.streamCount, 0) === 6);
    expect(relay.registry.list().map((c) => c.session.streamCount)).toEqual([3, 3]);
    await Promise.all(slow);
  });
});

describe('reconnect and drain', () => {
  it('reconnects after the relay restarts on the same port', async () => {
    const first = await startRelay();
    const port = first.ports!.tunnelPort;
    const agent = await agentUp(port, { connections: 1 });
    await first.stop(100);
    await until(() => agent.connectedCount === 0);
    const second = await relayUp({ tunnelPort: port });
    await agent.waitConnected(1, 10_000);
    const reply = await request(`http://127.0.0.1:${second.ports!.httpPort}/hello`);
    expect(reply.status).toBe(200);
  });

  it('serves requests arriving at either of two relays, and keeps serving one when the other stops', async () => {
    const one = await startRelay();
    const two = await relayUp();
    const agent = await agentUp(
      one,
      { relays: [`wss://localhost:${one.ports!.tunnelPort}`, `wss://localhost:${two.ports!.tunnelPort}`] },
      4,
    );
    expect(agent.connectedCount).toBe(4); // two connections to each relay
    expect((await request(`http://127.0.0.1:${one.ports!.httpPort}/hello`)).status).toBe(200);
    expect((await request(`https://localhost:${two.ports!.httpsPort}/hello`)).status).toBe(200);
    await one.stop(100);
    const replies = await Promise.all(Array.from({ length: 10 }, () => request(`http://127.0.0.1:${two.ports!.httpPort}/hello`)));
    expect(replies.every((r) => r.status === 200)).toBe(true);
  });

  it('lets in-flight requests finish when the relay stops gracefully', async () => {
    const relay = await startRelay();
    await agentUp(relay);
    const pending = request(`http://127.0.0.1:${relay.ports!.httpPort}/slow?ms=300`);
    await until(() => relay.registry.list().some((c) => c.session.streamCount > 0));
    const stopped = relay.stop(5_000);
    expect((await pending).status).toBe(200);
    await stopped;
  });

  it('lets in-flight streams finish when the agent drains, and sends new work elsewhere', async () => {
    const relay = await relayUp();
    const draining = await agentUp(relay, { agentId: 'draining', connections: 1 });
    const pending = request(`http://127.0.0.1:${relay.ports!.httpPort}/slow?ms=300`);
    await until(() => relay.registry.list().some((c) => c.session.streamCount > 0));
    await agentUp(relay, { agentId: 'other', connections: 1 });
    const stop = draining.stop(5_000);
    await until(() => relay.registry.list().some((c) => c.session.remoteGoingAway));
    const fresh = await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`);
    expect(fresh.status).toBe(200);
    expect((await pending).status).toBe(200);
    await stop;
  });
});

describe('tunnel authentication and trust', () => {
  function rawTunnel(port: number, headers: Record<string, string>): Promise<{ status?: number; ws?: WebSocket }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`wss://localhost:${port}/`, { headers, ca: relayTls().cert, perMessageDeflate: false });
      ws.once('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode });
        ws.terminate();
      });
      ws.once('open', () => resolve({ ws }));
      ws.once('error', reject);
    });
  }

  it('refuses an upgrade with a bad or missing token with a bare 401', async () => {
    const relay = await relayUp();
    expect((await rawTunnel(relay.ports!.tunnelPort, { authorization: 'Bearer wrong-token-0123456789' })).status).toBe(401);
    expect((await rawTunnel(relay.ports!.tunnelPort, {})).status).toBe(401);
    expect((await rawTunnel(relay.ports!.tunnelPort, { authorization: `Basic ${TOKEN}` })).status).toBe(401);
    expect(relay.registry.size).toBe(0);
  });

  it('an address past the refusal limit gets 429 for bad tokens, yet a real agent from it with the right token connects', async () => {
    const relay = await relayUp();
    const port = relay.ports!.tunnelPort;
    const bad = { authorization: 'Bearer wrong-token-0123456789' };
    // 10 refusals a minute from 127.0.0.1, then the limit: 429 for a wrong token
    for (let i = 0; i < 10; i++) expect((await rawTunnel(port, bad)).status).toBe(401);
    expect((await rawTunnel(port, bad)).status).toBe(429);
    expect((await rawTunnel(port, {})).status).toBe(429);
    // the right token from the same address is checked first and always passes
    const agent = await agentUp(relay, { connections: 1 });
    expect(agent.connectedCount).toBe(1);
    expect(relay.registry.list()[0]!.remoteAddress).toMatch(/127\.0\.0\.1$/);
    expect((await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`)).status).toBe(200);
    // and the limit still holds for guesses
    expect((await rawTunnel(port, bad)).status).toBe(429);
  });

  it('an agent with a rejected token backs off instead of retrying in a hot loop', async () => {
    const relay = await relayUp();
    const agent = await agentUp(
      relay,
      {
        token: 'not-the-right-token-xyz',
        trust: { fingerprint: relayFingerprint() },
        connections: 1,
        reconnectMinMs: 50,
        reconnectMaxMs: 400,
      },
      0,
    );
    await new Promise((r) => setTimeout(r, 1_000));
    const status = agent.clients[0]!.status()[0]!;
    expect(status.connected).toBe(false);
    expect(status.lastError).toMatch(/401/);
    // at least 50 ms between attempts: never more than 20 in a second
    expect(status.attempts).toBeGreaterThanOrEqual(2);
    expect(status.attempts).toBeLessThanOrEqual(20);
  });

  it('closes the tunnel with 1002 and the error code when an agent sends garbage frames', async () => {
    const relay = await relayUp();
    const { ws } = await rawTunnel(relay.ports!.tunnelPort, { authorization: `Bearer ${TOKEN}` });
    await until(() => relay.registry.size === 1);
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws!.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    ws!.send(Buffer.from('this is not a frame'));
    expect(await closed).toEqual({ code: 1002, reason: 'RELAY_ERR_FRAME_VERSION' });
    await until(() => relay.registry.size === 0);
  });

  it('closes the tunnel when an agent sends DATA for a stream that was never opened', async () => {
    const relay = await relayUp();
    const { ws } = await rawTunnel(relay.ports!.tunnelPort, { authorization: `Bearer ${TOKEN}` });
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws!.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    ws!.send(encodeFrame(FrameType.DATA, 41, Buffer.from('x')));
    expect(await closed).toEqual({ code: 1002, reason: 'RELAY_ERR_STREAM_UNKNOWN' });
  });

  it('connects without verification only when --insecure is given', async () => {
    const relay = await relayUp();
    const agent = await agentUp(relay, { trust: { insecure: true } });
    expect(agent.connectedCount).toBeGreaterThan(0);
    // the same relay is refused by the default trust (system CAs): its certificate is self-signed
    const strict = await agentUp(relay, { trust: {}, connections: 1, reconnectMinMs: 50, reconnectMaxMs: 100 }, 0);
    await until(() => (strict.clients[0]!.status()[0]!.lastError ?? '').length > 0);
    expect(strict.connectedCount).toBe(0);
    expect(strict.clients[0]!.status()[0]!.lastError).toMatch(/self-signed|self signed/i);
  });

  it('accepts the relay by CA file and refuses a relay whose pin does not match, without sending the token', async () => {
    const relay = await relayUp();
    // Both of its connections up before counting upgrades: a late second one would be counted.
    const byCa = await agentUp(relay, { trust: { ca: relayTls().cert }, connections: 2 }, 2);
    expect(byCa.connectedCount).toBeGreaterThan(0);

    let upgrades = 0;
    relay.tunnel.server.prependListener('upgrade', () => upgrades++);
    const wrongPin = await agentUp(
      relay,
      { trust: { fingerprint: relayFingerprint('other') }, connections: 1, reconnectMinMs: 50, reconnectMaxMs: 100 },
      0,
    );
    await until(() => (wrongPin.clients[0]!.status()[0]!.lastError ?? '').length > 0);
    expect(wrongPin.clients[0]!.status()[0]!.lastError).toMatch(/does not match the pinned/);
    expect(upgrades).toBe(0);

    const wrongCa = await agentUp(
      relay,
      { trust: { ca: relayTls('other').cert }, connections: 1, reconnectMinMs: 50, reconnectMaxMs: 100 },
      0,
    );
    await until(() => (wrongCa.clients[0]!.status()[0]!.lastError ?? '').length > 0);
    expect(wrongCa.clients[0]!.connectedCount).toBe(0);
    expect(upgrades).toBe(0);
  });
});

describe('pipe mode to an external upstream', () => {
  it('gives each mobile connection its own upstream connection, reused across keep-alive requests', async () => {
    const upstreamPorts: number[] = [];
    const upstream = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ xff: req.headers['x-forwarded-for'], upstreamConn: upstreamPorts.indexOf(req.socket.remotePort!) }));
    });
    upstream.on('connection', (s) => upstreamPorts.push(s.remotePort!));
    upstream.keepAliveTimeout = 60_000;
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    cleanups.push(
      () =>
        new Promise((r) => {
          upstream.closeAllConnections();
          upstream.close(r);
        }),
    );
    const relay = await relayUp();
    await agentUp(relay, { target: pipeTo(new URL(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`)) });

    const clientA = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const clientB = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => {
      clientA.destroy();
      clientB.destroy();
    });
    const url = `http://127.0.0.1:${relay.ports!.httpPort}/x`;
    const a1 = json(await request(url, { agent: clientA }));
    const a2 = json(await request(url, { agent: clientA }));
    const b1 = json(await request(url, { agent: clientB }));
    expect(a1.upstreamConn).toBe(a2.upstreamConn); // keep-alive reuses the stream
    expect(b1.upstreamConn).not.toBe(a1.upstreamConn); // never shared between clients
    expect(upstreamPorts).toHaveLength(2);
    expect(a1.xff).toBe('127.0.0.1');
  });

  it('answers 502 when the agent cannot reach its upstream', async () => {
    const closed = http.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const relay = await relayUp();
    await agentUp(relay, { target: pipeTo(new URL(`http://127.0.0.1:${port}`)) });
    const reply = await request(`http://127.0.0.1:${relay.ports!.httpPort}/x`);
    expect(reply.status).toBe(502);
    expect(json(reply).error).toBe('upstream');
  });
});
