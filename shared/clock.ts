/**
 * Time as the security rules see it. Everything time-dependent (token expiry, lockout windows,
 * rate limits, session idle timeouts) reads a `Clock`, so tests move time instead of sleeping.
 */

export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

export const systemClock: Clock = Object.freeze({ now: () => Date.now() });

/** A clock that only moves when told to (tests, simulations). */
export class ManualClock implements Clock {
  private ms: number;

  constructor(start: number | Date = Date.UTC(2026, 10, 23, 12, 0, 0)) {
    this.ms = typeof start === 'number' ? start : start.getTime();
  }

  now(): number {
    return this.ms;
  }

  /** Moves the clock forward by `ms` milliseconds. */
  advance(ms: number): this {
    if (!(ms >= 0)) throw new RangeError(`ManualClock.advance: ${ms} is not a non-negative number`);
    this.ms += ms;
    return this;
  }

  set(to: number | Date): this {
    this.ms = typeof to === 'number' ? to : to.getTime();
    return this;
  }
}

export const MINUTE_MS = 60_000;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;
