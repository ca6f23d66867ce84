/**
 * The platform server: one Node HTTP server that takes tunnel streams as connections (the client
 * address comes from the stream's OPEN metadata, never from a header) and, optionally, an internal
 * listener (`--listen`). It applies the IP rules to every request, then routes by one table
 * (`routes` below, http/router.ts): `/healthz`, the administrators' API (http/admin-routes.ts)
 * and control panel (console/console-routes.ts), each with its own table, the API users' auth
 * routes, `/api/v1/me`, and authenticated `/api/` requests to the backend (`--backend`). Each authenticated request also needs its operation (security/groups.ts):
 * `profile.read` for `/api/v1/me`, `api.read` (GET, HEAD, OPTIONS) or `api.write` to the backend.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type Socket } from 'node:net';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { TLSSocket } from 'node:tls';
import { loadOrCreateSelfSigned } from '../../shared/cert-making.js';
import { describeCertificate, fingerprintSha256, type PemPair } from '../../shared/certs.js';
import { systemClock, type Clock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';
import { RelayError } from '../../shared/errors.js';
import { HostCheck } from '../../shared/allowed-hosts.js';
import { listen } from '../../shared/listen.js';
import { canonicalIp } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import { tlsServerDefaults } from '../../shared/tls-options.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import { ConsoleRoutes } from './console/console-routes.js';
import { CONSOLE_PREFIX, HOST_HEADER, redirect } from './console/html.js';
import type { RelayControl } from './relay-control.js';
import { Accounts } from './security/accounts.js';
import { AuthService, type AuthEvent } from './security/auth.js';
import { Groups } from './security/groups.js';
import { MobileAuthenticators } from './security/mobile-auth.js';
import { SettingsService } from './security/settings-service.js';
import { defaultScryptParams, generatePassword, type ScryptParams } from './security/passwords.js';
import { SqliteStore } from './store/sqlite-store.js';
import type { PlatformStore } from './store/store.js';
import { inRequest, withRequestReads } from './store/request-reads.js';
import { AdminRoutes, ADMIN_PREFIX } from './http/admin-routes.js';
import { AuthRoutes, type ApiIdentity, type RequestContext } from './http/auth-routes.js';
import { Gateway } from './http/gateway.js';
import { sendError, sendJson } from './http/http-io.js';
import { IpGuard } from './http/ip-guard.js';
import { ANY_METHOD, methodNotAllowed, Router, type Params } from './http/router.js';

export interface PlatformServerOptions {
  /** Data folder: platform.db, whitelist.dat, blacklist.dat. */
  dataDir: string;
  logger: Logger;
  clock?: Clock;
  /** Backend application for authenticated `/api/` requests the server does not serve itself. */
  backend?: URL;
  backendCa?: string;
  scrypt?: ScryptParams;
  /** How often the IP rule files (or, with a shared store, the lists' versions in it) are checked for changes. */
  ipRulesPollMs?: number;
  /** An already-open store (tests); by default a SqliteStore in `dataDir`. */
  store?: PlatformStore;
  /**
   * Certificate and key of the internal listener's HTTPS. By default a self-signed pair made in
   * `<dataDir>/tls/` (internal.crt, internal.key) the first time a TLS client connects.
   */
  internalTls?: PemPair;
  /**
   * Also serve the administrators' surfaces, the control panel (`/console/`) and the admin API
   * (`/admin/api/`), to tunnel streams (clients through the relay). Default false: the internal
   * listener only, and a tunnel stream gets the 404 of a path that does not exist.
   */
  adminThroughRelay?: boolean;
  /** An internal connection that sends nothing is closed after this long. Default `defaults.headersTimeoutMs`. */
  firstByteTimeoutMs?: number;
  /**
   * Host names the internal listener answers besides the address it is bound to (and, on
   * loopback, `localhost`, `127.0.0.1`, `[::1]`): `--listen-allowed-hosts`. Any other Host gets
   * 421 (shared/allowed-hosts.ts). Tunnel streams are not checked: their Host is the public name.
   */
  listenAllowedHosts?: readonly string[];
}

const INTERNAL_TLS_NAME = 'internal';

/** The first byte of a TLS record carrying a handshake (a ClientHello): how the internal listener tells TLS from HTTP. */
const TLS_HANDSHAKE = 0x16;

/** Methods that need `api.read` on forwarded routes; every other method needs `api.write`. */
const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The surface a platform route belongs to: its HTTPS setting and, for the administrators' two, whether tunnel streams reach it. */
interface PlatformRoute {
  readonly surface: 'api' | 'admin-api' | 'console';
  /** The API user is identified (401 without a token) before the method is checked, and handed to the handler. */
  readonly identified?: boolean;
}

const API: PlatformRoute = { surface: 'api' };
const IDENTIFIED_API: PlatformRoute = { surface: 'api', identified: true };

interface PlatformRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly ctx: RequestContext;
  readonly params: Params;
  /** The API user of an `identified` route; null on every other. */
  readonly who: ApiIdentity | null;
}

/** Serves a request; false sends the 404 of a path that does not exist. */
type PlatformHandler = (r: PlatformRequest) => Promise<boolean | void> | boolean | void;

/** How often expired rows are pruned from the store. */
const PRUNE_INTERVAL_MS = 60 * 60 * 1000;

export class PlatformServer {
  readonly server: http.Server;
  readonly store: PlatformStore;
  readonly accounts: Accounts;
  readonly groups: Groups;
  readonly settings: SettingsService;
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
  private readonly listeners: net.Server[] = [];
  /** The Host check of each internal listener, by the port it is bound to (a TLS socket has its connection's local port). */
  private readonly hostChecks = new Map<number, HostCheck>();
  private readonly listenAllowedHosts: readonly string[];
  private readonly pruneTimer: NodeJS.Timeout;
  private readonly dataDir: string;
  private internalTls: PemPair | undefined;
  /** The relay connection the agent manages, shown and changed in the control panel and the admin API. */
  private relayControl: RelayControl | null = null;
  private readonly firstByteTimeoutMs: number;
  private readonly adminThroughRelay: boolean;
  /** HTTP and HTTPS server objects behind the internal listeners (one handler; they never listen themselves). */
  private internalHttp: http.Server | null = null;
  private internalHttps: https.Server | null = null;

  constructor(opts: PlatformServerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger;
    this.dataDir = opts.dataDir;
    this.internalTls = opts.internalTls;
    this.firstByteTimeoutMs = opts.firstByteTimeoutMs ?? defaults.headersTimeoutMs;
    this.adminThroughRelay = opts.adminThroughRelay ?? false;
    this.listenAllowedHosts = opts.listenAllowedHosts ?? [];
    // Rules that each ask the store for the settings or the user share one read per request (request-reads.ts).
    this.store = withRequestReads(opts.store ?? new SqliteStore(opts.dataDir));
    const scrypt = opts.scrypt ?? defaultScryptParams;
    this.auth = new AuthService(this.store, this.clock, (e) => this.onAuthEvent(e), scrypt);
    this.accounts = new Accounts(this.store, this.clock, scrypt);
    this.groups = new Groups(this.store, this.clock);
    this.settings = new SettingsService(this.store, this.clock, this.logger);
    const mobile = new MobileAuthenticators(this.store, this.auth, this.clock);
    this.authRoutes = new AuthRoutes(this.auth, mobile, (req) => isTls(req.socket));
    // With a shared store the IP lists live in it (`ready()` loads them); else they are the data folder's files.
    this.ipGuard = new IpGuard({
      dir: opts.dataDir,
      logger: this.logger,
      store: this.store,
      now: () => this.clock.now(),
      ...(opts.ipRulesPollMs !== undefined ? { pollIntervalMs: opts.ipRulesPollMs } : {}),
    });
    const services = {
      store: this.store,
      auth: this.auth,
      accounts: this.accounts,
      groups: this.groups,
      settings: this.settings,
      clock: this.clock,
      logger: this.logger,
      ipGuard: this.ipGuard,
      relay: () => this.relayControl,
    };
    this.adminRoutes = new AdminRoutes({ ...services, authRoutes: this.authRoutes });
    this.consoleRoutes = new ConsoleRoutes(services, {
      secure: (req) => isTls(req.socket),
      tlsCertificate: (create) =>
        create || this.internalTls || existsSync(this.tlsFiles().certFile) ? describeCertificate(this.tlsPair().cert) : null,
    });
    this.gateway = opts.backend ? new Gateway(opts.backend, this.logger, opts.backendCa ? { ca: opts.backendCa } : {}) : null;
    this.server = this.createHttpServer();
    this.pruneTimer = setInterval(() => {
      this.store
        .prune(this.clock.now())
        .catch((err: Error) => this.logger.warn({ event: 'prune_failed', err: err.message }, 'store prune failed'));
    }, PRUNE_INTERVAL_MS).unref();
    void this.warnAmbiguousNames();
  }

  /**
   * Resolves once the server may serve: with a shared store, the IP lists are loaded from it
   * (until then every address is refused). Await it before listening or taking tunnel streams;
   * rejects when the store cannot be read.
   */
  async ready(): Promise<void> {
    await this.ipGuard.ready();
  }

  /**
   * Names are unique without regard to case since store migration 5; accounts (or groups) whose
   * names collided before are kept, and logins to such a name are refused until an administrator
   * deletes all but one of them. Says so at every start, naming them.
   */
  private async warnAmbiguousNames(): Promise<void> {
    try {
      const { users, groups } = await this.store.ambiguousNames();
      for (const names of users)
        this.logger.warn(
          { event: 'ambiguous_usernames', usernames: names },
          `users ${names.join(', ')} differ only in case: logins to that name are refused until all but one are deleted`,
        );
      for (const names of groups)
        this.logger.warn({ event: 'ambiguous_group_names', groups: names }, `user groups ${names.join(', ')} differ only in case`);
    } catch (err) {
      this.logger.warn(
        { event: 'ambiguous_names_check_failed', err: (err as Error).message },
        'could not check for names that differ only in case',
      );
    }
  }

  private createHttpServer(): http.Server {
    const server = http.createServer({ maxHeaderSize: defaults.maxHeaderBytes }, (req, res) => void inRequest(() => this.handle(req, res)));
    server.keepAliveTimeout = defaults.platformKeepAliveTimeoutMs;
    server.headersTimeout = defaults.headersTimeoutMs;
    server.requestTimeout = defaults.requestTimeoutMs;
    return server;
  }

  /** Serves one tunnel stream as a connection; its remoteAddress is the mobile client's (OPEN metadata). */
  handleStream(stream: MuxStream): void {
    this.server.emit('connection', stream);
  }

  /** The server as the agent's stream target (agent/agent.ts StreamTarget). */
  readonly streamTarget = { name: 'platform server', onStream: (stream: MuxStream): void => this.handleStream(stream) };

  /**
   * Also listens on an internal address for clients and administrators inside the network. One
   * port speaks both HTTP and HTTPS: a connection whose first byte starts a TLS handshake is
   * served over TLS, any other as plain HTTP. The Encryption settings then decide what plain HTTP
   * may reach (`https.control_panel`, `https.api`), so switching them needs no restart.
   */
  async listen(host: string, port: number): Promise<AddressInfo> {
    const listener = net.createServer((socket) => this.sniff(socket));
    await listen(listener, port, host);
    this.listeners.push(listener);
    const address = listener.address() as AddressInfo;
    this.hostChecks.set(address.port, new HostCheck(host, this.listenAllowedHosts));
    return address;
  }

  /** Waits for a connection's first byte, then hands the connection (byte put back) to the HTTP or the HTTPS server. */
  private sniff(socket: Socket): void {
    socket.setNoDelay(true);
    socket.setTimeout(this.firstByteTimeoutMs, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      socket.setTimeout(0);
      socket.unshift(chunk);
      let server: http.Server | https.Server;
      try {
        server = chunk[0] === TLS_HANDSHAKE ? this.httpsServer() : this.httpServer();
      } catch (err) {
        this.logger.error(
          { event: 'internal_tls_unavailable', err: (err as Error).message },
          'cannot serve HTTPS on the internal listener',
        );
        socket.destroy();
        return;
      }
      this.internalSockets.add(socket);
      server.emit('connection', socket);
      // HTTP reads through the stream: start it again. TLS takes the socket's handle over and reads
      // the put-back bytes itself; resuming would make the stream race it for the data.
      if (server === this.internalHttp) socket.resume();
    });
  }

  private httpServer(): http.Server {
    this.internalHttp ??= this.createHttpServer();
    return this.internalHttp;
  }

  private httpsServer(): https.Server {
    if (this.internalHttps) return this.internalHttps;
    const pair = this.tlsPair();
    const server = https.createServer(
      { ...tlsServerDefaults, cert: pair.cert, key: pair.key, maxHeaderSize: defaults.maxHeaderBytes },
      (req, res) => void inRequest(() => this.handle(req, res)),
    );
    server.keepAliveTimeout = defaults.platformKeepAliveTimeoutMs;
    server.headersTimeout = defaults.headersTimeoutMs;
    server.requestTimeout = defaults.requestTimeoutMs;
    // The TLS socket wraps the sniffed one: it too is internal (the control panel checks its own socket).
    server.on('secureConnection', (tlsSocket: TLSSocket) => this.internalSockets.add(tlsSocket));
    server.on('tlsClientError', (err: Error) =>
      this.logger.debug({ event: 'internal_tls_error', err: err.message }, 'TLS handshake failed'),
    );
    this.internalHttps = server;
    return server;
  }

  /** Lets the control panel and the admin API show and change the relay connection (the agent's CLI attaches it). */
  attachRelayControl(relay: RelayControl): void {
    this.relayControl = relay;
  }

  private tlsFiles(): { dir: string; certFile: string } {
    const dir = join(this.dataDir, 'tls');
    return { dir, certFile: join(dir, `${INTERNAL_TLS_NAME}.crt`) };
  }

  /** The internal HTTPS certificate: given, or self-signed in `<dataDir>/tls/` (made once, then reused). */
  private tlsPair(): PemPair {
    if (this.internalTls) return this.internalTls;
    const made = loadOrCreateSelfSigned(
      this.tlsFiles().dir,
      { commonName: 'platform-server', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] },
      INTERNAL_TLS_NAME,
    );
    this.logger.info(
      {
        event: made.generated ? 'internal_tls_generated' : 'internal_tls_loaded',
        certFile: made.certFile,
        fingerprint: fingerprintSha256(made.cert),
      },
      made.generated ? 'made a self-signed certificate for the internal HTTPS' : 'internal HTTPS certificate loaded',
    );
    this.internalTls = { cert: made.cert, key: made.key };
    return this.internalTls;
  }

  /** The internal HTTPS certificate's SHA-256 fingerprint (made now when there is none yet): the page shows it. */
  internalTlsFingerprint(): string {
    return fingerprintSha256(this.tlsPair().cert);
  }

  /**
   * Makes sure an administrator exists: on an empty store, creates `admin` with a generated
   * password and returns it (the caller shows it once); otherwise returns null.
   */
  async ensureAdmin(username = 'admin'): Promise<{ username: string; password: string } | null> {
    // Instances that start at once on one empty shared store make one administrator, not one each.
    return this.store.exclusive('first-admin', async () => {
      if ((await this.store.countAdmins()) > 0) return null;
      const password = generatePassword();
      await this.accounts.create({ username, password, role: 'admin' });
      this.logger.warn({ event: 'admin_created', username }, `created the first administrator "${username}" with a generated password`);
      return { username, password };
    });
  }

  private context(req: IncomingMessage): RequestContext {
    const ip = canonicalIp(req.socket.remoteAddress ?? '');
    return { ip, ipDecision: this.ipGuard.decide(ip), internal: this.internalSockets.has(req.socket) };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const ctx = this.context(req);
    const { path, malformed } = routePath(req.url);
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
      // DNS rebinding: a page whose name points at the internal address must not reach the control panel.
      if (ctx.internal) {
        const hostCheck = this.hostChecks.get(req.socket.localPort ?? -1);
        if (!hostCheck) throw new RelayError('RELAY_ERR_MISDIRECTED');
        hostCheck.check(req);
      }
      if (ctx.ipDecision === 'blacklisted') throw new RelayError('PLATFORM_ERR_IP_BLOCKED');
      if (malformed) throw new RelayError('RELAY_ERR_BAD_REQUEST', 'malformed percent-encoding in the path');
      if (!(await this.route(req, res, path, ctx))) throw new RelayError('RELAY_ERR_NOT_FOUND');
    } catch (err) {
      if (!(err instanceof RelayError)) this.logger.error({ event: 'request_failed', path, err: (err as Error).stack }, 'request failed');
      sendError(res, err);
    }
  }

  /**
   * The platform server's paths, read top to bottom (the first that matches decides). The
   * administrators' two surfaces and the API are mounted here; each of those has its own table.
   */
  private readonly routes = new Router<PlatformHandler, PlatformRoute | undefined>([
    { path: '/healthz', methods: { [ANY_METHOD]: ({ res }) => sendJson(res, 200, { status: 'ok' }) } },
    {
      path: `${ADMIN_PREFIX}*`,
      methods: { [ANY_METHOD]: ({ req, res, ctx, params }) => this.adminRoutes.handle(req, res, params['*']!, ctx) },
      data: { surface: 'admin-api' },
    },
    { path: '/admin/api/*', methods: { [ANY_METHOD]: () => false }, data: { surface: 'admin-api' } },
    { path: '/console', methods: { [ANY_METHOD]: ({ res }) => redirect(res, CONSOLE_PREFIX) }, data: { surface: 'console' } },
    {
      path: '/console/*',
      methods: { [ANY_METHOD]: ({ req, res, ctx, params }) => this.consoleRoutes.handle(req, res, params['*']!, ctx) },
      data: { surface: 'console' },
    },
    { path: '/api/v1/auth/login', methods: { POST: ({ req, res, ctx }) => this.authRoutes.login(req, res, ctx, 'api') }, data: API },
    { path: '/api/v1/auth/refresh', methods: { POST: ({ req, res }) => this.authRoutes.refresh(req, res) }, data: API },
    { path: '/api/v1/auth/logout', methods: { POST: ({ req, res }) => this.authRoutes.logout(req, res, 'api') }, data: API },
    { path: '/api/v1/me', methods: { GET: (r) => this.me(r) }, data: IDENTIFIED_API },
    // Every other API path: the backend's, for an identified user with `api.read` or `api.write`.
    { path: '/api/*', methods: { [ANY_METHOD]: (r) => this.forward(r) }, data: IDENTIFIED_API },
  ]);

  /** Serves `path`; false when it is not found (404). */
  private async route(req: IncomingMessage, res: ServerResponse, path: string, ctx: RequestContext): Promise<boolean> {
    const match = this.routes.match(req.method ?? 'GET', path);
    if (!match) return false;
    const surface = match.data?.surface;
    const admin = surface === 'admin-api' || surface === 'console';
    // The administrators' surfaces: on the internal listener, and through the relay only when the
    // operator said so. Otherwise a tunnel stream gets what a path that does not exist gets.
    if (admin && !(ctx.internal || this.adminThroughRelay)) return false;
    if (surface && !isTls(req.socket)) {
      const { https: encryption } = (await this.store.getSettings()).settings;
      if (surface === 'api' && encryption.api) throw new RelayError('PLATFORM_ERR_HTTPS_REQUIRED');
      if (admin && encryption.control_panel) {
        // An API client is told, not redirected (a redirected POST would resend its password in the clear first).
        if (surface === 'admin-api')
          throw new RelayError(
            'PLATFORM_ERR_HTTPS_REQUIRED',
            'the admin API is served over HTTPS only (HTTPS for the Control Panel is on)',
          );
        // The relay's HTTP and HTTPS ports differ: no same-port redirect for a tunnel stream.
        if (!ctx.internal)
          throw new RelayError('PLATFORM_ERR_HTTPS_REQUIRED', "the control panel is served over HTTPS only; use the relay's HTTPS port");
        redirectToHttps(req, res);
        return true;
      }
    }
    // An identified route names its user (401 without one) before its method is checked.
    const who = match.data?.identified ? await this.authRoutes.identify(req, ctx) : null;
    if (match.kind === 'method-not-allowed') throw methodNotAllowed(match.allowed);
    return (await match.handler({ req, res, ctx, params: match.params, who })) !== false;
  }

  private async me({ res, who }: PlatformRequest): Promise<void> {
    await this.groups.authorize(who!.username, 'profile.read');
    await this.authRoutes.me(res, who!);
  }

  private async forward({ req, res, ctx, who }: PlatformRequest): Promise<boolean> {
    if (!this.gateway) return false;
    const operations = await this.groups.authorize(who!.username, READ_METHODS.has(req.method ?? 'GET') ? 'api.read' : 'api.write');
    this.gateway.forward(req, res, who!, ctx, operations);
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
    for (const l of this.listeners) l.close();
    this.internalHttp?.closeAllConnections();
    this.internalHttps?.closeAllConnections();
    this.server.closeAllConnections();
    await this.store.close();
  }
}

/**
 * The path every route and the request log see, made once from the request target: the query
 * cut off and runs of `/` merged (`//admin/api/v1/users` is `/admin/api/v1/users`, served and
 * logged as such). `malformed` when its percent-encoding does not decode (`%ZZ`, a truncated or
 * invalid UTF-8 sequence): the request gets 400 bad_request before any route, so a route's own
 * decoding of a segment cannot fail.
 */
export function routePath(url: string | undefined): { path: string; malformed: boolean } {
  const path = (url ?? '/').split('?', 1)[0]!.replace(/\/{2,}/g, '/');
  try {
    decodeURIComponent(path);
    return { path, malformed: false };
  } catch {
    return { path, malformed: true };
  }
}

/**
 * 308 to the same URL over https:// on the same host and port (the internal listener speaks
 * both). Only a well-formed Host is reused; anything else gets 400 rather than a redirect to it.
 */
function redirectToHttps(req: IncomingMessage, res: ServerResponse): void {
  const host = req.headers.host ?? '';
  if (!HOST_HEADER.test(host)) throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'the Host header is missing or not a host name');
  const location = `https://${host}${req.url ?? '/'}`;
  res.writeHead(308, { location, 'content-length': 0, 'cache-control': 'no-store' });
  res.end();
}

function isTls(socket: unknown): boolean {
  if (socket instanceof TLSSocket) return true;
  const meta = (socket as { meta?: { tls?: boolean } }).meta;
  return meta?.tls === true;
}
