import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { PlatformAgent } from '../../platform-agent/agent.js';
import type { Relay } from '../../relay/relay.js';
import { json, request, startAgent, startRelay } from '../fixtures/harness.js';

describe('max concurrent streams per tunnel connection', () => {
  let relay: Relay;
  let agent: PlatformAgent;
  beforeAll(async () => {
    relay = await startRelay({ mux: { maxStreamsPerConnection: 2 }, connectWaitMs: 300, retryAfterSeconds: 7 });
    agent = await startAgent(relay, { connections: 1 });
  });
  afterAll(async () => {
    await agent.stop(100);
    await relay.stop(100);
  });

  const url = (): string => `http://127.0.0.1:${relay.ports!.httpPort}/hello`;
  const streams = (): number => relay.registry.list()[0]!.session.streamCount;

  it('answers 503 tunnel_busy with Retry-After when every tunnel connection is full, and serves again once a stream closes', async () => {
    // two mobile connections kept alive: each holds its own tunnel stream
    const clients = [new http.Agent({ keepAlive: true, maxSockets: 1 }), new http.Agent({ keepAlive: true, maxSockets: 1 })];
    for (const client of clients) expect((await request(url(), { agent: client })).status).toBe(200);
    expect(streams()).toBe(2);

    const busy = await request(url(), { agent: false });
    expect(busy.status).toBe(503);
    expect(busy.headers['retry-after']).toBe('7');
    expect(json(busy).error).toBe('tunnel_busy');
    expect(relay.edgeStats.rejected.tunnel_streams).toBe(1);
    expect(relay.edgeStats.rejected.no_agent).toBe(0);
    // the relay never opened a third stream
    expect(streams()).toBe(2);

    clients[0]!.destroy();
    await vi.waitFor(() => expect(streams()).toBe(1), { timeout: 5_000 });
    expect((await request(url(), { agent: false })).status).toBe(200);
    expect((await request(url(), { agent: clients[1] })).status).toBe(200);
    clients[1]!.destroy();
  });

  it('still says no_agent when no agent is connected at all', async () => {
    const lonely = await startRelay({ connectWaitMs: 50 });
    try {
      const reply = await request(`http://127.0.0.1:${lonely.ports!.httpPort}/hello`, { agent: false });
      expect(reply.status).toBe(503);
      expect(json(reply).error).toBe('no_agent');
      expect(lonely.edgeStats.rejected).toMatchObject({ no_agent: 1, tunnel_streams: 0 });
    } finally {
      await lonely.stop(100);
    }
  });
});

describe('a request waiting for a full tunnel connection', () => {
  it('is served as soon as a stream frees, not after the whole wait', async () => {
    const relay = await startRelay({ mux: { maxStreamsPerConnection: 1 }, connectWaitMs: 60_000 });
    const agent = await startAgent(relay, { connections: 1 });
    try {
      const holder = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const url = `http://127.0.0.1:${relay.ports!.httpPort}/hello`;
      expect((await request(url, { agent: holder })).status).toBe(200);
      // The only stream is held by the kept-alive connection; this request waits for it (up to 60 s).
      const waiting = request(url, { agent: false });
      await vi.waitFor(() => expect(relay.registry.waitingCount).toBe(1), { timeout: 4_000 });
      holder.destroy();
      // Within the test's 5 s timeout: woken by the freed stream, not by the 60 s deadline.
      expect((await waiting).status).toBe(200);
    } finally {
      await agent.stop(100);
      await relay.stop(100);
    }
  });
});
