/**
 * Wires the relay: the tunnel endpoint where agents connect, the registry of their
 * connections, and the mobile listeners whose requests are forwarded through them.
 */
import { defaults } from '../shared/defaults.js';
import { CloseCode } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { SessionOptions } from '../shared/mux/session.js';
import { Forwarder } from './edge/forwarder.js';
import { MobileListeners, type EdgeLimits } from './edge/mobile-listeners.js';
import { TunnelEndpoint } from './tunnel/tunnel-endpoint.js';
import { TunnelRegistry } from './tunnel/tunnel-registry.js';

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
  mux: Omit<SessionOptions, 'role' | 'onStream'>;
  maxMessageBytes: number;
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
    limits: {
      maxHeaderBytes: defaults.maxHeaderBytes,
      headersTimeoutMs: defaults.headersTimeoutMs,
      requestTimeoutMs: defaults.requestTimeoutMs,
      keepAliveTimeoutMs: defaults.keepAliveTimeoutMs,
    },
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
    });
    this.edge = new MobileListeners({ forwarder: this.forwarder, limits: config.limits, tls: config.tls });
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
   * Graceful stop: no new mobile connections, in-flight requests get up to `drainMs` to finish,
   * then agent connections are closed with "going away" (they reconnect elsewhere or later).
   */
  async stop(drainMs = this.config.drainTimeoutMs): Promise<void> {
    this.logger.info({ event: 'relay_draining', connections: this.edge.connectionCount, drainMs }, 'relay draining');
    await this.edge.drain(drainMs);
    this.forwarder.close();
    this.registry.closeAll(CloseCode.goingAway, 'relay shutting down');
    await this.tunnel.close();
    this.logger.info({ event: 'relay_stopped' }, 'relay stopped');
  }
}
