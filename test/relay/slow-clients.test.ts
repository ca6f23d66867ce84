/**
 * A slow client holds relay memory, bounded, never a tunnel stream (DESIGN.md, "Data path of one
 * request", step 3): clients that dribble a request head or trickle a body hold no stream while
 * the relay serves others, a body below the minimum rate is cut with 408 body_too_slow after its
 * grace, one above it is not, and a small body sent slowly reaches the upstream in one piece.
 * Limits are small so the suite stays fast; the upstream is a raw server in pipe mode.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { request, until } from '../fixtures/harness.js';
import { errorReply, startPipeRig, type PipeRig, type RawConn } from './raw-peers.js';

const HEADERS_TIMEOUT_MS = 3_000;
const GRACE_MS = 1_000;
const MIN_RATE = 1_000; // bytes a second
const BUFFER_BYTES = 4_096;

let rig: PipeRig;

/** Tunnel streams open on the relay, over every agent connection. */
const openStreams = (): number => rig.relay.registry.list().reduce((n, c) => n + c.session.streamCount, 0);

/** Upstream connections that received a request for `path`. */
const reached = (path: string): number => rig.upstream.conns.filter((c) => c.text.includes(` ${path} HTTP/1.1\r\n`)).length;

/** The upstream answers 200 to each whole request (head and Content-Length body) on a connection. */
function answerEachRequest(): void {
  const consumed = new WeakMap<RawConn, number>();
  rig.upstream.setOnData((conn) => {
    let offset = consumed.get(conn) ?? 0;
    const text = conn.text;
    for (;;) {
      const end = text.indexOf('\r\n\r\n', offset);
      if (end === -1) break;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(offset, end))?.[1] ?? 0);
      const total = end + 4 + length;
      if (text.length < total) break;
      conn.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      offset = total;
    }
    consumed.set(conn, offset);
  });
}

/** Writes `first`, then `piece` every `everyMs` until the relay ends the connection. */
function dribble(conn: RawConn, first: string, piece: string, everyMs: number): void {
  conn.write(first);
  const timer = setInterval(() => {
    if (conn.ended || conn.closed || conn.socket.writableEnded) clearInterval(timer);
    else conn.write(piece);
  }, everyMs);
  conn.socket.once('close', () => clearInterval(timer));
}

/** Checks `openStreams()` is 0 every 50 ms for `ms`. */
async function noStreamFor(ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    expect(openStreams()).toBe(0);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `n` requests served meanwhile, from `localAddress` if given: all 200. */
async function served(n: number, localAddress?: string): Promise<void> {
  const url = `http://127.0.0.1:${rig.relay.ports!.httpPort}/served`;
  const statuses = await Promise.all(
    Array.from({ length: n }, () => request(url, { agent: false, ...(localAddress ? { localAddress } : {}) }).then((r) => r.status)),
  );
  expect(statuses).toEqual(Array.from({ length: n }, () => 200));
}

beforeAll(async () => {
  rig = await startPipeRig({
    headersTimeoutMs: HEADERS_TIMEOUT_MS,
    requestBufferBytes: BUFFER_BYTES,
    minBodyBytesPerSecond: MIN_RATE,
    bodyRateGraceMs: GRACE_MS,
  });
  answerEachRequest();
});
// streams of the previous test's clients close with them, a moment after
beforeEach(() => until(() => openStreams() === 0));
afterEach(() => rig.dropClients());
afterAll(async () => {
  await rig.stop();
});

describe('slow clients hold no tunnel stream', () => {
  it('20 clients dribbling a request head hold no stream while others are served, then get 408 request_timeout', async () => {
    const before = rig.relay.edgeStats.rejected.request_timeout;
    const dribblers = await Promise.all(Array.from({ length: 20 }, () => rig.client()));
    for (const conn of dribblers) dribble(conn, 'GET /dribble HTTP/1.1\r\nHost: x\r\nX-Slow: ', 'a', 100);
    await noStreamFor(500);
    await served(5);
    // the served clients' streams close with their connections; the dribblers still hold none
    await until(() => openStreams() === 0);
    await noStreamFor(200);
    await Promise.all(dribblers.map((conn) => conn.waitClosed()));
    for (const conn of dribblers) {
      const reply = errorReply(conn.text);
      expect({ status: reply.status, error: reply.error }).toEqual({ status: 408, error: 'request_timeout' });
    }
    expect(rig.relay.edgeStats.rejected.request_timeout - before).toBe(20);
    expect(reached('/dribble')).toBe(0);
  });

  it('20 clients trickling a large body below the minimum rate hold no stream, then get 408 body_too_slow after the grace', async () => {
    const before = rig.relay.edgeStats.rejected.body_too_slow;
    const tricklers = await Promise.all(Array.from({ length: 20 }, () => rig.client()));
    const started = Date.now();
    // 10 bytes every 100 ms: 100 B/s, a tenth of the minimum, and far from requestBufferBytes
    for (const conn of tricklers) dribble(conn, 'POST /trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n', 'b'.repeat(10), 100);
    await noStreamFor(400);
    await served(5);
    await until(() => openStreams() === 0);
    await Promise.all(tricklers.map((conn) => conn.waitClosed()));
    // never before the grace is over (the sweep may add a fraction of a second after it)
    expect(Date.now() - started).toBeGreaterThanOrEqual(GRACE_MS);
    for (const conn of tricklers) {
      const reply = errorReply(conn.text);
      expect({ status: reply.status, error: reply.error }).toEqual({ status: 408, error: 'body_too_slow' });
    }
    expect(rig.relay.edgeStats.rejected.body_too_slow - before).toBe(20);
    expect(reached('/trickle')).toBe(0);
  });

  it('does not cut a body above the minimum rate: it streams past requestBufferBytes and is answered', async () => {
    const before = rig.relay.edgeStats.rejected.body_too_slow;
    const index = rig.upstream.conns.length;
    const conn = await rig.client();
    const length = 20_000;
    const head = `POST /steady HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\n\r\n`;
    conn.write(head);
    // 1,000 bytes every 100 ms: 10 kB/s, ten times the minimum, for 2 s (twice the grace)
    for (let sent = 0; sent < length; sent += 1_000) {
      // below requestBufferBytes the body is only buffered: no stream yet
      if (sent < BUFFER_BYTES) expect(openStreams()).toBe(0);
      conn.write('c'.repeat(1_000));
      await new Promise((r) => setTimeout(r, 100));
    }
    const answer = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok';
    expect(await conn.receive(answer.length)).toBe(answer);
    const up = await rig.upstream.nth(index);
    expect(up.text.endsWith(`\r\n\r\n${'c'.repeat(length)}`)).toBe(true);
    expect(rig.relay.edgeStats.rejected.body_too_slow).toBe(before);
  });

  it('sends a small body sent slowly to the upstream in one piece: its first read holds the head and the whole body', async () => {
    const index = rig.upstream.conns.length;
    const conn = await rig.client();
    conn.write('PUT /small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n');
    const body = '0123456789'.repeat(10);
    // 10 bytes every 30 ms: within the grace, and the stream opens only once the body is whole
    for (let i = 0; i < body.length; i += 10) {
      expect(openStreams()).toBe(0);
      expect(rig.upstream.conns.length).toBe(index);
      conn.write(body.slice(i, i + 10));
      await new Promise((r) => setTimeout(r, 30));
    }
    const up = await rig.upstream.nth(index);
    const expected =
      'PUT /small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n' +
      `X-Forwarded-Port: ${rig.relay.ports!.httpPort}\r\nX-Forwarded-Host: x\r\n\r\n${body}`;
    expect(await up.receive(expected.length)).toBe(expected);
    expect(up.reads[0]!.toString('latin1')).toBe(expected);
    await conn.waitFor((text) => text.endsWith('ok'));
  });
});

describe('slow and served clients on two addresses', () => {
  it('serves 127.0.0.3 while 127.0.0.2 dribbles heads and trickles bodies, and cuts only 127.0.0.2', async () => {
    const slow = await Promise.all(Array.from({ length: 10 }, () => rig.client({ localAddress: '127.0.0.2' })));
    slow.forEach((conn, i) => {
      if (i % 2 === 0) dribble(conn, 'GET /slow-head HTTP/1.1\r\nHost: x\r\nX-Slow: ', 'a', 100);
      else dribble(conn, 'POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n', 'b'.repeat(10), 100);
    });
    await noStreamFor(300);
    const index = rig.upstream.conns.length;
    await served(3, '127.0.0.3');
    const fromServed = rig.upstream.conns.slice(index);
    expect(fromServed).toHaveLength(3);
    for (const up of fromServed) expect(up.text).toContain('\r\nX-Forwarded-For: 127.0.0.3\r\n');
    await Promise.all(slow.map((conn) => conn.waitClosed()));
    slow.forEach((conn, i) => {
      const reply = errorReply(conn.text);
      expect({ status: reply.status, error: reply.error }).toEqual({
        status: 408,
        error: i % 2 === 0 ? 'request_timeout' : 'body_too_slow',
      });
    });
    expect(reached('/slow-head') + reached('/slow-body')).toBe(0);
    // and 127.0.0.3 is still served afterwards
    await served(1, '127.0.0.3');
  });
});
