/**
 * Wires the relay: the tunnel endpoint where agents connect (credentials bound to platforms,
 * optional mTLS), the registry of their connections, the mobile listeners (with their IP rules
 * and limits, and a port per extra platform) whose requests are forwarded through them, and the
 * admin listener (health, readiness, Prometheus metrics, status).
 */
import { describeCertificate } from '../shared/certs.js';
import type { Clock } from '../shared/clock.js';
import { defaults } from '../shared/defaults.js';
import { CloseCode, RelayError } from '../shared/errors.js';
import type { IpRuleFilesSummary } from '../shared/ip-rule-files.js';
import type { Logger } from '../shared/logger.js';
import type { SessionOptions } from '../shared/mux/session.js';
import { EdgeStats } from './edge/edge-stats.js';
import { Forwarder } from './edge/forwarder.js';
import { IpFilter } from './edge/ip-filter.js';
import { defaultEdgeLimits, type EdgeLimits } from './edge/edge-limits.js';
import { MobileListeners } from './edge/mobile-listeners.js';
import { AdminServer, agentStatus } from './admin/admin-server.js';
import { RelayMetrics } from './admin/metrics.js';
import { CredentialSet, DEFAULT_PLATFORM, type AgentCredential } from './tunnel/agent-credentials.js';
import { TunnelEndpoint } from './tunnel/tunnel-endpoint.js';
import { TunnelRegistry } from './tunnel/tunnel-registry.js';

/** The relay's IP rules (see edge/ip-filter.ts for what each list does). */
export interface RelayIpRules {
  /** Whitelist file (`--whitelist`): admitted whatever the blacklist says, exempt from the per-IP limits. */
  whitelistFile?: string;
  /** Blacklist file (`--blacklist`): dropped before TLS or HTTP unless whitelisted. */
  blacklistFile?: string;
  /** Drop every client not on the whitelist (`--whitelist-only`). */
  whitelistOnly: boolean;
  /** How often the files are checked for changes, ms. */
  pollIntervalMs: number;
  /** A larger file is refused and the previous rules stay. */
  maxFileBytes: number;
}

export interface RelayConfig {
  host: string;
  httpPort: number;
  httpsPort: number;
  tunnelPort: number;
  tls: { cert: string; key: string };
  /** SHA-256 of the one agent token of a single-platform relay (`--agent-token`); joins `credentials`. */
  tokenHash?: Buffer;
  /** Agent credentials, each bound to a platform (`--agent-credentials`). */
  credentials: AgentCredential[];
  /** PEM CA whose client certificates agents must present (`--agent-ca`). */
  agentCa?: string;
  /** The platform served on `httpPort`/`httpsPort`. */
  defaultPlatform: string;
  /** More mobile ports, each for one platform (`--platform-port courier=https:10561`). */
  platformPorts: PlatformPort[];
  /** Admin listener (health, metrics, status); null turns it off. `allowedHosts`: names it answers besides its address (DNS rebinding). */
  admin: { host: string; port: number; allowedHosts?: readonly string[] } | null;
  connectWaitMs: number;
  retryAfterSeconds: number;
  streamIdleTimeoutMs: number;
  drainTimeoutMs: number;
  limits: EdgeLimits;
  ipRules: RelayIpRules;
  mux: Omit<SessionOptions, 'role' | 'onStream'>;
  maxMessageBytes: number;
  /** Time for the per-IP request buckets; default the system clock (tests move a ManualClock). */
  clock?: Clock;
  /**
   * Load balancers whose connections start with a PROXY protocol header (v1 or v2) naming the
   * client (`--proxy-protocol-from`, addresses or CIDR blocks). Empty: no PROXY header is trusted.
   */
  proxyProtocolFrom?: readonly string[];
}

export interface PlatformPort {
  platform: string;
  port: number;
  tls: boolean;
}

/** Config with every default filled in; callers give the required parts. */
export function relayConfig(required: Pick<RelayConfig, 'tls'> & Partial<RelayConfig>): RelayConfig {
  return {
    credentials: [],
    defaultPlatform: DEFAULT_PLATFORM,
    platformPorts: [],
    admin: null,
    host: defaults.host,
    httpPort: defaults.httpPort,
    httpsPort: defaults.httpsPort,
    tunnelPort: defaults.tunnelPort,
    connectWaitMs: defaults.connectWaitMs,
    retryAfterSeconds: defaults.retryAfterSeconds,
    streamIdleTimeoutMs: defaults.streamIdleTimeoutMs,
    drainTimeoutMs: defaults.drainTimeoutMs,
    limits: defaultEdgeLimits(),
    ipRules: { whitelistOnly: false, pollIntervalMs: defaults.ipRulesPollMs, maxFileBytes: defaults.ipRulesMaxFileBytes },
    mux: {},
    maxMessageBytes: defaults.maxMessageBytes,
    ...required,
  };
}

export interface RelayPorts {
  httpPort: number;
  httpsPort: number;
  tunnelPort: number;
  /** Bound admin port, or null when off. */
  adminPort: number | null;
  /** Bound platform ports, in the order configured. */
  platformPorts: PlatformPort[];
}

/** What {@link Relay.setPlatformPorts} changed; a port whose platform or TLS flag changed is in both lists. */
export interface PlatformPortsChange {
  added: PlatformPort[];
  removed: PlatformPort[];
  /** The platform ports now in force. */
  platformPorts: PlatformPort[];
}

/** `courier=https:10561`, as the option is written. */
export function describePlatformPort(p: PlatformPort): string {
  return `${p.platform}=${p.tls ? 'https' : 'http'}:${p.port}`;
}

/**
 * Refuses a port given twice among the platform ports, or equal to a main port (`taken`; port 0,
 * any, is never a conflict).
 */
export function checkPlatformPorts(ports: readonly PlatformPort[], taken: readonly { option: string; port: number }[]): void {
  const seen = new Set<number>();
  for (const { port } of ports) {
    if (port === 0) continue;
    if (seen.has(port)) throw new RelayError('RELAY_ERR_CONFIG', `--platform-port: port ${port} is given twice`);
    seen.add(port);
    const main = taken.find((t) => t.port === port);
    if (main) throw new RelayError('RELAY_ERR_CONFIG', `--platform-port: port ${port} is given twice (it is the --${main.option})`);
  }
}

export class Relay {
  readonly registry: TunnelRegistry;
  readonly tunnel: TunnelEndpoint;
  readonly edge: MobileListeners;
  /** Connections and requests the edge turned away, by reason; `onReject` feeds metrics. */
  readonly edgeStats = new EdgeStats();
  readonly ipFilter: IpFilter;
  readonly metrics: RelayMetrics;
  private readonly admin: AdminServer | null;
  private readonly forwarder: Forwarder;
  private readonly config: RelayConfig;
  private readonly logger: Logger;
  private credentials: CredentialSet;
  /** The platform ports in force: as configured (port 0: any) and bound (`port`); before start, the configured ones. */
  private platformPortSet: { configured: PlatformPort; port: number }[] = [];
  /** Reloads of the platform ports, one at a time. */
  private platformPortsQueue: Promise<unknown> = Promise.resolve();
  ports: RelayPorts | null = null;
  private draining = false;

  constructor(config: RelayConfig, logger: Logger) {
    this.config = config;
    this.logger = logger;
    this.credentials = this.credentialSet(config.credentials);
    this.platformPortSet = config.platformPorts.map((p) => ({ configured: p, port: p.port }));
    this.registry = new TunnelRegistry({
      maxStreamSharePercent: config.limits.maxStreamSharePerIpPercent,
    });
    this.metrics = new RelayMetrics({ platforms: this.platforms() });
    this.tunnel = new TunnelEndpoint({
      tls: config.tls,
      credentials: () => this.credentials,
      ...(config.agentCa ? { agentCa: config.agentCa } : {}),
      registry: this.registry,
      logger,
      mux: config.mux,
      maxMessageBytes: config.maxMessageBytes,
      onAuthFailure: (reason) => this.metrics.tunnelAuthFailed(reason),
    });
    this.registry.on('added', (conn) => {
      this.metrics.tunnelConnected(conn.platform);
      conn.session.on('rtt', (ms: number) => this.metrics.observeRtt(conn.platform, ms));
    });
    this.edgeStats.onReject((reason) => this.metrics.reject(reason));
    this.noteCertificate(config.tls.cert);
    this.admin = config.admin
      ? new AdminServer({
          host: config.admin.host,
          port: config.admin.port,
          ...(config.admin.allowedHosts ? { allowedHosts: config.admin.allowedHosts } : {}),
          metrics: this.metrics,
          status: {
            platforms: () => this.platforms(),
            agents: () => this.registry.list().map(agentStatus),
            draining: () => this.draining,
          },
          logger,
        })
      : null;
    this.forwarder = new Forwarder({
      connectionOrigin: (_meta, socket) => this.edge.originOf(socket) ?? { platform: config.defaultPlatform, drain: false },
      clientOf: (socket) => this.edge.clientOf(socket),
      metrics: this.metrics,
      registry: this.registry,
      logger,
      limits: config.limits,
      connectWaitMs: config.connectWaitMs,
      streamIdleTimeoutMs: config.streamIdleTimeoutMs,
      retryAfterSeconds: config.retryAfterSeconds,
      stats: this.edgeStats,
      takeRequestToken: (ip) => this.edge.takeRequestToken(ip),
      isExempt: (ip) => this.ipFilter.active && this.ipFilter.isWhitelisted(ip),
    });
    const { whitelistFile, blacklistFile, whitelistOnly, pollIntervalMs, maxFileBytes } = config.ipRules;
    this.ipFilter = new IpFilter({
      ...(whitelistFile !== undefined ? { whitelistPath: whitelistFile } : {}),
      ...(blacklistFile !== undefined ? { blacklistPath: blacklistFile } : {}),
      whitelistOnly,
      pollIntervalMs,
      maxFileBytes,
      logger,
      // a file changed on disk: open connections of clients now dropped are reset too
      onChange: () => this.edge.enforceIpRules(),
    });
    this.edge = new MobileListeners({
      forwarder: this.forwarder,
      limits: config.limits,
      tls: config.tls,
      ...(this.ipFilter.active ? { ipFilter: this.ipFilter } : {}),
      stats: this.edgeStats,
      logger,
      ...(config.clock ? { clock: config.clock } : {}),
      ...(config.proxyProtocolFrom?.length ? { proxyProtocolFrom: config.proxyProtocolFrom } : {}),
    });
  }

  private credentialSet(list: AgentCredential[]): CredentialSet {
    const all = [...list];
    if (this.config.tokenHash) all.push({ id: 'default', platform: this.config.defaultPlatform, tokenHash: this.config.tokenHash });
    return new CredentialSet(all);
  }

  /** The platforms this relay serves: the default one, those with a port, and those agents may register for. */
  platforms(): string[] {
    const ids = new Set([this.config.defaultPlatform, ...this.platformPortSet.map((p) => p.configured.platform)]);
    for (const id of this.credentials.platforms()) ids.add(id);
    return [...ids].sort();
  }

  /** Replaces the agent credentials (SIGHUP). Connected agents stay; new upgrades are checked against the new set. */
  setCredentials(list: AgentCredential[]): void {
    this.credentials = this.credentialSet(list);
    this.metrics.setPlatforms(this.platforms());
    this.logger.info(
      { event: 'credentials_reloaded', credentials: list.length, platforms: this.platforms() },
      'agent credentials reloaded',
    );
  }

  async start(): Promise<RelayPorts> {
    // a port given twice is refused before anything listens
    checkPlatformPorts(this.config.platformPorts, this.mainPorts());
    try {
      return await this.listenAll();
    } catch (err) {
      // A port that cannot listen: close what did, so an in-process caller is left with nothing bound.
      await this.stop(0).catch(() => {});
      throw err;
    }
  }

  private async listenAll(): Promise<RelayPorts> {
    // Admin first: /healthz answers while everything else comes up.
    const adminPort = this.admin ? (await this.admin.listen()).port : null;
    const tunnelPort = await this.tunnel.listen(this.config.tunnelPort, this.config.host);
    const { httpPort, httpsPort } = await this.edge.listen(this.config.host, this.config.httpPort, this.config.httpsPort);
    const taken = this.mainPorts();
    taken.push(
      { option: 'http-port', port: httpPort },
      { option: 'https-port', port: httpsPort },
      { option: 'tunnel-port', port: tunnelPort },
    );
    if (adminPort !== null) taken.push({ option: 'admin-port', port: adminPort });
    checkPlatformPorts(this.config.platformPorts, taken);
    const bound = await this.bindPlatformPorts(this.config.platformPorts);
    this.platformPortSet = this.config.platformPorts.map((p, i) => ({ configured: p, port: bound[i]! }));
    const platformPorts = this.currentPlatformPorts();
    this.ports = { httpPort, httpsPort, tunnelPort, adminPort, platformPorts };
    this.logger.info({ event: 'relay_started', host: this.config.host, ...this.ports }, 'relay listening');
    return this.ports;
  }

  /** The platform ports in force, with their bound ports, in the order given. */
  currentPlatformPorts(): PlatformPort[] {
    return this.platformPortSet.map((p) => ({ ...p.configured, port: p.port }));
  }

  /**
   * Replaces the platform ports (SIGHUP, from the config file): listeners for ports no longer
   * given are closed and their connections drain as on shutdown (in-flight requests finish, the
   * connection then closes; cut after the drain timeout); new ports are listened on; unchanged
   * ones (same port, platform and TLS flag) are left alone, as are the main listeners and the
   * tunnel. A changed platform or TLS flag is a removal and an addition. A port given twice (or
   * equal to a main port) or in use is refused: the previous set stays, and the promise rejects
   * with a config error naming the option and the port (logged as `platform_ports_reload_failed`).
   */
  setPlatformPorts(ports: readonly PlatformPort[]): Promise<PlatformPortsChange> {
    const run = this.platformPortsQueue.then(() => this.applyPlatformPorts(ports));
    this.platformPortsQueue = run.catch(() => {});
    return run;
  }

  private async applyPlatformPorts(ports: readonly PlatformPort[]): Promise<PlatformPortsChange> {
    try {
      if (!this.ports) throw new RelayError('RELAY_ERR_CONFIG', '--platform-port: the relay is not started');
      if (this.draining) throw new RelayError('RELAY_ERR_CONFIG', '--platform-port: the relay is stopping');
      const running = this.ports;
      const taken = this.mainPorts();
      taken.push(
        { option: 'http-port', port: running.httpPort },
        { option: 'https-port', port: running.httpsPort },
        { option: 'tunnel-port', port: running.tunnelPort },
      );
      if (running.adminPort !== null) taken.push({ option: 'admin-port', port: running.adminPort });
      checkPlatformPorts(ports, taken);

      // match each port given with one in force: by port, or (port 0) by platform and TLS flag
      const unmatched = new Set(this.platformPortSet);
      const plan = ports.map((wanted) => {
        let current: { configured: PlatformPort; port: number } | undefined;
        for (const p of unmatched) {
          const hit =
            wanted.port !== 0
              ? p.port === wanted.port
              : p.configured.port === 0 && p.configured.platform === wanted.platform && p.configured.tls === wanted.tls;
          if (hit) {
            current = p;
            break;
          }
        }
        if (current) unmatched.delete(current);
        return { wanted, current };
      });
      const fresh = plan.filter((s) => !s.current);
      const changed = plan.filter(
        (s) => s.current && (s.current.configured.platform !== s.wanted.platform || s.current.configured.tls !== s.wanted.tls),
      );

      // new listeners first: if one cannot listen, nothing has changed yet
      const bound = await this.bindPlatformPorts(fresh.map((s) => s.wanted));
      const drainMs = this.config.drainTimeoutMs;
      for (const s of changed) this.edge.changeExtra(s.current!.port, s.wanted.tls, s.wanted.platform, drainMs);
      for (const p of unmatched) this.edge.closeExtra(p.port, drainMs);

      const boundOf = new Map(fresh.map((s, i) => [s, bound[i]!]));
      this.platformPortSet = plan.map((s) => ({ configured: s.wanted, port: s.current ? s.current.port : boundOf.get(s)! }));
      running.platformPorts = this.currentPlatformPorts();
      this.metrics.setPlatforms(this.platforms());
      const removed = [
        ...[...unmatched].map((p) => ({ ...p.configured, port: p.port })),
        ...changed.map((s) => ({ ...s.current!.configured, port: s.current!.port })),
      ];
      const added = [
        ...fresh.map((s) => ({ ...s.wanted, port: boundOf.get(s)! })),
        ...changed.map((s) => ({ ...s.wanted, port: s.current!.port })),
      ];
      this.logger.info(
        {
          event: 'platform_ports_reloaded',
          added: added.map(describePlatformPort),
          removed: removed.map(describePlatformPort),
          platformPorts: running.platformPorts.map(describePlatformPort),
        },
        'platform ports reloaded',
      );
      return { added, removed, platformPorts: running.platformPorts };
    } catch (err) {
      this.logger.error(
        {
          event: 'platform_ports_reload_failed',
          err: (err as Error).message,
          platformPorts: this.currentPlatformPorts().map(describePlatformPort),
        },
        'platform ports not reloaded; the previous ones stay',
      );
      throw err;
    }
  }

  /** The main ports as configured (0: any, not a conflict), for {@link checkPlatformPorts}. */
  private mainPorts(): { option: string; port: number }[] {
    const c = this.config;
    const list = [
      { option: 'http-port', port: c.httpPort },
      { option: 'https-port', port: c.httpsPort },
      { option: 'tunnel-port', port: c.tunnelPort },
    ];
    if (c.admin) list.push({ option: 'admin-port', port: c.admin.port });
    return list;
  }

  /** Listens on each port; if one fails, those opened here are closed again and a config error says which port. */
  private async bindPlatformPorts(ports: readonly PlatformPort[]): Promise<number[]> {
    const bound: number[] = [];
    try {
      for (const p of ports) bound.push(await this.edge.listenExtra(this.config.host, p.port, p.tls, p.platform));
    } catch (err) {
      for (const port of bound) this.edge.closeExtra(port, 0);
      const failed = ports[bound.length]!;
      const code = (err as NodeJS.ErrnoException).code;
      throw new RelayError(
        'RELAY_ERR_CONFIG',
        code === 'EADDRINUSE'
          ? `--platform-port: port ${failed.port} is in use`
          : `--platform-port: cannot listen on port ${failed.port} (${(err as Error).message})`,
      );
    }
    return bound;
  }

  private noteCertificate(cert: string): void {
    try {
      this.metrics.setCertificateExpiry('relay', describeCertificate(cert).notAfter);
    } catch (err) {
      this.logger.warn({ event: 'certificate_unreadable', err: (err as Error).message }, 'cannot read the certificate expiry');
    }
  }

  /** Replaces the TLS certificate on every listener; open connections keep theirs. */
  setCertificate(cert: string, key: string): void {
    this.edge.setCertificate(cert, key);
    this.tunnel.setCertificate(cert, key);
    this.noteCertificate(cert);
  }

  /** Replaces the `--proxy-protocol-from` list (SIGHUP, from the config file) for the connections that come next. */
  setProxyProtocolFrom(list: readonly string[]): void {
    this.edge.setProxyProtocolFrom(list);
    this.logger.info(
      { event: 'proxy_protocol_from_reloaded', entries: [...list] },
      `PROXY protocol trusted from: ${list.join(', ') || 'nobody'}`,
    );
  }

  /**
   * Reads the IP rule files again now (the lead wires SIGHUP here; changes on disk are also picked
   * up by polling) and resets open connections of clients the new rules drop.
   */
  reloadIpRules(): IpRuleFilesSummary {
    const summary = this.ipFilter.reload();
    const dropped = this.edge.enforceIpRules();
    this.logger.info(
      { event: 'ip_rules_reloaded', whitelist: summary.whitelist?.entries ?? null, blacklist: summary.blacklist?.entries ?? null, dropped },
      'IP rules reloaded',
    );
    return summary;
  }

  /**
   * Graceful stop: no new agent connections (the tunnel listener closes first, so an agent that
   * reconnects at once does not land here), no new mobile connections, in-flight requests get up
   * to `drainMs` to finish, then agent connections are closed with "going away" (they reconnect
   * at once, to the relay that replaces this one).
   */
  async stop(drainMs = this.config.drainTimeoutMs): Promise<void> {
    this.draining = true;
    const tunnelClosed = this.tunnel.stopAccepting();
    this.logger.info({ event: 'relay_draining', connections: this.edge.connectionCount, drainMs }, 'relay draining');
    await this.edge.drain(drainMs);
    this.ipFilter.close();
    this.forwarder.close();
    this.registry.closeAll(CloseCode.goingAway, 'relay shutting down');
    await Promise.all([tunnelClosed, this.tunnel.close()]);
    await this.admin?.close();
    this.logger.info({ event: 'relay_stopped' }, 'relay stopped');
  }
}
