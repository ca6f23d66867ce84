/**
 * The relay's Prometheus metrics (`prom-client`), in a registry of their own: the process can
 * embed other code that uses prom-client's global registry without the two mixing.
 *
 * Label values are bounded: a status is its class (`2xx`), a platform is one of the configured
 * ids (anything else is `unknown`), a rejection reason is one of `rejectReasons`. A value that
 * comes from the network never becomes a label as such, so a client cannot grow the series.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { daysUntil } from '../../shared/certs.js';
import { systemClock, type Clock } from '../../shared/clock.js';
import { edgeRejectReasons, type EdgeRejectReason } from '../edge/edge-stats.js';

/** Why the edge turned a mobile connection or request away: the edge's own list (edge-stats.ts). */
export const rejectReasons = edgeRejectReasons;
export type RejectReason = EdgeRejectReason;

/** Why an agent's tunnel upgrade was refused. */
export const tunnelAuthFailureReasons = ['bad_token', 'bad_certificate', 'rate_limited'] as const;
export type TunnelAuthFailureReason = (typeof tunnelAuthFailureReasons)[number];

/** The platform label of anything that is not a configured platform id. */
export const UNKNOWN_PLATFORM = 'unknown';

export interface RelayMetricsOptions {
  /** Configured platform ids: the only values the `platform` label takes besides `unknown`. */
  platforms: readonly string[];
  /** Node process metrics (CPU, memory, event loop lag, GC…) prefixed `relay_`; default true. */
  processMetrics?: boolean;
  /** Reads the time for certificate expiry; default the system clock. */
  clock?: Clock;
}

/** What `setTunnelGauges` needs of one agent connection (`AgentStatus` fits). */
export interface TunnelGaugeSample {
  platform: string;
  streams: number;
}

// Latency buckets, seconds: a request through the tunnel costs ~0.5 ms on loopback and up to
// seconds for a slow platform; a tunnel round trip is a LAN round trip plus event-loop delay.
const requestBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const rttBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

const statusClasses = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
const rejectReasonSet: ReadonlySet<string> = new Set(rejectReasons);

/** `204` → `2xx`; anything outside 100–599 → `other`. */
export function statusClass(status: number): string {
  return Number.isInteger(status) && status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other';
}

/**
 * Every metric the relay exposes, with one small method per event. The hot path calls only
 * counter increments and histogram observations (no allocation beyond prom-client's label lookup).
 */
export class RelayMetrics {
  readonly registry = new Registry();
  private platforms: ReadonlySet<string> = new Set();
  private readonly clock: Clock;
  /** notAfter of each certificate, by name; days left are computed at each scrape. */
  private readonly certificates = new Map<string, Date>();

  private readonly requests = new Counter({
    name: 'relay_requests_total',
    help: 'Mobile requests answered, by platform and status class (2xx…5xx)',
    labelNames: ['platform', 'status'] as const,
    registers: [this.registry],
  });
  private readonly requestDuration = new Histogram({
    name: 'relay_request_duration_seconds',
    help: 'Time from a mobile request arriving to its response ending, by platform',
    labelNames: ['platform'] as const,
    buckets: requestBuckets,
    registers: [this.registry],
  });
  private readonly bytesReceived = new Counter({
    name: 'relay_bytes_received_total',
    help: 'Bytes received from mobile clients (HTTP heads and bodies, without TLS overhead), by platform',
    labelNames: ['platform'] as const,
    registers: [this.registry],
  });
  private readonly bytesSent = new Counter({
    name: 'relay_bytes_sent_total',
    help: 'Bytes sent to mobile clients (HTTP heads and bodies, without TLS overhead), by platform',
    labelNames: ['platform'] as const,
    registers: [this.registry],
  });
  private readonly openStreams = new Gauge({
    name: 'relay_open_streams',
    help: 'Open tunnel streams (one per forwarded mobile connection), by platform',
    labelNames: ['platform'] as const,
    registers: [this.registry],
  });
  private readonly tunnelConnections = new Gauge({
    name: 'relay_tunnel_connections',
    help: 'Agent tunnel connections currently open, by platform',
    labelNames: ['platform'] as const,
    registers: [this.registry],
  });
  private readonly tunnelRtt = new Histogram({
    name: 'relay_tunnel_rtt_seconds',
    help: 'Round trip of a WebSocket ping on an agent tunnel connection, by platform',
    labelNames: ['platform'] as const,
    buckets: rttBuckets,
    registers: [this.registry],
  });
  private readonly tunnelConnects = new Counter({
    name: 'relay_tunnel_connects_total',
    help: 'Agent tunnel connections accepted (first connects and reconnects), by platform',
    labelNames: ['platform'] as const,
    registers: [this.registry],
  });
  private readonly tunnelAuthFailures = new Counter({
    name: 'relay_tunnel_auth_failures_total',
    help: 'Agent tunnel upgrades refused, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly rejected = new Counter({
    name: 'relay_rejected_total',
    help: 'Mobile connections or requests turned away by IP rules and limits, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly certificateDaysLeft = new Gauge({
    name: 'relay_certificate_days_left',
    help: 'Days until a certificate the relay uses expires (negative once expired), by certificate',
    labelNames: ['certificate'] as const,
    registers: [this.registry],
    // computed when scraped, so the value falls day by day without a timer or a reload
    collect: () => {
      for (const [certificate, notAfter] of this.certificates) {
        this.certificateDaysLeft.set({ certificate }, daysUntil(notAfter, this.clock.now()));
      }
    },
  });

  constructor(options: RelayMetricsOptions) {
    this.clock = options.clock ?? systemClock;
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'relay_' });
    this.setPlatforms(options.platforms);
    // Series that exist from the start, so that rate() and alerts see a 0 before the first event.
    for (const reason of rejectReasons) this.rejected.inc({ reason }, 0);
    for (const reason of tunnelAuthFailureReasons) this.tunnelAuthFailures.inc({ reason }, 0);
  }

  /** Replaces the configured platform ids (on a reload); series of removed ids are dropped. */
  setPlatforms(ids: readonly string[]): void {
    const next = new Set(ids);
    for (const old of this.platforms) {
      if (next.has(old)) continue;
      for (const metric of [this.requestDuration, this.bytesReceived, this.bytesSent, this.openStreams, this.tunnelConnections]) {
        metric.remove({ platform: old });
      }
      this.tunnelRtt.remove({ platform: old });
      this.tunnelConnects.remove({ platform: old });
      for (const status of [...statusClasses, 'other']) this.requests.remove({ platform: old, status });
    }
    this.platforms = next;
    for (const platform of next) {
      this.tunnelConnections.set({ platform }, 0);
      this.openStreams.set({ platform }, 0);
      this.tunnelConnects.inc({ platform }, 0);
    }
  }

  /** The label for a platform id: itself when configured, else `unknown`. */
  platformLabel(id: string | undefined): string {
    return id !== undefined && this.platforms.has(id) ? id : UNKNOWN_PLATFORM;
  }

  /** A mobile request ended (response finished or aborted) with `status` after `durationMs`. */
  recordRequest(platform: string | undefined, status: number, durationMs: number): void {
    const label = this.platformLabel(platform);
    this.requests.inc({ platform: label, status: statusClass(status) });
    this.requestDuration.observe({ platform: label }, Math.max(0, durationMs) / 1000);
  }

  /** Bytes read from and written to mobile clients since the last call for that connection. */
  recordBytes(platform: string | undefined, received: number, sent: number): void {
    const label = this.platformLabel(platform);
    if (received > 0) this.bytesReceived.inc({ platform: label }, received);
    if (sent > 0) this.bytesSent.inc({ platform: label }, sent);
  }

  /** One ping round trip on an agent connection (MuxSession's 'rtt' event, milliseconds). */
  observeRtt(platform: string | undefined, ms: number): void {
    if (Number.isFinite(ms) && ms >= 0) this.tunnelRtt.observe({ platform: this.platformLabel(platform) }, ms / 1000);
  }

  /** An agent tunnel connection was accepted and registered. */
  tunnelConnected(platform: string | undefined): void {
    this.tunnelConnects.inc({ platform: this.platformLabel(platform) });
  }

  /** An agent's tunnel upgrade was refused. */
  tunnelAuthFailed(reason: TunnelAuthFailureReason): void {
    this.tunnelAuthFailures.inc({ reason });
  }

  /** The edge turned a connection or request away. */
  reject(reason: RejectReason): void {
    // the type already bounds it; the check keeps an untyped caller from adding series
    if (rejectReasonSet.has(reason)) this.rejected.inc({ reason });
  }

  /**
   * Sets the open-streams and tunnel-connection gauges from the current connections (the admin
   * server calls this with its status source before each scrape, so the gauges never drift).
   * Configured platforms with no connection read 0.
   */
  setTunnelGauges(connections: Iterable<TunnelGaugeSample>): void {
    const streams = new Map<string, number>();
    const count = new Map<string, number>();
    for (const platform of this.platforms) {
      streams.set(platform, 0);
      count.set(platform, 0);
    }
    for (const conn of connections) {
      const label = this.platformLabel(conn.platform);
      streams.set(label, (streams.get(label) ?? 0) + conn.streams);
      count.set(label, (count.get(label) ?? 0) + 1);
    }
    this.openStreams.reset();
    this.tunnelConnections.reset();
    for (const [platform, n] of streams) this.openStreams.set({ platform }, n);
    for (const [platform, n] of count) this.tunnelConnections.set({ platform }, n);
  }

  /**
   * Tracks a certificate's expiry: `relay_certificate_days_left{certificate=name}` reads the whole
   * days left at each scrape (rounded down; negative once expired). Call again after a reload.
   * `name` is fixed by the caller (`relay`, `agent_ca`…), never taken from the certificate.
   * Returns the days left now.
   */
  setCertificateExpiry(name: string, notAfter: Date): number {
    this.certificates.set(name, notAfter);
    const days = daysUntil(notAfter, this.clock.now());
    this.certificateDaysLeft.set({ certificate: name }, days);
    return days;
  }

  /** The metrics in Prometheus text format (version 0.0.4). */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
