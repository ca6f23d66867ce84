/**
 * Reconnecting after relay restarts (issue 12), with the built executables: a storm of relay
 * restarts on one port, by SIGTERM (the relay says it is going away: 1001) and by SIGKILL (the
 * agent sees a reset, then refused connections); after the last start every agent connection
 * must be back within a second of the relay's `relay_started` line. And a relay that refuses
 * the token is not retried in a hot loop.
 */
import { describe, expect, it } from 'vitest';
import { TOKEN } from '../fixtures/harness.js';
import { agentProcess, startRelayProcess, type Proc } from '../fixtures/processes.js';
import { freePort } from '../fixtures/ports.js';

const CONNECTIONS = 2;
/** Relay ready → all agent connections back. The target is 1 s; the old backoff took 7–27 s. */
const BACK_WITHIN_MS = 1_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const startRelay = (tunnelPort: number, token = TOKEN): Promise<{ relay: Proc; startedAt: number }> =>
  startRelayProcess([], { tunnelPort, token, drainMs: 300 });

const startAgent = (tunnelPort: number): Proc => agentProcess(tunnelPort, ['--sample-app'], { connections: CONNECTIONS, drainMs: 500 });

const connectedLines = (agent: Proc): Record<string, unknown>[] => agent.lines.filter((l) => l.event === 'tunnel_connected');

/** Waits for `CONNECTIONS` new tunnel_connected lines after `seen`, and returns the time of the last one. */
async function allBack(agent: Proc, seen: number, timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (connectedLines(agent).length < seen + CONNECTIONS) {
    if (Date.now() > deadline) throw new Error(`agent not back within ${timeoutMs} ms`);
    await sleep(20);
  }
  const fresh = connectedLines(agent).slice(seen, seen + CONNECTIONS);
  return Math.max(...fresh.map((l) => Number(l.time)));
}

async function storm(signal: 'SIGTERM' | 'SIGKILL'): Promise<number[]> {
  const port = await freePort();
  let { relay } = await startRelay(port);
  const agent = startAgent(port);
  await allBack(agent, 0);
  const lags: number[] = [];
  for (let i = 0; i < 5; i++) {
    await sleep(1_000 + (i % 2) * 500);
    relay.child.kill(signal);
    await relay.exited;
    const before = connectedLines(agent).length;
    const next = await startRelay(port);
    relay = next.relay;
    lags.push((await allBack(agent, before)) - next.startedAt);
  }
  return lags;
}

describe('reconnect after relay restarts', () => {
  it(`after a storm of SIGTERM restarts every connection is back within ${BACK_WITHIN_MS} ms of the relay being ready`, async () => {
    const lags = await storm('SIGTERM');
    console.log(`SIGTERM storm: agent back ${lags.join(', ')} ms after relay_started`);
    expect(Math.max(...lags)).toBeLessThanOrEqual(BACK_WITHIN_MS);
  }, 45_000); // 5 restarts with 1-1.5 s between them, on a busy 2-core machine (the bound asserted is the lag above)

  it(`after a storm of SIGKILL restarts every connection is back within ${BACK_WITHIN_MS} ms of the relay being ready`, async () => {
    const lags = await storm('SIGKILL');
    console.log(`SIGKILL storm: agent back ${lags.join(', ')} ms after relay_started`);
    expect(Math.max(...lags)).toBeLessThanOrEqual(BACK_WITHIN_MS);
  }, 45_000); // 5 restarts with 1-1.5 s between them, on a busy 2-core machine (the bound asserted is the lag above)

  it('a relay that refuses the token is retried with backoff, not in a hot loop, and not logged per retry', async () => {
    const port = await freePort();
    const { relay } = await startRelay(port, 'some-other-token-0123456789');
    const agent = agentProcess(port, ['--sample-app']);
    await agent.waitFor((l) => l.event === 'tunnel_auth_rejected');
    await sleep(3_000);
    const refusals = relay.lines.filter((l) => l.event === 'tunnel_auth_failed' || l.event === 'tunnel_auth_limited').length;
    // 250, 500, 1000, 2000 ms ceilings: a handful of attempts in 3 s, never dozens
    expect(refusals).toBeGreaterThanOrEqual(2);
    expect(refusals).toBeLessThanOrEqual(8);
    const warnRetries = agent.lines.filter((l) => l.event === 'tunnel_retry' && Number(l.level) >= 40).length;
    expect(warnRetries).toBe(1);
  }, 15_000);
});
