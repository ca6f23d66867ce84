/**
 * Wires the platform agent: one TunnelClient per relay, and what each incoming stream is handed
 * to: the built-in platform server (the default), an external platform server (`--upstream`,
 * pipe mode), or the sample app (`--sample-app`, a demo).
 */
import type http from 'node:http';
import { hostname } from 'node:os';
import { defaults } from '../../shared/defaults.js';
import type { Logger } from '../../shared/logger.js';
import type { SessionOptions } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import type { PlatformServer } from '../server/platform-server.js';
import { createSampleApp, SAMPLE_APP_NAME } from './sample-app.js';
import { TunnelClient } from './tunnel-client.js';
import type { RelayTrust } from './tls-connect.js';
import { createUpstreamPipe } from './upstream-pipe.js';

export interface AgentConfig {
  relays: string[];
  token: string;
  agentId: string;
  trust: RelayTrust;
  connections: number;
  /** The built-in platform server (opened by the caller, who also closes it). */
  platform?: PlatformServer;
  /** External platform server (pipe mode). */
  upstream?: URL;
  upstreamCa?: string;
  upstreamInsecure?: boolean;
  sampleApp?: boolean;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  reconnectStableMs: number;
  reconnectUnreachableMaxMs: number;
  connectTimeoutMs: number;
  drainTimeoutMs: number;
  maxMessageBytes: number;
  mux: Omit<SessionOptions, 'role' | 'onStream'>;
}

export function agentConfig(required: Pick<AgentConfig, 'relays' | 'token' | 'trust'> & Partial<AgentConfig>): AgentConfig {
  return {
    agentId: hostname(),
    connections: defaults.connectionsPerRelay,
    reconnectMinMs: defaults.reconnectMinMs,
    reconnectMaxMs: defaults.reconnectMaxMs,
    reconnectStableMs: defaults.reconnectStableMs,
    reconnectUnreachableMaxMs: defaults.reconnectUnreachableMaxMs,
    connectTimeoutMs: defaults.connectTimeoutMs,
    drainTimeoutMs: defaults.drainTimeoutMs,
    maxMessageBytes: defaults.maxMessageBytes,
    mux: {},
    ...required,
  };
}

export class PlatformAgent {
  readonly clients: TunnelClient[];
  private readonly sampleServer: http.Server | null = null;
  private readonly logger: Logger;

  constructor(config: AgentConfig, logger: Logger) {
    this.logger = logger;
    let onStream: (stream: MuxStream) => void;
    if (config.platform) {
      const platform = config.platform;
      onStream = (stream) => platform.handleStream(stream);
    } else if (config.upstream) {
      onStream = createUpstreamPipe({ url: config.upstream, ca: config.upstreamCa, insecure: config.upstreamInsecure, logger });
    } else if (config.sampleApp) {
      const server = createSampleApp();
      this.sampleServer = server;
      // The stream stands in for a socket; its address is the mobile client's, from OPEN.
      onStream = (stream) => server.emit('connection', stream);
    } else {
      throw new Error('the agent needs a platform server, --upstream <url> or --sample-app');
    }
    this.clients = config.relays.map(
      (url) =>
        new TunnelClient({
          url,
          token: config.token,
          agentId: config.agentId,
          trust: config.trust,
          connections: config.connections,
          reconnectMinMs: config.reconnectMinMs,
          reconnectMaxMs: config.reconnectMaxMs,
          reconnectStableMs: config.reconnectStableMs,
          reconnectUnreachableMaxMs: config.reconnectUnreachableMaxMs,
          connectTimeoutMs: config.connectTimeoutMs,
          maxMessageBytes: config.maxMessageBytes,
          mux: config.mux,
          onStream,
          logger,
        }),
    );
    const target = config.platform ? 'platform server' : config.upstream ? config.upstream.origin : SAMPLE_APP_NAME;
    logger.info({ event: 'agent_configured', relays: config.relays, connections: config.connections, target }, `serving ${target}`);
  }

  start(): void {
    for (const client of this.clients) client.start();
  }

  get connectedCount(): number {
    return this.clients.reduce((n, c) => n + c.connectedCount, 0);
  }

  /** Waits until at least `n` tunnel connections are up (tests, the demo). */
  async waitConnected(n = 1, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.connectedCount < n) {
      if (Date.now() > deadline) throw new Error(`only ${this.connectedCount} of ${n} tunnel connections came up within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Graceful stop: no new streams, in-flight streams get up to `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    this.logger.info({ event: 'agent_draining', drainMs: timeoutMs }, 'agent draining');
    await Promise.all(this.clients.map((c) => c.drain(timeoutMs)));
    this.sampleServer?.closeAllConnections();
    this.logger.info({ event: 'agent_stopped' }, 'agent stopped');
  }
}
