import { describe, expect, it } from 'vitest';
import { Backoff } from '../../platform-agent/tunnel/backoff.js';

describe('reconnect backoff', () => {
  it('grows the ceiling exponentially from min to max with full jitter', () => {
    const top = new Backoff({ minMs: 250, maxMs: 30_000, stableMs: 10_000, random: () => 0.999999 });
    const delays = Array.from({ length: 10 }, () => top.next());
    expect(delays.slice(0, 8)).toEqual([249, 499, 999, 1999, 3999, 7999, 15999, 29999].map((d) => Math.max(250, d)));
    expect(delays[9]).toBe(29999); // capped at max
  });

  it('never waits less than min, even when the jitter draws zero', () => {
    const low = new Backoff({ minMs: 250, maxMs: 30_000, stableMs: 10_000, random: () => 0 });
    for (let i = 0; i < 20; i++) expect(low.next()).toBe(250);
  });

  it('resets after a connection that stayed up for the stable period, not after a short one', () => {
    const b = new Backoff({ minMs: 100, maxMs: 10_000, stableMs: 5_000, random: () => 0.999999 });
    b.next();
    b.next();
    b.next();
    b.connectionEnded(4_999);
    expect(b.attempts).toBe(3);
    b.connectionEnded(5_000);
    expect(b.attempts).toBe(0);
    expect(b.next()).toBe(100);
  });
});
