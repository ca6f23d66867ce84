/**
 * Reconnect delays: exponential backoff with full jitter (AWS architecture blog, "Exponential
 * Backoff And Jitter"): attempt n waits a random time up to min(max, min * 2^n), never less than
 * `minMs`. A connection that stayed up for `stableMs` resets the attempt count.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  stableMs: number;
  /** Uniform in [0, 1); injectable for tests. */
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly options: Required<BackoffOptions>;

  constructor(options: BackoffOptions) {
    this.options = { random: Math.random, ...options };
  }

  /** The delay before the next attempt, in ms. */
  next(): number {
    const { minMs, maxMs, random } = this.options;
    const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.max(minMs, Math.floor(random() * ceiling));
  }

  /** Call when a connection ends: resets the count if it had been up for `stableMs`. */
  connectionEnded(upMs: number): void {
    if (upMs >= this.options.stableMs) this.attempt = 0;
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
