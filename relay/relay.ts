/**
 * Wires the relay: the tunnel endpoint where agents connect, the registry of their
 * connections, and the mobile listeners (with their IP rules and limits) whose requests are
 * forwarded through them.
 */
import type { Clock } from '../shared/clock.js';
import { defaults } from '../shared/defaults.js';
import { CloseCode } from '../shared/errors.js';
import type { IpRuleFilesSummary } from '../shared/ip-rule-files.js';
import type { Logger } from '../shared/logger.js';
import type { SessionOptions } from '../shared/mux/session.js';
import { EdgeStats } from './edge/edge-stats.js';
import { Forwarder } from './edge/forwarder.js';
import { IpFilter } from './edge/ip-filter.js';
import { MobileListeners, defaultEdgeLimits, type EdgeLimits } from './edge/mobile-listeners.js';
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
  /** SHA-256 of the agent token. */
  tokenHash: Buffer;
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
}

/** Config with every default filled in; callers give the required parts. */
export function relayConfig(required: Pick<RelayConfig, 'tls' | 'tokenHash'> & Partial<RelayConfig>): RelayConfig {
  return {
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
}

export class Relay {
  readonly registry = new TunnelRegistry();
  readonly tunnel: TunnelEndpoint;
  readonly edge: MobileListeners;
  /** Connections and requests the edge turned away, by reason; `onReject` feeds metrics. */
  readonly edgeStats = new EdgeStats();
  readonly ipFilter: IpFilter;
  private readonly forwarder: Forwarder;
  private readonly config: RelayConfig;
  private readonly logger: Logger;
  ports: RelayPorts | null = null;

  constructor(config: RelayConfig, logger: Logger) {
    this.config = config;
    this.logger = logger;
    this.tunnel = new TunnelEndpoint({
      tls: config.tls,
      tokenHash: config.tokenHash,
      registry: this.registry,
      logger,
      mux: config.mux,
      maxMessageBytes: config.maxMessageBytes,
    });
    this.forwarder = new Forwarder({
      registry: this.registry,
      logger,
      connectWaitMs: config.connectWaitMs,
      streamIdleTimeoutMs: config.streamIdleTimeoutMs,
      retryAfterSeconds: config.retryAfterSeconds,
      maxBodyBytes: config.limits.maxBodyBytes,
      stats: this.edgeStats,
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
    });
  }

  async start(): Promise<RelayPorts> {
    const tunnelPort = await this.tunnel.listen(this.config.tunnelPort, this.config.host);
    const { httpPort, httpsPort } = await this.edge.listen(this.config.host, this.config.httpPort, this.config.httpsPort);
    this.ports = { httpPort, httpsPort, tunnelPort };
    this.logger.info({ event: 'relay_started', host: this.config.host, ...this.ports }, 'relay listening');
    return this.ports;
  }

  /** Replaces the TLS certificate on every listener; open connections keep theirs. */
  setCertificate(cert: string, key: string): void {
    this.edge.setCertificate(cert, key);
    this.tunnel.setCertificate(cert, key);
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
   * Graceful stop: no new mobile connections, in-flight requests get up to `drainMs` to finish,
   * then agent connections are closed with "going away" (they reconnect elsewhere or later).
   */
  async stop(drainMs = this.config.drainTimeoutMs): Promise<void> {
    this.logger.info({ event: 'relay_draining', connections: this.edge.connectionCount, drainMs }, 'relay draining');
    await this.edge.drain(drainMs);
    this.ipFilter.close();
    this.forwarder.close();
    this.registry.closeAll(CloseCode.goingAway, 'relay shutting down');
    await this.tunnel.close();
    this.logger.info({ event: 'relay_stopped' }, 'relay stopped');
  }
}
