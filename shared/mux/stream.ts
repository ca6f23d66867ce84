/**
 * One virtual stream on a tunnel connection, exposed as a Node `Duplex` that can stand in for a
 * `net.Socket`: `http.Agent#createConnection` may return it and `http.Server#emit('connection')`
 * may take it. It carries the socket methods those callers use (`setTimeout` with a real idle
 * timer, `setKeepAlive`, `setNoDelay`, `ref`, `unref`, `destroySoon`, addresses); without them
 * Node throws inside an event handler and the process dies.
 *
 * Flow control: the stream may send only as many bytes as the peer has granted (credit window);
 * it grants the peer credit back as its reader consumes, at half the window, so a stalled reader
 * stalls only its own stream and buffers at most its window (which does not grow while it stalls).
 *
 * The receive window grows while it is what limits the stream (auto-tuning, as quic-go's
 * `maybeAdjustWindowSize` and grpc-go's BDP estimator do): when a half window's credit is due,
 * the stream looks at how long the reader took to consume it. At that rate, a whole window lasts
 * `window / rate`; when that is under `WINDOW_GROWTH_RTTS` credit round trips, the window, not
 * the reader, holds the stream back (or would at the next hiccup), so it doubles (the extra is
 * granted with the credit), up to the session's cap and within its per-connection budget. A reader that stalls
 * or trails returns credit slowly, so its window never grows. No wire change: WINDOW_UPDATE is
 * how any yamux-style window grows.
 */
import { Duplex } from 'node:stream';
import { RelayError, ResetCode } from '../errors.js';
import type { OpenMetadata } from './frame-codec.js';

/**
 * A window doubles when, at the rate its last half was consumed, a whole window lasts less than
 * this many credit round trips. Credit goes back at half a window, so a sender never waits for
 * credit once half a window outlasts one round trip: 2 is the least that keeps a steady stream
 * from stalling; 4 (quic-go's factor) leaves room for round trips that grow under load.
 */
const WINDOW_GROWTH_RTTS = 4;

/** What a stream needs from its session. */
export interface StreamHost {
  /** Marks the stream as having DATA to frame. */
  scheduleData(stream: MuxStream): void;
  sendFin(stream: MuxStream): void;
  sendRst(stream: MuxStream, code: number): void;
  sendWindowUpdate(stream: MuxStream, delta: number): void;
  /** Called once when the stream is gone (closed both ways, or reset). */
  forget(stream: MuxStream): void;
  /** The credit round trip the session has seen (ms, a recent minimum); NaN before any. */
  readonly creditRttMs: number;
  /** One credit round trip measured by a stream: a grant sent -> the first byte it allowed arrived. */
  noteCreditRtt(ms: number): void;
  /** Takes `bytes` of the connection's window budget; false, taking nothing, if that would pass it. */
  reserveWindow(bytes: number): boolean;
  /** True once either side sent GOAWAY: finish what is open, start nothing new here. */
  readonly draining: boolean;
}

interface PendingWrite {
  chunks: Buffer[];
  /** Offset into chunks[0] already framed. */
  offset: number;
  callback: (err?: Error | null) => void;
  /** Some of it went to the socket uncopied: the callback waits until the socket has written it. */
  lent: boolean;
}

/** A slice of a stream's pending write, framed by the session as one DATA frame. */
export interface TakenData {
  payload: Buffer;
  /** The payload goes to the socket as it is, not copied into a batch. */
  lent: boolean;
  /**
   * The write's callback, once all of it is taken. The producer must not get its buffers back
   * while anything still points at them: call it once the batch is encoded, or, when
   * `doneWhenWritten`, once the socket has written the last message that carries the write.
   */
  done: ((err?: Error | null) => void) | null;
  doneWhenWritten: boolean;
}

function onIdleTimer(stream: MuxStream): void {
  stream.idleTimerFired();
}

export class MuxStream extends Duplex {
  readonly id: number;
  readonly meta: OpenMetadata;
  /** Bytes we may still send before the peer grants more. */
  sendWindow: number;
  /** Bytes the peer may still send us. */
  private recvAvailable: number;
  /** Our receive window: grows from `baseRecvWindow` up to `maxRecvWindow` (see the class doc). */
  private recvWindow: number;
  private readonly baseRecvWindow: number;
  private readonly maxRecvWindow: number;
  /** Every DATA byte the peer sent, including bytes dropped after we reset the stream. */
  private receivedBytes = 0;
  private pushedBytes = 0;
  private creditedBytes = 0;
  /** When the current auto-tuning epoch (the consumption since the last grant) began, ms. */
  private epochStart = 0;
  /** A credit round trip being timed: the peer's limit before a grant (-1: none), and when it went. */
  private probeLimit = -1;
  private probeSentAt = 0;
  private pending: PendingWrite | null = null;
  private finSent = false;
  private finReceived = false;
  private resetReceived = false;
  private forgotten = false;
  private idleMs = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly host: StreamHost;

  // net.Socket look-alike fields read by http, http-proxy and loggers
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly remoteFamily: string;
  readonly localAddress = '127.0.0.1';
  readonly localPort: number;
  readonly connecting = false;
  bytesRead = 0;
  bytesWritten = 0;

  /**
   * @param initialWindow the protocol's initial window, both ways (bytes)
   * @param recvWindow the receive window this stream starts with (>= initialWindow)
   * @param maxRecvWindow how far that window may grow (a value <= recvWindow: it never grows)
   */
  constructor(host: StreamHost, id: number, meta: OpenMetadata, initialWindow: number, recvWindow: number, maxRecvWindow: number) {
    super({ allowHalfOpen: true, readableHighWaterMark: recvWindow, writableHighWaterMark: 64 * 1024, decodeStrings: true });
    this.host = host;
    this.id = id;
    this.meta = meta;
    this.sendWindow = initialWindow;
    this.recvAvailable = initialWindow;
    this.recvWindow = recvWindow;
    this.baseRecvWindow = recvWindow;
    this.maxRecvWindow = Math.max(recvWindow, maxRecvWindow);
    this.remoteAddress = meta.clientIp;
    this.remotePort = meta.clientPort;
    this.remoteFamily = meta.clientIp.includes(':') ? 'IPv6' : 'IPv4';
    this.localPort = meta.listenerPort;
  }

  /**
   * True once the tunnel connection is going away: whoever holds this stream idle (a keep-alive
   * pool) should close it rather than reuse it. The stream also emits 'goaway' at that moment.
   */
  get draining(): boolean {
    return this.host.draining;
  }

  /** Our receive window now, bytes: what the peer may have in flight to us, at most. */
  get receiveWindow(): number {
    return this.recvWindow;
  }

  /** How far the receive window has grown past the one it started with (the session's budget holds this). */
  get receiveWindowGrowth(): number {
    return this.recvWindow - this.baseRecvWindow;
  }

  // ---------------------------------------------------------------- inbound (session -> stream)

  /** Credit to grant at open when our window is larger than the protocol's initial window. */
  initialCredit(): number {
    const extra = this.recvWindow - this.recvAvailable;
    if (extra > 0) {
      this.startProbe();
      this.recvAvailable += extra;
      return extra;
    }
    return 0;
  }

  /** DATA from the peer. Returns an error code when the peer broke flow control. */
  onData(payload: Buffer): RelayError | null {
    if (this.finReceived) return new RelayError('RELAY_ERR_DATA_AFTER_FIN', `DATA after FIN on stream ${this.id}`);
    if (payload.length > this.recvAvailable) {
      return new RelayError('RELAY_ERR_WINDOW_EXCEEDED', `stream ${this.id}: ${payload.length} bytes with ${this.recvAvailable} of credit`);
    }
    this.recvAvailable -= payload.length;
    if (this.receivedBytes === 0) this.epochStart = performance.now();
    this.receivedBytes += payload.length;
    if (this.probeLimit >= 0 && this.receivedBytes > this.probeLimit) {
      this.host.noteCreditRtt(performance.now() - this.probeSentAt);
      this.probeLimit = -1;
    }
    if (this.destroyed) return null; // we reset it; the bytes were in flight
    this.pushedBytes += payload.length;
    this.bytesRead += payload.length;
    this.touch();
    this.push(payload);
    this.returnCredit();
    return null;
  }

  onFin(): void {
    if (this.finReceived) return;
    this.finReceived = true;
    this.push(null);
    this.maybeForget();
  }

  onReset(code: number): void {
    this.resetReceived = true;
    // After the peer's FIN we have all its data: a reset then only says it stopped reading
    // (as TCP does on close with unread data), which is not an error for our reader.
    if (this.finReceived && !this.pending) {
      this.destroy();
      return;
    }
    const err = new RelayError('RELAY_ERR_STREAM_RESET', `stream ${this.id} reset by peer (code ${code})`);
    (err as RelayError & { resetCode?: number }).resetCode = code;
    this.destroy(err);
  }

  onWindowUpdate(delta: number): RelayError | null {
    if (this.sendWindow + delta > 0xffff_ffff) return new RelayError('RELAY_ERR_WINDOW_OVERFLOW');
    const wasBlocked = this.sendWindow === 0;
    this.sendWindow += delta;
    if (wasBlocked && this.pending) this.host.scheduleData(this);
    return null;
  }

  /** The session died under us. */
  onSessionClosed(err: Error): void {
    this.resetReceived = true; // nothing can be sent any more
    this.destroy(err);
  }

  // Credit follows consumption. Node calls _read() once and then not again until we push, so a
  // reader that drains the buffer while the peer waits for credit would deadlock if credit were
  // only returned there; every consumer path (paused read(), flowing mode, 'readable') goes
  // through read(), and the direct push-to-'data' path is covered after push() in onData().
  override _read(): void {
    this.returnCredit();
  }

  override read(size?: number): unknown {
    const chunk: unknown = super.read(size);
    this.returnCredit();
    return chunk;
  }

  /** Grants the peer credit for what our reader has consumed, once it reaches half a window. */
  private returnCredit(): void {
    const consumed = this.pushedBytes - this.readableLength;
    const delta = consumed - this.creditedBytes;
    if (delta >= this.recvWindow / 2 && !this.finReceived && !this.destroyed) {
      this.creditedBytes = consumed;
      const growth = this.maybeGrowWindow(delta);
      this.startProbe();
      this.recvAvailable += delta + growth;
      this.host.sendWindowUpdate(this, delta + growth);
    }
  }

  /**
   * Ends an auto-tuning epoch in which the reader consumed `consumed` bytes; returns how much the
   * window grew (0 or the doubling, capped), which the caller grants on top of the credit.
   */
  private maybeGrowWindow(consumed: number): number {
    const now = performance.now();
    const elapsed = now - this.epochStart;
    this.epochStart = now;
    const rtt = this.host.creditRttMs;
    if (!(rtt > 0) || this.recvWindow >= this.maxRecvWindow) return 0;
    // how long a whole window lasts at this epoch's rate, against the credit round trip
    if ((elapsed * this.recvWindow) / consumed >= WINDOW_GROWTH_RTTS * rtt) return 0;
    const growth = Math.min(this.recvWindow, this.maxRecvWindow - this.recvWindow);
    if (!this.host.reserveWindow(growth)) return 0;
    this.recvWindow += growth;
    return growth;
  }

  /** Times the credit about to be granted, unless a grant is already being timed. */
  private startProbe(): void {
    if (this.probeLimit >= 0) return;
    this.probeLimit = this.receivedBytes + this.recvAvailable;
    this.probeSentAt = performance.now();
  }

  // ---------------------------------------------------------------- outbound (stream -> session)

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.enqueue([chunk], callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (err?: Error | null) => void): void {
    this.enqueue(
      chunks.map((c) => c.chunk),
      callback,
    );
  }

  private enqueue(chunks: Buffer[], callback: (err?: Error | null) => void): void {
    if (this.resetReceived || this.forgotten) {
      callback(new RelayError('RELAY_ERR_STREAM_RESET', `stream ${this.id} is closed`));
      return;
    }
    this.touch();
    this.pending = { chunks: chunks.filter((c) => c.length > 0), offset: 0, callback, lent: false };
    if (this.pending.chunks.length === 0) {
      this.pending = null;
      callback();
      return;
    }
    if (this.sendWindow > 0) this.host.scheduleData(this);
  }

  /** True when the stream has bytes to frame and credit to frame them. */
  get sendable(): boolean {
    return this.pending !== null && this.sendWindow > 0;
  }

  /**
   * Takes up to `max` bytes of pending data (bounded by the send window and by the chunk the
   * producer wrote: a payload is never joined from two chunks). A payload of `lendFrom` bytes or
   * more is lent: the session sends it uncopied.
   */
  takeData(max: number, lendFrom: number): TakenData | null {
    const p = this.pending;
    if (!p || this.sendWindow === 0) return null;
    const head = p.chunks[0]!;
    const n = Math.min(max, this.sendWindow, head.length - p.offset);
    const payload = head.subarray(p.offset, p.offset + n);
    const lent = n >= lendFrom;
    if (lent) p.lent = true;
    p.offset += n;
    this.sendWindow -= n;
    this.bytesWritten += n;
    if (p.offset === head.length) {
      p.chunks.shift();
      p.offset = 0;
      if (p.chunks.length === 0) {
        this.pending = null;
        return { payload, lent, done: p.callback, doneWhenWritten: p.lent };
      }
    }
    return { payload, lent, done: null, doneWhenWritten: false };
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.resetReceived && !this.forgotten) {
      this.finSent = true;
      this.host.sendFin(this);
    }
    callback();
    this.maybeForget();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.clearIdleTimer();
    const p = this.pending;
    this.pending = null;
    if (!this.forgotten && !this.resetReceived && !(this.finSent && this.finReceived)) {
      const code = (err as (Error & { resetCode?: number }) | null)?.resetCode ?? (err ? ResetCode.internal : ResetCode.cancel);
      this.host.sendRst(this, code);
    }
    this.forget();
    if (p) p.callback(err ?? new RelayError('RELAY_ERR_STREAM_RESET', `stream ${this.id} destroyed`));
    callback(err);
  }

  private maybeForget(): void {
    if (this.finSent && this.finReceived) this.forget();
  }

  private forget(): void {
    if (this.forgotten) return;
    this.forgotten = true;
    this.host.forget(this);
  }

  // ---------------------------------------------------------------- net.Socket look-alike

  /** Idle timer like `net.Socket#setTimeout`: emits 'timeout' after `ms` without traffic. */
  setTimeout(ms: number, onTimeout?: () => void): this {
    if (onTimeout) {
      if (ms === 0) this.removeListener('timeout', onTimeout);
      else this.once('timeout', onTimeout);
    }
    this.idleMs = ms;
    this.clearIdleTimer();
    if (ms > 0 && !this.destroyed) {
      // one module-level callback for every stream (the stream as its argument), not a closure each
      this.idleTimer = setTimeout(onIdleTimer, ms, this);
      this.idleTimer.unref();
    }
    return this;
  }

  /** The idle timer fired (onIdleTimer). */
  idleTimerFired(): void {
    this.idleTimer = null;
    this.emit('timeout');
  }

  private touch(): void {
    if (this.idleTimer) this.idleTimer.refresh();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }

  get timeout(): number {
    return this.idleMs;
  }

  setKeepAlive(): this {
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }

  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  address(): { address: string; family: string; port: number } {
    return { address: this.localAddress, family: 'IPv4', port: this.localPort };
  }
}
