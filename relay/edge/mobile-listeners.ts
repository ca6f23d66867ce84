/**
 * The relay's edge: an HTTP listener (10080) and an HTTPS listener (10443, TLS 1.2+) for mobile
 * clients, with IP rules and per-client limits at accept. Admitted connections go to the
 * forwarder (forwarder.ts, edge-connection.ts), which parses HTTP/1.1 itself, strictly, and
 * enforces every per-request limit and timeout.
 *
 * Order of the checks, cheapest and earliest first:
 *   1. TCP accepted: IP rules (drop: reset), the relay's connection limit (reset), then the
 *      per-IP connection limit — before TLS, so a
 *      refused client costs no handshake and no parser.
 *   2. Request head parsed: the per-IP request rate (429), then a declared body size (413).
 *   3. Body streaming: a chunked body is counted (413), a body slower than the minimum rate is
 *      cut (408).
 *
 * Behind a TCP load balancer (`proxyProtocolFrom`, PROXY protocol v1/v2, proxy-protocol.ts): a
 * connection from a listed address must start with a PROXY header, read before anything else
 * (before TLS on HTTPS) within `headersTimeoutMs`; step 1 then runs for the client the header
 * names (LOCAL/UNKNOWN: the balancer itself), and the bytes after the header are put back
 * (`unshift`) for HTTP or TLS, untouched. A connection from any other address passes step 1 as
 * before, and is closed if its first bytes are a PROXY signature (never trusted). Both refusals
 * count as `proxy_protocol`.
 */
import net, { type Socket } from 'node:net';
import tls from 'node:tls';
import type { Clock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';
import { listen } from '../../shared/listen.js';
import { canonicalIp } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import { tlsServerDefaults } from '../../shared/tls-options.js';
import type { IpRuleSet } from '../../shared/ip-rules.js';
import { ClientLimits } from './client-limits.js';
import { looksLikeProxyHeader, ProxyHeaderReader } from './proxy-protocol.js';
import { parseProxyProtocolFrom } from './proxy-protocol-from.js';
import type { EdgeRejectReason, EdgeStats } from './edge-stats.js';
import { rawCatalogResponse } from './error-response.js';
import type { EdgeLimits } from './edge-limits.js';
import type { Forwarder } from './forwarder.js';
import type { IpFilter } from './ip-filter.js';

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
  /** Addresses or CIDR blocks of load balancers that send a PROXY protocol header (`--proxy-protocol-from`). */
  proxyProtocolFrom?: readonly string[];
}

/** A client address and port as a PROXY header gave them. */
export interface ClientPeer {
  ip: string;
  port: number;
}

/** Log "the per-IP table is full" at most this often. */
const tableFullLogIntervalMs = 60_000;

const noop = (): void => {};
const destroySocket = (_err: Error, socket: { destroy(): void }): void => socket.destroy();

export class MobileListeners {
  /** Plain HTTP: connections go to the forwarder as they are accepted. */
  readonly http: net.Server;
  /** HTTPS: connections go to the forwarder once the TLS handshake is done. */
  readonly https: tls.Server;
  readonly clientLimits: ClientLimits;
  /** Admitted connections (raw TCP sockets) and their canonical client address. */
  private readonly sockets = new Map<Socket, string>();
  /** Platform ports, by bound port. */
  private readonly extra = new Map<number, ExtraListener>();
  /** Open connections accepted on a platform port (address and ports, see {@link originKey}) → the route they took. */
  private readonly origins = new Map<string, Route>();
  /** Timers of platform ports draining after a reload removed them. */
  private readonly retiring = new Set<NodeJS.Timeout>();
  private readonly forwarder: Forwarder;
  private readonly maxConnections: number;
  private readonly ipFilter: IpFilter | undefined;
  private readonly stats: EdgeStats;
  private readonly logger: Logger;
  private tableFullLoggedAt = Number.NEGATIVE_INFINITY;
  /** Load balancers that send a PROXY header; null: the option is off (no byte is looked at). */
  private proxyFrom: IpRuleSet | null;
  /** How long a PROXY header (or the first bytes of another connection) may take. */
  private readonly preludeTimeoutMs: number;
  /** Connections from a listed balancer whose header is not read yet (raw sockets). */
  private readonly pendingHeaders = new Set<Socket>();
  /** Clients named by a PROXY header, by their TCP connection (see {@link originKey}). */
  private readonly proxied = new Map<string, ClientPeer>();

  constructor(options: MobileListenersOptions) {
    const { limits } = options;
    this.forwarder = options.forwarder;
    this.maxConnections = limits.maxConnections;
    this.ipFilter = options.ipFilter;
    this.stats = options.stats;
    this.logger = options.logger;
    this.proxyFrom = options.proxyProtocolFrom?.length ? parseProxyProtocolFrom(options.proxyProtocolFrom) : null;
    this.preludeTimeoutMs = limits.headersTimeoutMs > 0 ? limits.headersTimeoutMs : defaults.headersTimeoutMs;
    this.clientLimits = new ClientLimits({
      maxConnectionsPerIp: limits.maxConnectionsPerIp,
      maxRequestsPerSecondPerIp: limits.maxRequestsPerSecondPerIp,
      requestBurstPerIp: limits.requestBurstPerIp,
      maxTrackedIps: limits.maxTrackedIps,
      ...(options.clock ? { clock: options.clock } : {}),
    });
    // allowHalfOpen: a client that shuts down its side after a request still gets the response
    this.http = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.forwarder.handleConnection(socket, false));
    this.https = tls.createServer(
      {
        ...tlsServerDefaults,
        cert: options.tls.cert,
        key: options.tls.key,
        // as Node's https server: no half-open TLS (a client's FIN during the handshake must end it)
        ALPNProtocols: ['http/1.1'],
        // the handshake counts against the head's time (slowloris over TLS)
        handshakeTimeout: limits.headersTimeoutMs,
      },
      (socket) => this.forwarder.handleConnection(socket, true),
    );
    // A failed handshake (timeout, bad record, a scanner) is closed here: Node (20) only emits
    // 'tlsClientError' and leaves the socket open — a handshake timeout, with no listener or
    // with a listener that does nothing, left an idle connection (its OpenSSL state, buffers
    // and file descriptor) held until the client closed it.
    this.https.on('tlsClientError', destroySocket);
    for (const server of [this.http, this.https]) {
      const plain = server === this.http;
      gateConnections(server, (socket, pass) => this.accept(socket, plain, pass));
    }
  }

  /**
   * The client a PROXY header named for this connection (its TCP socket, or the TLS socket on
   * top), or undefined when the socket's peer is the client.
   */
  clientOf(socket: Socket): ClientPeer | undefined {
    if (this.proxied.size === 0) return undefined;
    const address = socket.remoteAddress;
    if (address === undefined) return undefined;
    return this.proxied.get(originKey(socket.localPort ?? 0, canonicalIp(address), socket.remotePort ?? 0));
  }

  setCertificate(cert: string, key: string): void {
    this.https.setSecureContext({ ...tlsServerDefaults, cert, key });
  }

  async listen(host: string, httpPort: number, httpsPort: number): Promise<{ httpPort: number; httpsPort: number }> {
    return { httpPort: await listenPort(this.http, httpPort, host), httpsPort: await listenPort(this.https, httpsPort, host) };
  }

  /**
   * Listens on another port whose connections the HTTP (`tls` false) or HTTPS server takes, with
   * the same IP rules and limits: a platform's own port. The listener a connection arrived on
   * picks its platform ({@link originOf}). Returns the bound port. A port in use rejects with
   * the listen error (EADDRINUSE).
   */
  async listenExtra(host: string, port: number, tls: boolean, platform: string): Promise<number> {
    const listener: ExtraListener = {
      server: null as unknown as net.Server,
      port,
      route: { platform, tls, retired: false, sockets: new Set() },
    };
    listener.server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.acceptExtra(listener, socket));
    const bound = await listenPort(listener.server, port, host);
    listener.port = bound;
    this.extra.set(bound, listener);
    return bound;
  }

  /** The platform port listening on `port`, if any: its platform and whether it is HTTPS. */
  extraPort(port: number): { platform: string; tls: boolean } | undefined {
    const route = this.extra.get(port)?.route;
    return route ? { platform: route.platform, tls: route.tls } : undefined;
  }

  /**
   * Gives the listener on `port` another platform or TLS flag without closing it (a reload that
   * changed only those): connections accepted from now on get the new ones; those already open
   * drain as on {@link closeExtra}.
   */
  changeExtra(port: number, tls: boolean, platform: string, drainMs: number): void {
    const listener = this.extra.get(port);
    if (!listener) return;
    const old = listener.route;
    listener.route = { platform, tls, retired: false, sockets: new Set() };
    this.retire(old, drainMs);
  }

  /**
   * Stops listening on a platform port (a reload removed it); its open connections drain as on
   * shutdown: in-flight requests finish (`Connection: close`), idle ones close, and whatever is
   * left after `drainMs` is cut. Other listeners and their connections are not touched.
   */
  closeExtra(port: number, drainMs: number): void {
    const listener = this.extra.get(port);
    if (!listener) return;
    this.extra.delete(port);
    listener.server.close();
    this.retire(listener.route, drainMs);
  }

  /**
   * The platform of a connection, from the platform port it arrived on (by its address and
   * ports: a TLS socket is not the TCP socket the listener accepted), or undefined for the main
   * listeners; `drain` when that port was removed or changed since.
   */
  originOf(socket: Socket): { platform: string; drain: boolean } | undefined {
    const route = this.routeOf(socket);
    return route ? { platform: route.platform, drain: route.retired } : undefined;
  }

  private acceptExtra(listener: ExtraListener, socket: Socket): void {
    const route = listener.route;
    const address = socket.remoteAddress;
    if (address !== undefined) {
      const key = originKey(socket.localPort ?? 0, canonicalIp(address), socket.remotePort ?? 0);
      this.origins.set(key, route);
      route.sockets.add(socket);
      socket.once('close', () => {
        if (this.origins.get(key) === route) this.origins.delete(key);
        route.sockets.delete(socket);
      });
    }
    (route.tls ? this.https : this.http).emit('connection', socket);
  }

  /** Drains the connections of a route no longer in force; cuts what is left after `drainMs`. */
  private retire(route: Route, drainMs: number): void {
    route.retired = true;
    if (route.sockets.size === 0) return;
    this.forwarder.drainWhere((conn) => this.routeOf(conn.socket) === route);
    const started = Date.now();
    const timer = setInterval(() => {
      if (route.sockets.size > 0 && Date.now() - started < drainMs) return;
      for (const socket of route.sockets) socket.destroy();
      clearInterval(timer);
      this.retiring.delete(timer);
    }, 50);
    timer.unref();
    this.retiring.add(timer);
  }

  /** The route of a connection by its TCP addresses (a TLS socket has those of the TCP socket below it). */
  private routeOf(socket: Socket): Route | undefined {
    const address = socket.remoteAddress;
    if (address === undefined) return undefined;
    return this.origins.get(originKey(socket.localPort ?? 0, canonicalIp(address), socket.remotePort ?? 0));
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /** Request heads parsed since start. */
  get requestCount(): number {
    return this.forwarder.requestCount;
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
    for (const listener of this.extra.values()) listener.server.close();
    for (const timer of this.retiring) clearInterval(timer);
    const closed = Promise.all([this.http, this.https].map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.forwarder.startDrain();
    const deadline = Date.now() + timeoutMs;
    while (this.sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const socket of this.sockets.keys()) socket.destroy();
    for (const socket of this.pendingHeaders) socket.destroy();
    this.forwarder.destroyAll();
    this.forwarder.close();
    this.clientLimits.close();
    await closed;
  }

  /**
   * 0 when a request from this client may go on, else seconds for Retry-After: the per-IP
   * request bucket (whitelisted addresses are exempt). The forwarder asks for every request.
   */
  readonly takeRequestToken = (ip: string): number => {
    if (!this.clientLimits.rateLimited || this.ipFilter?.isWhitelisted(ip)) return 0;
    const retryAfter = this.clientLimits.takeRequest(ip);
    if (retryAfter > 0) {
      this.stats.reject('per_ip_rate');
      this.logger.debug({ event: 'edge_reject', reason: 'per_ip_rate', client: ip }, 'request rate limited');
    }
    return retryAfter;
  };

  /**
   * Replaces the load balancers trusted to send a PROXY header (SIGHUP, from the config file);
   * checked already (parseProxyProtocolFrom). Connections open now keep the client they were given;
   * the next connection is judged by the new list. Empty: the option is off.
   */
  setProxyProtocolFrom(list: readonly string[]): void {
    this.proxyFrom = list.length > 0 ? parseProxyProtocolFrom(list) : null;
  }

  /**
   * A TCP connection was accepted: step 1 (see the module comment), with the PROXY protocol in
   * front of it when configured; `pass` hands the socket on to HTTP or TLS.
   */
  private accept(socket: Socket, plain: boolean, pass: () => void): void {
    const address = socket.remoteAddress;
    if (address === undefined) {
      // the client is already gone
      socket.destroy();
      return;
    }
    const peer = canonicalIp(address);
    if (this.proxyFrom === null) {
      if (this.admit(socket, plain, peer)) pass();
      return;
    }
    if (!this.proxyFrom.matches(peer)) {
      // not a balancer: served as without the option, but a PROXY header from it is refused
      if (!this.admit(socket, plain, peer)) return;
      this.readPrelude(socket, peer, false, (rest) => {
        this.handOn(socket, plain, rest, pass);
      });
      return;
    }
    this.pendingHeaders.add(socket);
    socket.once('close', () => this.pendingHeaders.delete(socket));
    this.readPrelude(socket, peer, true, (rest, client) => {
      this.pendingHeaders.delete(socket);
      const ip = client ? client.ip : peer;
      if (!this.admit(socket, plain, ip)) return;
      if (client) {
        const key = originKey(socket.localPort ?? 0, peer, socket.remotePort ?? 0);
        this.proxied.set(key, client);
        socket.once('close', () => this.proxied.delete(key));
      }
      this.handOn(socket, plain, rest, pass);
    });
  }

  /**
   * Reads a connection's first bytes: from a balancer (`listed`) a PROXY header, whose client
   * (null for LOCAL/UNKNOWN) and following bytes go to `done`; from any other address just enough
   * to tell that they are not a PROXY signature. A refusal closes the connection.
   */
  private readPrelude(socket: Socket, peer: string, listed: boolean, done: (rest: Buffer, client: ClientPeer | null) => void): void {
    const reader = listed ? new ProxyHeaderReader() : null;
    let seen: Buffer = Buffer.alloc(0);
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', noop);
    };
    const refuse = (detail: string, reason: EdgeRejectReason = 'proxy_protocol'): void => {
      cleanup();
      this.stats.reject(reason);
      this.logger.debug(
        { event: 'edge_reject', reason, detail, client: peer },
        listed
          ? 'load balancer connection without a valid PROXY header'
          : detail === 'unlisted'
            ? 'PROXY header from an address not in --proxy-protocol-from'
            : 'no request within --headers-timeout-ms',
      );
      socket.on('error', noop);
      socket.destroy();
    };
    const finish = (rest: Buffer, client: ClientPeer | null): void => {
      cleanup();
      socket.pause();
      done(rest, client);
    };
    const onData = (chunk: Buffer): void => {
      if (reader) {
        const result = reader.push(chunk);
        if (result.kind === 'incomplete') return;
        if (result.kind === 'refused') return refuse(result.reason);
        const source = result.header.source;
        finish(result.rest, source ? { ip: canonicalIp(source.ip), port: source.port } : null);
        return;
      }
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const looks = looksLikeProxyHeader(seen);
      if (looks === 'yes') return refuse('unlisted');
      if (looks === 'no') finish(seen, null);
    };
    const onEnd = (): void => {
      if (listed) return refuse('ended');
      // a client that closes before sending anything: nothing to count
      cleanup();
      socket.destroy();
    };
    const timer = setTimeout(() => refuse('timeout', listed ? 'proxy_protocol' : 'request_timeout'), this.preludeTimeoutMs);
    timer.unref();
    socket.on('error', noop);
    socket.on('data', onData);
    socket.once('end', onEnd);
  }

  /** Puts the bytes read so far back and hands the (paused) socket to HTTP or TLS. */
  private handOn(socket: Socket, plain: boolean, rest: Buffer, pass: () => void): void {
    if (socket.destroyed) return;
    if (rest.length > 0) socket.unshift(rest);
    pass();
    // HTTP reads through the stream: start it again. TLS takes the socket's handle over and reads
    // the put-back bytes itself; resuming would make the stream race it for the data.
    if (plain) socket.resume();
  }

  /** Step 1 for client address `ip`. False when it was refused (and is being closed). */
  private admit(socket: Socket, plain: boolean, ip: string): boolean {
    const verdict = this.ipFilter?.check(ip) ?? 'allow';
    if (verdict === 'ip_blacklist' || verdict === 'ip_not_whitelisted') {
      this.drop(socket, ip, verdict);
      return false;
    }
    if (verdict === 'allow' && this.maxConnections > 0 && this.sockets.size >= this.maxConnections) {
      this.stats.reject('max_connections');
      this.logger.debug({ event: 'edge_reject', reason: 'max_connections', client: ip }, 'the relay holds --max-connections connections');
      reset(socket);
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
}

/** Where connections accepted on a platform port go: while in force, and for those already open once it is not. */
interface Route {
  platform: string;
  tls: boolean;
  /** The port was removed or changed by a reload: its connections drain. */
  retired: boolean;
  /** Its open connections (TCP sockets). */
  sockets: Set<Socket>;
}

interface ExtraListener {
  server: net.Server;
  port: number;
  route: Route;
}

/** A connection by its listener port and client address: the same for its TCP socket and the TLS socket on top. */
function originKey(listenerPort: number, clientIp: string, clientPort: number): string {
  return `${listenerPort} ${clientIp} ${clientPort}`;
}

/** The canned answer to a plain-HTTP connection past the per-IP limit. */
const TOO_MANY_CONNECTIONS = rawCatalogResponse('RELAY_ERR_TOO_MANY_CONNECTIONS');

/**
 * Puts `accept` in front of the listeners the server already has on 'connection' (for the HTTP
 * server the forwarder, for the TLS server Node's TLS wrapper, whose handshake follows); they run
 * when `accept` calls `pass` (at once, or once a PROXY header is read). 'connection' carries the
 * raw TCP socket for both, so a socket `accept` refuses never reaches TLS or HTTP. A 'connection' listener added after this runs for every socket, refused ones
 * included (destroyed by then).
 */
function gateConnections(server: net.Server, accept: (socket: Socket, pass: () => void) => void): void {
  const inner = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    accept(socket, () => {
      for (const listener of inner) listener.call(server, socket);
    });
  });
}

/** Closes with a TCP RST: nothing is read, no FIN handshake, no TIME_WAIT on this side. */
function reset(socket: Socket): void {
  socket.on('error', noop);
  if (socket.destroyed) return;
  socket.resetAndDestroy();
}

/** The port `server` is bound to once listening. */
async function listenPort(server: net.Server, port: number, host: string): Promise<number> {
  return (await listen(server, port, host)).port;
}
