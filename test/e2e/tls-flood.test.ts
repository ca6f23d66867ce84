/**
 * Memory of the relay under repeated floods of idle TLS connections (issue 11): a child relay
 * process (the built CLI), 3 cycles of 2,000 TLS connections that complete their handshake and
 * send nothing, held, then closed. The relay's RSS must level off: what a flood leaves behind is
 * reused by the next one (the growth is native, OpenSSL state in glibc's heap, and converges).
 * Measured here: 84 MiB at start, about 150 / 172 / 185 MiB after each cycle. The full-size reproduction is
 * `node dist/test/bench/tls-flood.js` (7 × 9,900; figures in README "Memory under floods").
 */
import { describe, expect, it } from 'vitest';
import { flood, floodDefaults } from '../bench/tls-flood.js';

/** RSS the relay may hold after a flood has closed, MiB, whatever the cycle. */
const CEILING_MIB = 320;
/** What the last cycle may add to the first one's RSS, MiB: it levels off. */
const GROWTH_MIB = 48;

describe('floods of idle TLS connections', () => {
  it('leave the relay RSS level under a ceiling, cycle after cycle', { timeout: 240_000 }, async () => {
    const lines: string[] = [];
    const result = await flood({ ...floodDefaults, cycles: 3, connections: 2_000, holdMs: 1_000, settleMs: 2_000 }, (l) => lines.push(l));
    const report = lines.join('\n');
    console.log(report);
    // every connection was opened and held: the flood was real
    expect(result.opened, report).toEqual([2_000, 2_000, 2_000]);
    for (const rss of result.rssMiB) expect(rss, report).toBeLessThan(CEILING_MIB);
    expect(result.rssMiB[2]! - result.rssMiB[0]!, report).toBeLessThan(GROWTH_MIB);
  });
});
