import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import { defaultEdgeLimits } from '../../relay/edge/edge-limits.js';
import type { Relay } from '../../relay/relay.js';
import { json, request, startAgent, startRelay } from '../fixtures/harness.js';

const noShare = (): ReturnType<typeof defaultEdgeLimits> => ({ ...defaultEdgeLimits(), maxStreamSharePerIpPercent: 0 });

describe('max concurrent streams per tunnel connection', () => {
  let relay: Relay;
  let agent: PlatformAgent;
  beforeAll(async () => {
    // every client here is 127.0.0.1: no per-client share, the connection's limit alone
    relay = await startRelay({ mux: { maxStreamsPerConnection: 2 }, connectWaitMs: 300, retryAfterSeconds: 7, limits: noShare() });
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
    const relay = await startRelay({ mux: { maxStreamsPerConnection: 1 }, connectWaitMs: 60_000, limits: noShare() });
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

describe("one client's share of its platform's tunnel streams", () => {
  const HOG = '127.0.0.2';
  const BYSTANDER = '127.0.0.3';
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  /** A relay with 2 agent connections of 4 streams (capacity 8), a share of 25 %: 2 streams per client. */
  async function rig(overrides: Parameters<typeof startRelay>[0] = {}, connectWaitMs = 400): Promise<Relay> {
    const relay = await startRelay({
      mux: { maxStreamsPerConnection: 4 },
      connectWaitMs,
      limits: { ...defaultEdgeLimits(), maxStreamSharePerIpPercent: 25 },
      ...overrides,
    });
    const agent = await startAgent(relay, { connections: 2 }, 2);
    cleanups.push(() => relay.stop(100));
    cleanups.push(() => agent.stop(100));
    return relay;
  }
  const url = (relay: Relay, path = '/hello'): string => `http://127.0.0.1:${relay.ports!.httpPort}${path}`;
  const keptAlive = (): http.Agent => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    cleanups.push(() => agent.destroy());
    return agent;
  };
  const totalStreams = (relay: Relay): number => relay.registry.list().reduce((n, c) => n + c.session.streamCount, 0);

  it('a client holding its share waits, then gets 503 tunnel_busy, while a bystander from another address is served', async () => {
    const relay = await rig();
    expect(relay.registry.streamShare()).toBe(2);
    const held = [keptAlive(), keptAlive()];
    for (const agent of held) expect((await request(url(relay), { agent, localAddress: HOG })).status).toBe(200);
    expect(relay.registry.clientStreamCount(HOG)).toBe(2);

    const started = Date.now();
    const third = request(url(relay), { agent: false, localAddress: HOG });
    await vi.waitFor(() => expect(relay.registry.waitingCount).toBe(1), { timeout: 4_000 });
    // 6 streams are free: the bystander is served at once, the hog's request still waits
    const bystanderAt = Date.now();
    const bystander = await request(url(relay), { agent: false, localAddress: BYSTANDER });
    expect(bystander.status).toBe(200);
    expect(Date.now() - bystanderAt).toBeLessThan(3_000);
    expect(relay.registry.waitingCount).toBe(1);

    const busy = await third;
    expect(busy.status).toBe(503);
    expect(json(busy).error).toBe('tunnel_busy');
    // it waited --connect-wait-ms (400), not much less and not forever
    expect(Date.now() - started).toBeGreaterThanOrEqual(350);
    expect(relay.registry.clientStreamCount(HOG)).toBe(2);
    expect(totalStreams(relay)).toBe(2);
  });

  it("a waiting request of the client is served as soon as one of the client's own streams closes", async () => {
    const relay = await rig({}, 60_000);
    const held = [keptAlive(), keptAlive()];
    for (const agent of held) expect((await request(url(relay), { agent, localAddress: HOG })).status).toBe(200);
    const waiting = request(url(relay), { agent: false, localAddress: HOG });
    await vi.waitFor(() => expect(relay.registry.waitingCount).toBe(1), { timeout: 4_000 });
    held[0]!.destroy();
    // woken by its own stream's close (no connection was full: no 'capacity' event), not by the 60 s deadline
    expect((await waiting).status).toBe(200);
    await vi.waitFor(() => expect(relay.registry.clientStreamCount(HOG)).toBe(1), { timeout: 4_000 });
  });

  it('keeps no entry for a client once its streams are closed', async () => {
    const relay = await rig();
    const agent = keptAlive();
    expect((await request(url(relay), { agent, localAddress: BYSTANDER })).status).toBe(200);
    expect(relay.registry.clientStreamCount(BYSTANDER)).toBe(1);
    agent.destroy();
    await vi.waitFor(() => expect(relay.registry.clientStreamCount(BYSTANDER)).toBe(0), { timeout: 4_000 });
    expect(totalStreams(relay)).toBe(0);
  });

  it('exempts a whitelisted address', async () => {
    const dir = mkdtempSync(join(os.tmpdir(), 'stream-share-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'whitelist.dat'), `${HOG}\n`);
    const relay = await rig({
      ipRules: { whitelistFile: join(dir, 'whitelist.dat'), whitelistOnly: false, pollIntervalMs: 60_000, maxFileBytes: 1 << 20 },
    });
    const held = [keptAlive(), keptAlive(), keptAlive()];
    for (const agent of held) expect((await request(url(relay), { agent, localAddress: HOG })).status).toBe(200);
    expect(totalStreams(relay)).toBe(3);
    expect(relay.registry.clientStreamCount(HOG)).toBe(0);
  });
});

describe('relay and agent stream limits that disagree (the agent states its own in X-Mux-Max-Streams)', () => {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  /** Holds `n` kept-alive mobile connections, each its own tunnel stream; then one more request. */
  async function holdThenOneMore(
    relayLimit: number,
    agentLimit: number,
    held: number,
  ): Promise<{ status: number; error: unknown; max: number }> {
    const relay = await startRelay({ mux: { maxStreamsPerConnection: relayLimit }, connectWaitMs: 200, limits: noShare() });
    cleanups.push(() => relay.stop(100));
    const agent = await startAgent(relay, { connections: 1, mux: { maxStreamsPerConnection: agentLimit } });
    cleanups.push(() => agent.stop(100));
    const url = `http://127.0.0.1:${relay.ports!.httpPort}/hello`;
    for (let i = 0; i < held; i++) {
      const client = new http.Agent({ keepAlive: true, maxSockets: 1 });
      cleanups.push(() => client.destroy());
      expect((await request(url, { agent: client })).status).toBe(200);
    }
    const session = relay.registry.list()[0]!.session;
    expect(session.streamCount).toBe(held);
    const reply = await request(url, { agent: false });
    return { status: reply.status, error: reply.status === 200 ? null : json(reply).error, max: session.maxStreams };
  }

  it('an agent with a lower limit than the relay: the relay keeps to it (503 tunnel_busy past it, never 502)', async () => {
    const r = await holdThenOneMore(4, 2, 2);
    expect(r).toEqual({ status: 503, error: 'tunnel_busy', max: 2 });
  });

  it('an agent with a higher limit than the relay: the relay keeps to its own', async () => {
    const r = await holdThenOneMore(2, 4, 2);
    expect(r).toEqual({ status: 503, error: 'tunnel_busy', max: 2 });
  });

  it('below both limits a request is served', async () => {
    const r = await holdThenOneMore(4, 3, 2);
    expect(r).toEqual({ status: 200, error: null, max: 3 });
  });
});
