/**
 * Operating the built relay: certificates made with `relay cert`, an agent trusting the private
 * CA, a certificate replaced on disk and reloaded on SIGHUP while requests flow (none dropped),
 * and `relay status` reading the admin listener.
 */
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { issueServerCertificate } from '../../relay/cert-issuing.js';
import { defaultServerSans, fingerprintSha256 } from '../../shared/certs.js';
import { TOKEN } from '../fixtures/harness.js';
import { AGENT, RELAY, run } from '../fixtures/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'relay-ops-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = run(RELAY, args);
  const code = await p.exited;
  return { code, out: p.lines.map((l) => (typeof l.raw === 'string' ? l.raw : JSON.stringify(l))).join('\n'), err: p.stderr.join('\n') };
}

function peerFingerprint(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.end();
    });
    socket.on('error', reject);
  });
}

describe('relay operations', () => {
  it('makes its certificates, reloads a new one on SIGHUP without dropping a request, and reports status', async () => {
    const init = await cli(['cert', 'init', '--cn', 'relay.test', '--dir', dir]);
    expect(init.code).toBe(0);
    const show = await cli(['cert', 'show', '--dir', dir]);
    const printed = /SHA-256 fingerprint: (\S+)/.exec(show.out)?.[1];
    expect(printed).toBe(fingerprintSha256(readFileSync(join(dir, 'relay.crt'), 'utf8')));

    const relay = run(
      RELAY,
      ['start', '--host', '127.0.0.1', '--http-port', '0', '--https-port', '0', '--tunnel-port', '0', '--admin-port', '0'].concat([
        '--cert',
        join(dir, 'relay.crt'),
        '--key',
        join(dir, 'relay.key'),
      ]),
      { RELAY_AGENT_TOKEN: TOKEN },
    );
    const ports = (await relay.waitFor((l) => l.event === 'relay_started')) as unknown as {
      httpsPort: number;
      tunnelPort: number;
      adminPort: number;
    };
    const agent = run(
      AGENT,
      ['start', '--relay', `wss://localhost:${ports.tunnelPort}`, '--relay-ca', join(dir, 'ca.crt'), '--sample-app'],
      {
        PLATFORM_AGENT_TOKEN: TOKEN,
      },
    );
    await agent.waitFor((l) => l.event === 'tunnel_connected');
    const ca = readFileSync(join(dir, 'ca.crt'), 'utf8');
    const before = await peerFingerprint(ports.httpsPort, ca);

    // Requests on a kept-alive connection and on new ones, while the certificate is replaced.
    const keepAlive = new https.Agent({ keepAlive: true, maxSockets: 2, ca });
    const get = (agentOpt: https.Agent | false): Promise<number> =>
      new Promise((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: ports.httpsPort, path: '/hello', servername: 'localhost', ca, agent: agentOpt }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          })
          .on('error', reject);
      });
    let stop = false;
    const statuses: number[] = [];
    const load = (async () => {
      for (let i = 0; i < 2_000 && !stop; i++) statuses.push(await get(i % 2 === 0 ? keepAlive : false));
    })();

    const atLeast = async (n: number): Promise<void> => {
      const until = Date.now() + 20_000;
      while (statuses.length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    };
    await atLeast(20); // requests before the swap

    const caKey = readFileSync(join(dir, 'ca.key'), 'utf8');
    const next = await issueServerCertificate(
      { cert: ca, key: caKey },
      { commonName: 'relay.test', sans: defaultServerSans('relay.test') },
    );
    writeFileSync(join(dir, 'relay.key.new'), next.key, { mode: 0o600 });
    writeFileSync(join(dir, 'relay.crt.new'), `${next.cert}${ca}`);
    renameSync(join(dir, 'relay.key.new'), join(dir, 'relay.key'));
    renameSync(join(dir, 'relay.crt.new'), join(dir, 'relay.crt'));
    relay.child.kill('SIGHUP');
    await relay.waitFor((l) => l.event === 'reload');
    const deadline = Date.now() + 10_000;
    let after = before;
    while (after === before && Date.now() < deadline) after = await peerFingerprint(ports.httpsPort, ca);
    await atLeast(statuses.length + 20); // and after it
    stop = true;
    await load;
    keepAlive.destroy();

    expect(after).not.toBe(before);
    expect(after).toBe(fingerprintSha256(next.cert));
    expect(statuses.length).toBeGreaterThanOrEqual(40);
    expect(statuses.every((s) => s === 200)).toBe(true);

    const status = await cli(['status', '--admin-url', `http://127.0.0.1:${ports.adminPort}`]);
    expect(status.code).toBe(0);
    expect(status.out).toMatch(/default/);
    const down = await cli(['status', '--admin-url', 'http://127.0.0.1:1']);
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/--admin-url/);

    agent.child.kill('SIGTERM');
    relay.child.kill('SIGTERM');
    expect(await relay.exited).toBe(0);
  });
});
