/**
 * Reconnect delays. Failed attempts wait with exponential backoff and full jitter (AWS
 * architecture blog, "Exponential Backoff And Jitter"): attempt n waits a random time up to
 * min(ceiling, min * 2^n), never less than `minMs`. The ceiling depends on why it failed:
 *
 * - `unreachable` (refused, reset, connect timeout: nobody answered): `unreachableMaxMs`, low,
 *   because a refused SYN costs the relay nothing and a restarting relay should see its agents
 *   back within a second of listening;
 * - `refused` (the relay answered and said no: HTTP 401/429/5xx at the upgrade, a failed
 *   certificate check): `maxMs`, the long backoff.
 *
 * A connection that completed its handshake resets the attempt count. When it ends:
 *
 * - planned (the relay sent GOAWAY or closed with 1001): reconnect at once, after a uniform
 *   0–`plannedJitterMs` ms jitter (so that all agents of a restarted relay do not arrive in the
 *   same millisecond);
 * - unplanned after `stableMs` or more: reconnect after `minMs`;
 * - within `stableMs` of the upgrade (a relay that accepts and then drops, again and again):
 *   each such short connection in a row doubles the ceiling, up to `maxMs`. A planned close
 *   that comes that early more than once in a row counts the same, so nothing loops hot.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  stableMs: number;
  /** Ceiling for attempts where the relay did not answer; defaults to `maxMs` (capped by it). */
  unreachableMaxMs?: number;
  /** Jitter before reconnecting after a planned close; default {@link PLANNED_JITTER_MS}. */
  plannedJitterMs?: number;
  /** Uniform in [0, 1); injectable for tests. */
  random?: () => number;
}

/** Largest wait before reconnecting after the relay said it was going away. */
export const PLANNED_JITTER_MS = 100;

export type FailureKind = 'unreachable' | 'refused';

export class Backoff {
  private attempt = 0;
  /** Connections in a row that ended within `stableMs` of their upgrade. */
  private shortLived = 0;
  private readonly options: Required<BackoffOptions>;

  constructor(options: BackoffOptions) {
    this.options = {
      random: Math.random,
      unreachableMaxMs: options.maxMs,
      plannedJitterMs: PLANNED_JITTER_MS,
      ...options,
    };
  }

  /** The delay before the next attempt after a failed one, in ms (the long backoff by default). */
  next(kind: FailureKind = 'refused'): number {
    const { maxMs, unreachableMaxMs } = this.options;
    return this.delay(kind === 'unreachable' ? Math.min(maxMs, unreachableMaxMs) : maxMs);
  }

  /** The handshake completed: the attempt count starts again. */
  connected(): void {
    this.attempt = 0;
  }

  /** A connection that had completed its handshake ended after `upMs`: the delay before reconnecting, in ms. */
  connectionEnded(upMs: number, planned = false): number {
    if (upMs >= this.options.stableMs) this.shortLived = 0;
    else this.shortLived++;
    if (planned && this.shortLived <= 1) {
      this.attempt = 0;
      return Math.floor(this.options.random() * this.options.plannedJitterMs);
    }
    this.attempt = this.shortLived;
    return this.delay(this.options.maxMs);
  }

  reset(): void {
    this.attempt = 0;
    this.shortLived = 0;
  }

  get attempts(): number {
    return this.attempt;
  }

  private delay(maxMs: number): number {
    const { minMs, random } = this.options;
    const ceiling = Math.max(minMs, Math.min(maxMs, minMs * 2 ** Math.min(this.attempt, 30)));
    this.attempt++;
    return Math.max(minMs, Math.floor(random() * ceiling));
  }
}
