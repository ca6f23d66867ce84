/**
 * The platform agent: one TunnelClient per relay, each incoming stream handed to one target —
 * the built-in platform server (the default), an external platform server (`--upstream`, pipe
 * mode, upstream-pipe.ts) or the sample app (`--sample-app`, a demo, sample-app.ts). The caller
 * (cli.ts, demo.ts) picks the target; the agent knows nothing of what serves the streams.
 */
import { hostname } from 'node:os';
import { defaults } from '../../shared/defaults.js';
import type { Logger } from '../../shared/logger.js';
import type { SessionOptions } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import { TunnelClient } from './tunnel-client.js';
import type { RelayTrust } from './tls-connect.js';

/** What serves the streams that come through the tunnel. */
export interface StreamTarget {
  /** What the agent serves, for its log. */
  readonly name: string;
  /** Takes one stream: a Duplex whose remote address is the mobile client's (OPEN metadata). */
  onStream(stream: MuxStream): void;
  /** Called once the agent has drained (the sample app closes its idle connections). */
  close?(): void;
}

export interface AgentConfig {
  relays: string[];
  token: string;
  agentId: string;
  trust: RelayTrust;
  connections: number;
  /** Where each stream goes (opened and closed by the caller). */
  target: StreamTarget;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  reconnectStableMs: number;
  reconnectUnreachableMaxMs: number;
  connectTimeoutMs: number;
  drainTimeoutMs: number;
  maxMessageBytes: number;
  mux: Omit<SessionOptions, 'role' | 'onStream'>;
}

/** The defaults with what is given on top; the target may come later (the built-in platform server's, once it is open). */
export function agentConfig<T extends Pick<AgentConfig, 'relays' | 'token' | 'trust'> & Partial<AgentConfig>>(
  required: T,
): Omit<AgentConfig, 'target'> & T {
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
  private readonly target: StreamTarget;
  private readonly logger: Logger;

  constructor(config: AgentConfig, logger: Logger) {
    this.logger = logger;
    this.target = config.target;
    const onStream = (stream: MuxStream): void => config.target.onStream(stream);
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
    const target = config.target.name;
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
    this.target.close?.();
    this.logger.info({ event: 'agent_stopped' }, 'agent stopped');
  }
}
