/**
 * Per-client-address limits of the edge: concurrent connections, and requests per second as a
 * token bucket. Pure bookkeeping (no sockets); the mobile listeners call it. Addresses are given
 * in canonical form (`canonicalIp`), so that `::ffff:10.1.2.3` and `10.1.2.3` are one client.
 *
 * A client is an IPv4 address or an IPv6 /64: a mobile network gives each device a /64 (RFC
 * 7278) and any host on a LAN holds as many addresses of its /64 as it likes, so counting IPv6
 * addresses one by one would let one client spread over millions of "clients" — and fill the
 * table, which then refuses everyone new.
 *
 * Memory is bounded: an address is tracked only while it has a connection open or a bucket that
 * is not full again, and at most `maxTrackedIps` addresses are tracked at once.
 */
import { systemClock, type Clock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';

export interface ClientLimitsOptions {
  /** Concurrent connections per address; 0 = no limit. */
  maxConnectionsPerIp: number;
  /** Token bucket rate, requests per second per address; 0 = no limit. */
  maxRequestsPerSecondPerIp: number;
  /** Token bucket size; 0 = twice the rate. */
  requestBurstPerIp: number;
  /** Addresses tracked at once; past it connections from new addresses are refused. */
  maxTrackedIps: number;
  /** Refused connections of one address allowed to linger for their 503 (default 8). */
  maxLingeringRefusalsPerIp?: number;
  /** How often idle addresses are forgotten, ms (default 10 s). */
  sweepIntervalMs?: number;
  clock?: Clock;
}

/** Whether a new connection may proceed: `ok` (then it is counted), or why not. */
export type ConnectionVerdict = 'ok' | 'per_ip_connections' | 'table_full';

interface ClientEntry {
  connections: number;
  /** Refused connections still lingering (reading and discarding) until their 503 is read. */
  refusals: number;
  tokens: number;
  refilledAt: number;
}

export class ClientLimits {
  /** True when any per-address limit is on; when false nothing is tracked. */
  readonly enabled: boolean;
  private readonly maxConnections: number;
  private readonly ratePerMs: number;
  private readonly burst: number;
  private readonly maxTracked: number;
  private readonly maxRefusals: number;
  private readonly clock: Clock;
  private readonly entries = new Map<string, ClientEntry>();
  private readonly sweepTimer: NodeJS.Timeout | undefined;
  /** When the table was last swept because it was full (a full sweep is O(n): at most one a second). */
  private fullSweepAt = Number.NEGATIVE_INFINITY;

  constructor(options: ClientLimitsOptions) {
    this.maxConnections = options.maxConnectionsPerIp;
    const rate = options.maxRequestsPerSecondPerIp;
    this.ratePerMs = rate / 1000;
    this.burst = rate > 0 ? options.requestBurstPerIp || Math.max(1, 2 * rate) : 0;
    this.maxTracked = options.maxTrackedIps;
    this.maxRefusals = options.maxLingeringRefusalsPerIp ?? defaults.maxLingeringRefusalsPerIp;
    this.clock = options.clock ?? systemClock;
    this.enabled = this.maxConnections > 0 || rate > 0;
    // Only a rate limit leaves entries behind when the last connection closes (a bucket that is
    // not yet full again); they are swept here.
    if (rate > 0) {
      this.sweepTimer = setInterval(() => this.sweep(), options.sweepIntervalMs ?? defaults.perIpSweepIntervalMs);
      this.sweepTimer.unref();
    }
  }

  /** True when requests are rate limited. */
  get rateLimited(): boolean {
    return this.ratePerMs > 0;
  }

  /** Addresses tracked now. */
  get size(): number {
    return this.entries.size;
  }

  /** Open connections counted for the client of `ip`. */
  connectionsOf(ip: string): number {
    return this.entries.get(clientKey(ip))?.connections ?? 0;
  }

  /**
   * A new connection from `ip`. On `ok` it is counted and the caller must call
   * {@link closeConnection} once it closes; otherwise nothing is counted.
   */
  openConnection(ip: string): ConnectionVerdict {
    const key = clientKey(ip);
    let entry = this.entries.get(key);
    if (entry === undefined) {
      if (this.entries.size >= this.maxTracked && !this.sweepWhenFull()) return 'table_full';
      entry = { connections: 0, refusals: 0, tokens: this.burst, refilledAt: this.clock.now() };
      this.entries.set(key, entry);
    }
    if (this.maxConnections > 0 && entry.connections >= this.maxConnections) return 'per_ip_connections';
    entry.connections++;
    return 'ok';
  }

  closeConnection(ip: string): void {
    const key = clientKey(ip);
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    entry.connections = Math.max(0, entry.connections - 1);
    this.forgetIfIdle(key, entry);
  }

  /**
   * A refused connection from `ip` may linger (to deliver its 503) if fewer than
   * `maxLingeringRefusalsPerIp` already do; the caller then calls {@link endRefusal} on close.
   */
  beginRefusal(ip: string): boolean {
    const entry = this.entries.get(clientKey(ip));
    if (entry === undefined || entry.refusals >= this.maxRefusals) return false;
    entry.refusals++;
    return true;
  }

  endRefusal(ip: string): void {
    const key = clientKey(ip);
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    entry.refusals = Math.max(0, entry.refusals - 1);
    this.forgetIfIdle(key, entry);
  }

  /**
   * Takes one request token for `ip`: 0 when the request may proceed, else the whole seconds until
   * a token is back (for Retry-After). An address that is not tracked (its connection was exempt
   * when it opened) is not limited.
   */
  takeRequest(ip: string): number {
    if (this.ratePerMs === 0) return 0;
    const entry = this.entries.get(clientKey(ip));
    if (entry === undefined) return 0;
    this.refill(entry, this.clock.now());
    if (entry.tokens >= 1) {
      entry.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - entry.tokens) / this.ratePerMs / 1000));
  }

  /** Forgets every address with no connection and a full bucket; returns how many. */
  sweep(): number {
    const now = this.clock.now();
    let removed = 0;
    for (const [key, entry] of this.entries) {
      if (this.idle(entry, now)) {
        this.entries.delete(key);
        removed++;
      }
    }
    return removed;
  }

  /** Stops the sweep timer. Idempotent. */
  close(): void {
    clearInterval(this.sweepTimer);
  }

  private sweepWhenFull(): boolean {
    const now = this.clock.now();
    if (now - this.fullSweepAt < 1_000) return false;
    this.fullSweepAt = now;
    return this.sweep() > 0;
  }

  private forgetIfIdle(key: string, entry: ClientEntry): void {
    if (this.idle(entry, this.clock.now())) this.entries.delete(key);
  }

  private idle(entry: ClientEntry, now: number): boolean {
    if (entry.connections > 0 || entry.refusals > 0) return false;
    if (this.ratePerMs === 0) return true;
    this.refill(entry, now);
    return entry.tokens >= this.burst;
  }

  private refill(entry: ClientEntry, now: number): void {
    const elapsed = now - entry.refilledAt;
    if (elapsed > 0) {
      entry.tokens = Math.min(this.burst, entry.tokens + elapsed * this.ratePerMs);
      entry.refilledAt = now;
    }
  }
}

/**
 * The client a canonical address belongs to for the per-IP limits: an IPv4 address as is, an
 * IPv6 address as its /64 (`2001:db8:0:1::/64`).
 */
export function clientKey(ip: string): string {
  if (!ip.includes(':')) return ip;
  const gap = ip.indexOf('::');
  let groups: string[];
  if (gap === -1) {
    groups = ip.split(':');
  } else {
    const head = gap === 0 ? [] : ip.slice(0, gap).split(':');
    const tail = gap + 2 === ip.length ? [] : ip.slice(gap + 2).split(':');
    // a dotted-quad tail (`::1.2.3.4`) stands for two groups
    const tailGroups = tail.reduce((n, group) => n + (group.includes('.') ? 2 : 1), 0);
    groups = [...head, ...new Array<string>(Math.max(0, 8 - head.length - tailGroups)).fill('0'), ...tail];
  }
  return `${groups
    .slice(0, 4)
    .map((group) => (parseInt(group, 16) || 0).toString(16))
    .join(':')}::/64`;
}
