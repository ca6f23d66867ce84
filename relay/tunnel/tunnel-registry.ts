/**
 * The agent connections, by platform. A new stream for a platform goes to that platform's
 * usable connection with the fewest open streams; a request that finds none waits (bounded)
 * for one to register.
 */
import { EventEmitter } from 'node:events';
import { RelayError } from '../../shared/errors.js';
import type { MuxSession } from '../../shared/mux/session.js';
import { DEFAULT_PLATFORM } from './agent-credentials.js';

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
