/**
 * What the edge turned away, counted by reason, with a hook for metrics (`relay_rejected_total`).
 * The edge calls `reject` once per refused connection or request; the counters only grow.
 */

/** Why the edge turned a mobile connection or request away. */
export const edgeRejectReasons = [
  /** the client address is on the blacklist and not on the whitelist (connection reset before TLS/HTTP) */
  'ip_blacklist',
  /** `--whitelist-only` and the address is not on the whitelist (connection reset before TLS/HTTP) */
  'ip_not_whitelisted',
  /** the address has `maxConnectionsPerIp` connections open, or the per-IP table is full */
  'per_ip_connections',
  /** the relay has `maxConnections` mobile connections open (connection reset before TLS/HTTP) */
  'max_connections',
  /** the address used up its request bucket (429) */
  'per_ip_rate',
  /** a request the strict parser or the edge's checks refused (400, 417, 501, 505) */
  'bad_request',
  /** request head over `maxHeaderBytes` (431) */
  'headers_too_large',
  /** request head or request not received in time (408) */
  'request_timeout',
  /** request body slower than `minBodyBytesPerSecond` after the grace (408 body_too_slow) */
  'body_too_slow',
  /** request body over `maxBodyBytes` (413) */
  'body_too_large',
  /** every tunnel connection is at its stream limit (503 tunnel_busy) */
  'tunnel_streams',
  /** no agent connected within `connectWaitMs` (503 no_agent) */
  'no_agent',
  /** the relay is shutting down (503 draining) */
  'draining',
  /**
   * PROXY protocol (`--proxy-protocol-from`): a listed balancer sent no valid header in time, or
   * an address not listed sent one (closed, nothing answered)
   */
  'proxy_protocol',
] as const;

export type EdgeRejectReason = (typeof edgeRejectReasons)[number];

export type EdgeRejectListener = (reason: EdgeRejectReason) => void;

export class EdgeStats {
  private readonly counts = Object.fromEntries(edgeRejectReasons.map((reason) => [reason, 0])) as Record<EdgeRejectReason, number>;
  private readonly listeners = new Set<EdgeRejectListener>();

  /** Counts one refusal and tells the listeners. A listener that throws does not stop the others. */
  reject(reason: EdgeRejectReason): void {
    this.counts[reason]++;
    for (const listener of this.listeners) {
      try {
        listener(reason);
      } catch {
        // a metrics hook must never break the edge
      }
    }
  }

  /** Calls `listener` on every refusal from now on; returns a function that removes it. */
  onReject(listener: EdgeRejectListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Refusals so far, by reason (a copy). */
  get rejected(): Readonly<Record<EdgeRejectReason, number>> {
    return { ...this.counts };
  }
}
