/**
 * The tunnel endpoint: a TLS listener where platform agents open WebSocket connections. At the
 * upgrade the agent proves who it is with a bearer token (compared in constant time against
 * stored SHA-256 hashes; the relay keeps no token in clear) and, with `--agent-ca`, a client
 * certificate signed by that CA. The credential that matched names the platform the connection
 * serves. A refused upgrade gets a bare HTTP 401; an address with too many refusals in a minute
 * gets 429 for every upgrade that does not carry a valid credential (a valid one always passes:
 * it is checked first), and every refusal is logged.
 */
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import { systemClock, type Clock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';
import { listen } from '../../shared/listen.js';
import { canonicalIp } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import { MAX_STREAMS_HEADER, MuxSession, parseMaxStreamsHeader, type SessionOptions } from '../../shared/mux/session.js';
import { tlsServerDefaults } from '../../shared/tls-options.js';
import { CredentialSet, hashToken, type AgentCredential } from './agent-credentials.js';
import type { TunnelRegistry } from './tunnel-registry.js';

export { hashToken };

export interface TunnelEndpointOptions {
  tls: { cert: string; key: string };
  /** The agent credentials in force (a function: they can be reloaded). */
  credentials: () => CredentialSet;
  /** PEM CA for agent client certificates (mTLS). With it, every agent must present a certificate it signed. */
  agentCa?: string;
  registry: TunnelRegistry;
  logger: Logger;
  mux?: Omit<SessionOptions, 'role' | 'onStream'>;
  maxMessageBytes?: number;
  /** Refused upgrades one address may make per minute before its failed upgrades get 429 (a valid credential still passes). */
  authFailuresPerMinute?: number;
  clock?: Clock;
  /** Told of every refused upgrade (metrics). */
  onAuthFailure?: (reason: 'bad_token' | 'bad_certificate' | 'rate_limited') => void;
}

/** Refused upgrades per address per minute before 429 (agents retry with backoff: a real agent never gets near it). */
export const TUNNEL_AUTH_FAILURES_PER_MINUTE = 10;

/** Constant-time check of a presented `Authorization: Bearer` header against one stored hash. */
export function checkBearer(header: string | undefined, tokenHash: Buffer): boolean {
  return CredentialSet.single(tokenHash).matchBearer(header) !== null;
}

/** Counts refused upgrades per address in fixed one-minute windows; bounded in size. */
class FailureLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();
  constructor(
    private readonly limit: number,
    private readonly clock: Clock,
    private readonly maxTracked = 10_000,
  ) {}

  blocked(ip: string): boolean {
    const w = this.windows.get(ip);
    return w !== undefined && this.clock.now() - w.start < 60_000 && w.count >= this.limit;
  }

  fail(ip: string): void {
    const now = this.clock.now();
    const w = this.windows.get(ip);
    if (w && now - w.start < 60_000) {
      w.count++;
      return;
    }
    if (this.windows.size >= this.maxTracked) {
      for (const [key, value] of this.windows) if (now - value.start >= 60_000) this.windows.delete(key);
      // Still full: forget the oldest entry rather than grow (Map keeps insertion order).
      if (this.windows.size >= this.maxTracked) this.windows.delete(this.windows.keys().next().value!);
    }
    this.windows.set(ip, { start: now, count: 1 });
  }
}

let connectionCounter = 0;

export class TunnelEndpoint {
  readonly server: https.Server;
  private readonly wss: WebSocketServer;
  private readonly options: TunnelEndpointOptions;
  private readonly failures: FailureLimiter;
  private readonly credentials: () => CredentialSet;
  private accepting = true;
  private listenerClosed: Promise<void> | null = null;

  constructor(options: TunnelEndpointOptions) {
    this.options = options;
    this.credentials = options.credentials;
    this.failures = new FailureLimiter(options.authFailuresPerMinute ?? TUNNEL_AUTH_FAILURES_PER_MINUTE, options.clock ?? systemClock);
    this.server = https.createServer({
      cert: options.tls.cert,
      key: options.tls.key,
      // With an agent CA the certificate is asked for but checked at the upgrade (401, logged), not by a TLS alert.
      ...(options.agentCa ? { ca: options.agentCa, requestCert: true, rejectUnauthorized: false } : {}),
      ...tlsServerDefaults,
      noDelay: true,
      headersTimeout: 10_000,
      requestTimeout: 15_000,
      // a handshake gets the time of a head (tls's default is 120 s)
      handshakeTimeout: 10_000,
    });
    this.server.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' }).end('tunnel endpoint: WebSocket upgrade required\n');
    });
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      clientTracking: false,
      maxPayload: options.maxMessageBytes ?? defaults.maxMessageBytes,
    });
    this.server.on('upgrade', this.onUpgrade);
    this.server.on('tlsClientError', (err, socket) => {
      options.logger.debug({ event: 'tunnel_tls_error', remote: socket.remoteAddress, err: err.message }, 'tunnel TLS handshake failed');
      // Node only emits this: a timed-out or failed handshake would stay open until the peer closed it
      socket.destroy();
    });
  }

  /** Swaps the TLS certificate for new connections. */
  setCertificate(cert: string, key: string): void {
    this.server.setSecureContext({ cert, key, ...tlsServerDefaults, ...(this.options.agentCa ? { ca: this.options.agentCa } : {}) });
  }

  /**
   * The credential an upgrade proves, or a reason for refusing it. With an agent CA a verified
   * client certificate is required; then the token may be left out if the certificate's common
   * name is bound to a credential (certificate instead of token), and when both name a
   * credential they must agree on the platform.
   */
  private authenticate(req: IncomingMessage, socket: Socket): AgentCredential | string {
    const credentials = this.credentials();
    const byToken = credentials.matchBearer(req.headers.authorization);
    if (!this.options.agentCa) return byToken ?? 'bad or missing token';
    const tls = socket as TLSSocket;
    if (!tls.authorized) return `no client certificate signed by the agent CA (${String(tls.authorizationError ?? 'none presented')})`;
    const cn = tls.getPeerCertificate().subject?.CN;
    const byCert = credentials.matchCertificate(typeof cn === 'string' ? cn : undefined);
    if (byToken && byCert && byToken.platform !== byCert.platform) return 'token and certificate name different platforms';
    return byToken ?? byCert ?? 'certificate accepted but no token, and its name is bound to no credential';
  }

  private readonly onUpgrade = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    const { logger, registry } = this.options;
    const remote = socket.remoteAddress ?? 'unknown';
    const ip = canonicalIp(remote);
    socket.on('error', () => socket.destroy());
    if (!this.accepting) {
      // draining: the agent retries at once and lands on the relay that replaces this one
      socket.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    // The credential is checked before the refusal limit, so that a valid one always passes: an
    // agent sharing an address (a NAT, a proxy) with a scanner, or one whose operator mistyped
    // the token a few times, is never locked out by the failures of others. The check costs a
    // SHA-256 and a constant-time compare per credential, no more than writing the 429, so the
    // limit is one on guesses (a limited address learns nothing from a wrong token but 429), not
    // on CPU.
    const cred = this.authenticate(req, socket);
    if (typeof cred === 'string' && this.failures.blocked(ip)) {
      this.options.onAuthFailure?.('rate_limited');
      logger.warn({ event: 'tunnel_auth_limited', remote }, 'agent tunnel upgrade refused: too many failed attempts from this address');
      socket.end('HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    if (typeof cred === 'string') {
      this.failures.fail(ip);
      this.options.onAuthFailure?.(this.options.agentCa && !(socket as TLSSocket).authorized ? 'bad_certificate' : 'bad_token');
      logger.warn({ event: 'tunnel_auth_failed', remote, reason: cred }, `agent tunnel upgrade refused: ${cred}`);
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const agentId = sanitizeId(req.headers['x-agent-id']);
    // The agent's own stream limit: the relay opens min(its own, the agent's) on this connection.
    // No header (an older agent): the relay's own limit. A malformed one is ignored (logged), not
    // refused: the agent's refusals of streams past its limit are then the same as without it.
    const header = req.headers[MAX_STREAMS_HEADER];
    const peerMaxStreams = parseMaxStreamsHeader(header);
    if (header !== undefined && peerMaxStreams === null) {
      logger.warn({ event: 'tunnel_bad_header', remote, header: MAX_STREAMS_HEADER }, `ignoring a malformed ${MAX_STREAMS_HEADER} header`);
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const id = `${agentId}#${++connectionCounter}`;
      const session = new MuxSession(ws, { ...this.options.mux, role: 'server', ...(peerMaxStreams ? { peerMaxStreams } : {}) });
      const conn = { id, agentId, credential: cred.id, platform: cred.platform, remoteAddress: remote, since: new Date(), session };
      logger.info(
        { event: 'tunnel_connected', conn: id, agent: agentId, credential: cred.id, platform: cred.platform, remote },
        'agent connected',
      );
      session.on('goaway', () => logger.info({ event: 'tunnel_goaway', conn: id }, 'agent connection going away'));
      session.on('close', (err) => {
        const fields = { event: 'tunnel_disconnected', conn: id, agent: agentId, remote, code: err?.code };
        if (err) logger.warn(fields, `agent disconnected: ${err.message}`);
        else logger.info(fields, 'agent disconnected');
      });
      registry.add(conn);
    });
  };

  async listen(port: number, host: string): Promise<number> {
    return (await listen(this.server, port, host)).port;
  }

  /**
   * Start of a drain: the listener closes (new agents get "connection refused", which they retry
   * within half a second) and upgrades on connections already open get 503. Agent sessions
   * already upgraded stay up.
   */
  stopAccepting(): Promise<void> {
    this.accepting = false;
    this.listenerClosed ??= new Promise((resolve) => this.server.close(() => resolve()));
    return this.listenerClosed;
  }

  close(): Promise<void> {
    const closed = this.stopAccepting();
    this.server.closeAllConnections();
    return closed;
  }
}

function sanitizeId(value: string | string[] | undefined): string {
  const raw = Array.isArray(value) ? value[0] : value;
  const clean = (raw ?? '').replace(/[^A-Za-z0-9._:@-]/g, '').slice(0, 64);
  return clean || 'agent';
}
