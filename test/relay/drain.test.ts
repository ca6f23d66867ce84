/**
 * The relay's drain as each mobile connection sees it (issue 12): every client learns that the
 * connection ends (`Connection: close`), a connection closes only after its response or once
 * idle for the drain-idle time, a request read while draining is still forwarded, and nothing
 * ends with a reset.
 */
import { describe, expect, it } from 'vitest';
import { DRAIN_IDLE_MS } from '../../relay/edge/edge-limits.js';
import { startAgent, startRelay } from '../fixtures/harness.js';
import { connectClient } from './raw-peers.js';

const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: app.test\r\n\r\n`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function rig(withAgent = true): Promise<{ port: number; stop: Promise<void> | null; drain: () => void; done: () => Promise<void> }> {
  const relay = await startRelay({ connectWaitMs: 100, retryAfterSeconds: 4, drainTimeoutMs: 3_000 });
  const agent = withAgent ? await startAgent(relay, { connections: 1 }) : null;
  const out = {
    port: relay.ports!.httpPort,
    stop: null as Promise<void> | null,
    drain: () => {
      out.stop = relay.stop(3_000);
    },
    done: async () => {
      if (!out.stop) out.drain();
      await out.stop;
      await agent?.stop(100);
    },
  };
  return out;
}

describe('relay drain, per mobile connection', () => {
  it('answers the response in flight with Connection: close, then closes with a FIN', async () => {
    const r = await rig();
    try {
      const c = await connectClient(r.port);
      c.write(GET('/slow?ms=300'));
      await sleep(50);
      r.drain();
      await c.waitClosed(5_000);
      expect(c.text).toMatch(/^HTTP\/1\.1 200 /);
      expect(c.text).toMatch(/\r\nConnection: close\r\n/i);
      expect(c.ended).toBe(true);
      expect(c.error).toBeNull();
    } finally {
      await r.done();
    }
  });

  it('forwards a request sent just after the drain started on an idle connection, with Connection: close', async () => {
    const r = await rig();
    try {
      const c = await connectClient(r.port);
      c.write(GET('/hello'));
      await c.waitFor((t) => t.includes('Connection: keep-alive'));
      await sleep(50);
      const before = c.text.length;
      r.drain();
      await sleep(30); // a wrk-style client's next request, a moment after the drain began
      c.write(GET('/hello'));
      await c.waitClosed(5_000);
      const second = c.text.slice(before);
      expect(second).toMatch(/^HTTP\/1\.1 200 /);
      expect(second).toMatch(/\r\nConnection: close\r\n/i);
      expect(c.error).toBeNull();
    } finally {
      await r.done();
    }
  });

  it(`closes an idle connection once idle for the drain-idle time (${DRAIN_IDLE_MS} ms), not at once`, async () => {
    const r = await rig();
    try {
      const c = await connectClient(r.port);
      c.write(GET('/hello'));
      await c.waitFor((t) => t.includes('Connection: keep-alive'));
      const t0 = performance.now();
      r.drain();
      await c.waitEnded(3_000);
      const ms = performance.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(DRAIN_IDLE_MS - 20);
      expect(ms).toBeLessThan(DRAIN_IDLE_MS + 700);
      c.end();
      await c.waitClosed();
      expect(c.error).toBeNull();
    } finally {
      await r.done();
    }
  });

  it('answers 503 with Connection: close and Retry-After to a request read when no stream can be had', async () => {
    const r = await rig(false);
    try {
      const c = await connectClient(r.port);
      await sleep(20);
      r.drain();
      await sleep(30);
      c.write(GET('/hello'));
      await c.waitClosed(5_000);
      expect(c.text).toMatch(/^HTTP\/1\.1 503 /);
      expect(c.text).toMatch(/\r\nConnection: close\r\n/i);
      expect(c.text).toMatch(/\r\nRetry-After: 4\r\n/i);
      expect(c.error).toBeNull();
    } finally {
      await r.done();
    }
  });

  it('reads a pipelined request it will not answer rather than reset the connection', async () => {
    const r = await rig();
    try {
      const c = await connectClient(r.port);
      c.write(GET('/slow?ms=300') + GET('/hello'));
      await sleep(50);
      r.drain();
      await c.waitEnded(5_000);
      // the first is answered and says close; the second was never forwarded: the client retries it
      expect(c.text.match(/HTTP\/1\.1 /g)).toHaveLength(1);
      expect(c.text).toMatch(/\r\nConnection: close\r\n/i);
      c.end();
      await c.waitClosed();
      expect(c.error).toBeNull();
    } finally {
      await r.done();
    }
  });
});
