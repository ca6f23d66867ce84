/**
 * A multiplexed session over one WebSocket: many `MuxStream`s, one connection. The session owns
 * stream ids, the frame decoder, and the write path: frames produced during one callback (before
 * the next process tick) are encoded into one WebSocket message and sent with one write (batching), and DATA is framed
 * only while the socket's `bufferedAmount` is under the high-water mark (connection-level
 * backpressure). Liveness: WebSocket pings; a connection that misses a pong is terminated.
 */
import { EventEmitter } from 'node:events';
import type { WebSocket, RawData } from 'ws';
import { defaults } from '../defaults.js';
import { RelayError, CloseCode, ResetCode } from '../errors.js';
import { limitSpec } from '../limits.js';
import {
  FrameBatch,
  FrameType,
  HEADER_BYTES,
  decodeMessage,
  decodeOpenMetadata,
  encodeDataHeader,
  encodeOpenMetadata,
  type DecodeLimits,
  type Frame,
  type OpenMetadata,
} from './frame-codec.js';
import { MuxStream, type StreamHost } from './stream.js';

export interface SessionOptions {
  /** 'server' (the relay) opens even stream ids, 'client' (the agent) odd ones. */
  role: 'client' | 'server';
  streamWindowBytes?: number;
  maxStreamWindowBytes?: number;
  connectionWindowBudgetBytes?: number;
  maxFramePayloadBytes?: number;
  maxFramePayloadLimitBytes?: number;
  maxOpenMetadataBytes?: number;
  batchTargetBytes?: number;
  connectionHighWaterMarkBytes?: number;
  /** Streams this side takes from the peer at once; an OPEN past it is refused with RST. */
  maxStreamsPerConnection?: number;
  /**
   * The peer's own limit, when it stated one (the agent does in its upgrade request,
   * X-Mux-Max-Streams): this side opens no more than min(own, peer's) streams. Unset: own only.
   */
  peerMaxStreams?: number;
  pingIntervalMs?: number;
  /** Accepts streams the peer opens; without it every OPEN is refused. */
  onStream?: (stream: MuxStream) => void;
}

export interface SessionEvents {
  close: [err: RelayError | null];
  goaway: [code: number];
  rtt: [ms: number];
  /** The last open stream closed. */
  idle: [];
  /** A stream closed on a connection that was at its stream limit: it can take a new one again. */
  capacity: [];
}

const noop = (): void => {};

/**
 * The upgrade request header in which the agent states the streams it accepts per connection
 * (its --max-streams-per-connection); the relay then opens at most min(its own, this). An agent
 * that sends none (older than the header) is held to the relay's own limit.
 */
export const MAX_STREAMS_HEADER = 'x-mux-max-streams';
/** Largest stream limit either side can be configured with (and the largest the header may state): the limits table's. */
export const MAX_STREAMS_LIMIT = limitSpec('max-streams-per-connection').max;

/** The upgrade request header stating this side's stream limit (the agent sends it). */
export function maxStreamsHeader(options: Pick<SessionOptions, 'maxStreamsPerConnection'>): Record<string, string> {
  return { [MAX_STREAMS_HEADER]: String(options.maxStreamsPerConnection ?? defaults.maxStreamsPerConnection) };
}

/**
 * A MAX_STREAMS_HEADER value: decimal digits only, 1..MAX_STREAMS_LIMIT; anything else (a list,
 * a sign, spaces, a leading zero, out of range) is null, and the caller ignores it.
 */
export function parseMaxStreamsHeader(value: string | string[] | undefined): number | null {
  if (typeof value !== 'string' || !/^[1-9][0-9]{0,6}$/.test(value)) return null;
  const n = Number(value);
  return n <= MAX_STREAMS_LIMIT ? n : null;
}

/**
 * The credit round trip streams grow their windows against is the least one seen in this long
 * (a windowed minimum, as BBR keeps min_rtt): samples only ever overstate the round trip (a
 * sender with nothing to send answers late), and an old minimum must give way if the path slows.
 */
const CREDIT_RTT_WINDOW_MS = 10_000;

/**
 * On the server side, a DATA payload this large goes out as a message of its own, uncopied
 * (lent), instead of being copied into a fresh batch buffer; see flush(). Measured with
 * test/bench/mux-bulk.ts (TLS, 64 MiB): the relay's CPU for sending fell by about half with 16
 * and 64 KiB payloads, the receiver's rose 5-10% (two WebSocket frames a message); smaller
 * payloads stay batched, where one ws.send for many frames is what counts. The client side never
 * lends: it masks every message (RFC 6455 §5.3) and `ws` masks a Buffer into a fresh copy
 * anyway, so lending saved it nothing and cost the second send (+20-35% CPU, measured).
 */
const LEND_PAYLOAD_BYTES = 16 * 1024;
const FIRST_FRAGMENT = Object.freeze({ binary: true, fin: false });
const LAST_FRAGMENT = Object.freeze({ binary: true, fin: true });
const WHOLE_MESSAGE = Object.freeze({ binary: true });

type WriteCallback = (err?: Error | null) => void;

export class MuxSession extends EventEmitter<SessionEvents> implements StreamHost {
  readonly ws: WebSocket;
  private readonly role: 'client' | 'server';
  private readonly streamWindow: number;
  private readonly maxStreamWindow: number;
  private readonly windowBudget: number;
  /** Sum of what open streams' receive windows have grown past streamWindow. */
  private windowBudgetUsed = 0;
  private creditRtt = Number.NaN;
  private creditRttAt = 0;
  private readonly maxFrame: number;
  /** DATA payloads of this many bytes or more are lent (LEND_PAYLOAD_BYTES), or never (Infinity). */
  private readonly lendFrom: number;
  private readonly limits: DecodeLimits;
  private readonly batchTarget: number;
  private readonly highWater: number;
  /** What this side accepts (maxStreamsPerConnection). */
  private readonly ownMaxStreams: number;
  /** What the peer said it accepts (Infinity: it said nothing). */
  private peerMaxStreams = Infinity;
  private readonly onStream: ((stream: MuxStream) => void) | undefined;

  private readonly streams = new Map<number, MuxStream>();
  /** Streams with DATA waiting to be framed, in arrival order (round robin). */
  private readonly ready = new Set<MuxStream>();
  private readonly batch = new FrameBatch();
  private nextLocalId: number;
  private highestRemoteId = 0;
  private flushScheduled = false;
  private blocked = false;
  private closed = false;
  private goingAway = false;
  /** The peer sent GOAWAY: open no new streams here. */
  remoteGoingAway = false;
  /** The WebSocket close code the peer sent (1001: it is going away), null until the peer closed. */
  peerCloseCode: number | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private awaitingPong = false;
  private pingSentAt = 0;
  /** Last measured round trip, ms (NaN before the first pong). */
  rttMs = Number.NaN;
  bytesIn = 0;
  bytesOut = 0;

  constructor(ws: WebSocket, options: SessionOptions) {
    super();
    this.ws = ws;
    this.role = options.role;
    this.streamWindow = options.streamWindowBytes ?? defaults.streamWindowBytes;
    // the smallest window the protocol allows: the table's lower bound of --stream-window-bytes
    const { min } = limitSpec('stream-window-bytes');
    if (this.streamWindow < min) throw new RelayError('RELAY_ERR_CONFIG', `stream window must be at least ${min} bytes`);
    this.maxStreamWindow = options.maxStreamWindowBytes ?? defaults.maxStreamWindowBytes;
    this.windowBudget = options.connectionWindowBudgetBytes ?? defaults.connectionWindowBudgetBytes;
    this.maxFrame = options.maxFramePayloadBytes ?? defaults.maxFramePayloadBytes;
    this.lendFrom = this.role === 'server' ? LEND_PAYLOAD_BYTES : Infinity;
    this.limits = {
      maxDataBytes: options.maxFramePayloadLimitBytes ?? defaults.maxFramePayloadLimitBytes,
      maxOpenBytes: options.maxOpenMetadataBytes ?? defaults.maxOpenMetadataBytes,
    };
    this.batchTarget = options.batchTargetBytes ?? defaults.batchTargetBytes;
    this.highWater = options.connectionHighWaterMarkBytes ?? defaults.connectionHighWaterMarkBytes;
    this.ownMaxStreams = options.maxStreamsPerConnection ?? defaults.maxStreamsPerConnection;
    if (options.peerMaxStreams !== undefined) this.setPeerMaxStreams(options.peerMaxStreams);
    this.onStream = options.onStream;
    this.nextLocalId = this.role === 'server' ? 2 : 1;

    ws.binaryType = 'fragments'; // a lent DATA frame arrives as header + payload, not joined (decodeMessage)
    ws.on('message', this.onMessage);
    ws.on('close', this.onWsClose);
    ws.on('error', noop); // 'close' follows every 'error'; the reason is logged there
    ws.on('pong', this.onPong);
    const interval = options.pingIntervalMs ?? defaults.pingIntervalMs;
    if (interval > 0) {
      this.pingTimer = setInterval(this.onPingTick, interval);
      this.pingTimer.unref();
    }
  }

  /** Open streams on this connection. */
  get streamCount(): number {
    return this.streams.size;
  }

  /**
   * The stream limit of this connection: min(this side's maxStreamsPerConnection, the peer's
   * stated limit). `usable` opens no more than this; capacity math should use it too.
   */
  get maxStreams(): number {
    return Math.min(this.ownMaxStreams, this.peerMaxStreams);
  }

  /** The peer's stated stream limit (a positive integer); this side then opens at most min(own, it). */
  setPeerMaxStreams(n: number): void {
    if (!Number.isSafeInteger(n) || n < 1) throw new RelayError('RELAY_ERR_CONFIG', `peer stream limit ${n} is not a positive integer`);
    this.peerMaxStreams = n;
  }

  /** True while new streams may be opened here. */
  get usable(): boolean {
    return !this.closed && !this.goingAway && !this.remoteGoingAway && this.streams.size < this.maxStreams;
  }

  /** True once either side sent GOAWAY. */
  get draining(): boolean {
    return this.goingAway || this.remoteGoingAway;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Opens a stream to the peer, carrying `meta` in the OPEN frame. */
  openStream(meta: OpenMetadata): MuxStream {
    if (this.closed) throw new RelayError('RELAY_ERR_SESSION_CLOSED');
    if (this.goingAway || this.remoteGoingAway) throw new RelayError('RELAY_ERR_GOAWAY');
    const id = this.nextLocalId;
    this.nextLocalId += 2;
    const stream = this.newStream(id, meta);
    this.streams.set(id, stream);
    this.batch.push(FrameType.OPEN, id, encodeOpenMetadata(meta));
    const credit = stream.initialCredit();
    if (credit > 0) this.batch.push(FrameType.WINDOW_UPDATE, id, null, credit);
    this.scheduleFlush();
    return stream;
  }

  /** Tells the peer no new streams will be taken or opened here; open streams go on. */
  goAway(code = 0): void {
    if (this.closed || this.goingAway) return;
    this.goingAway = true;
    this.batch.push(FrameType.GOAWAY, 0, null, code);
    this.scheduleFlush();
    for (const stream of this.streams.values()) stream.emit('goaway');
  }

  /** Closes the connection; open streams are reset. */
  close(code: number = CloseCode.normal, reason = ''): void {
    if (this.closed) return;
    this.flush();
    this.ws.close(code, reason);
    // a peer that never answers the close handshake is cut after a second
    setTimeout(() => this.ws.terminate(), 1000).unref();
    this.shutdown(null);
  }

  /** Cuts the connection at once (no close handshake). */
  terminate(err: RelayError | null = null): void {
    this.ws.terminate();
    this.shutdown(err);
  }

  private newStream(id: number, meta: OpenMetadata): MuxStream {
    return new MuxStream(this, id, meta, defaults.initialStreamWindowBytes, this.streamWindow, this.maxStreamWindow);
  }

  // ---------------------------------------------------------------- StreamHost

  /** The least credit round trip streams measured lately (ms); before any, the ping round trip. */
  get creditRttMs(): number {
    return Number.isNaN(this.creditRtt) ? this.rttMs : this.creditRtt;
  }

  noteCreditRtt(ms: number): void {
    const now = performance.now();
    if (ms > this.creditRtt && now - this.creditRttAt <= CREDIT_RTT_WINDOW_MS) return;
    this.creditRtt = ms;
    this.creditRttAt = now;
  }

  reserveWindow(bytes: number): boolean {
    if (this.windowBudgetUsed + bytes > this.windowBudget) return false;
    this.windowBudgetUsed += bytes;
    return true;
  }

  scheduleData(stream: MuxStream): void {
    this.ready.add(stream);
    this.scheduleFlush();
  }

  sendFin(stream: MuxStream): void {
    if (this.closed) return;
    this.batch.push(FrameType.FIN, stream.id, null);
    this.scheduleFlush();
  }

  sendRst(stream: MuxStream, code: number): void {
    this.ready.delete(stream);
    if (this.closed) return;
    this.batch.push(FrameType.RST, stream.id, null, code);
    this.scheduleFlush();
  }

  sendWindowUpdate(stream: MuxStream, delta: number): void {
    if (this.closed) return;
    this.batch.push(FrameType.WINDOW_UPDATE, stream.id, null, delta);
    this.scheduleFlush();
  }

  forget(stream: MuxStream): void {
    this.ready.delete(stream);
    if (this.streams.get(stream.id) === stream) {
      this.windowBudgetUsed -= stream.receiveWindowGrowth;
      const wasFull = this.streams.size >= this.maxStreams;
      this.streams.delete(stream.id);
      if (wasFull) this.emit('capacity');
      if (this.streams.size === 0) this.emit('idle');
    }
  }

  // ---------------------------------------------------------------- write path

  private scheduleFlush(): void {
    if (this.flushScheduled || this.closed) return;
    this.flushScheduled = true;
    // nextTick, not setImmediate: a window update or a response leaves as soon as the callback
    // that made it returns (measured: bulk +10-15%, small requests unchanged).
    process.nextTick(this.onFlushTick);
  }

  private readonly onFlushTick = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  /**
   * Frames ready DATA, round robin within credit, until `batchTarget` bytes are framed (the next
   * tick goes on, unless the socket is then over its high-water mark), and sends it in order.
   * Frames go into the batch: one copy and one ws.send for many frames. On the server side a
   * DATA payload of LEND_PAYLOAD_BYTES or more is lent instead: sent uncopied as a message of its
   * own, its 12-byte header and its payload as the message's two fragments (RFC 6455 §5.4; `ws`
   * writes each with one writev, a receiving `ws` joins them, or hands them over as they are to
   * a session: decodeMessage). A frame still never spans messages. A write any of which was lent
   * gets its callback once the socket has written it, as `net.Socket` calls back, not once it is
   * framed: until then the socket points at the producer's bytes.
   */
  private flush(): void {
    if (this.closed) return;
    const out: (Buffer | [header: Buffer, payload: Buffer])[] = [];
    const copied: WriteCallback[] = [];
    const written: WriteCallback[] = [];
    if (!this.blocked && this.ws.bufferedAmount > this.highWater) this.blocked = true;
    let framed = 0;
    while (!this.blocked && this.ready.size > 0 && framed < this.batchTarget) {
      for (const stream of this.ready) {
        const taken = stream.takeData(this.maxFrame, this.lendFrom);
        if (!taken) {
          this.ready.delete(stream);
          continue;
        }
        if (taken.lent) {
          if (this.batch.count > 0) out.push(this.batch.take());
          out.push([encodeDataHeader(stream.id, taken.payload.length), taken.payload]);
        } else {
          this.batch.push(FrameType.DATA, stream.id, taken.payload);
        }
        if (taken.done) (taken.doneWhenWritten ? written : copied).push(taken.done);
        framed += HEADER_BYTES + taken.payload.length;
        if (!stream.sendable) this.ready.delete(stream);
        if (framed >= this.batchTarget) break;
      }
    }
    if (this.batch.count > 0) out.push(this.batch.take());
    for (const cb of copied) cb();
    for (let i = 0; i < out.length; i++) {
      const message = out[i]!;
      const onSent = i === out.length - 1 && written.length > 0 ? this.afterWritten(written) : this.onSent;
      if (Buffer.isBuffer(message)) {
        this.bytesOut += message.length;
        this.ws.send(message, WHOLE_MESSAGE, onSent);
      } else {
        this.bytesOut += message[0].length + message[1].length;
        this.ws.send(message[0], FIRST_FRAGMENT);
        this.ws.send(message[1], LAST_FRAGMENT, onSent);
      }
    }
    if (this.ready.size > 0 && !this.blocked) this.scheduleFlush();
  }

  /** A send callback that also hands lent writes back to their producers. */
  private afterWritten(callbacks: WriteCallback[]): (err?: Error) => void {
    return (err) => {
      this.onSent(err);
      for (const cb of callbacks) cb(); // on a failed send the session is closing, and its streams with it
    };
  }

  private readonly onSent = (err?: Error): void => {
    if (err || this.closed) return;
    if (this.blocked && this.ws.bufferedAmount <= this.highWater / 2) {
      this.blocked = false;
      if (this.ready.size > 0) this.scheduleFlush();
    }
  };

  // ---------------------------------------------------------------- read path

  private readonly onMessage = (data: RawData, isBinary: boolean): void => {
    if (this.closed) return;
    if (!isBinary) {
      this.fail(new RelayError('RELAY_ERR_FRAME_TEXT'));
      return;
    }
    const fragments = data as Buffer[];
    for (const f of fragments) this.bytesIn += f.length;
    try {
      decodeMessage(fragments, this.limits, this.onFrame);
    } catch (err) {
      this.fail(err instanceof RelayError ? err : new RelayError('RELAY_ERR_FRAME_INVALID', String(err)));
    }
  };

  private readonly onFrame = (frame: Frame): void => {
    if (this.closed) return;
    if (frame.type === FrameType.GOAWAY) {
      this.remoteGoingAway = true;
      this.emit('goaway', frame.value);
      for (const stream of this.streams.values()) stream.emit('goaway');
      return;
    }
    const id = frame.streamId;
    const stream = this.streams.get(id);
    if (frame.type === FrameType.OPEN) {
      this.acceptOpen(frame);
      return;
    }
    if (!stream) {
      if (this.wasOpened(id)) return; // closed here while the frame was in flight
      throw new RelayError('RELAY_ERR_STREAM_UNKNOWN', `frame for stream ${id}, which was never opened`);
    }
    let err: RelayError | null = null;
    switch (frame.type) {
      case FrameType.DATA:
        err = stream.onData(frame.payload);
        break;
      case FrameType.WINDOW_UPDATE:
        err = stream.onWindowUpdate(frame.value);
        break;
      case FrameType.FIN:
        stream.onFin();
        break;
      case FrameType.RST:
        stream.onReset(frame.value); // its _destroy() forgets it
        break;
    }
    if (err) throw err;
  };

  private wasOpened(id: number): boolean {
    const local = (id % 2 === 0) === (this.role === 'server');
    return local ? id < this.nextLocalId : id <= this.highestRemoteId;
  }

  private acceptOpen(frame: Frame): void {
    const id = frame.streamId;
    const remoteParity = this.role === 'server' ? 1 : 0;
    if (id % 2 !== remoteParity) {
      throw new RelayError('RELAY_ERR_FRAME_INVALID', `OPEN for stream ${id}, which has this side's parity`);
    }
    if (id <= this.highestRemoteId) throw new RelayError('RELAY_ERR_STREAM_DUPLICATE', `OPEN for stream ${id} reuses an id`);
    this.highestRemoteId = id;
    const meta = decodeOpenMetadata(frame.payload);
    if (!this.onStream || this.goingAway || this.streams.size >= this.ownMaxStreams) {
      this.batch.push(FrameType.RST, id, null, ResetCode.refused);
      this.scheduleFlush();
      return;
    }
    const stream = this.newStream(id, meta);
    this.streams.set(id, stream);
    const credit = stream.initialCredit();
    if (credit > 0) this.sendWindowUpdate(stream, credit);
    this.onStream(stream);
  }

  // ---------------------------------------------------------------- liveness and teardown

  private readonly onPingTick = (): void => {
    if (this.closed) return;
    if (this.awaitingPong) {
      this.terminate(new RelayError('RELAY_ERR_PING_TIMEOUT'));
      return;
    }
    this.awaitingPong = true;
    this.pingSentAt = performance.now();
    this.ws.ping();
  };

  private readonly onPong = (): void => {
    if (!this.awaitingPong) return;
    this.awaitingPong = false;
    this.rttMs = performance.now() - this.pingSentAt;
    this.emit('rtt', this.rttMs);
  };

  /** Protocol error: close the tunnel with the error's close code and its stable code as reason. */
  private fail(err: RelayError): void {
    if (this.closed) return;
    this.ws.close(err.closeCode ?? CloseCode.protocolError, err.code);
    setTimeout(() => this.ws.terminate(), 1000).unref();
    this.shutdown(err);
  }

  private readonly onWsClose = (code: number, reason: Buffer): void => {
    if (this.closed) return;
    this.peerCloseCode = code;
    const text = reason.toString();
    const err =
      code === CloseCode.normal || code === CloseCode.goingAway || code === 1005 /* no status: a plain close */
        ? null
        : new RelayError('RELAY_ERR_SESSION_CLOSED', `tunnel closed by peer (${code}${text ? ` ${text}` : ''})`);
    this.shutdown(err);
  };

  private shutdown(err: RelayError | null): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.ready.clear();
    const streamErr = new RelayError('RELAY_ERR_SESSION_CLOSED', err ? `tunnel closed: ${err.message}` : undefined);
    for (const stream of this.streams.values()) stream.onSessionClosed(streamErr);
    this.streams.clear();
    this.emit('close', err);
  }
}
