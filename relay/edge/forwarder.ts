/**
 * Forwards mobile connections through the tunnel, one HTTP/1.1 exchange at a time. Each admitted
 * connection becomes an {@link EdgeConnection} (edge-connection.ts); the forwarder is what they
 * share: the limits, the registry they open their tunnel stream on, the log line and metrics of
 * each exchange, the timer sweep that enforces every deadline, and the drain.
 *
 * No `http.Server`, `http-proxy`, `ClientRequest` or `http.Agent` on this path: a strict parser of
 * our own reads the request (http1.ts), a canonical request head is written straight into the
 * connection's tunnel stream, and the response comes back as bytes whose head is read, rewritten
 * (hop-by-hop fields are the relay's own) and passed on with its body.
 */
import type { Socket } from 'node:net';
import { RelayError, ResetCode, type ErrorCode } from '../../shared/errors.js';
import { canonicalIp } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import type { OpenMetadata } from '../../shared/mux/frame-codec.js';
import type { RelayMetrics } from '../admin/metrics.js';
import { DEFAULT_PLATFORM } from '../tunnel/agent-credentials.js';
import type { OpenedStream, TunnelRegistry } from '../tunnel/tunnel-registry.js';
import { clientKey } from './client-limits.js';
import { EdgeConnection, type ConnectionHost, type ExchangeRecord } from './edge-connection.js';
import { DRAIN_IDLE_MS, STREAM_RELEASE_MS, type ForwardLimits } from './edge-limits.js';
import type { EdgeRejectReason, EdgeStats } from './edge-stats.js';

export interface ForwarderOptions {
  registry: TunnelRegistry;
  logger: Logger;
  limits: ForwardLimits;
  connectWaitMs: number;
  /** A tunnel stream silent this long while a response is awaited: 504 (or a cut). 0 = none. */
  streamIdleTimeoutMs: number;
  retryAfterSeconds: number;
  stats: EdgeStats;
  /**
   * The platform a mobile connection belongs to, from the listener it arrived on; `drain`: that
   * listener was removed meanwhile (a reload), the connection drains from the start.
   */
  connectionOrigin?: (meta: OpenMetadata, socket: Socket) => { platform: string; drain: boolean };
  /**
   * The client's address when it is not the socket's peer: the one a PROXY protocol header named
   * (`--proxy-protocol-from`). Undefined: the socket's peer is the client.
   */
  clientOf?: (socket: Socket) => { ip: string; port: number } | undefined;
  /** 0 when a request from `ip` may go on, else seconds for Retry-After (the per-IP bucket). */
  takeRequestToken?: (ip: string) => number;
  /** True for a client exempt from the per-client share of tunnel streams (whitelisted). */
  isExempt?: (ip: string) => boolean;
  metrics?: RelayMetrics;
}

/** The client address in canonical form (`::ffff:1.2.3.4` -> `1.2.3.4`), `unknown` if none. */
export function normalizeIp(ip: string | undefined): string {
  return ip ? canonicalIp(ip) : 'unknown';
}

/** The path without its query string (queries may carry tokens), at most 512 characters. */
export function pathOf(url: string | undefined): string {
  if (!url) return '';
  const q = url.indexOf('?');
  return (q === -1 ? url : url.slice(0, q)).slice(0, 512);
}

export class Forwarder implements ConnectionHost {
  readonly options: ForwarderOptions;
  readonly limits: ForwardLimits;
  /** `Keep-Alive: timeout=N` for responses on kept-alive connections. */
  readonly keepAliveHeader: string;
  /** Request heads parsed since start. */
  requestCount = 0;
  private readonly connections = new Set<EdgeConnection>();
  private sweepTimer: NodeJS.Timeout | null = null;
  private drainingNow = false;
  private drainStart = 0;

  constructor(options: ForwarderOptions) {
    this.options = options;
    this.limits = options.limits;
    const idle = options.limits.keepAliveTimeoutMs;
    this.keepAliveHeader = idle > 0 ? `Keep-Alive: timeout=${Math.max(1, Math.floor(idle / 1000))}\r\n` : '';
  }

  get logger(): Logger {
    return this.options.logger;
  }

  get retryAfterSeconds(): number {
    return this.options.retryAfterSeconds;
  }

  get streamIdleTimeoutMs(): number {
    return this.options.streamIdleTimeoutMs;
  }

  takeRequestToken(ip: string): number {
    return this.options.takeRequestToken?.(ip) ?? 0;
  }

  get draining(): boolean {
    return this.drainingNow;
  }

  get drainStartedAt(): number {
    return this.drainStart;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Takes an admitted mobile connection (TCP, or TLS once the handshake is done). */
  handleConnection(socket: Socket, tls: boolean): void {
    const client = this.options.clientOf?.(socket);
    const meta: OpenMetadata = {
      clientIp: client ? client.ip : normalizeIp(socket.remoteAddress),
      clientPort: client ? client.port : (socket.remotePort ?? 0),
      listenerPort: socket.localPort ?? 0,
      tls,
    };
    const origin = this.options.connectionOrigin?.(meta, socket) ?? { platform: DEFAULT_PLATFORM, drain: false };
    const conn = new EdgeConnection(this, socket, meta, origin.platform);
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
    if (origin.drain) this.drainWhere((c) => c === conn);
    else this.startSweep();
  }

  /**
   * A tunnel stream for a mobile connection now, or null (then {@link acquireStream} waits for
   * one): null too when its client holds its share of the platform's streams.
   */
  openStream(platform: string, meta: OpenMetadata): OpenedStream | null {
    return this.options.registry.openStream(platform, this.streamClient(meta.clientIp), meta);
  }

  acquireStream(platform: string, meta: OpenMetadata): Promise<OpenedStream> {
    return this.options.registry.acquireStream(this.options.connectWaitMs, platform, this.streamClient(meta.clientIp), meta);
  }

  /** The key a client's streams are counted under (as the per-IP limits: IPv4, or IPv6 /64); null when exempt. */
  private streamClient(ip: string): string | null {
    return this.options.isExempt?.(ip) ? null : clientKey(ip);
  }

  /** Counts a refusal (stats, metrics) and logs it at debug. */
  reject(reason: EdgeRejectReason, client: string, detail?: string): void {
    this.options.stats.reject(reason);
    this.options.logger.debug({ event: 'edge_reject', reason, client, ...(detail ? { detail } : {}) }, 'request refused at the edge');
  }

  /** The log line and metrics of one finished (or aborted) exchange. */
  record(conn: EdgeConnection, ex: ExchangeRecord): void {
    const ms = performance.now() - ex.startedAt;
    const metrics = this.options.metrics;
    if (metrics) {
      metrics.recordRequest(conn.platform, ex.status, ms);
      metrics.recordBytes(conn.platform, ex.bytesIn, ex.bytesOut);
    }
    this.options.logger.info(
      {
        event: 'request',
        method: ex.method,
        path: pathOf(ex.target),
        status: ex.status,
        bytes: ex.bytesOut,
        ms: Math.round(ms * 100) / 100,
        client: conn.meta.clientIp,
        agent: conn.agentId,
        platform: conn.platform,
        ...(ex.aborted ? { aborted: true } : {}),
      },
      'request',
    );
  }

  /** The client-facing code for a stream that failed before its response started. */
  streamErrorCode(err: unknown): ErrorCode {
    if (err instanceof RelayError) {
      switch (err.code) {
        case 'RELAY_ERR_NO_AGENT':
        case 'RELAY_ERR_TUNNEL_BUSY':
        case 'RELAY_ERR_DRAINING':
        case 'RELAY_ERR_UPSTREAM_TIMEOUT':
          return err.code;
        case 'RELAY_ERR_SESSION_CLOSED':
        case 'RELAY_ERR_GOAWAY':
          return 'RELAY_ERR_AGENT_LOST';
        case 'RELAY_ERR_STREAM_RESET':
          switch ((err as RelayError & { resetCode?: number }).resetCode) {
            case ResetCode.timeout:
              return 'RELAY_ERR_UPSTREAM_TIMEOUT';
            case ResetCode.refused:
              // the agent took no more streams (limit or going away): busy, never a 502
              return 'RELAY_ERR_TUNNEL_BUSY';
            default:
              return 'RELAY_ERR_UPSTREAM';
          }
        default:
          return 'RELAY_ERR_UPSTREAM';
      }
    }
    return 'RELAY_ERR_UPSTREAM';
  }

  /**
   * Drain: busy connections close after their response (which says `Connection: close`), idle
   * ones once idle for the drain-idle time; a request read from here on is still forwarded while
   * a tunnel stream can be had, its response saying `Connection: close`. The sweep runs faster.
   */
  startDrain(): void {
    this.drainingNow = true;
    this.drainStart = performance.now();
    for (const conn of this.connections) conn.onDrain();
    this.close();
    this.startSweep();
  }

  /**
   * Drains the connections `pred` picks, as {@link startDrain} does all of them (a platform port
   * removed by a reload): in-flight requests finish, their responses say `Connection: close`,
   * idle ones close after the drain-idle time. Returns how many.
   */
  drainWhere(pred: (conn: EdgeConnection) => boolean): number {
    let n = 0;
    for (const conn of this.connections) {
      if (!pred(conn)) continue;
      conn.onDrain();
      n++;
    }
    // the sweep again, at the drain's pace
    this.close();
    this.startSweep();
    return n;
  }

  /** Cuts every connection still open. */
  destroyAll(): void {
    for (const conn of this.connections) conn.socket.destroy();
  }

  close(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
  }

  /**
   * One timer for every deadline of every connection (head, body, body rate, keep-alive idle,
   * upstream idle, linger), checked at a fraction of the shortest timeout: per-connection timers
   * would cost a timer update on every read.
   */
  private startSweep(): void {
    if (this.sweepTimer) return;
    const limits = this.limits;
    const release = limits.streamReleaseMs ?? STREAM_RELEASE_MS;
    const draining = this.drainingNow || [...this.connections].some((c) => c.draining);
    const shortest = Math.min(
      limits.headersTimeoutMs,
      limits.keepAliveTimeoutMs || Infinity,
      release || Infinity,
      draining ? (limits.drainIdleMs ?? DRAIN_IDLE_MS) : Infinity,
    );
    const interval = Math.max(draining ? 25 : 50, Math.min(1_000, Math.floor(shortest / 4)));
    this.sweepTimer = setInterval(() => {
      if (this.connections.size === 0) {
        this.close();
        return;
      }
      const now = performance.now();
      for (const conn of this.connections) conn.tick(now);
    }, interval);
    this.sweepTimer.unref();
  }
}
