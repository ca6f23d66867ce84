/**
 * Stream slots under churn: two MuxSessions over a real `ws` pair on 127.0.0.1 with a small
 * stream limit, streams opened as soon as the opener's `usable` allows and closed from either
 * side in random orders (FIN, RST, both, writing or not, reading or not). The acceptor must never
 * refuse an OPEN the opener was entitled to send: both count a stream as taken until it is closed
 * both ways at the protocol level (FIN each way, or an RST either way), whatever the Node stream
 * objects are still doing.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { ResetCode } from '../../shared/errors.js';
import type { OpenMetadata } from '../../shared/mux/frame-codec.js';
import { MuxSession, type SessionOptions } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';

const META: OpenMetadata = { clientIp: '198.51.100.23', clientPort: 40123, listenerPort: 10443, tls: false };
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function pair(
  serverOpts: Partial<SessionOptions>,
  clientOpts: Partial<SessionOptions>,
): Promise<{ server: MuxSession; client: MuxSession }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  await once(wss, 'listening');
  const accepted = new Promise<MuxSession>((resolve) => {
    wss.once('connection', (ws) => resolve(new MuxSession(ws, { role: 'server', pingIntervalMs: 0, ...serverOpts })));
  });
  const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  await once(ws, 'open');
  const client = new MuxSession(ws, { role: 'client', pingIntervalMs: 0, ...clientOpts });
  const server = await accepted;
  cleanups.push(
    () => server.terminate(),
    () => client.terminate(),
  );
  return { server, client };
}

/** A small deterministic PRNG (mulberry32): a failing seed can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Later, by 0-2 ticks of a random kind: the two ends' actions interleave in every order. */
function later(rand: () => number, fn: () => void): void {
  const r = rand();
  if (r < 0.25) fn();
  else if (r < 0.5) queueMicrotask(fn);
  else if (r < 0.75) process.nextTick(fn);
  else setImmediate(fn);
}

/** One end's random way of finishing a stream. */
function finish(stream: MuxStream, rand: () => number): void {
  const r = rand();
  if (rand() < 0.7) stream.resume(); // else nobody reads: 'end' never comes, the object lingers
  if (r < 0.3) {
    stream.end(Buffer.alloc(1 + Math.floor(rand() * 2048)));
  } else if (r < 0.5) {
    stream.end();
  } else if (r < 0.65) {
    stream.write(Buffer.alloc(512));
    later(rand, () => stream.destroy());
  } else if (r < 0.72) {
    stream.destroy();
  } else if (r < 0.78) {
    // as http does with a socket it is done with: end, destroy once finished
    stream.write(Buffer.alloc(64));
    stream.destroySoon();
  } else if (r < 0.84) {
    // an idle timer that resets the stream
    stream.setTimeout(1, () => stream.destroy());
  } else {
    // half close, then reset a moment later
    stream.end(Buffer.from('x'));
    later(rand, () => later(rand, () => stream.destroy()));
  }
}

async function churn(
  seed: number,
  total: number,
  limits: { opener: number; acceptor: number },
): Promise<{ refused: number; other: number }> {
  const rand = prng(seed);
  let refused = 0;
  let other = 0;
  const { server, client } = await pair(
    { maxStreamsPerConnection: limits.opener },
    {
      maxStreamsPerConnection: limits.acceptor,
      onStream: (s) => {
        s.on('error', () => {});
        later(rand, () => finish(s, rand));
      },
    },
  );
  server.setPeerMaxStreams(limits.acceptor);
  let opened = 0;
  let closed = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`churn stalled: ${opened} opened, ${closed} closed`)), 20_000);
    const openSome = (): void => {
      while (opened < total && server.usable) {
        const s = server.openStream(META);
        opened++;
        s.on('error', (err: Error & { resetCode?: number }) => {
          if (err.resetCode === ResetCode.refused) refused++;
          else if (!/reset by peer|destroyed|closed/.test(err.message)) other++;
        });
        s.on('close', () => closed++);
        later(rand, () => finish(s, rand));
      }
      // done once every stream is closed at the protocol level at both ends (an unread one's
      // Node object may linger: nobody consumes its 'end')
      if (opened === total && server.streamCount === 0 && client.streamCount === 0) {
        clearTimeout(timer);
        resolve();
      } else setImmediate(openSome);
    };
    openSome();
  });
  return { refused, other };
}

describe('MuxSession: stream slots under churn', () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    it(`the acceptor never refuses an OPEN the opener's usable allowed (seed ${seed}, limit 8, 2,000 streams)`, async () => {
      const r = await churn(seed, 2_000, { opener: 8, acceptor: 8 });
      expect(r).toEqual({ refused: 0, other: 0 });
    }, 30_000);
  }

  it("an opener with a larger own limit keeps to the peer's (min of both): no refusals", async () => {
    const r = await churn(7, 1_000, { opener: 64, acceptor: 4 });
    expect(r).toEqual({ refused: 0, other: 0 });
  }, 30_000);
});
