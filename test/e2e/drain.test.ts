/**
 * Drains under load with the built executables (issue 12): a relay SIGTERM'd under 64 kept-alive
 * clients resets no connection (every client learns the end from `Connection: close`, then goes
 * to a second relay), and an agent SIGTERM'd with a second agent connected costs no request.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { startAgentProcess, startRelayProcess } from '../fixtures/processes.js';

interface LoadCounts {
  ok: number;
  /** ok responses that said `Connection: close` */
  closing: number;
  resets: number;
  epipe: number;
  hangups: number;
  refused: number;
  other: number;
  non2xx: Record<number, number>;
  /** ok responses per port */
  byPort: Record<number, number>;
}

/**
 * A bounded keep-alive load: `workers` loops of GETs through one http.Agent (maxSockets 64). A
 * refused connection (the drained relay stopped listening) moves that worker to the next port,
 * as a client would after a DNS failover or a restart; it is counted, never an error.
 */
function load(ports: number[], workers = 64): { stop: () => Promise<LoadCounts> } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const counts: LoadCounts = { ok: 0, closing: 0, resets: 0, epipe: 0, hangups: 0, refused: 0, other: 0, non2xx: {}, byPort: {} };
  let stopped = false;
  const one = (port: number): Promise<'ok' | 'refused' | 'error'> =>
    new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/hello', agent }, (res) => {
        res.resume();
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) {
            counts.ok++;
            counts.byPort[port] = (counts.byPort[port] ?? 0) + 1;
            if (res.headers.connection === 'close') counts.closing++;
          } else counts.non2xx[status] = (counts.non2xx[status] ?? 0) + 1;
          resolve('ok');
        });
        res.on('error', () => {
          counts.other++;
          resolve('error');
        });
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ECONNREFUSED') {
          counts.refused++;
          resolve('refused');
          return;
        }
        if (err.message === 'socket hang up') counts.hangups++;
        else if (err.code === 'ECONNRESET') counts.resets++;
        else if (err.code === 'EPIPE') counts.epipe++;
        else counts.other++;
        resolve('error');
      });
    });
  const loops = Array.from({ length: workers }, async () => {
    let at = 0;
    while (!stopped) {
      const outcome = await one(ports[at]!);
      if (outcome === 'refused') {
        if (at + 1 >= ports.length) return;
        at++;
      }
    }
  });
  return {
    async stop() {
      stopped = true;
      await Promise.all(loops);
      agent.destroy();
      return counts;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('drain under keep-alive load', () => {
  it('a relay SIGTERM under c=64 resets no client connection; clients go on on a second relay', async () => {
    const a = await startRelayProcess();
    const b = await startRelayProcess();
    await startAgentProcess(a.ports.tunnelPort, ['--sample-app']);
    await startAgentProcess(b.ports.tunnelPort, ['--sample-app']);
    const run = load([a.ports.httpPort, b.ports.httpPort]);
    await sleep(1_000);
    a.relay.child.kill('SIGTERM');
    const code = await a.relay.exited;
    await sleep(500);
    const counts = await run.stop();
    console.log('relay drain', JSON.stringify(counts));
    expect(code).toBe(0);
    expect({ resets: counts.resets, epipe: counts.epipe, hangups: counts.hangups, other: counts.other, non2xx: counts.non2xx }).toEqual({
      resets: 0,
      epipe: 0,
      hangups: 0,
      other: 0,
      non2xx: {},
    });
    // every busy client was told: a `Connection: close` answer, then a refused connect, then relay b
    expect(counts.closing).toBeGreaterThan(0);
    expect(counts.byPort[a.ports.httpPort]).toBeGreaterThan(0);
    expect(counts.byPort[b.ports.httpPort]).toBeGreaterThan(0);
  }, 20_000);

  it('an agent SIGTERM with a second agent connected costs no request, and its drain ends quickly', async () => {
    const r = await startRelayProcess();
    const first = await startAgentProcess(r.ports.tunnelPort, ['--sample-app']);
    await startAgentProcess(r.ports.tunnelPort, ['--sample-app']);
    const run = load([r.ports.httpPort]);
    await sleep(1_000);
    const t0 = performance.now();
    first.child.kill('SIGTERM');
    await first.waitFor((l) => l.event === 'agent_stopped', 5_000);
    const drainMs = performance.now() - t0;
    await sleep(500);
    const counts = await run.stop();
    console.log('agent drain', JSON.stringify({ ...counts, drainMs: Math.round(drainMs) }));
    expect({
      resets: counts.resets,
      epipe: counts.epipe,
      hangups: counts.hangups,
      refused: counts.refused,
      other: counts.other,
      non2xx: counts.non2xx,
    }).toEqual({ resets: 0, epipe: 0, hangups: 0, refused: 0, other: 0, non2xx: {} });
    expect(counts.ok).toBeGreaterThan(100);
    // the relay let go of the draining agent's streams after their responses: well within its 3 s
    expect(drainMs).toBeLessThan(2_000);
  }, 20_000);
});
