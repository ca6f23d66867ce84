/**
 * The agent connections, by platform. A new stream for a platform goes to that platform's
 * usable connection with the fewest open streams; a request that finds none waits (bounded)
 * for one to register.
 *
 * Streams are also counted per client (the key the edge gives: an IPv4 address or an IPv6 /64):
 * one client may hold at most a share of its platform's stream capacity (the platform's live
 * connections' stream limits, each the lower of the relay's and the agent's), so that no one address can take every stream and
 * starve the others. Past its share a client's request waits like one that finds every
 * connection full, and gets tunnel_busy after the same wait. The table holds only clients with a
 * stream open, so it never has more entries than there are open streams.
 */
import { EventEmitter } from 'node:events';
import { RelayError } from '../../shared/errors.js';
import type { OpenMetadata } from '../../shared/mux/frame-codec.js';
import type { MuxSession } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';
import { DEFAULT_PLATFORM } from './agent-credentials.js';

export interface TunnelRegistryOptions {
  /** Share of a platform's stream capacity one client may hold, percent; 0 = no limit. */
  maxStreamSharePercent?: number;
}

/** A stream opened for a client, and the agent connection it is on. */
export interface OpenedStream {
  conn: AgentConnection;
  stream: MuxStream;
}

export interface AgentConnection {
  /** Unique per connection, e.g. `agent-7f3a#3`. */
  id: string;
  /** The agent's self-declared name (X-Agent-Id), for logs and status. */
  agentId: string;
  /** The credential that authenticated it, and the platform that credential is bound to. */
  credential: string;
  platform: string;
  remoteAddress: string;
  since: Date;
  session: MuxSession;
}

export class TunnelRegistry extends EventEmitter<{ added: [AgentConnection]; removed: [AgentConnection] }> {
  private readonly connections = new Set<AgentConnection>();
  private waiters = new Set<() => void>();
  private readonly sharePercent: number;
  /** Open streams per platform and client (`platform\nclient`); an entry only while > 0. */
  private readonly clientStreams = new Map<string, number>();

  constructor(options: TunnelRegistryOptions = {}) {
    super();
    this.sharePercent = options.maxStreamSharePercent ?? 0;
  }

  add(conn: AgentConnection): void {
    this.connections.add(conn);
    conn.session.once('close', () => this.remove(conn));
    // A full connection that frees a stream can serve a request waiting for one.
    conn.session.on('capacity', () => this.wakeWaiters());
    this.emit('added', conn);
    this.wakeWaiters();
  }

  private remove(conn: AgentConnection): void {
    if (this.connections.delete(conn)) this.emit('removed', conn);
  }

  list(): AgentConnection[] {
    return [...this.connections];
  }

  get size(): number {
    return this.connections.size;
  }

  /** Requests waiting for a usable connection right now. */
  get waitingCount(): number {
    return this.waiters.size;
  }

  /** The platform's usable connection with the fewest open streams, or null. */
  pick(platform = DEFAULT_PLATFORM): AgentConnection | null {
    let best: AgentConnection | null = null;
    for (const conn of this.connections) {
      if (conn.platform !== platform || !conn.session.usable) continue;
      if (!best || conn.session.streamCount < best.session.streamCount) best = conn;
    }
    return best;
  }

  /**
   * Resolves with a usable connection, waiting up to `waitMs` for one to register or to free a
   * stream; then rejects with RELAY_ERR_TUNNEL_BUSY when the platform has live connections, all
   * at their stream limit, else RELAY_ERR_NO_AGENT.
   */
  acquire(waitMs: number, platform = DEFAULT_PLATFORM): Promise<AgentConnection> {
    const now = this.pick(platform);
    if (now) return Promise.resolve(now);
    if (waitMs <= 0) return Promise.reject(this.unavailable(platform));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(this.unavailable(platform));
      }, waitMs);
      const check = (): void => {
        const conn = this.pick(platform);
        if (!conn) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(conn);
      };
      this.waiters.add(check);
    });
  }

  /**
   * Streams one client may hold on the platform now: its share of the live connections'
   * capacity, at least 1 while any is live; Infinity without a share limit.
   */
  streamShare(platform = DEFAULT_PLATFORM): number {
    if (this.sharePercent === 0) return Infinity;
    let capacity = 0;
    for (const conn of this.connections) {
      // each connection carries what both ends agreed on (the agent may state a lower limit)
      if (conn.platform === platform && !conn.session.isClosed && !conn.session.draining) capacity += conn.session.maxStreams;
    }
    return Math.max(1, Math.floor((capacity * this.sharePercent) / 100));
  }

  /** Streams the client holds on the platform. */
  clientStreamCount(client: string, platform = DEFAULT_PLATFORM): number {
    return this.clientStreams.get(`${platform}\n${client}`) ?? 0;
  }

  /**
   * Opens a stream for `client` on the platform's least busy usable connection now, or returns
   * null when there is none or the client holds its share. `client` null: not counted (a
   * whitelisted address). Throws what `openStream` throws.
   */
  openStream(platform: string, client: string | null, meta: OpenMetadata): OpenedStream | null {
    if (client !== null && this.sharePercent > 0 && this.clientStreamCount(client, platform) >= this.streamShare(platform)) return null;
    const conn = this.pick(platform);
    if (!conn) return null;
    const stream = conn.session.openStream(meta);
    if (client !== null && this.sharePercent > 0) this.countStream(`${platform}\n${client}`, stream);
    return { conn, stream };
  }

  /**
   * {@link openStream}, waiting up to `waitMs` for a connection to register, to free a stream, or
   * for the client to close one of its own; then rejects as {@link acquire} does.
   */
  acquireStream(waitMs: number, platform: string, client: string | null, meta: OpenMetadata): Promise<OpenedStream> {
    try {
      const now = this.openStream(platform, client, meta);
      if (now) return Promise.resolve(now);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (waitMs <= 0) return Promise.reject(this.unavailable(platform));
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(this.unavailable(platform));
      }, waitMs);
      const check = (): void => {
        try {
          const opened = this.openStream(platform, client, meta);
          if (!opened) return;
          done();
          resolve(opened);
        } catch (err) {
          done();
          reject(err as Error);
        }
      };
      this.waiters.add(check);
    });
  }

  private countStream(key: string, stream: MuxStream): void {
    this.clientStreams.set(key, (this.clientStreams.get(key) ?? 0) + 1);
    stream.once('close', () => {
      const left = (this.clientStreams.get(key) ?? 1) - 1;
      if (left > 0) this.clientStreams.set(key, left);
      else this.clientStreams.delete(key);
      // a request of this client waiting past its share may go now
      this.wakeWaiters();
    });
  }

  /** Why no stream can be had for the platform: busy (all live connections full) or no agent. */
  private unavailable(platform: string): RelayError {
    for (const conn of this.connections) {
      if (conn.platform === platform && !conn.session.isClosed && !conn.session.draining) return new RelayError('RELAY_ERR_TUNNEL_BUSY');
    }
    return new RelayError('RELAY_ERR_NO_AGENT');
  }

  private wakeWaiters(): void {
    for (const check of [...this.waiters]) check();
  }

  /** Closes every connection (going away). */
  closeAll(code: number, reason: string): void {
    for (const conn of this.connections) conn.session.close(code, reason);
  }
}
