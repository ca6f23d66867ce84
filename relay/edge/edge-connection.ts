/**
 * One mobile connection on the relay's edge: a strict HTTP/1.1 state machine between the
 * client's socket and the connection's own tunnel stream.
 *
 *   Idle ──first byte──► Head ──head parsed, checked──► Body ──body read──► Wait ──response done──► Idle
 *                                                   └─(no body)──────────────┘         │
 *                                             Upgraded ◄──101 to an Upgrade request───┘
 *
 * - The tunnel stream is opened only once a request head is complete and its body is read (up to
 *   `requestBufferBytes`; a larger body streams after that), so a slow client holds relay memory,
 *   bounded, never a tunnel stream. The stream then serves this connection's keep-alive requests
 *   and its upgrade; it carries this connection's metadata and is never given to another client.
 * - Requests are forwarded one at a time: while one waits for its response the socket is not
 *   read, so a pipelining client's next requests wait in the kernel, not here.
 * - The request head sent upstream is canonical: the client's fields in order, less names with
 *   `_`, hop-by-hop fields, `Expect` (the edge answered it) and forgeable forwarding fields, plus
 *   the relay's own X-Forwarded-*; a chunked body is re-chunked by the relay, trailers dropped.
 * - The response head is read strictly; its hop-by-hop fields are replaced by the relay's own
 *   (`Connection`, `Keep-Alive: timeout=` of the relay's idle timeout) and its body is passed on
 *   by its framing (Content-Length, chunked with trailers, or until the stream ends). A response
 *   the relay cannot frame cuts the client's connection: never a silently wrong answer.
 * - After a 101 to an Upgrade request, bytes are spliced both ways; losing the agent then closes
 *   the client's connection.
 */
import type { Socket } from 'node:net';
import type { Logger } from '../../shared/logger.js';
import { errorBody, RelayError, ResetCode, type ErrorCode } from '../../shared/errors.js';
import type { OpenMetadata } from '../../shared/mux/frame-codec.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import type { OpenedStream } from '../tunnel/tunnel-registry.js';
import { BODY_TOO_LARGE, overBodyLimit } from './body-limit.js';
import { rawCatalogResponse } from './error-response.js';
import { DRAIN_IDLE_MS, STREAM_RELEASE_MS, type ForwardLimits } from './edge-limits.js';
import type { EdgeRejectReason } from './edge-stats.js';
import {
  ChunkedReader,
  HeadReader,
  HttpParseError,
  parseRequestLines,
  parseResponseLines,
  type RequestHead,
  type ResponseHead,
} from './http1.js';

/** What one exchange leaves for the log line and the metrics. */
export interface ExchangeRecord {
  method: string;
  target: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  startedAt: number;
  aborted: boolean;
}

/** What a connection needs from the forwarder that holds its kind (forwarder.ts). */
export interface ConnectionHost {
  readonly limits: ForwardLimits;
  /** `Keep-Alive: timeout=N` line for kept connections ('' when they have no idle timeout). */
  readonly keepAliveHeader: string;
  readonly draining: boolean;
  /** performance.now() when the drain started (meaningful while `draining`). */
  readonly drainStartedAt: number;
  readonly logger: Logger;
  readonly retryAfterSeconds: number;
  /** 0 = none. */
  readonly streamIdleTimeoutMs: number;
  /** Request heads parsed since start. */
  requestCount: number;
  /** 0 when a request from `ip` may go on, else seconds for Retry-After. */
  takeRequestToken(ip: string): number;
  openStream(platform: string, meta: OpenMetadata): OpenedStream | null;
  acquireStream(platform: string, meta: OpenMetadata): Promise<OpenedStream>;
  reject(reason: EdgeRejectReason, client: string, detail?: string): void;
  record(conn: EdgeConnection, ex: ExchangeRecord): void;
  streamErrorCode(err: unknown): ErrorCode;
}

const enum State {
  Idle,
  Head,
  Body,
  Wait,
  Upgraded,
  Closing,
}

const enum Framing {
  None,
  Length,
  Chunked,
  Close,
}

const EMPTY = Buffer.alloc(0);
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
const LAST_CHUNK = Buffer.from('0\r\n\r\n', 'latin1');
const CRLF = Buffer.from('\r\n', 'latin1');
/** Largest response head accepted from the platform. */
const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;
/** A refused client's remaining bytes are read and dropped this long before the socket is cut. */
const LINGER_MS = 2_000;
/** A released stream whose platform side does not end within this long is reset. */
const RELEASE_WAIT_MS = 5_000;
/** Tries of one request on streams the agent refused (RST refused) before 503 tunnel_busy. */
const MAX_ATTEMPTS = 5;
/** Wait before the second retry, doubled for each after it (50, 100, 200 ms). */
const RETRY_BASE_MS = 50;

/** Request fields never forwarded: hop-by-hop (RFC 9110 §7.6.1), answered here, or forgeable. */
const DROP_REQUEST = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-server',
  'forwarded',
  'x-real-ip',
]);
/** Response fields the relay replaces with its own. */
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade']);
/** Fields a Connection header may not remove: framing and routing must stay what was parsed. */
const KEEP_ALWAYS = new Set(['host', 'content-length']);

interface Exchange extends ExchangeRecord {
  head: RequestHead;
  headStart: number;
  isHead: boolean;
  upgrade: boolean;
  /** The client may send another request after this one. */
  keepAlive: boolean;
  body: Framing;
  bodyRemaining: number;
  chunks: ChunkedReader | null;
  bodyDone: boolean;
  /** Head and body bytes held until the stream is opened. */
  pending: Buffer[] | null;
  pendingBytes: number;
  /**
   * What was sent on the stream, kept until the platform's first response byte so that a
   * stream the agent refuses (it never reached the platform) can be retried on another; null
   * once the response started or the body outgrew `requestBufferBytes` (no retry then).
   */
  replay: Buffer[] | null;
  replayBytes: number;
  /** Streams tried for this request. */
  attempts: number;
  /** Body rate: bytes since `rateStart` (restarted after each pause of ours). */
  rateStart: number;
  rateBytes: number;
  /** Last sign of life from the platform's side (or our last write to it). */
  upstreamAt: number;
  // response
  res: ResponseHead | null;
  resFraming: Framing;
  resRemaining: number;
  resChunks: ChunkedReader | null;
  headersSent: boolean;
  closeAfter: boolean;
}

export class EdgeConnection {
  readonly socket: Socket;
  readonly meta: OpenMetadata;
  readonly platform: string;
  /** The agent connection of the last stream opened (for request logs). */
  agentId: string | null = null;
  private readonly fwd: ConnectionHost;
  private state = State.Head;
  private buf: Buffer = EMPTY;
  private ex: Exchange | null = null;
  private readonly headReader: HeadReader;
  private readonly responseReader = new HeadReader(MAX_RESPONSE_HEAD_BYTES, 'RELAY_ERR_BAD_RESPONSE', 'RELAY_ERR_BAD_RESPONSE');
  private stream: MuxStream | null = null;
  private acquiring = false;
  /** Writes to the stream wait for its 'drain'. */
  private streamBlocked = false;
  /** Writes to the socket wait for its 'drain'. */
  private socketBlocked = false;
  private clientEnded = false;
  /** When the current phase's deadline started (performance.now ms). */
  private since: number;
  /** performance.now() when this connection was told to drain, or null. */
  private ownDrainAt: number | null = null;

  constructor(fwd: ConnectionHost, socket: Socket, meta: OpenMetadata, platform: string) {
    this.fwd = fwd;
    this.socket = socket;
    this.meta = meta;
    this.platform = platform;
    this.since = performance.now();
    this.headReader = new HeadReader(fwd.limits.maxHeaderBytes, 'RELAY_ERR_BAD_REQUEST', 'RELAY_ERR_HEADER_TOO_LARGE');
    socket.setNoDelay(true);
    socket.on('data', this.onSocketData);
    socket.on('end', this.onSocketEnd);
    socket.on('drain', this.onSocketDrain);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
  }

  // ---------------------------------------------------------------- client → relay

  private readonly onSocketData = (chunk: Buffer): void => {
    switch (this.state) {
      case State.Idle:
        // CRLFs between requests (RFC 9112 §2.2) start no request: the idle timer goes on
        if (onlyCrlf(chunk)) return;
        this.state = State.Head;
        this.since = performance.now();
        this.readHead(chunk);
        return;
      case State.Head:
        this.readHead(chunk);
        return;
      case State.Body:
        this.readBody(chunk, 0);
        return;
      case State.Wait:
        // a pipelined request (or bytes after an Upgrade request): kept until the response is done
        this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
        this.updateReading();
        return;
      case State.Upgraded:
        this.writeStream(chunk);
        return;
      case State.Closing:
        return; // read and dropped so that closing does not reset the connection
    }
  };

  /** Head bytes from the client (a read, or what was left after the previous request). */
  private readHead(chunk: Buffer): void {
    let end: number;
    let head: RequestHead;
    try {
      end = this.headReader.feed(chunk, 0, chunk.length);
      if (end === -1) return;
      head = parseRequestLines(this.headReader.take());
    } catch (err) {
      this.headReader.reset();
      const code = err instanceof HttpParseError ? err.code : 'RELAY_ERR_BAD_REQUEST';
      this.refuse(code, code === 'RELAY_ERR_HEADER_TOO_LARGE' ? 'headers_too_large' : 'bad_request', (err as Error).message);
      return;
    }
    this.begin(head, chunk.subarray(end));
  }

  /** A request head is in: check it, frame its body, and forward once the body is buffered. */
  private begin(head: RequestHead, rest: Buffer): void {
    const fwd = this.fwd;
    const limits = fwd.limits;
    const now = performance.now();
    fwd.requestCount++;
    const hasBody = head.chunked || head.contentLength > 0;
    const retryAfter = fwd.takeRequestToken(this.meta.clientIp);
    if (retryAfter > 0) {
      // A body is not read: close rather than read it to keep the connection. Pipelined requests
      // behind a refused one are not read either (they would be refused in turn).
      const close = hasBody || rest.length > 0 || head.minor === 0 || head.connection.includes('close') || this.draining;
      this.answerError('RELAY_ERR_RATE_LIMITED', { 'retry-after': retryAfter }, close);
      if (!close) {
        this.state = State.Idle;
        this.since = now;
        this.updateReading();
      }
      return;
    }
    if (overBodyLimit(limits.maxBodyBytes, head.contentLength)) {
      this.refuseBody();
      return;
    }
    if (head.expect !== '' && head.expect !== '100-continue') {
      this.refuse('RELAY_ERR_EXPECTATION_FAILED', 'bad_request', 'unsupported Expect');
      return;
    }
    const upgrade = head.upgrade !== '';
    const ex: Exchange = {
      head,
      method: head.method,
      target: head.target,
      status: 0,
      bytesIn: 0,
      bytesOut: 0,
      startedAt: now,
      aborted: false,
      headStart: this.since,
      isHead: head.method === 'HEAD',
      upgrade,
      keepAlive: head.minor === 1 && !head.connection.includes('close') && !this.draining,
      body: head.chunked ? Framing.Chunked : head.contentLength > 0 ? Framing.Length : Framing.None,
      bodyRemaining: head.contentLength > 0 ? head.contentLength : 0,
      chunks: head.chunked ? new ChunkedReader('RELAY_ERR_BAD_REQUEST', limits.maxHeaderBytes) : null,
      bodyDone: !hasBody,
      pending: [Buffer.from(this.requestHead(head, upgrade), 'latin1')],
      pendingBytes: 0,
      replay: null,
      replayBytes: 0,
      attempts: 0,
      rateStart: now,
      rateBytes: 0,
      upstreamAt: now,
      res: null,
      resFraming: Framing.None,
      resRemaining: 0,
      resChunks: null,
      headersSent: false,
      closeAfter: false,
    };
    this.ex = ex;
    this.since = now;
    this.responseReader.reset();
    // The edge answers Expect itself, once it has admitted the request (RFC 9110 §10.1.1)
    if (hasBody && head.expect === '100-continue' && head.minor === 1) this.socket.write(CONTINUE);
    if (hasBody) {
      this.state = State.Body;
      if (rest.length > 0) this.readBody(rest, 0);
      else this.maybeDispatch();
    } else {
      this.state = State.Wait;
      this.buf = rest;
      this.maybeDispatch();
    }
    this.updateReading();
  }

  /** Body bytes from the client, at `chunk[offset..]`. */
  private readBody(chunk: Buffer, offset: number): void {
    const ex = this.ex!;
    ex.rateBytes += chunk.length - offset;
    let end = chunk.length;
    if (ex.body === Framing.Length) {
      const n = Math.min(ex.bodyRemaining, end - offset);
      ex.bodyRemaining -= n;
      ex.bytesIn += n;
      this.forwardBody(chunk.subarray(offset, offset + n));
      end = offset + n;
      if (ex.bodyRemaining === 0) ex.bodyDone = true;
    } else {
      let consumed: number;
      try {
        consumed = ex.chunks!.feed(chunk, offset, end, this.onChunkData);
      } catch (err) {
        // refused for its size while decoding (onChunkData answered), or bad chunk syntax
        if (this.ex === ex) this.failRequest('RELAY_ERR_BAD_REQUEST', 'bad_request', (err as Error).message);
        return;
      }
      end = offset + consumed;
      if (ex.chunks!.done) {
        ex.bodyDone = true;
        this.forwardBody(LAST_CHUNK);
      }
    }
    if (ex.bodyDone) {
      if (this.state === State.Body) this.state = State.Wait;
      this.since = performance.now();
      if (end < chunk.length) this.buf = chunk.subarray(end);
    }
    this.maybeDispatch();
    this.updateReading();
  }

  private readonly onChunkData = (buf: Buffer, start: number, end: number): void => {
    const ex = this.ex!;
    const n = end - start;
    ex.bytesIn += n;
    if (overBodyLimit(this.fwd.limits.maxBodyBytes, ex.bytesIn)) {
      this.refuseBody();
      throw new RelayError(BODY_TOO_LARGE.code); // stops the reader; caught below it
    }
    // re-chunked by the relay: the platform sees the relay's framing, never the client's
    this.forwardBody(Buffer.from(`${n.toString(16)}\r\n`, 'latin1'));
    this.forwardBody(buf.subarray(start, end));
    this.forwardBody(CRLF);
  };

  private forwardBody(piece: Buffer): void {
    const ex = this.ex!;
    if (ex.pending) {
      ex.pending.push(piece);
      ex.pendingBytes += piece.length;
      return;
    }
    ex.upstreamAt = performance.now();
    const replay = ex.replay;
    if (replay) {
      if (ex.replayBytes + piece.length <= this.fwd.limits.requestBufferBytes) {
        replay.push(piece);
        ex.replayBytes += piece.length;
      } else ex.replay = null;
    }
    this.writeStream(piece);
  }

  /** Opens (or reuses) the stream once the head and a buffered body are in hand. */
  private maybeDispatch(): void {
    const ex = this.ex;
    if (!ex || !ex.pending || this.acquiring) return;
    if (!ex.bodyDone && ex.pendingBytes < this.fwd.limits.requestBufferBytes) return;
    let stream = this.stream;
    if (stream && (stream.destroyed || !stream.writable || stream.draining)) {
      // its agent connection is going away (or the platform closed it): the next request goes
      // to a new stream, on another connection
      this.releaseStream();
      stream = null;
    }
    if (stream) {
      this.sendPending(ex);
      return;
    }
    // While the relay drains, a request read is still forwarded (its response says
    // `Connection: close`) as long as a tunnel stream can be had; else a 503 with Retry-After.
    let opened: OpenedStream | null;
    try {
      opened = this.fwd.openStream(this.platform, this.meta);
    } catch (err) {
      this.failRequest(this.fwd.streamErrorCode(err), null);
      return;
    }
    if (opened) {
      this.attach(opened, ex);
      return;
    }
    this.acquiring = true;
    this.updateReading();
    this.fwd.acquireStream(this.platform, this.meta).then(
      (o) => {
        this.acquiring = false;
        if (this.ex !== ex || this.socket.destroyed) {
          o.stream.on('error', noop);
          o.stream.destroy();
          return;
        }
        this.attach(o, ex);
        this.updateReading();
      },
      (err: unknown) => {
        this.acquiring = false;
        if (this.ex !== ex || this.socket.destroyed) return;
        const code = this.fwd.streamErrorCode(err);
        this.failRequest(code, rejectReasonOf(code));
      },
    );
  }

  private attach({ conn, stream }: OpenedStream, ex: Exchange): void {
    this.stream = stream;
    this.agentId = conn.id;
    stream.on('data', this.onStreamData);
    stream.on('end', this.onStreamEnd);
    stream.on('drain', this.onStreamDrain);
    stream.on('error', this.onStreamError);
    stream.on('close', this.onStreamClose);
    stream.on('goaway', this.onStreamGoaway);
    this.sendPending(ex);
  }

  /** Head and buffered body in one write: with the OPEN frame, one tunnel message. */
  private sendPending(ex: Exchange): void {
    const pending = ex.pending!;
    ex.pending = null;
    ex.attempts++;
    ex.replay = ex.pendingBytes <= this.fwd.limits.requestBufferBytes ? pending : null;
    ex.replayBytes = ex.pendingBytes;
    ex.upstreamAt = performance.now();
    this.writeStream(pending.length === 1 ? pending[0]! : Buffer.concat(pending));
  }

  private writeStream(data: Buffer): void {
    const stream = this.stream;
    if (!stream || stream.destroyed) return;
    if (!stream.write(data) && !this.streamBlocked) {
      this.streamBlocked = true;
      this.updateReading();
    }
  }

  private readonly onStreamDrain = (): void => {
    if (!this.streamBlocked) return;
    this.streamBlocked = false;
    const ex = this.ex;
    if (ex) {
      ex.rateStart = performance.now();
      ex.rateBytes = 0;
    }
    this.updateReading();
  };

  /** Reads from the client only when the bytes have somewhere to go. */
  private updateReading(): void {
    const socket = this.socket;
    let read: boolean;
    switch (this.state) {
      case State.Idle:
      case State.Head:
      case State.Closing:
        read = true;
        break;
      case State.Body: {
        const ex = this.ex!;
        read = !this.streamBlocked && !this.acquiring && (ex.pending === null || ex.pendingBytes < this.fwd.limits.requestBufferBytes);
        break;
      }
      case State.Wait:
        // only as much of a pipelined request as one read brings
        read = this.buf.length === 0;
        break;
      case State.Upgraded:
        read = !this.streamBlocked;
        break;
    }
    if (read) {
      if (socket.isPaused()) {
        socket.resume();
        const ex = this.ex;
        if (ex && this.state === State.Body) {
          ex.rateStart = performance.now();
          ex.rateBytes = 0;
        }
      }
    } else if (!socket.isPaused()) socket.pause();
  }

  // ---------------------------------------------------------------- platform → relay → client

  private readonly onStreamData = (chunk: Buffer): void => {
    if (this.state === State.Upgraded) {
      this.writeSocket(chunk);
      return;
    }
    const ex = this.ex;
    if (!ex || ex.pending) {
      // bytes nobody asked for: the stream can no longer be trusted to frame the next response
      this.dropStream();
      return;
    }
    ex.upstreamAt = performance.now();
    ex.replay = null; // the platform has the request: never sent again
    if (ex.res) this.responseBody(ex, chunk, 0);
    else this.responseHead(ex, chunk, 0);
  };

  /** Response head bytes at `chunk[offset..]`; interim (1xx) heads are passed on and read past. */
  private responseHead(ex: Exchange, chunk: Buffer, offset: number): void {
    const reader = this.responseReader;
    for (;;) {
      let res: ResponseHead;
      let lines: string[];
      try {
        const end = reader.feed(chunk, offset, chunk.length);
        if (end === -1) return;
        offset = end;
        lines = reader.take();
        res = parseResponseLines(lines);
      } catch (err) {
        reader.reset();
        this.badResponse(ex, (err as Error).message);
        return;
      }
      const rest = chunk.subarray(offset);
      if (res.status === 101) {
        if (!ex.upgrade) {
          this.badResponse(ex, '101 to a request that asked for no upgrade');
          return;
        }
        this.switchProtocols(ex, rawHead(lines), rest);
        return;
      }
      if (res.status < 200) {
        // an interim response (103 Early Hints…): passed on to an HTTP/1.1 client as it came
        if (ex.head.minor === 1) this.socket.write(rawHead(lines), 'latin1');
        if (offset === chunk.length) return;
        continue;
      }
      ex.res = res;
      ex.status = res.status;
      if (ex.isHead || res.status === 204 || res.status === 304) ex.resFraming = Framing.None;
      else if (res.chunked) {
        if (ex.head.minor === 0) {
          this.badResponse(ex, 'chunked response to an HTTP/1.0 request');
          return;
        }
        ex.resFraming = Framing.Chunked;
        ex.resChunks = new ChunkedReader('RELAY_ERR_BAD_RESPONSE', MAX_RESPONSE_HEAD_BYTES);
      } else if (res.contentLength >= 0 && !res.otherCoding) {
        ex.resFraming = res.contentLength === 0 ? Framing.None : Framing.Length;
        ex.resRemaining = res.contentLength;
      } else {
        // no length: the body ends at close (§6.3), with the transfer codings it came with, which
        // an HTTP/1.0 client cannot be sent (§6.1)
        if (res.otherCoding && ex.head.minor === 0) {
          this.badResponse(ex, 'transfer coding in a response to an HTTP/1.0 request');
          return;
        }
        ex.resFraming = Framing.Close;
      }
      // an upgrade the platform declined (no 101) leaves the connection HTTP/1.1 as it was
      // (RFC 9110 §7.8): it stays open for the client's next request
      ex.closeAfter = !ex.keepAlive || this.draining || this.clientEnded || ex.resFraming === Framing.Close || !ex.bodyDone;
      const head = this.responseHeadText(res, ex.resFraming, ex.closeAfter);
      ex.headersSent = true;
      this.socket.cork();
      this.socket.write(head, 'latin1');
      if (ex.resFraming === Framing.None) {
        if (rest.length > 0) this.dropStream(); // a body where none may be: the stream is not reusable
        this.finish(ex);
      } else if (rest.length > 0) this.responseBody(ex, rest, 0);
      this.socket.uncork();
      return;
    }
  }

  private responseBody(ex: Exchange, chunk: Buffer, offset: number): void {
    switch (ex.resFraming) {
      case Framing.Length: {
        const n = Math.min(ex.resRemaining, chunk.length - offset);
        ex.resRemaining -= n;
        ex.bytesOut += n;
        this.writeSocket(offset === 0 && n === chunk.length ? chunk : chunk.subarray(offset, offset + n));
        if (ex.resRemaining === 0) {
          if (offset + n < chunk.length) this.dropStream();
          this.finish(ex);
        }
        return;
      }
      case Framing.Chunked: {
        let consumed: number;
        try {
          consumed = ex.resChunks!.feed(chunk, offset, chunk.length, noData);
        } catch {
          // headers are out: cutting the connection is the only honest answer left
          this.cut(ex);
          return;
        }
        ex.bytesOut += consumed;
        this.writeSocket(offset === 0 && consumed === chunk.length ? chunk : chunk.subarray(offset, offset + consumed));
        if (ex.resChunks!.done) {
          if (offset + consumed < chunk.length) this.dropStream();
          this.finish(ex);
        }
        return;
      }
      case Framing.Close:
        ex.bytesOut += chunk.length - offset;
        this.writeSocket(offset === 0 ? chunk : chunk.subarray(offset));
        return;
      case Framing.None:
        this.dropStream();
        return;
    }
  }

  private writeSocket(data: Buffer): void {
    if (!this.socket.write(data) && !this.socketBlocked) {
      this.socketBlocked = true;
      this.stream?.pause();
    }
  }

  private readonly onSocketDrain = (): void => {
    if (!this.socketBlocked) return;
    this.socketBlocked = false;
    this.stream?.resume();
  };

  /** The response is complete: log it, then the next request, or close. */
  private finish(ex: Exchange): void {
    this.fwd.record(this, ex);
    this.ex = null;
    // the platform answered before the body ended, or said it closes: no request goes on that
    // stream again, even while it is still open (RFC 9112 §9.6); the next one gets a new stream
    if (!ex.bodyDone || !persistent(ex.res!)) this.dropStream();
    if (ex.closeAfter) {
      this.closeGracefully();
      return;
    }
    this.state = State.Idle;
    this.since = performance.now();
    // its agent connection is going away: let go of the stream now, so the agent's drain ends
    if (this.stream?.draining) this.releaseStream();
    const pipelined = this.buf;
    if (pipelined.length > 0) {
      this.buf = EMPTY;
      this.state = State.Head;
      this.readHead(pipelined);
    }
    this.updateReading();
  }

  private switchProtocols(ex: Exchange, head: string, rest: Buffer): void {
    ex.status = 101;
    ex.headersSent = true;
    this.fwd.logger.info(
      {
        event: 'upgrade',
        method: ex.method,
        path: ex.target.split('?')[0]!.slice(0, 512),
        client: this.meta.clientIp,
        agent: this.agentId,
      },
      'websocket upgrade',
    );
    this.fwd.record(this, ex);
    this.ex = null;
    this.state = State.Upgraded;
    this.socket.cork();
    this.socket.write(head, 'latin1');
    if (rest.length > 0) this.writeSocket(rest);
    this.socket.uncork();
    const pipelined = this.buf;
    this.buf = EMPTY;
    if (pipelined.length > 0) this.writeStream(pipelined);
    if (this.clientEnded) this.stream?.end();
    this.updateReading();
  }

  private readonly onStreamEnd = (): void => {
    const ex = this.ex;
    if (this.state === State.Upgraded) {
      this.socket.end();
      return;
    }
    if (!ex || ex.pending) {
      // the platform closed an idle kept-alive connection: the next request opens a new stream
      this.dropStream();
      return;
    }
    if (!ex.res) {
      this.failExchange(ex, 'RELAY_ERR_UPSTREAM', 'the platform closed the connection without a response');
      return;
    }
    if (ex.resFraming === Framing.Close) {
      this.finish(ex);
      return;
    }
    this.cut(ex); // the body ended early: the client must see a truncated response
  };

  private readonly onStreamError = (err: Error): void => {
    const ex = this.ex;
    if (this.state === State.Upgraded) {
      this.socket.destroy();
      return;
    }
    if (!ex || ex.pending) return; // 'close' follows and forgets the stream
    if (ex.replay && (err as RelayError & { resetCode?: number }).resetCode === ResetCode.refused) {
      // the agent refused the stream (its GOAWAY raced our OPEN, or its stream limit): the
      // request never reached the platform, so it goes again on another stream
      this.retry(ex);
      return;
    }
    if (ex.headersSent) {
      this.cut(ex);
      return;
    }
    this.failExchange(ex, this.fwd.streamErrorCode(err), err.message);
  };

  private readonly onStreamClose = (): void => {
    // this handler is only on the current stream; dropStream() takes it off first
    const ex = this.ex;
    const stream = this.stream;
    this.stream = null;
    this.streamBlocked = false;
    if (this.state === State.Upgraded) {
      // both ways ended cleanly: the socket ends by itself once what was written is out
      if (!(stream?.readableEnded && stream.writableFinished)) this.socket.destroy();
      return;
    }
    if (ex && !ex.pending) {
      if (ex.headersSent) this.cut(ex);
      else this.failExchange(ex, 'RELAY_ERR_AGENT_LOST', 'tunnel stream closed');
    }
  };

  /** A refused stream's request, sent again (what was sent is in `replay`), or 503 tunnel_busy. */
  private retry(ex: Exchange): void {
    const replay = ex.replay!;
    this.detachStream();
    if (ex.attempts >= MAX_ATTEMPTS) {
      this.failExchange(ex, 'RELAY_ERR_TUNNEL_BUSY', `stream refused ${ex.attempts} times`);
      return;
    }
    this.fwd.logger.debug(
      { event: 'stream_refused', attempt: ex.attempts, client: this.meta.clientIp, agent: this.agentId },
      'stream refused, retrying',
    );
    ex.pending = replay;
    ex.pendingBytes = ex.replayBytes;
    ex.replay = null;
    this.responseReader.reset();
    if (ex.attempts === 1) {
      // most often the agent's GOAWAY raced our OPEN: that connection is no longer picked
      this.maybeDispatch();
      this.updateReading();
      return;
    }
    // refused again (the agent's stream limit is below ours): wait a little, as for a full one
    this.acquiring = true;
    this.updateReading();
    const timer = setTimeout(
      () => {
        this.acquiring = false;
        if (this.ex !== ex || this.socket.destroyed) return;
        this.maybeDispatch();
        this.updateReading();
      },
      RETRY_BASE_MS << (ex.attempts - 2),
    );
    timer.unref();
  }

  private readonly onStreamGoaway = (): void => {
    // idle: let go now; busy: after the response (finish)
    if (this.state === State.Idle) this.releaseStream();
  };

  /** Takes our handlers off the current stream and forgets it; it is the caller's to end. */
  private detachStream(): MuxStream | null {
    const stream = this.stream;
    if (!stream) return null;
    this.stream = null;
    this.streamBlocked = false;
    stream.off('data', this.onStreamData);
    stream.off('end', this.onStreamEnd);
    stream.off('drain', this.onStreamDrain);
    stream.off('error', this.onStreamError);
    stream.off('close', this.onStreamClose);
    stream.off('goaway', this.onStreamGoaway);
    stream.on('error', noop);
    return stream;
  }

  /** Lets go of the stream (reset if still open); a later request opens a new one. */
  private dropStream(): void {
    const stream = this.detachStream();
    if (!stream) return;
    if (stream.readableEnded && stream.writable) stream.end();
    else stream.destroy();
  }

  /**
   * Lets go of an idle stream gracefully: FIN, and the platform's own FIN ends it (its server
   * closes a kept-alive connection whose client ended); reset only if it does not follow.
   */
  private releaseStream(): void {
    const stream = this.detachStream();
    if (!stream || stream.destroyed) return;
    if (!stream.writable) {
      stream.destroy();
      return;
    }
    stream.resume(); // whatever still comes is dropped, so that its end is seen
    stream.end();
    if (stream.readableEnded) return;
    const timer = setTimeout(() => stream.destroy(), RELEASE_WAIT_MS);
    timer.unref();
    stream.once('close', () => clearTimeout(timer));
  }

  // ---------------------------------------------------------------- errors and closing

  /** A refusal before anything was forwarded: answer, then close. */
  private refuse(code: ErrorCode, reason: EdgeRejectReason | null, detail?: string): void {
    if (reason) this.fwd.reject(reason, this.meta.clientIp, detail);
    this.answerError(code, {}, true);
  }

  /**
   * A request body past `maxBodyBytes` (body-limit.ts): 413, counted and logged, then close. The
   * head's declared length is checked before the exchange exists (refuse), a chunked body's
   * size while it is read (the exchange is recorded as well).
   */
  private refuseBody(): void {
    this.failRequest(BODY_TOO_LARGE.code, BODY_TOO_LARGE.reason);
  }

  /** The request fails before its response started: the error is the answer, then close. */
  private failRequest(code: ErrorCode, reason: EdgeRejectReason | null, detail?: string): void {
    const ex = this.ex;
    if (ex) this.failExchange(ex, code, detail, reason);
    else this.refuse(code, reason, detail);
  }

  private failExchange(ex: Exchange, code: ErrorCode, detail?: string, reason: EdgeRejectReason | null = rejectReasonOf(code)): void {
    if (ex.headersSent) {
      this.cut(ex);
      return;
    }
    if (reason) this.fwd.reject(reason, this.meta.clientIp, detail);
    else this.fwd.logger.debug({ event: 'forward_error', code, detail, client: this.meta.clientIp }, 'forwarding failed');
    ex.status = errorBody(code).status;
    ex.aborted = !ex.bodyDone;
    this.fwd.record(this, ex);
    this.ex = null;
    this.dropStream();
    const headers: Record<string, string | number> = {};
    if (ex.status === 503) headers['retry-after'] = this.fwd.retryAfterSeconds;
    this.answerError(code, headers, true);
  }

  private answerError(code: ErrorCode, headers: Record<string, string | number>, close: boolean): void {
    const socket = this.socket;
    if (socket.destroyed) return;
    if (close) {
      socket.write(rawCatalogResponse(code, headers));
      this.closeGracefully();
    } else socket.write(rawCatalogResponse(code, headers, this.fwd.keepAliveHeader));
  }

  /** The response is cut short: the client sees a truncated response, never a wrong one. */
  private cut(ex: Exchange): void {
    ex.aborted = true;
    if (this.ex === ex) {
      this.fwd.record(this, ex);
      this.ex = null;
    }
    this.dropStream();
    this.socket.destroy();
  }

  private badResponse(ex: Exchange, detail: string): void {
    this.fwd.logger.warn(
      { event: 'bad_response', detail, client: this.meta.clientIp, agent: this.agentId, path: ex.target.split('?')[0]!.slice(0, 512) },
      'the platform sent a response the relay cannot frame',
    );
    this.failExchange(ex, 'RELAY_ERR_BAD_RESPONSE', detail, null);
  }

  /**
   * Ends the connection after what was written: FIN, then whatever the client still sends is
   * read and dropped for a while (closing with unread bytes would send a TCP RST, which can
   * destroy the answer before the client reads it).
   */
  private closeGracefully(): void {
    this.state = State.Closing;
    this.since = performance.now();
    this.buf = EMPTY;
    // an idle stream ends gracefully (the agent's drain need not wait for it); one mid-exchange is reset
    if (this.ex) this.dropStream();
    else this.releaseStream();
    this.socket.end();
    this.updateReading();
  }

  private readonly onSocketEnd = (): void => {
    this.clientEnded = true;
    switch (this.state) {
      case State.Idle:
      case State.Closing:
        this.socket.end();
        return;
      case State.Head:
        if (this.buf.length === 0) this.socket.end();
        else this.socket.destroy(); // half a request head, and no more coming
        return;
      case State.Body:
        this.cut(this.ex!); // the client gave up on its own body
        return;
      case State.Wait:
        return; // the response goes out, then the connection closes (closeAfter)
      case State.Upgraded:
        this.stream?.end();
        return;
    }
  };

  private readonly onSocketError = (): void => {
    this.socket.destroy();
  };

  private readonly onSocketClose = (): void => {
    const ex = this.ex;
    if (ex) {
      ex.aborted = true;
      this.fwd.record(this, ex);
      this.ex = null;
      this.dropStream();
    } else this.releaseStream();
    this.state = State.Closing;
  };

  /**
   * The relay drains: busy connections close after their response (`Connection: close`), idle
   * ones once idle for the drain-idle time (tick), so that a request already on its way when the
   * drain started is answered rather than met by a FIN. Also for this connection alone: its
   * listener was closed by a reload (a platform port removed).
   */
  onDrain(): void {
    if (this.ownDrainAt === null) this.ownDrainAt = performance.now();
  }

  /** The relay drains, or this connection does (its listener was removed). */
  get draining(): boolean {
    return this.ownDrainAt !== null || this.fwd.draining;
  }

  /** performance.now() when this connection's drain started (meaningful while `draining`). */
  private get drainSince(): number {
    return this.ownDrainAt ?? this.fwd.drainStartedAt;
  }

  /** Deadlines, checked by the forwarder's sweep every fraction of a second. */
  tick(now: number): void {
    const limits = this.fwd.limits;
    const elapsed = now - this.since;
    switch (this.state) {
      case State.Idle: {
        if (limits.keepAliveTimeoutMs > 0 && elapsed >= limits.keepAliveTimeoutMs) {
          this.closeGracefully();
          return;
        }
        if (this.draining && now - Math.max(this.since, this.drainSince) >= (limits.drainIdleMs ?? DRAIN_IDLE_MS)) {
          this.closeGracefully();
          return;
        }
        const release = limits.streamReleaseMs ?? STREAM_RELEASE_MS;
        if (this.stream && ((release > 0 && elapsed >= release) || this.stream.draining)) this.releaseStream();
        return;
      }
      case State.Head:
        if (elapsed >= limits.headersTimeoutMs) this.refuse('RELAY_ERR_REQUEST_TIMEOUT', 'request_timeout', 'request head too slow');
        return;
      case State.Body: {
        const ex = this.ex!;
        if (limits.requestTimeoutMs > 0 && now - ex.headStart >= limits.requestTimeoutMs) {
          this.failRequest('RELAY_ERR_REQUEST_TIMEOUT', 'request_timeout', 'request body too slow for the request timeout');
          return;
        }
        const reading = !this.socket.isPaused();
        const rateFor = now - ex.rateStart;
        if (
          reading &&
          limits.minBodyBytesPerSecond > 0 &&
          rateFor >= limits.bodyRateGraceMs &&
          ex.rateBytes < (limits.minBodyBytesPerSecond * rateFor) / 1000
        ) {
          this.failRequest('RELAY_ERR_BODY_TOO_SLOW', 'body_too_slow', `${ex.rateBytes} bytes in ${Math.round(rateFor)} ms`);
          return;
        }
        this.checkUpstream(ex, now);
        return;
      }
      case State.Wait:
        this.checkUpstream(this.ex!, now);
        return;
      case State.Closing:
        if (elapsed >= LINGER_MS) this.socket.destroy();
        return;
      case State.Upgraded:
        return;
    }
  }

  private checkUpstream(ex: Exchange, now: number): void {
    const idle = this.fwd.streamIdleTimeoutMs;
    if (idle > 0 && !ex.pending && now - ex.upstreamAt >= idle) {
      this.failExchange(ex, 'RELAY_ERR_UPSTREAM_TIMEOUT', 'the platform was silent for the stream idle timeout');
    }
  }

  // ---------------------------------------------------------------- heads

  /** The canonical request head sent upstream. */
  private requestHead(head: RequestHead, upgrade: boolean): string {
    const f = head.fields;
    const listed = head.connection;
    const dropUnderscores = !this.fwd.limits.allowUnderscoreHeaders;
    let out = `${head.method} ${head.target} HTTP/1.${head.minor}\r\n`;
    for (let i = 0; i < f.length; i += 2) {
      const name = f[i]!;
      // nginx's default: names with an underscore are dropped (underscores_in_headers off), since
      // CGI-style backends read X_Forwarded_For and X-Forwarded-For as one
      if (dropUnderscores && name.includes('_')) continue;
      const lower = name.toLowerCase();
      if (DROP_REQUEST.has(lower)) continue;
      if (listed.length > 0 && listed.includes(lower) && !KEEP_ALWAYS.has(lower)) continue;
      out += `${name}: ${f[i + 1]!}\r\n`;
    }
    const meta = this.meta;
    out += `X-Forwarded-For: ${meta.clientIp}\r\nX-Forwarded-Proto: ${meta.tls ? 'https' : 'http'}\r\nX-Forwarded-Port: ${meta.listenerPort}\r\n`;
    if (head.host !== '') out += `X-Forwarded-Host: ${head.host}\r\n`;
    if (head.chunked) out += 'Transfer-Encoding: chunked\r\n';
    if (upgrade) out += `Connection: Upgrade\r\nUpgrade: ${head.upgrade}\r\n`;
    return `${out}\r\n`;
  }

  /** The response head the client gets: the platform's end-to-end fields, the relay's hop-by-hop ones. */
  private responseHeadText(res: ResponseHead, framing: Framing, close: boolean): string {
    const f = res.fields;
    const listed = res.connection;
    // the transfer codings stay the client's to undo when the body carries them (gzip, chunked),
    // in the field as it came
    const codings = framing === Framing.Chunked || (framing === Framing.Close && res.otherCoding);
    let out = `HTTP/1.1 ${res.status} ${res.reason}\r\n`;
    for (let i = 0; i < f.length; i += 2) {
      const name = f[i]!;
      const lower = name.toLowerCase();
      if (DROP_RESPONSE.has(lower) && !(codings && lower === 'transfer-encoding')) continue;
      if (listed.length > 0 && listed.includes(lower) && !KEEP_ALWAYS.has(lower)) continue;
      out += `${name}: ${f[i + 1]!}\r\n`;
    }
    out += close ? 'Connection: close\r\n' : `Connection: keep-alive\r\n${this.fwd.keepAliveHeader}`;
    return `${out}\r\n`;
  }
}

const noop = (): void => {};
const noData = (): void => {};

function onlyCrlf(chunk: Buffer): boolean {
  if (chunk.length % 2 !== 0) return false;
  for (let i = 0; i < chunk.length; i += 2) if (chunk[i] !== 0x0d || chunk[i + 1] !== 0x0a) return false;
  return true;
}

/** A head as it came, from its lines (the reader drops only the CRLFs). */
function rawHead(lines: string[]): string {
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** The platform takes another request on the stream after `res` (RFC 9112 §9.3). */
function persistent(res: ResponseHead): boolean {
  return res.minor === 1 ? !res.connection.includes('close') : res.connection.includes('keep-alive');
}

function rejectReasonOf(code: ErrorCode): EdgeRejectReason | null {
  switch (code) {
    case 'RELAY_ERR_NO_AGENT':
      return 'no_agent';
    case 'RELAY_ERR_TUNNEL_BUSY':
      return 'tunnel_streams';
    case 'RELAY_ERR_DRAINING':
      return 'draining';
    default:
      return null;
  }
}
