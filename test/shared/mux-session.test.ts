/**
 * MuxSession over real `ws` WebSocket pairs on 127.0.0.1 (plain ws://): stream open and
 * metadata, half-close, credit flow control, many streams, strict decoding of garbage, RST,
 * session close, GOAWAY, ping liveness and the per-connection stream limit.
 * Every wait is bounded; every server and socket is closed in afterEach.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { defaults } from '../../shared/defaults.js';
import { CloseCode, RelayError, ResetCode } from '../../shared/errors.js';
import {
  FrameType,
  decodeFrames,
  decodeMessage,
  encodeFrame,
  encodeOpenMetadata,
  type Frame,
  type OpenMetadata,
} from '../../shared/mux/frame-codec.js';
import { MuxSession, type SessionOptions } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import { thrownCode } from '../fixtures/error-code.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const META: OpenMetadata = { clientIp: '198.51.100.23', clientPort: 40123, listenerPort: 10443, tls: true };

// ------------------------------------------------------------------------------ helpers

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch {
      // best effort: a failed cleanup must not hide the test's own result
    }
  }
});

/** Rejects after `ms` with a message naming what was awaited. */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Streams error when their session dies; an unhandled 'error' would crash the worker. */
function guard(stream: MuxStream): MuxStream {
  stream.on('error', () => {});
  return stream;
}

/** The error a stream was destroyed with (already, or within `ms`). */
async function errorOf(stream: MuxStream, ms = 5_000): Promise<RelayError> {
  const already = stream.errored;
  if (already) return already as RelayError;
  const [err] = (await withTimeout(once(stream, 'error'), ms, `stream ${stream.id} error`)) as [RelayError];
  return err;
}

function closed(stream: MuxStream, ms = 5_000): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return withTimeout(new Promise<void>((resolve) => stream.once('close', () => resolve())), ms, `stream ${stream.id} close`);
}

/** Everything a stream's readable side yields until 'end'. */
function collect(stream: MuxStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

/** Writes `data` in chunks, honouring backpressure; optionally ends. */
async function writeAll(stream: MuxStream, data: Buffer, end = true, chunk = 64 * KiB): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) {
    if (!stream.write(data.subarray(off, off + chunk))) await once(stream, 'drain');
  }
  if (end) stream.end();
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Accepted streams, in order. */
class Acceptor {
  private readonly queue: MuxStream[] = [];
  private readonly waiters: ((s: MuxStream) => void)[] = [];
  readonly all: MuxStream[] = [];

  readonly onStream = (stream: MuxStream): void => {
    guard(stream);
    this.all.push(stream);
    const w = this.waiters.shift();
    if (w) w(stream);
    else this.queue.push(stream);
  };

  next(ms = 5_000): Promise<MuxStream> {
    const s = this.queue.shift();
    if (s) return Promise.resolve(s);
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), ms, 'an accepted stream');
  }
}

interface Raw {
  wss: WebSocketServer;
  serverWs: WebSocket;
  clientWs: WebSocket;
  server: MuxSession;
  serverAcc: Acceptor;
}

interface Pair extends Raw {
  client: MuxSession;
  clientAcc: Acceptor;
}

type Opts = Partial<Omit<SessionOptions, 'role' | 'onStream'>> & { onStream?: SessionOptions['onStream'] | null };

/**
 * A TCP proxy on loopback that holds every chunk `delayMs` before passing it on, both ways: a
 * path with a round trip of 2 x delayMs, on which a stream's credit, not the CPU, limits it.
 */
async function delayProxy(targetPort: number, delayMs: number): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('data', (chunk) => setTimeout(() => to.write(chunk), delayMs));
      from.on('end', () => setTimeout(() => to.end(), delayMs));
      from.on('error', () => to.destroy());
      from.on('close', () => setTimeout(() => to.destroy(), delayMs));
    }
  });
  server.listen(0, '127.0.0.1');
  await withTimeout(once(server, 'listening'), 5_000, 'delay proxy listening');
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return (server.address() as AddressInfo).port;
}

/**
 * A WebSocket pair on loopback with a MuxSession on the server side only; with `delayMs`, the
 * client reaches the server through a delayProxy.
 */
async function connectRaw(serverOpts: Opts = {}, delayMs = 0): Promise<Raw> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  );
  await withTimeout(once(wss, 'listening'), 5_000, 'listening');
  const { port } = wss.address() as AddressInfo;
  const serverAcc = new Acceptor();
  const { onStream = serverAcc.onStream, ...rest } = serverOpts;
  const accepted = new Promise<{ serverWs: WebSocket; server: MuxSession }>((resolve) => {
    wss.once('connection', (ws) => {
      const server = new MuxSession(ws, { role: 'server', pingIntervalMs: 0, ...rest, onStream: onStream ?? undefined });
      resolve({ serverWs: ws, server });
    });
  });
  const clientWs = new WebSocket(`ws://127.0.0.1:${delayMs > 0 ? await delayProxy(port, delayMs) : port}`);
  clientWs.on('error', () => {});
  cleanups.push(() => clientWs.terminate());
  await withTimeout(once(clientWs, 'open'), 5_000, 'client open');
  const { serverWs, server } = await withTimeout(accepted, 5_000, 'server connection');
  cleanups.push(() => server.terminate());
  return { wss, serverWs, clientWs, server, serverAcc };
}

/** A WebSocket pair on loopback with a MuxSession on both sides (through a delayProxy with `delayMs`). */
async function connectPair(serverOpts: Opts = {}, clientOpts: Opts = {}, delayMs = 0): Promise<Pair> {
  const raw = await connectRaw(serverOpts, delayMs);
  const clientAcc = new Acceptor();
  const { onStream = clientAcc.onStream, ...rest } = clientOpts;
  const client = new MuxSession(raw.clientWs, { role: 'client', pingIntervalMs: 0, ...rest, onStream: onStream ?? undefined });
  cleanups.push(() => client.terminate());
  return { ...raw, client, clientAcc };
}

/** Sends raw bytes from the client socket and expects the server session to fail with `code`. */
async function expectProtocolFailure(raw: Raw, code: string, send: () => void): Promise<void> {
  const serverClosed = once(raw.server, 'close') as Promise<[RelayError | null]>;
  const clientClosed = once(raw.clientWs, 'close') as Promise<[number, Buffer]>;
  send();
  const [[err], [closeCode, reason]] = await withTimeout(Promise.all([serverClosed, clientClosed]), 5_000, `failure ${code}`);
  expect(err).toBeInstanceOf(RelayError);
  expect(err!.code).toBe(code);
  expect(raw.server.isClosed).toBe(true);
  expect(closeCode).toBe(CloseCode.protocolError);
  expect(reason.toString()).toBe(code);
}

// ------------------------------------------------------------------------------ tests

describe('MuxSession: streams and data', () => {
  it('a stream opened by the server carries its OpenMetadata to the client and data flows both ways with half-close (sha256, MiBs both directions at once)', async () => {
    const { server, client, clientAcc } = await connectPair();
    const a = guard(server.openStream(META));
    const b = await clientAcc.next();

    expect(b.meta).toEqual(META);
    expect(b.id).toBe(a.id);
    expect(a.id % 2).toBe(0); // the server opens even ids
    expect(b.remoteAddress).toBe(META.clientIp);
    expect(b.remotePort).toBe(META.clientPort);
    expect(b.localPort).toBe(META.listenerPort);
    expect(server.streamCount).toBe(1);
    expect(client.streamCount).toBe(1);

    const down = randomBytes(4 * MiB);
    const up1 = randomBytes(2 * MiB + 123);
    const up2 = randomBytes(1 * MiB + 7);
    const atServer = collect(a);
    const atClient = collect(b);

    const serverSide = writeAll(a, down, true); // server writes, then ends its side
    const clientSide = (async () => {
      await writeAll(b, up1, false); // concurrently with the server's 4 MiB
      await atClient; // the server's FIN arrived: half-closed towards the client
      expect(b.writable).toBe(true); // ... yet the client can still write
      await writeAll(b, up2, true);
    })();

    const [gotAtServer, gotAtClient] = await withTimeout(
      Promise.all([atServer, atClient, serverSide, clientSide]).then(([s, c]) => [s, c] as const),
      30_000,
      'transfers',
    );
    expect(gotAtClient.length).toBe(down.length);
    expect(sha256(gotAtClient)).toBe(sha256(down));
    const up = Buffer.concat([up1, up2]);
    expect(gotAtServer.length).toBe(up.length);
    expect(sha256(gotAtServer)).toBe(sha256(up));

    await Promise.all([closed(a), closed(b)]);
    expect(a.errored).toBeNull();
    expect(b.errored).toBeNull();
    await vi.waitFor(
      () => {
        expect(server.streamCount).toBe(0);
        expect(client.streamCount).toBe(0);
      },
      { timeout: 2_000, interval: 5 },
    );
    expect(server.isClosed).toBe(false);
    expect(client.isClosed).toBe(false);
  });

  it('a stream opened by the client reaches the server with an odd id and echoes', async () => {
    const { client, serverAcc } = await connectPair();
    const meta: OpenMetadata = { clientIp: '2001:db8::1', clientPort: 1, listenerPort: 10080, tls: false };
    const a = guard(client.openStream(meta));
    const b = await serverAcc.next();
    expect(a.id % 2).toBe(1);
    expect(b.meta).toEqual(meta);
    expect(b.remoteFamily).toBe('IPv6');
    b.pipe(b);
    const payload = randomBytes(300 * KiB);
    const got = collect(a);
    await writeAll(a, payload);
    expect(sha256(await withTimeout(got, 10_000, 'echo'))).toBe(sha256(payload));
  });

  it('frames produced in one event-loop turn go out as one WebSocket message (batching)', async () => {
    const { client, serverWs, serverAcc } = await connectPair();
    let messages = 0;
    serverWs.on('message', () => messages++);
    const streams = Array.from({ length: 10 }, (_, i) => guard(client.openStream({ ...META, clientPort: i })));
    for (const s of streams) s.write(Buffer.from(`hello ${s.id}`));
    for (let i = 0; i < 10; i++) await serverAcc.next();
    expect(messages).toBe(1);
  });

  it('a large DATA payload goes out uncopied as a message of its own, which a peer that joins fragments (plain ws) reads as one whole frame', async () => {
    const raw = await connectRaw();
    const messages: Frame[][] = [];
    raw.clientWs.on('message', (m: Buffer) => {
      const frames: Frame[] = [];
      decodeFrames(m, { maxDataBytes: defaults.maxFramePayloadLimitBytes, maxOpenBytes: defaults.maxOpenMetadataBytes }, (f) =>
        frames.push({ ...f, payload: Buffer.from(f.payload) }),
      );
      messages.push(frames);
    });
    raw.clientWs.send(encodeFrame(FrameType.OPEN, 1, encodeOpenMetadata(META)));
    const s = await raw.serverAcc.next();
    const big = randomBytes(200 * KiB);
    const written = new Promise<void>((resolve, reject) => s.write(big, (err) => (err ? reject(err) : resolve())));
    s.write('and a small one');
    await withTimeout(written, 5_000, 'the write callback');
    await vi.waitFor(() => expect(messages.flat().reduce((n, f) => n + f.payload.length, 0)).toBe(big.length + 15), {
      timeout: 5_000,
      interval: 5,
    });
    const lent = messages.find((frames) => frames.length === 1 && frames[0]!.payload.length === big.length);
    expect(lent?.[0]?.type).toBe(FrameType.DATA);
    expect(lent![0]!.payload.equals(big)).toBe(true);
    expect(Buffer.concat(messages.flat().map((f) => f.payload)).equals(Buffer.concat([big, Buffer.from('and a small one')]))).toBe(true);
  });

  it('200 concurrent streams each echoing 64 KiB all complete correctly', async () => {
    const { server, client } = await connectPair(
      {},
      {
        onStream: (s) => {
          guard(s);
          s.pipe(s);
        },
      },
    );
    const n = 200;
    const payloads = Array.from({ length: n }, () => randomBytes(64 * KiB));
    const results = payloads.map(async (p, i) => {
      const s = guard(server.openStream({ ...META, clientPort: 1000 + i }));
      const got = collect(s);
      await writeAll(s, p, true, 16 * KiB);
      return got;
    });
    const echoed = await withTimeout(Promise.all(results), 30_000, '200 echoes');
    echoed.forEach((got, i) => {
      expect(got.length).toBe(payloads[i]!.length);
      expect(got.equals(payloads[i]!)).toBe(true);
    });
    await vi.waitFor(
      () => {
        expect(server.streamCount).toBe(0);
        expect(client.streamCount).toBe(0);
      },
      { timeout: 5_000, interval: 10 },
    );
  });
});

describe('MuxSession: flow control', () => {
  it('a stalled reader receives at most one window, its writer blocks, and another stream on the same session moves 8 MiB meanwhile; after resuming every byte arrives intact', async () => {
    const W = defaults.streamWindowBytes;
    const { server, client, clientAcc } = await connectPair();
    const stalledTx = guard(server.openStream({ ...META, clientPort: 1 }));
    const bulkTx = guard(server.openStream({ ...META, clientPort: 2 }));
    const rx1 = await clientAcc.next();
    const rx2 = await clientAcc.next();
    const stalledRx = rx1.meta.clientPort === 1 ? rx1 : rx2;
    const bulkRx = rx1.meta.clientPort === 1 ? rx2 : rx1;
    expect(stalledRx.meta.clientPort).toBe(1);

    // the stalled stream's writer honours backpressure and gets blocked
    const stalledData = randomBytes(1 * MiB);
    let writeReturnedFalse = false;
    let stalledWriterDone = false;
    const stalledWriter = (async () => {
      for (let off = 0; off < stalledData.length; off += 64 * KiB) {
        if (!stalledTx.write(stalledData.subarray(off, off + 64 * KiB))) {
          writeReturnedFalse = true;
          await once(stalledTx, 'drain');
        }
      }
      stalledTx.end();
      stalledWriterDone = true;
    })();

    // while 8 MiB cross on another stream, watch the stalled receiver and writer
    const bulk = randomBytes(8 * MiB);
    let maxStalledBuffered = 0;
    let maxStalledRead = 0;
    let writerLenAtHalf = -1;
    const bulkChunks: Buffer[] = [];
    let bulkReceived = 0;
    const bulkDone = new Promise<Buffer>((resolve, reject) => {
      bulkRx.on('data', (c: Buffer) => {
        bulkChunks.push(c);
        bulkReceived += c.length;
        maxStalledBuffered = Math.max(maxStalledBuffered, stalledRx.readableLength);
        maxStalledRead = Math.max(maxStalledRead, stalledRx.bytesRead);
        if (writerLenAtHalf < 0 && bulkReceived >= bulk.length / 2) writerLenAtHalf = stalledTx.writableLength;
      });
      bulkRx.once('end', () => resolve(Buffer.concat(bulkChunks)));
      bulkRx.once('error', reject);
    });
    await writeAll(bulkTx, bulk);
    const gotBulk = await withTimeout(bulkDone, 30_000, 'the 8 MiB bulk stream');
    expect(gotBulk.length).toBe(bulk.length);
    expect(sha256(gotBulk)).toBe(sha256(bulk));

    // the stalled sender used its window, but never more
    await vi.waitFor(() => expect(stalledRx.bytesRead).toBe(W), { timeout: 5_000, interval: 5 });
    expect(maxStalledBuffered).toBeLessThanOrEqual(W);
    expect(maxStalledRead).toBeLessThanOrEqual(W);
    expect(stalledRx.readableLength).toBe(W);
    expect(stalledTx.sendWindow).toBe(0);
    expect(stalledTx.bytesWritten).toBe(W);
    // the writer is blocked: write() said no, no drain came, and its buffer stopped growing
    expect(writeReturnedFalse).toBe(true);
    expect(stalledWriterDone).toBe(false);
    expect(stalledTx.writableNeedDrain).toBe(true);
    expect(writerLenAtHalf).toBeGreaterThan(0);
    expect(stalledTx.writableLength).toBe(writerLenAtHalf);
    expect(server.isClosed).toBe(false);
    expect(client.isClosed).toBe(false);

    // resume: every byte arrives, in order
    const gotStalled = await withTimeout(
      Promise.all([collect(stalledRx), stalledWriter]).then(([b]) => b),
      15_000,
      'the resumed stream',
    );
    expect(gotStalled.length).toBe(stalledData.length);
    expect(sha256(gotStalled)).toBe(sha256(stalledData));
  });

  for (const receiver of ['accepting', 'opening'] as const) {
    it(`a window larger than the default (1 MiB on the ${receiver} side) is honoured: the sender may fill it, no more, and nothing deadlocks`, async () => {
      const big = 1 * MiB;
      const { server, client, clientAcc, serverAcc } = await connectPair({}, { streamWindowBytes: big });
      let tx: MuxStream;
      let rx: MuxStream;
      if (receiver === 'accepting') {
        tx = guard(server.openStream(META)); // the client (1 MiB window) accepts and receives
        rx = await clientAcc.next();
      } else {
        rx = guard(client.openStream(META)); // the client (1 MiB window) opens and receives
        tx = await serverAcc.next();
      }
      const data = randomBytes(3 * MiB);
      const writer = writeAll(tx, data);
      // nobody reads yet: exactly the big window crosses
      await vi.waitFor(() => expect(rx.bytesRead).toBe(big), { timeout: 10_000, interval: 5 });
      expect(tx.sendWindow).toBe(0);
      expect(tx.bytesWritten).toBe(big);
      expect(rx.readableLength).toBe(big);
      expect(client.isClosed).toBe(false);
      expect(server.isClosed).toBe(false);
      // then the reader drains it all
      const got = await withTimeout(
        Promise.all([collect(rx), writer]).then(([b]) => b),
        20_000,
        'the transfer',
      );
      expect(sha256(got)).toBe(sha256(data));
    });
  }
});

describe('MuxSession: receive windows grow while they limit a stream', () => {
  const base = defaults.streamWindowBytes;
  const cap = 1 * MiB;
  // 10 ms each way through a delayProxy: a 20 ms credit round trip, so a 256 KiB window allows
  // ~12 MiB/s and a stream that can go faster is limited by its window, not by the CPU
  const delay = 10;
  const limits = { maxDataBytes: defaults.maxFramePayloadLimitBytes, maxOpenBytes: defaults.maxOpenMetadataBytes };

  /** Counts the WINDOW_UPDATE frames arriving on `ws` (a session's: binaryType 'fragments'). */
  function countWindowUpdates(ws: WebSocket): { count: number } {
    const seen = { count: 0 };
    ws.on('message', (m: Buffer[]) =>
      decodeMessage(m, limits, (f) => {
        if (f.type === FrameType.WINDOW_UPDATE) seen.count++;
      }),
    );
    return seen;
  }

  it('a stream whose reader keeps up doubles its window, granting the growth as credit, and stops at the cap', async () => {
    const { server, serverWs, clientAcc } = await connectPair({}, { maxStreamWindowBytes: cap }, delay);
    const tx = guard(server.openStream(META));
    const rx = await clientAcc.next();
    expect(rx.receiveWindow).toBe(base);
    // right after the server's session has taken a WINDOW_UPDATE in, before it frames more DATA
    let maxCredit = tx.sendWindow;
    serverWs.on('message', () => (maxCredit = Math.max(maxCredit, tx.sendWindow)));
    const windows = [rx.receiveWindow];
    rx.on('data', () => {
      if (rx.receiveWindow !== windows.at(-1)) windows.push(rx.receiveWindow);
    });

    const data = randomBytes(8 * MiB);
    const got = collect(rx);
    await writeAll(tx, data);
    expect(sha256(await withTimeout(got, 20_000, 'the transfer'))).toBe(sha256(data));
    expect(windows).toEqual([base, 2 * base, cap]);
    expect(maxCredit).toBeGreaterThan(base);
    expect(maxCredit).toBeLessThanOrEqual(cap);
  });

  it('a reader that stalls after its window grew buffers at most that window, which stops growing and granting; after it resumes every byte arrives', async () => {
    const { server, serverWs, clientWs, clientAcc } = await connectPair({}, { maxStreamWindowBytes: cap }, delay);
    const tx = guard(server.openStream(META));
    const rx = await clientAcc.next();
    const updates = countWindowUpdates(serverWs);
    let maxBuffered = 0;
    clientWs.on('message', () => (maxBuffered = Math.max(maxBuffered, rx.readableLength)));

    const data = randomBytes(8 * MiB);
    const writer = writeAll(tx, data);
    const chunks: Buffer[] = [];
    let consumed = 0;
    await withTimeout(
      new Promise<void>((resolve) => {
        const onData = (c: Buffer): void => {
          chunks.push(c);
          consumed += c.length;
          if (rx.receiveWindow === cap && consumed >= 3 * MiB) {
            rx.pause(); // the reader stalls
            rx.off('data', onData);
            resolve();
          }
        };
        rx.on('data', onData);
      }),
      20_000,
      'the window to reach the cap',
    );

    // the sender uses the credit it has, then waits; what arrives meanwhile stays buffered
    await vi.waitFor(() => expect(tx.sendWindow).toBe(0), { timeout: 5_000, interval: 5 });
    await new Promise((r) => setTimeout(r, 6 * delay)); // WINDOW_UPDATEs already on the way land
    const updatesWhenStalled = updates.count;
    const bufferedWhenStalled = rx.readableLength;
    expect(bufferedWhenStalled).toBeGreaterThan(0);
    expect(bufferedWhenStalled).toBeLessThanOrEqual(cap);
    expect(rx.bytesRead).toBe(consumed + bufferedWhenStalled);
    await new Promise((r) => setTimeout(r, 20 * delay)); // ten round trips of nothing
    expect(updates.count).toBe(updatesWhenStalled);
    expect(rx.readableLength).toBe(bufferedWhenStalled);
    expect(rx.receiveWindow).toBe(cap);
    expect(tx.sendWindow).toBe(0);
    expect(maxBuffered).toBeLessThanOrEqual(cap);

    const rest = collect(rx);
    rx.resume();
    const [tail] = await withTimeout(Promise.all([rest, writer]), 20_000, 'the rest after resuming');
    expect(sha256(Buffer.concat([...chunks, tail]))).toBe(sha256(data));
    expect(maxBuffered).toBeLessThanOrEqual(cap);
  });

  it('many parallel bulk streams grow their windows by no more than the connection budget in total, and closed streams give their growth back', async () => {
    const budget = 1 * MiB;
    const n = 8;
    const { server, client, clientWs, clientAcc } = await connectPair(
      {},
      { maxStreamWindowBytes: cap, connectionWindowBudgetBytes: budget },
      delay,
    );
    const txs = Array.from({ length: n }, (_, i) => guard(server.openStream({ ...META, clientPort: i })));
    const rxs = await Promise.all(txs.map(() => clientAcc.next()));
    let maxGrowth = 0;
    clientWs.on(
      'message',
      () =>
        (maxGrowth = Math.max(
          maxGrowth,
          rxs.reduce((sum, s) => sum + s.receiveWindowGrowth, 0),
        )),
    );

    const data = txs.map(() => randomBytes(4 * MiB));
    const got = rxs.map((s) => collect(s));
    txs.forEach((s, i) => void writeAll(s, data[i]!));
    const received = await withTimeout(Promise.all(got), 30_000, 'the parallel transfers');
    for (const b of received) {
      const i = data.findIndex((d) => d.length === b.length && d.equals(b));
      expect(i).toBeGreaterThanOrEqual(0);
    }
    // eight streams wanted 256 KiB more each, then 512 KiB: the budget was all taken, never passed
    expect(maxGrowth).toBe(budget);

    for (const s of rxs) s.end(); // the writers have ended their side
    await vi.waitFor(() => expect(client.streamCount).toBe(0), { timeout: 5_000, interval: 5 });
    // the budget is whole again: one new stream grows all the way to the cap
    const tx = guard(server.openStream(META));
    const rx = await clientAcc.next();
    const one = randomBytes(8 * MiB);
    const gotOne = collect(rx);
    await writeAll(tx, one);
    expect(sha256(await withTimeout(gotOne, 20_000, 'the single transfer'))).toBe(sha256(one));
    expect(rx.receiveWindow).toBe(cap);
  });

  it('64 MiB cross each way at once with the default limits, intact (sha256)', async () => {
    const { server, clientAcc } = await connectPair();
    const a = guard(server.openStream(META));
    const b = await clientAcc.next();
    const down = randomBytes(64 * MiB);
    const up = randomBytes(64 * MiB);
    const atClient = collect(b);
    const atServer = collect(a);
    await withTimeout(Promise.all([writeAll(a, down, true, 256 * KiB), writeAll(b, up, true, 256 * KiB)]), 60_000, '64 MiB writes');
    const [gotClient, gotServer] = await withTimeout(Promise.all([atClient, atServer]), 60_000, '64 MiB reads');
    expect(sha256(gotClient)).toBe(sha256(down));
    expect(sha256(gotServer)).toBe(sha256(up));
  });

  it('a peer that sends past a grown window gets RELAY_ERR_WINDOW_EXCEEDED', async () => {
    let accepted: MuxStream | null = null;
    const raw = await connectRaw(
      {
        maxStreamWindowBytes: cap,
        onStream: (s) => {
          accepted = guard(s);
          s.resume();
        },
      },
      delay,
    );
    // a hand-made peer: sends all the credit it has whenever a WINDOW_UPDATE comes in
    const ws = raw.clientWs;
    let credit = defaults.initialStreamWindowBytes;
    let sending = true;
    const sendCredit = (): void => {
      for (; sending && credit > 0;) {
        const n = Math.min(credit, 64 * KiB);
        ws.send(encodeFrame(FrameType.DATA, 1, Buffer.alloc(n, 1)));
        credit -= n;
      }
    };
    const grown = new Promise<void>((resolve) => {
      ws.on('message', (m: Buffer) =>
        decodeFrames(m, limits, (f) => {
          if (f.type !== FrameType.WINDOW_UPDATE || f.streamId !== 1) return;
          credit += f.value;
          if (credit > defaults.initialStreamWindowBytes) {
            sending = false; // more than a base window outstanding: it grew
            resolve();
          }
          sendCredit();
        }),
      );
    });
    ws.send(encodeFrame(FrameType.OPEN, 1, encodeOpenMetadata(META)));
    sendCredit();
    await withTimeout(grown, 10_000, 'the window to grow');
    accepted!.pause(); // no more credit from here on; what is on its way lands
    await new Promise((r) => setTimeout(r, 6 * delay));
    expect(accepted!.receiveWindow).toBeGreaterThan(defaults.initialStreamWindowBytes);
    expect(credit).toBeGreaterThan(0);
    await expectProtocolFailure(raw, 'RELAY_ERR_WINDOW_EXCEEDED', () =>
      // exactly the credit is fine; one byte more is not
      ws.send(Buffer.concat([encodeFrame(FrameType.DATA, 1, Buffer.alloc(credit, 2)), encodeFrame(FrameType.DATA, 1, Buffer.from([3]))])),
    );
  });
});

describe('MuxSession: connection-level backpressure', () => {
  it('stops framing DATA while the socket is over its high-water mark, and resumes with every byte intact', async () => {
    const highWater = 256 * KiB;
    const batchTarget = defaults.batchTargetBytes;
    const n = 24;
    // the client opens the streams with a 1 MiB window each: the server may offer 24 MiB at once
    const { server, serverWs, clientWs, client, serverAcc } = await connectPair(
      { connectionHighWaterMarkBytes: highWater },
      { streamWindowBytes: 1 * MiB },
    );
    const rx = Array.from({ length: n }, (_, i) => guard(client.openStream({ ...META, clientPort: i })));
    const tx = await Promise.all(Array.from({ length: n }, () => serverAcc.next()));
    await vi.waitFor(() => tx.forEach((s) => expect(s.sendWindow).toBe(1 * MiB)), { timeout: 5_000, interval: 5 });

    let maxBuffered = 0;
    const send = serverWs.send.bind(serverWs) as (...args: unknown[]) => void;
    (serverWs as unknown as { send: (...args: unknown[]) => void }).send = (...args: unknown[]) => {
      send(...args);
      maxBuffered = Math.max(maxBuffered, serverWs.bufferedAmount);
    };

    const socket = (clientWs as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    const data = tx.map(() => randomBytes(1.5 * MiB));
    const writers = tx.map((s, i) => writeAll(s, data[i]!));
    // the kernel buffers fill first, then the WebSocket's own buffer passes the mark
    await vi.waitFor(() => expect(serverWs.bufferedAmount).toBeGreaterThan(highWater), { timeout: 10_000, interval: 5 });
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r)); // give the flush loop many turns
    expect(maxBuffered).toBeLessThanOrEqual(highWater + batchTarget + 64 * KiB);
    expect(serverWs.bufferedAmount).toBeLessThanOrEqual(highWater + batchTarget + 64 * KiB);

    socket.resume();
    const got = await withTimeout(
      Promise.all([Promise.all(rx.map((s) => collect(s))), Promise.all(writers)]).then(([g]) => g),
      30_000,
      'the transfers after resume',
    );
    got.forEach((b, i) => expect(sha256(b)).toBe(sha256(data[i]!)));
    expect(maxBuffered).toBeLessThanOrEqual(highWater + batchTarget + 64 * KiB);
    expect(server.isClosed).toBe(false);
  });
});

describe('MuxSession: strict decoding closes the tunnel with 1002 and the error code as reason', () => {
  const openFrame = (id: number): Buffer => encodeFrame(FrameType.OPEN, id, encodeOpenMetadata(META));

  const cases: [string, string, (ws: WebSocket) => void][] = [
    ['three garbage bytes', 'RELAY_ERR_FRAME_TRUNCATED', (ws) => ws.send(Buffer.from([9, 9, 9]))],
    ['an empty binary message', 'RELAY_ERR_FRAME_TRUNCATED', (ws) => ws.send(Buffer.alloc(0))],
    [
      'a frame of version 2',
      'RELAY_ERR_FRAME_VERSION',
      (ws) => {
        const f = encodeFrame(FrameType.DATA, 1, Buffer.from('x'));
        f[0] = 2;
        ws.send(f);
      },
    ],
    [
      'a frame of type 9',
      'RELAY_ERR_FRAME_TYPE',
      (ws) => {
        const f = encodeFrame(FrameType.RST, 1, null, 0);
        f[1] = 9;
        ws.send(f);
      },
    ],
    [
      'a frame with flags set',
      'RELAY_ERR_FRAME_FLAGS',
      (ws) => {
        const f = encodeFrame(FrameType.FIN, 1, null);
        f.writeUInt16BE(1, 2);
        ws.send(f);
      },
    ],
    [
      'DATA over the payload limit',
      'RELAY_ERR_FRAME_TOO_LARGE',
      (ws) => {
        ws.send(Buffer.concat([openFrame(1), encodeFrame(FrameType.DATA, 1, Buffer.alloc(defaults.maxFramePayloadLimitBytes + 1))]));
      },
    ],
    ['a text message', 'RELAY_ERR_FRAME_TEXT', (ws) => ws.send('hello', { binary: false })],
    [
      'DATA for a never-opened odd stream id',
      'RELAY_ERR_STREAM_UNKNOWN',
      (ws) => ws.send(encodeFrame(FrameType.DATA, 7, Buffer.from('x'))),
    ],
    [
      'WINDOW_UPDATE for a never-opened even stream id',
      'RELAY_ERR_STREAM_UNKNOWN',
      (ws) => ws.send(encodeFrame(FrameType.WINDOW_UPDATE, 2, null, 5)),
    ],
    [
      'an OPEN with metadata that is not JSON',
      'RELAY_ERR_FRAME_INVALID',
      (ws) => ws.send(encodeFrame(FrameType.OPEN, 1, Buffer.from('nope'))),
    ],
    ["an OPEN with the server's parity", 'RELAY_ERR_FRAME_INVALID', (ws) => ws.send(openFrame(2))],
    [
      'an OPEN that reuses an id',
      'RELAY_ERR_STREAM_DUPLICATE',
      (ws) => {
        ws.send(openFrame(1));
        ws.send(openFrame(1));
      },
    ],
    [
      'an OPEN below the highest id already opened',
      'RELAY_ERR_STREAM_DUPLICATE',
      (ws) => ws.send(Buffer.concat([openFrame(5), openFrame(3)])),
    ],
    [
      'DATA beyond the granted window',
      'RELAY_ERR_WINDOW_EXCEEDED',
      (ws) => {
        ws.send(openFrame(1));
        ws.send(encodeFrame(FrameType.DATA, 1, Buffer.alloc(defaults.initialStreamWindowBytes, 1))); // exactly the window: fine
        ws.send(encodeFrame(FrameType.DATA, 1, Buffer.from([1]))); // one byte more
      },
    ],
    [
      'DATA after FIN',
      'RELAY_ERR_DATA_AFTER_FIN',
      (ws) => {
        ws.send(Buffer.concat([openFrame(1), encodeFrame(FrameType.FIN, 1, null), encodeFrame(FrameType.DATA, 1, Buffer.from('late'))]));
      },
    ],
    [
      'a WINDOW_UPDATE that overflows the send window',
      'RELAY_ERR_WINDOW_OVERFLOW',
      (ws) => {
        ws.send(Buffer.concat([openFrame(1), encodeFrame(FrameType.WINDOW_UPDATE, 1, null, 0xffff_ffff)]));
      },
    ],
  ];

  for (const [what, code, send] of cases) {
    it(`${what} -> server session closes with ${code}, client sees 1002 "${code}"`, async () => {
      const raw = await connectRaw(); // accepts streams but never reads them
      await expectProtocolFailure(raw, code, () => send(raw.clientWs));
    });
  }

  it('streams open when the tunnel fails are destroyed with RELAY_ERR_SESSION_CLOSED', async () => {
    const raw = await connectRaw();
    raw.clientWs.send(openFrame(1));
    const s = await raw.serverAcc.next();
    await expectProtocolFailure(raw, 'RELAY_ERR_WINDOW_EXCEEDED', () =>
      raw.clientWs.send(encodeFrame(FrameType.DATA, 1, Buffer.alloc(defaults.initialStreamWindowBytes + 1))),
    );
    expect((await errorOf(s)).code).toBe('RELAY_ERR_SESSION_CLOSED');
    expect(raw.server.streamCount).toBe(0);
  });
});

describe('MuxSession: reset, close, GOAWAY', () => {
  it("destroying a stream resets the peer's stream with RELAY_ERR_STREAM_RESET and the session stays usable", async () => {
    const { server, client, clientAcc, serverAcc } = await connectPair();

    // server side destroys (no error: reset code cancel)
    const a = guard(server.openStream(META));
    const b = await clientAcc.next();
    a.write('first bytes');
    await withTimeout(once(b, 'data'), 5_000, 'first bytes');
    a.destroy();
    const errB = await errorOf(b);
    expect(errB.code).toBe('RELAY_ERR_STREAM_RESET');
    expect((errB as RelayError & { resetCode?: number }).resetCode).toBe(ResetCode.cancel);
    await closed(b);

    // client side destroys with an error (reset code internal)
    const c = guard(client.openStream(META));
    const d = await serverAcc.next();
    c.destroy(new Error('boom'));
    const errD = await errorOf(d);
    expect(errD.code).toBe('RELAY_ERR_STREAM_RESET');
    expect((errD as RelayError & { resetCode?: number }).resetCode).toBe(ResetCode.internal);
    await closed(d);

    // a write on the reset stream fails with the reset code
    const writeErr = await new Promise<Error | null | undefined>((resolve) => d.write('x', (e) => resolve(e)));
    expect(writeErr).toBeTruthy();

    // new streams still work both ways
    expect(server.isClosed).toBe(false);
    expect(client.isClosed).toBe(false);
    expect(server.usable).toBe(true);
    expect(client.usable).toBe(true);
    const e = guard(server.openStream(META));
    const f = await clientAcc.next();
    f.pipe(f);
    const got = collect(e);
    e.end('still alive');
    expect((await withTimeout(got, 5_000, 'echo after reset')).toString()).toBe('still alive');
    await vi.waitFor(
      () => {
        expect(server.streamCount).toBe(0);
        expect(client.streamCount).toBe(0);
      },
      { timeout: 2_000, interval: 5 },
    );
  });

  it("emits 'idle' when its last stream is gone, whether closed by FIN both ways or reset by the peer", async () => {
    const { server, client, clientAcc } = await connectPair();

    // FIN both ways
    const a = guard(server.openStream(META));
    const b = await clientAcc.next();
    const serverIdle1 = withTimeout(once(server, 'idle'), 5_000, "server 'idle' after FIN");
    const clientIdle1 = withTimeout(once(client, 'idle'), 5_000, "client 'idle' after FIN");
    b.resume();
    a.resume();
    a.end();
    b.end();
    await Promise.all([serverIdle1, clientIdle1]);

    // reset by the peer: the server destroys, the client receives the RST
    const c = guard(server.openStream(META));
    const d = await clientAcc.next();
    const clientIdle2 = withTimeout(once(client, 'idle'), 2_000, "client 'idle' after a peer RST");
    c.destroy();
    await errorOf(d);
    expect(client.streamCount).toBe(0);
    await clientIdle2;
  });

  it('closing the WebSocket destroys open streams on both sides with RELAY_ERR_SESSION_CLOSED', async () => {
    const { server, client, clientWs, clientAcc } = await connectPair();
    const a1 = guard(server.openStream(META));
    const a2 = guard(server.openStream(META));
    const b1 = await clientAcc.next();
    const b2 = await clientAcc.next();
    const serverClose = once(server, 'close') as Promise<[RelayError | null]>;
    const clientClose = once(client, 'close') as Promise<[RelayError | null]>;
    clientWs.close(CloseCode.normal); // the socket itself, under the session
    const [[serverErr], [clientErr]] = await withTimeout(Promise.all([serverClose, clientClose]), 5_000, 'session close');
    expect(serverErr).toBeNull(); // a normal close is not an error for the session ...
    expect(clientErr).toBeNull();
    for (const s of [a1, a2, b1, b2]) expect((await errorOf(s)).code).toBe('RELAY_ERR_SESSION_CLOSED'); // ... but it is for its streams
    expect(server.streamCount).toBe(0);
    expect(client.streamCount).toBe(0);
    expect(server.usable).toBe(false);
    expect(thrownCode(() => server.openStream(META))).toBe('RELAY_ERR_SESSION_CLOSED');
    expect(thrownCode(() => client.openStream(META))).toBe('RELAY_ERR_SESSION_CLOSED');
  });

  it('an abruptly cut WebSocket closes the peer session with RELAY_ERR_SESSION_CLOSED and destroys its streams', async () => {
    const { server, clientWs, clientAcc } = await connectPair();
    const a = guard(server.openStream(META));
    await clientAcc.next();
    const serverClose = once(server, 'close') as Promise<[RelayError | null]>;
    clientWs.terminate();
    const [err] = await withTimeout(serverClose, 5_000, 'server close');
    expect(err?.code).toBe('RELAY_ERR_SESSION_CLOSED');
    expect((await errorOf(a)).code).toBe('RELAY_ERR_SESSION_CLOSED');
  });

  it('session.close() destroys local and remote streams with RELAY_ERR_SESSION_CLOSED', async () => {
    const { server, client, clientAcc } = await connectPair();
    const a = guard(server.openStream(META));
    const b = await clientAcc.next();
    const serverClose = once(server, 'close') as Promise<[RelayError | null]>;
    client.close();
    expect(client.isClosed).toBe(true);
    expect((await errorOf(b)).code).toBe('RELAY_ERR_SESSION_CLOSED');
    const [err] = await withTimeout(serverClose, 5_000, 'server close');
    expect(err).toBeNull();
    expect((await errorOf(a)).code).toBe('RELAY_ERR_SESSION_CLOSED');
  });

  it('after goAway() the peer is no longer usable and openStream throws RELAY_ERR_GOAWAY, while existing streams finish', async () => {
    const { server, client, clientAcc } = await connectPair();
    const a = guard(server.openStream(META));
    const b = await clientAcc.next();
    expect(client.usable).toBe(true);

    const goaway = withTimeout(once(client, 'goaway'), 5_000, "client 'goaway'");
    server.goAway(7);
    expect(server.usable).toBe(false);
    expect(thrownCode(() => server.openStream(META))).toBe('RELAY_ERR_GOAWAY');
    const [code] = await goaway;
    expect(code).toBe(7);
    expect(client.remoteGoingAway).toBe(true);
    expect(client.usable).toBe(false);
    expect(thrownCode(() => client.openStream(META))).toBe('RELAY_ERR_GOAWAY');

    // the existing stream still carries data both ways to the end
    const down = randomBytes(512 * KiB);
    const up = randomBytes(384 * KiB);
    const atClient = collect(b);
    const atServer = collect(a);
    await withTimeout(Promise.all([writeAll(a, down), writeAll(b, up)]), 10_000, 'writes after GOAWAY');
    const [gotClient, gotServer] = await withTimeout(Promise.all([atClient, atServer]), 10_000, 'reads after GOAWAY');
    expect(sha256(gotClient)).toBe(sha256(down));
    expect(sha256(gotServer)).toBe(sha256(up));
    await Promise.all([closed(a), closed(b)]);
    expect(a.errored).toBeNull();
    expect(b.errored).toBeNull();
    expect(server.isClosed).toBe(false);
    expect(client.isClosed).toBe(false);
  });
});

describe('MuxSession: liveness', () => {
  const interval = 50;

  it('a peer that stops answering pings is cut with RELAY_ERR_PING_TIMEOUT within ~3 intervals', async () => {
    const { server, clientWs } = await connectPair({ pingIntervalMs: interval });
    const serverClose = once(server, 'close') as Promise<[RelayError | null]>;
    const started = performance.now();
    (clientWs as unknown as { _socket: { pause(): void } })._socket.pause();
    const [err] = await withTimeout(serverClose, 3 * interval + 250, 'ping timeout');
    const elapsed = performance.now() - started;
    expect(err?.code).toBe('RELAY_ERR_PING_TIMEOUT');
    expect(elapsed).toBeLessThanOrEqual(3 * interval + 250);
    expect(server.isClosed).toBe(true);
  });

  it('a peer that answers pings keeps the session up over several intervals and rttMs becomes finite', async () => {
    const { server, client, clientAcc } = await connectPair({ pingIntervalMs: interval });
    expect(Number.isNaN(server.rttMs)).toBe(true);
    let rtts = 0;
    const sixPongs = new Promise<void>((resolve) => {
      server.on('rtt', () => {
        if (++rtts === 6) resolve();
      });
    });
    const started = performance.now();
    await withTimeout(sixPongs, 6 * interval + 1_000, 'six pongs');
    expect(performance.now() - started).toBeGreaterThanOrEqual(5 * interval);
    expect(server.isClosed).toBe(false);
    expect(Number.isFinite(server.rttMs)).toBe(true);
    expect(server.rttMs).toBeGreaterThanOrEqual(0);
    // and it still carries streams
    const a = guard(server.openStream(META));
    const b = await clientAcc.next();
    b.pipe(b);
    const got = collect(a);
    a.end('alive');
    expect((await withTimeout(got, 5_000, 'echo')).toString()).toBe('alive');
    expect(client.isClosed).toBe(false);
  });
});

describe('MuxSession: maxStreamsPerConnection', () => {
  it("OPENs past the limit are refused (the opener's stream errors with RELAY_ERR_STREAM_RESET) and nothing leaks", async () => {
    const limit = 3;
    const { server, client, serverAcc } = await connectPair({ maxStreamsPerConnection: limit });
    const opened = Array.from({ length: 5 }, (_, i) => guard(client.openStream({ ...META, clientPort: i })));
    // writes on the refused streams may already be in flight: the server must drop them quietly
    for (const s of opened) s.write(Buffer.from(`hello from ${s.meta.clientPort}`));

    const refused = opened.slice(limit);
    for (const s of refused) {
      const err = await errorOf(s);
      expect(err.code).toBe('RELAY_ERR_STREAM_RESET');
      expect((err as RelayError & { resetCode?: number }).resetCode).toBe(ResetCode.refused);
    }
    const accepted = await Promise.all(Array.from({ length: limit }, () => serverAcc.next()));
    expect(accepted.map((s) => s.meta.clientPort).sort()).toEqual([0, 1, 2]);
    expect(serverAcc.all).toHaveLength(limit);
    expect(server.streamCount).toBe(limit);
    expect(client.streamCount).toBe(limit);
    expect(server.usable).toBe(false);
    expect(server.isClosed).toBe(false);
    expect(client.isClosed).toBe(false);

    // the accepted ones work; when they finish, the counts go back to zero
    for (const s of accepted) s.pipe(s);
    const echoes = opened.slice(0, limit).map((s) => {
      const got = collect(s);
      s.end();
      return got;
    });
    const got = await withTimeout(Promise.all(echoes), 5_000, 'echoes');
    got.forEach((b, i) => expect(b.toString()).toBe(`hello from ${i}`));
    await vi.waitFor(
      () => {
        expect(server.streamCount).toBe(0);
        expect(client.streamCount).toBe(0);
      },
      { timeout: 2_000, interval: 5 },
    );
    expect(server.usable).toBe(true);

    // capacity is back: a new stream is accepted
    const again = guard(client.openStream(META));
    const peer = await serverAcc.next();
    peer.pipe(peer);
    const echoed = collect(again);
    again.end('again');
    expect((await withTimeout(echoed, 5_000, 'echo again')).toString()).toBe('again');
  });

  it('a session without onStream refuses every OPEN with RELAY_ERR_STREAM_RESET', async () => {
    const { client, server } = await connectPair({ onStream: null });
    const s = guard(client.openStream(META));
    const err = await errorOf(s);
    expect(err.code).toBe('RELAY_ERR_STREAM_RESET');
    expect((err as RelayError & { resetCode?: number }).resetCode).toBe(ResetCode.refused);
    expect(server.streamCount).toBe(0);
    await vi.waitFor(() => expect(client.streamCount).toBe(0), { timeout: 2_000, interval: 5 });
    expect(server.isClosed).toBe(false);
  });
});
