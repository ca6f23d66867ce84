/**
 * The agent's side of the tunnel to one relay: keeps `connections` WebSocket connections open,
 * each a mux session whose incoming streams go to `onStream`. Dropped connections come back
 * by the rules of `backoff.ts`: at once (0–100 ms jitter) when the relay said it was going away
 * (GOAWAY, close 1001), every ≤ `reconnectUnreachableMaxMs` while the relay does not answer
 * (refused, reset, timeout: a restarting relay), and with the long exponential backoff when it
 * answers and refuses (HTTP 401/429/5xx, certificate check); a rejected token is logged as such
 * and never retried in a hot loop. While down, the first failure is a warning, each retry a
 * debug line, and a summary warning comes at most every {@link RETRY_SUMMARY_MS}.
 */
import { EventEmitter } from 'node:events';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { RelayError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { MuxSession, maxStreamsHeader, type SessionOptions } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import { Backoff, type FailureKind } from './backoff.js';
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
  /** Ceiling of the backoff while the relay does not answer (refused, reset, timeout); default `reconnectMaxMs`. */
  reconnectUnreachableMaxMs?: number;
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
  /** Failed attempts since the slot was last connected (or since the relay said it was going away). */
  failures: number;
  downSince: number | null;
  lastSummaryAt: number;
}

/** While a connection stays down, a summary warning at most this often (the retries themselves log at debug). */
export const RETRY_SUMMARY_MS = 30_000;

/** Error codes of an attempt nobody answered: the relay is down or restarting, not refusing. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EAI_AGAIN',
]);

function failureKind(err: Error & { code?: string }): FailureKind {
  if (err.code && UNREACHABLE_CODES.has(err.code)) return 'unreachable';
  // ws's handshake timeout and the TLS connector's timeout carry no code
  if (!err.code && /timed out|socket hang up/i.test(err.message)) return 'unreachable';
  return 'refused';
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
        unreachableMaxMs: options.reconnectUnreachableMaxMs ?? options.reconnectMaxMs,
        ...(options.random ? { random: options.random } : {}),
      }),
      session: null,
      ws: null,
      since: null,
      lastError: null,
      lastErrorAt: null,
      timer: null,
      failures: 0,
      downSince: null,
      lastSummaryAt: 0,
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
    const failed = (kind: FailureKind, reason: string, fields: Record<string, unknown> = {}): void => {
      if (settled) return;
      settled = true;
      slot.ws = null;
      slot.lastError = reason;
      slot.lastErrorAt = new Date();
      ws.terminate();
      if (!this.stopped) this.scheduleReconnect(slot, slot.backoff.next(kind), reason, { kind, ...fields });
    };
    ws.once('unexpected-response', (req: ClientRequest, res: IncomingMessage) => {
      req.destroy();
      if (res.statusCode === 401) {
        const err = new RelayError('RELAY_ERR_TUNNEL_AUTH');
        // an error the first time; while it keeps being refused, the retry summary says so
        logger[slot.failures === 0 ? 'error' : 'debug'](
          { event: 'tunnel_auth_rejected', relay: url, code: err.code },
          "the relay rejected the agent token (HTTP 401): check --token / PLATFORM_AGENT_TOKEN against the relay's --agent-token",
        );
        failed('refused', 'token rejected (HTTP 401)', { status: 401 });
      } else {
        // 503 is what a relay that is draining (or a front not ready yet) answers: retried like a relay that is down
        const kind = res.statusCode === 503 ? 'unreachable' : 'refused';
        failed(kind, `relay answered HTTP ${res.statusCode} to the upgrade`, { status: res.statusCode });
      }
    });
    ws.on('error', (err: Error & { code?: string }) => failed(failureKind(err), err.message, { code: err.code }));
    ws.once('close', () => failed('unreachable', 'connection closed during the handshake'));
    ws.once('open', () => {
      if (settled) return;
      settled = true;
      ws.removeAllListeners('close');
      ws.removeAllListeners('error');
      const session = new MuxSession(ws, { ...this.options.mux, role: 'client', onStream: this.options.onStream });
      slot.session = session;
      slot.since = new Date();
      slot.backoff.connected();
      const retried = slot.failures > 0 ? { attempts: slot.failures, downMs: Date.now() - (slot.downSince ?? Date.now()) } : {};
      slot.failures = 0;
      slot.downSince = null;
      logger.info({ event: 'tunnel_connected', relay: url, slot: slot.index, ...retried }, 'connected to relay');
      this.emit('connected', slot.index);
      let goAway = false;
      session.once('goaway', () => {
        goAway = true;
      });
      session.once('close', (err) => {
        const upMs = Date.now() - (slot.since?.getTime() ?? Date.now());
        slot.session = null;
        slot.ws = null;
        slot.since = null;
        // the relay said it is going away (a restart, a drain): planned, not a failure
        const planned = goAway || session.peerCloseCode === 1001;
        const delayMs = slot.backoff.connectionEnded(upMs, planned);
        const reason = err ? `${err.code}: ${err.message}` : planned ? 'relay going away' : 'closed by relay';
        if (!this.stopped) {
          slot.lastError = reason;
          slot.lastErrorAt = new Date();
        }
        this.emit('disconnected', slot.index, reason);
        if (this.stopped) return;
        if (planned) {
          logger.info(
            { event: 'tunnel_retry', relay: url, slot: slot.index, delayMs, reason, upMs, planned: true },
            `relay connection closed (${reason}); reconnecting in ${delayMs} ms`,
          );
          this.retryIn(slot, delayMs);
        } else {
          this.scheduleReconnect(slot, delayMs, reason, { upMs });
        }
      });
    });
  }

  /**
   * A failure (or an unplanned drop): retry after `delayMs`. The first failure since the slot was
   * up is a warning; later ones are debug lines, with a summary warning every RETRY_SUMMARY_MS.
   */
  private scheduleReconnect(slot: Slot, delayMs: number, reason: string, fields: Record<string, unknown>): void {
    if (this.stopped) return;
    const { logger, url } = this.options;
    const now = Date.now();
    slot.failures++;
    const line = { event: 'tunnel_retry', relay: url, slot: slot.index, delayMs, reason, attempts: slot.failures, ...fields };
    if (slot.failures === 1) {
      slot.downSince = now;
      slot.lastSummaryAt = now;
      logger.warn(line, `relay connection down (${reason}); retrying in ${delayMs} ms (further retries are logged at debug level)`);
    } else if (now - slot.lastSummaryAt >= RETRY_SUMMARY_MS) {
      slot.lastSummaryAt = now;
      const downMs = now - (slot.downSince ?? now);
      logger.warn(
        { event: 'tunnel_still_retrying', relay: url, slot: slot.index, attempts: slot.failures, downMs, lastError: reason },
        `relay connection still down after ${Math.round(downMs / 1000)} s: still retrying, ${slot.failures} attempts, last error: ${reason}`,
      );
    } else {
      logger.debug(line, `relay connection down (${reason}); retrying in ${delayMs} ms`);
    }
    this.retryIn(slot, delayMs);
  }

  private retryIn(slot: Slot, delayMs: number): void {
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
