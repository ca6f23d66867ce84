/**
 * The platform server: one Node HTTP server that takes tunnel streams as connections (the client
 * address comes from the stream's OPEN metadata, never from a header) and, optionally, an internal
 * listener (`--listen`). It applies the IP rules to every request, then routes: the API users'
 * auth routes, `/api/v1/me`, the administrators' API, and authenticated `/api/` requests to the
 * backend (`--backend`). Each authenticated request also needs its operation (security/groups.ts):
 * `profile.read` for `/api/v1/me`, `api.read` (GET, HEAD, OPTIONS) or `api.write` to the backend.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { TLSSocket } from 'node:tls';
import { systemClock, type Clock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';
import { RelayError } from '../../shared/errors.js';
import { canonicalIp } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import { ConsoleRoutes } from '../console/console-routes.js';
import { Accounts } from '../security/accounts.js';
import { AuthService, type AuthEvent } from '../security/auth.js';
import { Groups } from '../security/groups.js';
import { MobileAuthenticators } from '../security/mobile-auth.js';
import { defaultScryptParams, generatePassword, type ScryptParams } from '../security/passwords.js';
import { SqliteStore } from '../store/sqlite-store.js';
import type { PlatformStore } from '../store/store.js';
import { AdminRoutes, ADMIN_PREFIX } from './admin-routes.js';
import { AuthRoutes, type RequestContext } from './auth-routes.js';
import { Gateway } from './gateway.js';
import { sendError, sendJson } from './http-io.js';
import { IpGuard } from './ip-guard.js';

export interface PlatformServerOptions {
  /** Data folder: platform.db, whitelist.dat, blacklist.dat. */
  dataDir: string;
  logger: Logger;
  clock?: Clock;
  /** Backend application for authenticated `/api/` requests the server does not serve itself. */
  backend?: URL;
  backendCa?: string;
  scrypt?: ScryptParams;
  /** How often the IP rule files are checked for changes. */
  ipRulesPollMs?: number;
  /** An already-open store (tests); by default a SqliteStore in `dataDir`. */
  store?: PlatformStore;
}

/** Methods that need `api.read` on forwarded routes; every other method needs `api.write`. */
const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** How often expired rows are pruned from the store. */
const PRUNE_INTERVAL_MS = 60 * 60 * 1000;

export class PlatformServer {
  readonly server: http.Server;
  readonly store: PlatformStore;
  readonly accounts: Accounts;
  readonly groups: Groups;
  readonly auth: AuthService;
  readonly ipGuard: IpGuard;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly authRoutes: AuthRoutes;
  private readonly adminRoutes: AdminRoutes;
  private readonly gateway: Gateway | null;
  private readonly consoleRoutes: ConsoleRoutes;
  /** Connections of the internal listener: only they see the control panel, never tunnel streams. */
  private readonly internalSockets = new WeakSet<object>();
  private readonly listeners: http.Server[] = [];
  private readonly pruneTimer: NodeJS.Timeout;

  constructor(opts: PlatformServerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.store = opts.store ?? new SqliteStore(opts.dataDir);
    const scrypt = opts.scrypt ?? defaultScryptParams;
    this.auth = new AuthService(this.store, this.clock, (e) => this.onAuthEvent(e), scrypt);
    this.accounts = new Accounts(this.store, this.clock, scrypt);
    this.groups = new Groups(this.store, this.clock);
    const mobile = new MobileAuthenticators(this.store, this.auth, this.clock);
    this.authRoutes = new AuthRoutes(this.auth, mobile, (req) => isTls(req.socket));
    this.ipGuard = new IpGuard({
      dir: opts.dataDir,
      logger: this.logger,
      ...(opts.ipRulesPollMs !== undefined ? { pollIntervalMs: opts.ipRulesPollMs } : {}),
    });
    this.adminRoutes = new AdminRoutes(
      this.store,
      this.auth,
      this.accounts,
      this.groups,
      this.authRoutes,
      this.clock,
      this.logger,
      this.ipGuard,
    );
    this.consoleRoutes = new ConsoleRoutes(
      this.store,
      this.auth,
      this.accounts,
      this.groups,
      this.clock,
      this.logger,
      (req) => isTls(req.socket),
      this.ipGuard,
    );
    this.gateway = opts.backend ? new Gateway(opts.backend, this.logger, opts.backendCa ? { ca: opts.backendCa } : {}) : null;
    this.server = this.createHttpServer();
    this.pruneTimer = setInterval(() => {
      this.store
        .prune(this.clock.now())
        .catch((err: Error) => this.logger.warn({ event: 'prune_failed', err: err.message }, 'store prune failed'));
    }, PRUNE_INTERVAL_MS).unref();
  }

  private createHttpServer(): http.Server {
    const server = http.createServer({ maxHeaderSize: defaults.maxHeaderBytes }, (req, res) => void this.handle(req, res));
    server.keepAliveTimeout = defaults.platformKeepAliveTimeoutMs;
    server.headersTimeout = defaults.headersTimeoutMs;
    server.requestTimeout = defaults.requestTimeoutMs;
    return server;
  }

  /** Serves one tunnel stream as a connection; its remoteAddress is the mobile client's (OPEN metadata). */
  handleStream(stream: MuxStream): void {
    this.server.emit('connection', stream);
  }

  /** Also listens on an internal address for clients and administrators inside the network. */
  async listen(host: string, port: number): Promise<AddressInfo> {
    const listener = this.createHttpServer();
    listener.on('connection', (socket: Socket) => {
      socket.setNoDelay(true);
      this.internalSockets.add(socket);
    });
    // Same handler; a second server object so that closing the internal listener never touches tunnel streams.
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(port, host, () => {
        listener.off('error', reject);
        resolve();
      });
    });
    this.listeners.push(listener);
    return listener.address() as AddressInfo;
  }

  /**
   * Makes sure an administrator exists: on an empty store, creates `admin` with a generated
   * password and returns it (the caller shows it once); otherwise returns null.
   */
  async ensureAdmin(username = 'admin'): Promise<{ username: string; password: string } | null> {
    if ((await this.store.countAdmins()) > 0) return null;
    const password = generatePassword();
    await this.accounts.create({ username, password, role: 'admin' });
    this.logger.warn({ event: 'admin_created', username }, `created the first administrator "${username}" with a generated password`);
    return { username, password };
  }

  private context(req: IncomingMessage): RequestContext {
    const ip = canonicalIp(req.socket.remoteAddress ?? '');
    return { ip, ipDecision: this.ipGuard.decide(ip) };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const ctx = this.context(req);
    const path = (req.url ?? '/').split('?', 1)[0]!;
    res.once('finish', () =>
      this.logger.debug(
        {
          event: 'request',
          method: req.method,
          path,
          status: res.statusCode,
          ms: Math.round((performance.now() - started) * 10) / 10,
          ip: ctx.ip,
        },
        'request',
      ),
    );
    try {
      if (ctx.ipDecision === 'blacklisted') throw new RelayError('RELAY_ERR_IP_BLOCKED');
      if (!(await this.route(req, res, path, ctx))) throw new RelayError('RELAY_ERR_NOT_FOUND');
    } catch (err) {
      if (!(err instanceof RelayError)) this.logger.error({ event: 'request_failed', path, err: (err as Error).stack }, 'request failed');
      sendError(res, err);
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, path: string, ctx: RequestContext): Promise<boolean> {
    const method = req.method ?? 'GET';
    if (path === '/healthz') {
      sendJson(res, 200, { status: 'ok' });
      return true;
    }
    if (path.startsWith(ADMIN_PREFIX)) return this.adminRoutes.handle(req, res, path.slice(ADMIN_PREFIX.length), ctx);
    const post = (): void => {
      if (method !== 'POST') throw new RelayError('RELAY_ERR_METHOD_NOT_ALLOWED', 'use POST', { details: { allowed: ['POST'] } });
    };
    switch (path) {
      case '/api/v1/auth/login':
        post();
        await this.authRoutes.login(req, res, ctx, 'api');
        return true;
      case '/api/v1/auth/refresh':
        post();
        await this.authRoutes.refresh(req, res);
        return true;
      case '/api/v1/auth/logout':
        post();
        await this.authRoutes.logout(req, res, 'api');
        return true;
    }
    if (path === '/console' || path.startsWith('/console/'))
      return this.internalSockets.has(req.socket) && this.consoleRoutes.handle(req, res, path, ctx);
    if (path !== '/api' && !path.startsWith('/api/')) return false;
    const who = await this.authRoutes.identify(req, ctx);
    if (path === '/api/v1/me') {
      if (method !== 'GET') throw new RelayError('RELAY_ERR_METHOD_NOT_ALLOWED', 'use GET', { details: { allowed: ['GET'] } });
      await this.groups.authorize(who.username, 'profile.read');
      await this.authRoutes.me(res, who);
      return true;
    }
    if (!this.gateway) return false;
    await this.groups.authorize(who.username, READ_METHODS.has(method) ? 'api.read' : 'api.write');
    this.gateway.forward(req, res, who, ctx);
    return true;
  }

  private onAuthEvent(e: AuthEvent): void {
    const level = e.event === 'login_ok' ? 'info' : 'warn';
    const { event, ...fields } = e;
    this.logger[level]({ event, ...fields }, event.replace('_', ' '));
  }

  async close(): Promise<void> {
    clearInterval(this.pruneTimer);
    this.ipGuard.close();
    this.gateway?.close();
    for (const l of this.listeners) {
      l.close();
      l.closeAllConnections();
    }
    this.server.closeAllConnections();
    await this.store.close();
  }
}

function isTls(socket: unknown): boolean {
  if (socket instanceof TLSSocket) return true;
  const meta = (socket as { meta?: { tls?: boolean } }).meta;
  return meta?.tls === true;
}
