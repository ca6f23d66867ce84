/**
 * The agent's side of the tunnel to one relay: keeps `connections` WebSocket connections open,
 * each a mux session whose incoming streams go to `onStream`. Dropped connections come back
 * with exponential backoff and full jitter; a rejected token is logged as such and retried
 * with the same backoff, never in a hot loop.
 */
import { EventEmitter } from 'node:events';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { RelayError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { MuxSession, maxStreamsHeader, type SessionOptions } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import { Backoff } from './backoff.js';
import { verifiedTlsConnector, type RelayTrust } from './tls-connect.js';

export interface TunnelClientOptions {
  /** `wss://host:port[/path]` */
  url: string;
  token: string;
  agentId: string;
  trust: RelayTrust;
  connections: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  reconnectStableMs: number;
  connectTimeoutMs: number;
  maxMessageBytes: number;
  mux: Omit<SessionOptions, 'role' | 'onStream'>;
  onStream: (stream: MuxStream) => void;
  logger: Logger;
  random?: () => number;
}

export interface SlotStatus {
  relay: string;
  slot: number;
  connected: boolean;
  since: Date | null;
  streams: number;
  lastError: string | null;
  lastErrorAt: Date | null;
  attempts: number;
}

interface Slot {
  index: number;
  backoff: Backoff;
  session: MuxSession | null;
  ws: WebSocket | null;
  since: Date | null;
  lastError: string | null;
  lastErrorAt: Date | null;
  timer: NodeJS.Timeout | null;
}

// Masking protects browsers' intermediaries from cache poisoning (RFC 6455 §10.3); the agent
// is no browser and the link is TLS, so a zero mask lets `ws` skip the per-byte XOR and copy.
const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

export class TunnelClient extends EventEmitter<{ connected: [number]; disconnected: [number, string | null] }> {
  private readonly options: TunnelClientOptions;
  private readonly slots: Slot[];
  private stopped = false;
  private readonly connector: ReturnType<typeof verifiedTlsConnector>;

  constructor(options: TunnelClientOptions) {
    super();
    this.options = options;
    this.connector = verifiedTlsConnector(options.trust, options.connectTimeoutMs);
    this.slots = Array.from({ length: options.connections }, (_, index) => ({
      index,
      backoff: new Backoff({
        minMs: options.reconnectMinMs,
        maxMs: options.reconnectMaxMs,
        stableMs: options.reconnectStableMs,
        ...(options.random ? { random: options.random } : {}),
      }),
      session: null,
      ws: null,
      since: null,
      lastError: null,
      lastErrorAt: null,
      timer: null,
    }));
  }

  start(): void {
    for (const slot of this.slots) this.connect(slot);
  }

  get connectedCount(): number {
    return this.slots.filter((s) => s.session && !s.session.isClosed).length;
  }

  get openStreams(): number {
    return this.slots.reduce((n, s) => n + (s.session?.streamCount ?? 0), 0);
  }

  status(): SlotStatus[] {
    return this.slots.map((s) => ({
      relay: this.options.url,
      slot: s.index,
      connected: s.session !== null && !s.session.isClosed,
      since: s.since,
      streams: s.session?.streamCount ?? 0,
      lastError: s.lastError,
      lastErrorAt: s.lastErrorAt,
      attempts: s.backoff.attempts,
    }));
  }

  private connect(slot: Slot): void {
    if (this.stopped) return;
    const { url, token, agentId, logger } = this.options;
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${token}`, 'x-agent-id': agentId, ...maxStreamsHeader(this.options.mux) },
      perMessageDeflate: false,
      maxPayload: this.options.maxMessageBytes,
      handshakeTimeout: this.options.connectTimeoutMs,
      followRedirects: false,
      generateMask: zeroMask,
      createConnection: this.connector as never,
    });
    slot.ws = ws;
    let settled = false;
    const failed = (reason: string, fields: Record<string, unknown> = {}): void => {
      if (settled) return;
      settled = true;
      slot.ws = null;
      slot.lastError = reason;
      slot.lastErrorAt = new Date();
      ws.terminate();
      this.scheduleReconnect(slot, reason, fields);
    };
    ws.once('unexpected-response', (req: ClientRequest, res: IncomingMessage) => {
      req.destroy();
      if (res.statusCode === 401) {
        const err = new RelayError('RELAY_ERR_TUNNEL_AUTH');
        logger.error(
          { event: 'tunnel_auth_rejected', relay: url, code: err.code },
          "the relay rejected the agent token (HTTP 401): check --token / PLATFORM_AGENT_TOKEN against the relay's --agent-token",
        );
        failed('token rejected (HTTP 401)', { status: 401 });
      } else {
        failed(`relay answered HTTP ${res.statusCode} to the upgrade`, { status: res.statusCode });
      }
    });
    ws.on('error', (err: Error & { code?: string }) => failed(err.message, { code: err.code }));
    ws.once('close', () => failed('connection closed during the handshake'));
    ws.once('open', () => {
      if (settled) return;
      settled = true;
      ws.removeAllListeners('close');
      ws.removeAllListeners('error');
      const session = new MuxSession(ws, { ...this.options.mux, role: 'client', onStream: this.options.onStream });
      slot.session = session;
      slot.since = new Date();
      logger.info({ event: 'tunnel_connected', relay: url, slot: slot.index }, 'connected to relay');
      this.emit('connected', slot.index);
      session.once('close', (err) => {
        const upMs = Date.now() - (slot.since?.getTime() ?? Date.now());
        slot.session = null;
        slot.ws = null;
        slot.since = null;
        slot.backoff.connectionEnded(upMs);
        const reason = err ? `${err.code}: ${err.message}` : 'closed by relay';
        if (!this.stopped) {
          slot.lastError = reason;
          slot.lastErrorAt = new Date();
        }
        this.emit('disconnected', slot.index, reason);
        this.scheduleReconnect(slot, reason, { upMs });
      });
    });
  }

  private scheduleReconnect(slot: Slot, reason: string, fields: Record<string, unknown>): void {
    if (this.stopped) return;
    const delayMs = slot.backoff.next();
    this.options.logger.warn(
      { event: 'tunnel_retry', relay: this.options.url, slot: slot.index, delayMs, reason, ...fields },
      `relay connection down (${reason}); retrying in ${delayMs} ms`,
    );
    slot.timer = setTimeout(() => {
      slot.timer = null;
      this.connect(slot);
    }, delayMs);
  }

  /**
   * Graceful stop: GOAWAY on every connection (the relay sends no new streams), wait up to
   * `timeoutMs` for open streams to finish, then close.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.stopped = true;
    for (const slot of this.slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.session?.goAway();
    }
    const deadline = Date.now() + timeoutMs;
    while (this.openStreams > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    this.stop();
  }

  /** Closes every connection now and stops reconnecting. */
  stop(): void {
    this.stopped = true;
    for (const slot of this.slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = null;
      if (slot.session) slot.session.close(1001, 'agent shutting down');
      else slot.ws?.terminate();
    }
  }
}
