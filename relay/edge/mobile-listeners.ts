/**
 * The relay's edge: an HTTP listener (10080) and an HTTPS listener (10443, TLS 1.2+) for mobile
 * clients, with strict parser limits and timeouts, IP rules and per-client limits. Requests and
 * upgrades that pass go to the forwarder. The listeners track their connections so that a drain
 * can wait for in-flight work.
 *
 * Order of the checks, cheapest and earliest first:
 *   1. TCP accepted: IP rules (drop: reset), then the per-IP connection limit — before Node's
 *      own 'connection' handler, so a refused client costs no TLS handshake and no HTTP parser.
 *   2. Request head parsed: the per-IP request rate (429), then a declared body size (413).
 *   3. Body streaming: a chunked body is counted by the forwarder (413 once past the limit).
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type Socket } from 'node:net';
import type { Clock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';
import { canonicalIp } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import { ClientLimits } from './client-limits.js';
import type { EdgeRejectReason, EdgeStats } from './edge-stats.js';
import { rawCatalogResponse, rawErrorResponse, sendError } from './error-response.js';
import type { Forwarder } from './forwarder.js';
import type { IpFilter } from './ip-filter.js';
import { tlsServerDefaults } from '../../shared/tls-options.js';

export interface EdgeLimits {
  /** Largest request head, bytes (431 past it). */
  maxHeaderBytes: number;
  /** Time to receive a request head, ms (408 past it). */
  headersTimeoutMs: number;
  /** Time to receive a whole request, ms (408 past it); 0 = none. */
  requestTimeoutMs: number;
  /** Idle time of a keep-alive connection between requests, ms. */
  keepAliveTimeoutMs: number;
  /** Largest request body, bytes (413 past it); 0 = no limit. */
  maxBodyBytes: number;
  /** Concurrent connections per client address; 0 = no limit. */
  maxConnectionsPerIp: number;
  /** Requests per second per client address (token bucket); 0 = no limit. */
  maxRequestsPerSecondPerIp: number;
  /** Bucket size of that rate; 0 = twice the rate. */
  requestBurstPerIp: number;
  /** Client addresses tracked at once by the per-IP limits. */
  maxTrackedIps: number;
}

/** Every edge limit at its default (shared/defaults.ts). */
export function defaultEdgeLimits(): EdgeLimits {
  return {
    maxHeaderBytes: defaults.maxHeaderBytes,
    headersTimeoutMs: defaults.headersTimeoutMs,
    requestTimeoutMs: defaults.requestTimeoutMs,
    keepAliveTimeoutMs: defaults.keepAliveTimeoutMs,
    maxBodyBytes: defaults.maxBodyBytes,
    maxConnectionsPerIp: defaults.maxConnectionsPerIp,
    maxRequestsPerSecondPerIp: defaults.maxRequestsPerSecondPerIp,
    requestBurstPerIp: defaults.requestBurstPerIp,
    maxTrackedIps: defaults.maxTrackedIps,
  };
}

export type EdgeServer = http.Server | https.Server;

export interface MobileListenersOptions {
  forwarder: Forwarder;
  limits: EdgeLimits;
  tls: { cert: string; key: string };
  /** IP rules; without it every client is admitted (and none is exempt from the per-IP limits). */
  ipFilter?: IpFilter;
  stats: EdgeStats;
  logger: Logger;
  /** Time for the request buckets; default the system clock. */
  clock?: Clock;
}

/** Modern TLS only; Node's default cipher list already prefers AEAD suites with forward secrecy. */

/** Log "the per-IP table is full" at most this often. */
const tableFullLogIntervalMs = 60_000;

const noop = (): void => {};

export class MobileListeners {
  readonly http: http.Server;
  readonly https: https.Server;
  readonly clientLimits: ClientLimits;
  /** Admitted connections (raw TCP sockets) and their canonical client address. */
  private readonly sockets = new Map<Socket, string>();
  private readonly extra: net.Server[] = [];
  private readonly forwarder: Forwarder;
  private readonly ipFilter: IpFilter | undefined;
  private readonly stats: EdgeStats;
  private readonly logger: Logger;
  private readonly maxBodyBytes: number;
  private tableFullLoggedAt = Number.NEGATIVE_INFINITY;
  private draining = false;

  constructor(options: MobileListenersOptions) {
    const { limits } = options;
    this.forwarder = options.forwarder;
    this.ipFilter = options.ipFilter;
    this.stats = options.stats;
    this.logger = options.logger;
    this.maxBodyBytes = limits.maxBodyBytes;
    this.clientLimits = new ClientLimits({
      maxConnectionsPerIp: limits.maxConnectionsPerIp,
      maxRequestsPerSecondPerIp: limits.maxRequestsPerSecondPerIp,
      requestBurstPerIp: limits.requestBurstPerIp,
      maxTrackedIps: limits.maxTrackedIps,
      ...(options.clock ? { clock: options.clock } : {}),
    });
    const common = {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // how often Node checks the two timeouts above (default 30 s would let a slow client
      // hold a connection up to 30 s past its deadline)
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, limits.headersTimeoutMs / 2)),
      noDelay: true,
      // reject ambiguous requests (smuggling): Node's default strict parser stays on
      insecureHTTPParser: false,
    };
    this.http = http.createServer(common);
    this.https = https.createServer({ ...common, ...tlsServerDefaults, cert: options.tls.cert, key: options.tls.key });
    for (const server of [this.http, this.https] as EdgeServer[]) {
      server.on('request', this.onRequest);
      // With a listener here Node no longer sends "100 Continue" by itself: the edge sends it only
      // for a request it admits, so a client told 413 or 429 never uploads the body.
      server.on('checkContinue', this.onCheckContinue);
      server.on('upgrade', this.onUpgrade);
      server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
      const plain = server === this.http;
      gateConnections(server, (socket) => this.admit(socket, plain));
    }
    this.https.on('secureConnection', (socket) => socket.setNoDelay(true));
  }

  setCertificate(cert: string, key: string): void {
    this.https.setSecureContext({ ...tlsServerDefaults, cert, key });
  }

  async listen(host: string, httpPort: number, httpsPort: number): Promise<{ httpPort: number; httpsPort: number }> {
    return { httpPort: await listen(this.http, httpPort, host), httpsPort: await listen(this.https, httpsPort, host) };
  }

  /**
   * Listens on another port whose connections the HTTP (`tls` false) or HTTPS server takes, with
   * the same IP rules and limits: a platform's own port. The port a connection arrived on travels
   * in its streams' OPEN metadata and picks the platform.
   */
  async listenExtra(host: string, port: number, tls: boolean): Promise<number> {
    const target = tls ? this.https : this.http;
    const server = net.createServer({ noDelay: true }, (socket) => target.emit('connection', socket));
    this.extra.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Applies the IP rules in force to open connections: those of a client that is now dropped are
   * reset (after a reload that blacklisted it). Returns how many.
   */
  enforceIpRules(): number {
    const filter = this.ipFilter;
    if (!filter) return 0;
    let dropped = 0;
    for (const [socket, ip] of this.sockets) {
      const verdict = filter.check(ip);
      if (verdict === 'ip_blacklist' || verdict === 'ip_not_whitelisted') {
        this.stats.reject(verdict);
        // destroy, not reset: on HTTPS the TLS socket above this one owns the handle now
        socket.destroy();
        dropped++;
      }
    }
    if (dropped > 0) this.logger.info({ event: 'ip_rules_enforced', dropped }, 'IP rules: reset open connections of clients now dropped');
    return dropped;
  }

  /**
   * Stops accepting, lets in-flight requests finish (responses go out with `Connection: close`,
   * idle keep-alive connections are closed), and cuts whatever is left after `timeoutMs`.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    for (const server of this.extra) server.close();
    const closed = Promise.all([this.http, this.https].map((s) => new Promise<void>((r) => s.close(() => r()))));
    const deadline = Date.now() + timeoutMs;
    while (this.sockets.size > 0 && Date.now() < deadline) {
      this.http.closeIdleConnections();
      this.https.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const socket of this.sockets.keys()) socket.destroy();
    this.clientLimits.close();
    await closed;
  }

  /** Step 1: a TCP connection was accepted. False when it was refused (and is being closed). */
  private admit(socket: Socket, plain: boolean): boolean {
    const address = socket.remoteAddress;
    if (address === undefined) {
      // the client is already gone
      socket.destroy();
      return false;
    }
    const ip = canonicalIp(address);
    const verdict = this.ipFilter?.check(ip) ?? 'allow';
    if (verdict === 'ip_blacklist' || verdict === 'ip_not_whitelisted') {
      this.drop(socket, ip, verdict);
      return false;
    }
    let counted = false;
    if (verdict === 'allow' && this.clientLimits.enabled) {
      const limit = this.clientLimits.openConnection(ip);
      if (limit !== 'ok') {
        this.refuseConnection(socket, ip, plain, limit);
        return false;
      }
      counted = true;
    }
    this.sockets.set(socket, ip);
    socket.once('close', () => {
      this.sockets.delete(socket);
      if (counted) this.clientLimits.closeConnection(ip);
    });
    return true;
  }

  /** Resets a connection the IP rules deny: no answer, nothing read. */
  private drop(socket: Socket, ip: string, reason: EdgeRejectReason): void {
    this.stats.reject(reason);
    this.logger.debug({ event: 'edge_reject', reason, client: ip }, 'mobile connection dropped by the IP rules');
    reset(socket);
  }

  /**
   * Past the per-IP connection limit. Plain HTTP: a canned 503 written at once (no parser), then
   * the connection is read and discarded until the client closes it or `refusalLingerMs` passes;
   * past `maxLingeringRefusalsPerIp` such connections, and on HTTPS (a TLS handshake only to say
   * no would cost more than the connection), a reset.
   */
  private refuseConnection(socket: Socket, ip: string, plain: boolean, verdict: 'per_ip_connections' | 'table_full'): void {
    this.stats.reject('per_ip_connections');
    if (verdict === 'table_full') {
      const now = Date.now();
      if (now - this.tableFullLoggedAt >= tableFullLogIntervalMs) {
        this.tableFullLoggedAt = now;
        this.logger.warn(
          { event: 'per_ip_table_full', tracked: this.clientLimits.size },
          'per-IP limits: too many client addresses at once; connections from new addresses are refused (raise --max-tracked-ips?)',
        );
      }
    } else {
      this.logger.debug({ event: 'edge_reject', reason: 'per_ip_connections', client: ip }, 'too many connections from one address');
    }
    if (!plain || !this.clientLimits.beginRefusal(ip)) {
      reset(socket);
      return;
    }
    socket.on('error', noop);
    const timer = setTimeout(() => socket.destroy(), defaults.refusalLingerMs).unref();
    socket.once('close', () => {
      clearTimeout(timer);
      this.clientLimits.endRefusal(ip);
    });
    socket.resume();
    socket.end(TOO_MANY_CONNECTIONS);
  }

  /** Step 2 for a request: false when it was answered here (429, 413). */
  private admitRequest(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.draining) res.shouldKeepAlive = false;
    if (this.clientLimits.rateLimited) {
      const retryAfter = this.takeRequestToken(req.socket);
      if (retryAfter > 0) {
        // the body, if any, is not read: close rather than read it to keep the connection
        if (hasBody(req)) res.shouldKeepAlive = false;
        sendError(res, 'RELAY_ERR_RATE_LIMITED', { 'retry-after': retryAfter });
        return false;
      }
    }
    if (this.maxBodyBytes > 0 && declaredLength(req) > this.maxBodyBytes) {
      this.stats.reject('body_too_large');
      this.logger.debug(
        { event: 'edge_reject', reason: 'body_too_large', client: canonicalIp(req.socket.remoteAddress ?? '') },
        'body too large',
      );
      res.shouldKeepAlive = false;
      sendError(res, 'RELAY_ERR_BODY_TOO_LARGE', { connection: 'close' });
      return false;
    }
    return true;
  }

  /** 0 when a request from this connection's client may go on, else seconds for Retry-After. */
  private takeRequestToken(socket: Socket): number {
    const ip = canonicalIp(socket.remoteAddress ?? '');
    if (this.ipFilter?.isWhitelisted(ip)) return 0;
    const retryAfter = this.clientLimits.takeRequest(ip);
    if (retryAfter > 0) {
      this.stats.reject('per_ip_rate');
      this.logger.debug({ event: 'edge_reject', reason: 'per_ip_rate', client: ip }, 'request rate limited');
    }
    return retryAfter;
  }

  private readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (this.admitRequest(req, res)) this.forwarder.handleRequest(req, res);
  };

  private readonly onCheckContinue = (req: IncomingMessage, res: ServerResponse): void => {
    if (!this.admitRequest(req, res)) return;
    res.writeContinue();
    this.forwarder.handleRequest(req, res);
  };

  private readonly onUpgrade = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    if (this.clientLimits.rateLimited) {
      const retryAfter = this.takeRequestToken(socket);
      if (retryAfter > 0) {
        socket.on('error', noop);
        socket.end(rawCatalogResponse('RELAY_ERR_RATE_LIMITED', { 'retry-after': retryAfter }));
        return;
      }
    }
    this.forwarder.handleUpgrade(req, socket, head);
  };

  /**
   * Parser errors and timeouts: answer with a status and a JSON error, then close. A request
   * whose response has not started yet (a body too slow for the request timeout) gets its 408
   * too; once a response has started, the connection is cut.
   */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const pending = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!socket.writable || (pending && pending.headersSent)) {
      socket.destroy();
      return;
    }
    const [status, code, reason]: [number, string, EdgeRejectReason | null] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'header_too_large', 'headers_too_large']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'request_timeout', 'request_timeout']
          : [400, 'bad_request', null];
    if (reason) this.stats.reject(reason);
    socket.end(rawErrorResponse(status, code, http.STATUS_CODES[status] ?? 'Bad Request'));
    // With a 'clientError' listener Node leaves the socket to it: a client that never closes its
    // side would hold it open for good
    setTimeout(() => socket.destroy(), defaults.refusalLingerMs).unref();
  }
}

/** The canned answer to a plain-HTTP connection past the per-IP limit. */
const TOO_MANY_CONNECTIONS = rawCatalogResponse('RELAY_ERR_TOO_MANY_CONNECTIONS');

/**
 * Puts `admit` in front of the listeners the server already has on 'connection' (Node's own:
 * for http.Server the HTTP parser set-up, for https.Server the TLS wrapper, whose handshake
 * follows). 'connection' carries the raw TCP socket for both, so a socket `admit` refuses never
 * reaches TLS or HTTP. Not a net.Server in front handing sockets over with emit('connection'):
 * an http.Server that never listens never starts the timer that enforces the headers and
 * request timeouts. A 'connection' listener added after this runs for every socket, refused
 * ones included (destroyed by then).
 */
function gateConnections(server: EdgeServer, admit: (socket: Socket) => boolean): void {
  const inner = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    if (!admit(socket)) return;
    for (const listener of inner) listener.call(server, socket);
  });
}

/** Closes with a TCP RST: nothing is read, no FIN handshake, no TIME_WAIT on this side. */
function reset(socket: Socket): void {
  socket.on('error', noop);
  if (socket.destroyed) return;
  socket.resetAndDestroy();
}

/** The Content-Length of a request, or -1 when it has none (chunked or no body). */
function declaredLength(req: IncomingMessage): number {
  const value = req.headers['content-length'];
  // Node's parser has already refused a malformed or duplicated Content-Length
  return value === undefined ? -1 : Number(value);
}

function hasBody(req: IncomingMessage): boolean {
  return declaredLength(req) > 0 || req.headers['transfer-encoding'] !== undefined;
}

function listen(server: EdgeServer, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}
