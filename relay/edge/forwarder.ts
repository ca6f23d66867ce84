/**
 * Forwards mobile requests and WebSocket upgrades through the tunnel with `http-proxy`. Each
 * mobile connection gets its own `TunnelHttpAgent`, hence its own tunnel stream (see
 * tunnel-agent.ts). Headers a client could forge (X-Forwarded-*, Forwarded, X-Real-IP) are
 * dropped and the relay's own set; every request is logged once, without its query string.
 * A chunked body is counted as it streams and cut past `maxBodyBytes` (a declared length was
 * checked by the listeners before).
 */
import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import httpProxy from 'http-proxy';
import { RelayError, type ErrorCode } from '../../shared/errors.js';
import { canonicalIp } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import type { OpenMetadata } from '../../shared/mux/frame-codec.js';
import type { RelayMetrics } from '../admin/metrics.js';
import { DEFAULT_PLATFORM } from '../tunnel/agent-credentials.js';
import { TunnelHttpAgent } from '../tunnel/tunnel-agent.js';
import type { TunnelRegistry } from '../tunnel/tunnel-registry.js';
import type { EdgeRejectReason, EdgeStats } from './edge-stats.js';
import { errorParts, rawErrorResponse, sendError } from './error-response.js';

export interface ForwarderOptions {
  registry: TunnelRegistry;
  logger: Logger;
  connectWaitMs: number;
  streamIdleTimeoutMs: number;
  retryAfterSeconds: number;
  /** Largest request body, bytes; 0 = no limit. */
  maxBodyBytes: number;
  stats: EdgeStats;
  /** The platform a mobile connection belongs to, from the port it arrived on; default: the default platform. */
  platformForPort?: (listenerPort: number) => string;
  metrics?: RelayMetrics;
}

interface ConnectionState {
  agent: TunnelHttpAgent;
  meta: OpenMetadata;
}

interface RequestState {
  start: number;
  bytesOut: number;
  /** The request to the platform, once http-proxy has made it. */
  proxyReq?: ClientRequest;
  /** The body went past maxBodyBytes: answered 413 here, the platform's request aborted. */
  bodyTooLarge?: boolean;
}

const FORGEABLE = [
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-server',
  'forwarded',
  'x-real-ip',
  // the edge answered it (100 Continue or a refusal): the platform must not answer it again
  'expect',
];
const TARGET = { protocol: 'http:', host: 'platform.tunnel', port: 80 };

/** The client address in canonical form (`::ffff:1.2.3.4` -> `1.2.3.4`), `unknown` if none. */
export function normalizeIp(ip: string | undefined): string {
  return ip ? canonicalIp(ip) : 'unknown';
}

export class Forwarder {
  private readonly options: ForwarderOptions;
  private readonly proxy: httpProxy;
  private readonly connections = new WeakMap<Socket, ConnectionState>();
  private readonly requests = new WeakMap<IncomingMessage, RequestState>();

  constructor(options: ForwarderOptions) {
    this.options = options;
    this.proxy = httpProxy.createProxyServer({ target: TARGET, xfwd: false, ws: true, changeOrigin: false });
    // Without an 'error' listener a reset stream would throw and take the relay down.
    this.proxy.on('error', this.onProxyError);
    this.proxy.on('proxyReq', this.onProxyReq);
    this.proxy.on('proxyRes', this.onProxyRes);
  }

  /** The 'request' handler of the mobile listeners. */
  readonly handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const state: RequestState = { start: performance.now(), bytesOut: 0 };
    this.requests.set(req, state);
    res.once('close', () => this.logRequest(req, res, state));
    const conn = this.connectionState(req.socket);
    setForwardingHeaders(req, conn.meta);
    // With a Content-Length Node's parser stops at that length, already checked by the listeners.
    if (this.options.maxBodyBytes > 0 && req.headers['transfer-encoding'] !== undefined) this.countBody(req, res, state);
    this.proxy.web(req, res, { agent: conn.agent });
  };

  /**
   * Counts a chunked body as it arrives; past the limit: unpiped from the platform's request,
   * which is aborted (the platform sees its stream reset), and 413 with `Connection: close` if
   * the response has not started, else the connection is cut. The listener is added before
   * http-proxy pipes: on the chunk that crosses the limit it runs first, and the platform's
   * request is destroyed before the pipe writes that chunk to it.
   */
  private countBody(req: IncomingMessage, res: ServerResponse, state: RequestState): void {
    const max = this.options.maxBodyBytes;
    let received = 0;
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      if (received <= max) return;
      req.off('data', onData);
      state.bodyTooLarge = true;
      this.options.stats.reject('body_too_large');
      this.options.logger.debug(
        { event: 'edge_reject', reason: 'body_too_large', client: normalizeIp(req.socket.remoteAddress), path: pathOf(req.url) },
        'body too large',
      );
      req.unpipe();
      // read and discard the rest while the 413 goes out: closing with unread data sends a TCP
      // RST, which can destroy the answer before the client reads it
      req.resume();
      state.proxyReq?.destroy();
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.shouldKeepAlive = false;
      sendError(res, 'RELAY_ERR_BODY_TOO_LARGE', { connection: 'close' });
    };
    req.on('data', onData);
  }

  /** The 'upgrade' handler of the mobile listeners (WebSocket pass-through). */
  readonly handleUpgrade = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    // Node drops its own error listener from an upgraded socket, and http-proxy adds one only
    // once the platform answers: a client reset while waiting for an agent would crash the relay.
    socket.on('error', () => socket.destroy());
    const conn = this.connectionState(socket);
    setForwardingHeaders(req, conn.meta);
    this.options.logger.info(
      { event: 'upgrade', method: req.method, path: pathOf(req.url), client: conn.meta.clientIp },
      'websocket upgrade',
    );
    this.proxy.ws(req, socket, head, { agent: conn.agent });
  };

  private connectionState(socket: Socket): ConnectionState {
    let conn = this.connections.get(socket);
    if (!conn) {
      const meta: OpenMetadata = {
        clientIp: normalizeIp(socket.remoteAddress),
        clientPort: socket.remotePort ?? 0,
        listenerPort: socket.localPort ?? 0,
        tls: 'encrypted' in socket && socket.encrypted === true,
      };
      const platform = this.options.platformForPort?.(meta.listenerPort) ?? DEFAULT_PLATFORM;
      const agent = new TunnelHttpAgent(
        this.options.registry,
        meta,
        this.options.connectWaitMs,
        this.options.streamIdleTimeoutMs,
        platform,
      );
      conn = { agent, meta };
      this.connections.set(socket, conn);
      socket.once('close', () => agent.destroy());
    }
    return conn;
  }

  private readonly onProxyReq = (proxyReq: ClientRequest, req: IncomingMessage): void => {
    const state = this.requests.get(req);
    if (state) {
      state.proxyReq = proxyReq;
      // the body went past the limit while the request waited for a tunnel stream
      if (state.bodyTooLarge) {
        proxyReq.destroy();
        return;
      }
    }
    const idle = this.options.streamIdleTimeoutMs;
    if (idle > 0) {
      proxyReq.setTimeout(idle, () => proxyReq.destroy(new RelayError('RELAY_ERR_UPSTREAM_TIMEOUT')));
    }
  };

  private readonly onProxyRes = (proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void => {
    // Head, body and end of a small response usually arrive in one tick: cork so they leave in
    // one write instead of two or three.
    res.cork();
    process.nextTick(() => res.uncork());
    const state = this.requests.get(req);
    if (state) proxyRes.on('data', (chunk: Buffer) => (state.bytesOut += chunk.length));
    // http-proxy pipes the response and nothing more: if the tunnel dies mid-body the client
    // would wait forever. Cut its connection so it sees a truncated response.
    proxyRes.once('close', () => {
      if (!proxyRes.complete) res.destroy();
    });
  };

  private readonly onProxyError = (err: Error, req: IncomingMessage, target: ServerResponse | Socket): void => {
    // the body limit already answered and aborted this request
    if (this.requests.get(req)?.bodyTooLarge) return;
    const platform = this.connections.get(req.socket)?.agent.platform ?? DEFAULT_PLATFORM;
    const code: ErrorCode = err instanceof RelayError ? this.mapError(err.code, platform) : 'RELAY_ERR_UPSTREAM';
    const { status, error, message } = errorParts(code);
    const headers: Record<string, string | number> = {};
    if (status === 503) headers['retry-after'] = this.options.retryAfterSeconds;
    const reason = rejectReasonOf(code);
    if (reason) this.options.stats.reject(reason);
    this.options.logger.debug(
      { event: 'forward_error', code: (err as { code?: string }).code, err: err.message, path: pathOf(req.url) },
      'forwarding failed',
    );

    if ('setHeader' in target) {
      const res = target;
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      sendError(res, code, { ...headers, connection: 'close' });
      return;
    }
    // WebSocket upgrade: answer on the raw socket if nothing was written yet
    const socket = target;
    if (socket.destroyed) return;
    socket.end(rawErrorResponse(status, error, message, headers));
  };

  /**
   * The code a client sees for a forwarding error. No usable tunnel connection while some are up
   * and not going away means each is at its stream limit: `tunnel_busy`, not `no_agent`.
   */
  private mapError(code: ErrorCode, platform: string): ErrorCode {
    if (code === 'RELAY_ERR_NO_AGENT') {
      // The platform has live connections, all at their stream limit: busy, not absent.
      const busy = this.options.registry
        .list()
        .some((conn) => conn.platform === platform && !conn.session.isClosed && !conn.session.draining);
      return busy ? 'RELAY_ERR_TUNNEL_BUSY' : code;
    }
    return mapError(code);
  }

  private logRequest(req: IncomingMessage, res: ServerResponse, state: RequestState): void {
    const conn = this.connections.get(req.socket);
    const ms = performance.now() - state.start;
    this.options.metrics?.recordRequest(conn?.agent.platform, res.headersSent ? res.statusCode : 0, ms);
    this.options.metrics?.recordBytes(conn?.agent.platform, Number(req.headers['content-length'] ?? 0) || 0, state.bytesOut);
    this.options.logger.info(
      {
        event: 'request',
        method: req.method,
        path: pathOf(req.url),
        status: res.statusCode,
        bytes: state.bytesOut,
        ms: Math.round((performance.now() - state.start) * 100) / 100,
        client: conn?.meta.clientIp,
        agent: conn?.agent.lastConnectionId,
        platform: conn?.agent.platform,
        ...(res.writableFinished ? {} : { aborted: true }),
      },
      'request',
    );
  }

  close(): void {
    this.proxy.close();
  }
}

function mapError(code: ErrorCode): ErrorCode {
  switch (code) {
    case 'RELAY_ERR_NO_AGENT':
    case 'RELAY_ERR_DRAINING':
    case 'RELAY_ERR_UPSTREAM_TIMEOUT':
      return code;
    case 'RELAY_ERR_SESSION_CLOSED':
    case 'RELAY_ERR_GOAWAY':
      return 'RELAY_ERR_AGENT_LOST';
    default:
      return 'RELAY_ERR_UPSTREAM';
  }
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

function setForwardingHeaders(req: IncomingMessage, meta: OpenMetadata): void {
  const h = req.headers;
  for (const name of FORGEABLE) delete h[name];
  h['x-forwarded-for'] = meta.clientIp;
  h['x-forwarded-proto'] = meta.tls ? 'https' : 'http';
  h['x-forwarded-port'] = String(meta.listenerPort);
  if (h.host) h['x-forwarded-host'] = h.host;
}

/** The path without its query string (queries may carry tokens). */
export function pathOf(url: string | undefined): string {
  if (!url) return '';
  const q = url.indexOf('?');
  return (q === -1 ? url : url.slice(0, q)).slice(0, 512);
}
