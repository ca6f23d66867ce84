/**
 * The admin listener (default 127.0.0.1:10901): liveness, readiness, Prometheus metrics and a
 * JSON status of the connected agents. It has no authentication: it is meant for the relay's
 * own host (Prometheus node, systemd, `relay status`). Bound to anything but loopback it shows
 * agent addresses to that network, and a warning says so at start-up.
 *
 *   GET /healthz  200 {"status":"ok"} while the process serves requests
 *   GET /readyz   200 when every configured platform has an agent connected, else 503 (also while draining)
 *   GET /metrics  Prometheus text
 *   GET /status   {platforms, agents, uptime_s, version}
 */
import { readFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { systemClock, type Clock } from '../../shared/clock.js';
import { HostCheck, isLoopbackHost } from '../../shared/allowed-hosts.js';
import { errorBody, RelayError } from '../../shared/errors.js';
import { listen } from '../../shared/listen.js';
import type { Logger } from '../../shared/logger.js';
import type { AgentConnection } from '../tunnel/tunnel-registry.js';
import type { RelayMetrics } from './metrics.js';

/** One agent tunnel connection as /status shows it. */
export interface AgentStatus {
  /** The agent's self-declared name (X-Agent-Id). */
  agentId: string;
  /** This connection, e.g. `agent-7f3a#3` (an agent may hold several). */
  connectionId?: string;
  platform: string;
  address: string;
  /** When the connection was accepted, ISO 8601. */
  since: string;
  /** Open streams on it. */
  streams: number;
  /** Tunnel bytes received from the agent, framing included. */
  bytesIn: number;
  /** Tunnel bytes sent to the agent, framing included. */
  bytesOut: number;
  /** Last ping round trip, or null before the first pong. */
  rttMs: number | null;
}

/** Where the admin server reads the relay's state; read on every request, never cached. */
export interface StatusSource {
  /** Configured platform ids. */
  platforms(): string[];
  /** Current agent tunnel connections. */
  agents(): AgentStatus[];
  /** True once the relay is shutting down: /readyz turns 503 so a load balancer stops sending clients. */
  draining?(): boolean;
}

/** The JSON body of GET /status. */
export interface RelayStatus {
  platforms: { id: string; agents: number; ready: boolean }[];
  agents: AgentStatus[];
  uptime_s: number;
  version: string;
}

export interface AdminServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 10901; 0 picks a free port (tests). */
  port?: number;
  metrics: RelayMetrics;
  status: StatusSource;
  logger: Logger;
  /** Reported in /status; default the version in package.json. */
  version?: string;
  /** Uptime is counted from when the server is constructed, on this clock. */
  clock?: Clock;
  /**
   * Host names it answers besides the address it is bound to (and, on loopback, `localhost`,
   * `127.0.0.1`, `[::1]`): `--admin-allowed-hosts`. Any other Host gets 421 (shared/allowed-hosts.ts).
   */
  allowedHosts?: readonly string[];
}

export const ADMIN_DEFAULT_HOST = '127.0.0.1';
export const ADMIN_DEFAULT_PORT = 10901;

/** The status of one registry connection, for a `StatusSource`. */
export function agentStatus(conn: AgentConnection): AgentStatus {
  const rtt = conn.session.rttMs;
  return {
    agentId: conn.agentId,
    connectionId: conn.id,
    platform: conn.platform,
    // `::ffff:10.1.2.3` -> `10.1.2.3`
    address:
      conn.remoteAddress.startsWith('::ffff:') && conn.remoteAddress.includes('.') ? conn.remoteAddress.slice(7) : conn.remoteAddress,
    since: conn.since.toISOString(),
    streams: conn.session.streamCount,
    bytesIn: conn.session.bytesIn,
    bytesOut: conn.session.bytesOut,
    rttMs: Number.isFinite(rtt) ? Math.round(rtt * 1000) / 1000 : null,
  };
}

export { isLoopbackHost };

/** Builds the /status body from a status source (pure; exported for tests and `relay status`). */
export function buildStatus(source: StatusSource, uptimeSeconds: number, version: string): RelayStatus {
  const agents = source.agents();
  const perPlatform = new Map<string, number>();
  for (const agent of agents) perPlatform.set(agent.platform, (perPlatform.get(agent.platform) ?? 0) + 1);
  const platforms = source.platforms().map((id) => {
    const n = perPlatform.get(id) ?? 0;
    return { id, agents: n, ready: n > 0 };
  });
  return { platforms, agents, uptime_s: Math.max(0, Math.floor(uptimeSeconds)), version };
}

export class AdminServer {
  readonly server: http.Server;
  private readonly options: AdminServerOptions;
  private readonly clock: Clock;
  private readonly startedAt: number;
  private readonly version: string;
  private readonly sockets = new Set<Socket>();
  private readonly hostCheck: HostCheck;

  constructor(options: AdminServerOptions) {
    this.options = options;
    this.hostCheck = new HostCheck(options.host ?? ADMIN_DEFAULT_HOST, options.allowedHosts);
    this.clock = options.clock ?? systemClock;
    this.startedAt = this.clock.now();
    this.version = options.version ?? packageVersion();
    this.server = http.createServer({
      // nothing here needs more than a request line and a few headers
      maxHeaderSize: 8 * 1024,
      headersTimeout: 5_000,
      requestTimeout: 10_000,
      keepAliveTimeout: 5_000,
    });
    this.server.on('request', (req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    this.server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('clientError', (_err, socket: Socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Starts listening; resolves with the bound address (its port when `port` was 0). */
  async listen(): Promise<AddressInfo> {
    const host = this.options.host ?? ADMIN_DEFAULT_HOST;
    const port = this.options.port ?? ADMIN_DEFAULT_PORT;
    const { logger } = this.options;
    const address = await listen(this.server, port, host);
    if (!isLoopbackHost(host)) {
      logger.warn(
        { event: 'admin_exposed', host, port: address.port },
        `admin port ${host}:${address.port} is not on loopback: /status and /metrics (agent ids and addresses) are open to that network without authentication`,
      );
    }
    logger.info({ event: 'admin_listening', host, port: address.port }, 'admin listener ready');
    return address;
  }

  /** Stops listening and closes open admin connections. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
      for (const socket of this.sockets) socket.destroy();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?', 1)[0];
    // DNS rebinding: a page whose name points at this address must not read /status or /metrics.
    try {
      this.hostCheck.check(req);
    } catch (err) {
      sendError(res, err, { connection: 'close' });
      return;
    }
    // HEAD is GET without a body (RFC 9110 §9.3.2); Node leaves the body out by itself.
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendError(res, new RelayError('RELAY_ERR_METHOD_NOT_ALLOWED', 'only GET is served here'), {
        allow: 'GET, HEAD',
        connection: 'close',
      });
      return;
    }
    switch (path) {
      case '/healthz':
        sendJson(res, 200, { status: 'ok' });
        return;
      case '/readyz': {
        const status = this.status();
        const missing = status.platforms.filter((p) => !p.ready).map((p) => p.id);
        if (this.options.status.draining?.()) sendJson(res, 503, { status: 'draining', missing });
        else if (missing.length === 0) sendJson(res, 200, { status: 'ready' });
        else sendJson(res, 503, { status: 'not_ready', missing });
        return;
      }
      case '/metrics': {
        const { metrics, status } = this.options;
        metrics.setTunnelGauges(status.agents());
        const { contentType, body } = await metrics.render();
        send(res, 200, contentType, body);
        return;
      }
      case '/status':
        sendJson(res, 200, this.status());
        return;
      default:
        sendError(res, new RelayError('RELAY_ERR_NOT_FOUND', 'try /healthz, /readyz, /metrics or /status'));
    }
  }

  private status(): RelayStatus {
    return buildStatus(this.options.status, (this.clock.now() - this.startedAt) / 1000, this.version);
  }

  private fail(res: ServerResponse, err: unknown): void {
    this.options.logger.error({ event: 'admin_error', err }, 'admin request failed');
    if (res.headersSent) res.destroy();
    else sendError(res, null, {}, 'the status could not be read');
  }
}

function send(res: ServerResponse, status: number, contentType: string, body: string, extra: http.OutgoingHttpHeaders = {}): void {
  res
    .writeHead(status, {
      'content-type': contentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      ...extra,
    })
    .end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown, extra: http.OutgoingHttpHeaders = {}): void {
  send(res, status, 'application/json', JSON.stringify(value), extra);
}

/** An error's answer (shared/errors.ts errorBody); anything but a RelayError is a 500 saying `internalMessage`. */
function sendError(res: ServerResponse, err: unknown, extra: http.OutgoingHttpHeaders = {}, internalMessage?: string): void {
  const { status, headers, body } = errorBody(err, internalMessage);
  send(res, status, 'application/json', body, { ...headers, ...extra });
}

let cachedVersion: string | undefined;

/** The `version` of the nearest package.json above this file (works from source and from dist/). */
function packageVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  cachedVersion = 'unknown';
  for (const up of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'dmz-relay' && typeof pkg.version === 'string') {
        cachedVersion = pkg.version;
        break;
      }
    } catch {
      // not at this level: try the next one up
    }
  }
  return cachedVersion;
}
