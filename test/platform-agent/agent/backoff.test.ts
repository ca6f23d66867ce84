import { describe, expect, it } from 'vitest';
import { Backoff, PLANNED_JITTER_MS } from '../../../platform-agent/agent/backoff.js';

const top = (): number => 0.999999;

describe('reconnect backoff', () => {
  it('grows the ceiling exponentially from min to max with full jitter', () => {
    const b = new Backoff({ minMs: 250, maxMs: 30_000, stableMs: 10_000, random: top });
    const delays = Array.from({ length: 10 }, () => b.next());
    expect(delays.slice(0, 8)).toEqual([249, 499, 999, 1999, 3999, 7999, 15999, 29999].map((d) => Math.max(250, d)));
    expect(delays[9]).toBe(29999); // capped at max
  });

  it('never waits less than min, even when the jitter draws zero', () => {
    const low = new Backoff({ minMs: 250, maxMs: 30_000, stableMs: 10_000, random: () => 0 });
    for (let i = 0; i < 20; i++) expect(low.next()).toBe(250);
    for (let i = 0; i < 20; i++) expect(low.next('unreachable')).toBe(250);
  });

  it('keeps a relay that does not answer under the low unreachable ceiling, one that refuses under the long one', () => {
    const b = new Backoff({ minMs: 250, maxMs: 30_000, unreachableMaxMs: 500, stableMs: 500, random: top });
    const unreachable = Array.from({ length: 50 }, () => b.next('unreachable'));
    expect(Math.max(...unreachable)).toBe(499);
    expect(b.attempts).toBe(50);
    // the relay answered and refused: the long backoff, from the same attempt count
    expect(b.next('refused')).toBe(29999);
    const fresh = new Backoff({ minMs: 250, maxMs: 30_000, unreachableMaxMs: 500, stableMs: 500, random: top });
    expect([fresh.next('refused'), fresh.next('refused'), fresh.next('refused')]).toEqual([250, 499, 999]);
  });

  it('caps the unreachable ceiling by max', () => {
    const b = new Backoff({ minMs: 20, maxMs: 100, unreachableMaxMs: 500, stableMs: 500, random: top });
    for (let i = 0; i < 10; i++) expect(b.next('unreachable')).toBeLessThan(100);
  });

  it('a completed handshake resets the attempt count', () => {
    const b = new Backoff({ minMs: 250, maxMs: 30_000, stableMs: 500, random: top });
    for (let i = 0; i < 6; i++) b.next();
    expect(b.attempts).toBe(6);
    b.connected();
    expect(b.attempts).toBe(0);
    // an unplanned drop of a connection that lived past the stable period: min, then growing from there
    expect(b.connectionEnded(5_000)).toBe(250);
    expect(b.next('refused')).toBe(499);
  });

  it('a planned close (GOAWAY, 1001) reconnects at once with 0–100 ms of jitter and resets the count', () => {
    const draws: number[] = [];
    const b = new Backoff({ minMs: 250, maxMs: 30_000, stableMs: 500, random: () => draws.shift() ?? 0 });
    for (let i = 0; i < 5; i++) b.next();
    draws.push(0, 0.5, 0.999999);
    b.connected();
    expect(PLANNED_JITTER_MS).toBe(100);
    expect(b.connectionEnded(60_000, true)).toBe(0);
    expect(b.attempts).toBe(0);
    b.connected();
    expect(b.connectionEnded(60_000, true)).toBe(50);
    b.connected();
    expect(b.connectionEnded(60_000, true)).toBe(99);
  });

  it('connections dropped right after the upgrade back off, so a relay that accepts and drops is no hot loop', () => {
    const b = new Backoff({ minMs: 100, maxMs: 10_000, stableMs: 500, random: top });
    const delays: number[] = [];
    for (let i = 0; i < 8; i++) {
      b.connected();
      delays.push(b.connectionEnded(10));
    }
    expect(delays).toEqual([199, 399, 799, 1599, 3199, 6399, 9999, 9999]);
    // one connection that lived past the stable period resets it
    b.connected();
    expect(b.connectionEnded(500)).toBe(100);
  });

  it('a planned close right after the upgrade gets the jitter once, then counts as a short connection', () => {
    const b = new Backoff({ minMs: 100, maxMs: 10_000, stableMs: 500, random: top });
    b.connected();
    expect(b.connectionEnded(10, true)).toBe(99);
    b.connected();
    expect(b.connectionEnded(10, true)).toBe(399);
    b.connected();
    expect(b.connectionEnded(10, true)).toBe(799);
    b.connected();
    expect(b.connectionEnded(600, true)).toBe(99); // a stable one: planned again
  });
});
