/**
 * Idle kept-alive mobile connections let go of their tunnel stream (issue 12): more idle devices
 * than streams are served in turn, and a stream the agent refuses is retried, or answered 503
 * tunnel_busy, never 502.
 */
import http from 'node:http';
import { describe, expect, it, vi } from 'vitest';
import { defaultEdgeLimits, STREAM_RELEASE_MS } from '../../relay/edge/edge-limits.js';
import { json, request, startAgent, startRelay } from '../fixtures/harness.js';

const noShare = (extra: Partial<ReturnType<typeof defaultEdgeLimits>> = {}): ReturnType<typeof defaultEdgeLimits> => ({
  ...defaultEdgeLimits(),
  maxStreamSharePerIpPercent: 0,
  ...extra,
});

describe('idle connections release their tunnel stream', () => {
  it(`serves 6 kept-alive connections on 2 streams in turn, without 503 (release after ${STREAM_RELEASE_MS} ms idle)`, async () => {
    const relay = await startRelay({ mux: { maxStreamsPerConnection: 2 }, connectWaitMs: 8_000, limits: noShare() });
    const agent = await startAgent(relay, { connections: 1 });
    const clients = Array.from({ length: 6 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    try {
      const url = `http://127.0.0.1:${relay.ports!.httpPort}/hello`;
      const streams = (): number => relay.registry.list()[0]!.session.streamCount;
      const round = async (): Promise<number[]> => (await Promise.all(clients.map((c) => request(url, { agent: c })))).map((r) => r.status);
      expect(await round()).toEqual([200, 200, 200, 200, 200, 200]);
      // idle: every connection is still open, and none holds a stream
      await vi.waitFor(() => expect(streams()).toBe(0), { timeout: STREAM_RELEASE_MS + 2_000 });
      expect(relay.edge.connectionCount).toBe(6);
      // the same kept-alive connections are served again, each on a new stream
      expect(await round()).toEqual([200, 200, 200, 200, 200, 200]);
      expect(relay.edgeStats.rejected.tunnel_streams).toBe(0);
    } finally {
      for (const c of clients) c.destroy();
      await agent.stop(100);
      await relay.stop(100);
    }
  }, 15_000);

  it('keeps the stream while requests follow one another (reuse under load)', async () => {
    const relay = await startRelay({ limits: noShare() });
    const agent = await startAgent(relay, { connections: 1 });
    const client = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const url = `http://127.0.0.1:${relay.ports!.httpPort}/hello`;
      for (let i = 0; i < 20; i++) expect((await request(url, { agent: client })).status).toBe(200);
      expect(relay.registry.list()[0]!.session.streamCount).toBe(1);
    } finally {
      client.destroy();
      await agent.stop(100);
      await relay.stop(100);
    }
  });
});

describe('a stream the agent refuses', () => {
  // the agent takes 1 stream per connection, the relay thinks 4: the relay's OPEN is refused
  const start = async (): Promise<{ relay: Awaited<ReturnType<typeof startRelay>>; stop: () => Promise<void> }> => {
    const relay = await startRelay({
      mux: { maxStreamsPerConnection: 4 },
      connectWaitMs: 1_000,
      retryAfterSeconds: 3,
      limits: noShare({ streamReleaseMs: 150 }),
    });
    const agent = await startAgent(relay, { connections: 2, mux: { maxStreamsPerConnection: 1 } }, 2);
    return {
      relay,
      stop: async () => {
        await agent.stop(100);
        await relay.stop(100);
      },
    };
  };

  it('is retried, and served once a stream frees on another connection', async () => {
    const { relay, stop } = await start();
    const holder = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const base = `http://127.0.0.1:${relay.ports!.httpPort}`;
      const slow = request(`${base}/slow?ms=1500`, { agent: false }); // one connection's only stream
      await vi.waitFor(() => expect(relay.registry.list().some((c) => c.session.streamCount === 1)).toBe(true));
      expect((await request(`${base}/hello`, { agent: holder })).status).toBe(200); // the other's, kept idle
      const t0 = performance.now();
      const reply = await request(`${base}/hello`, { agent: false });
      expect(reply.status).toBe(200);
      expect(performance.now() - t0).toBeLessThan(1_400); // not after the slow one
      expect((await slow).status).toBe(200);
    } finally {
      holder.destroy();
      await stop();
    }
  });

  it('gets 503 tunnel_busy with Retry-After when every connection keeps refusing, never 502', async () => {
    const { relay, stop } = await start();
    try {
      const base = `http://127.0.0.1:${relay.ports!.httpPort}`;
      const slow = [request(`${base}/slow?ms=1500`, { agent: false }), request(`${base}/slow?ms=1500`, { agent: false })];
      await vi.waitFor(() => expect(relay.registry.list().every((c) => c.session.streamCount === 1)).toBe(true));
      const reply = await request(`${base}/hello`, { agent: false });
      expect(reply.status).toBe(503);
      expect(json(reply).error).toBe('tunnel_busy');
      expect(reply.headers['retry-after']).toBe('3');
      expect(reply.headers.connection).toBe('close');
      for (const r of await Promise.all(slow)) expect(r.status).toBe(200);
    } finally {
      await stop();
    }
  });
});
