/**
 * End to end: the built `relay` and `platform-agent` executables as child processes.
 * `npm test` builds first, so dist/ is current.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TOKEN, certsDir, json, relayFingerprint, request } from '../fixtures/harness.js';
import { AGENT, RELAY, run, startAgentProcess, startRelayProcess } from '../fixtures/processes.js';

describe('relay and platform-agent executables', () => {
  it('serve requests end to end and stop cleanly on SIGTERM', async () => {
    const { relay, ports } = await startRelayProcess();
    const agent = await startAgentProcess(ports.tunnelPort, ['--sample-app']);
    const hello = await request(`https://localhost:${ports.httpsPort}/hello`);
    expect(hello.status).toBe(200);
    expect(json(hello).app).toMatch(/sample app/);
    const echo = await request(`http://127.0.0.1:${ports.httpPort}/echo`, { method: 'POST', body: 'through two processes' });
    expect(echo.body.toString()).toBe('through two processes');

    // one log line per request, without the query string or any secret
    const line = await relay.waitFor((l) => l.event === 'request' && l.path === '/hello');
    expect(line).toMatchObject({ method: 'GET', status: 200, client: '127.0.0.1' });
    const allOutput = JSON.stringify(relay.lines) + JSON.stringify(agent.lines);
    expect(allOutput).not.toContain(TOKEN);

    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
    relay.child.kill('SIGTERM');
    expect(await relay.exited).toBe(0);
  });

  it('answers 502 when the agent process dies before the response, and cuts a response it dies in', async () => {
    const { ports } = await startRelayProcess();
    const agent = await startAgentProcess(ports.tunnelPort, ['--sample-app']);
    const waiting = request(`http://127.0.0.1:${ports.httpPort}/slow?ms=10000`);
    const cut = new Promise<string>((resolve) => {
      http
        .get(`http://127.0.0.1:${ports.httpPort}/bytes?n=${1024 * 1024 * 1024}`, (res) => {
          res.once('data', () => setTimeout(() => agent.child.kill('SIGKILL'), 200));
          res.on('end', () => resolve('complete'));
          res.on('error', () => resolve('cut'));
          res.on('aborted', () => resolve('cut'));
        })
        .on('error', () => resolve('cut'));
    });
    expect(await cut).toBe('cut');
    const reply = await waiting;
    expect(reply.status).toBe(502);
    expect(json(reply).error).toBe('agent_lost');
  });

  it('pipes to an upstream given with --upstream', async () => {
    const upstream = http.createServer((req, res) => res.end(`upstream saw ${req.headers['x-forwarded-for']}`));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    try {
      const { ports } = await startRelayProcess();
      await startAgentProcess(ports.tunnelPort, ['--upstream', `http://127.0.0.1:${(upstream.address() as { port: number }).port}`]);
      const reply = await request(`http://127.0.0.1:${ports.httpPort}/`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      expect(reply.body.toString()).toBe('upstream saw 127.0.0.1');
    } finally {
      upstream.closeAllConnections();
      upstream.close();
    }
  });

  it('takes options from a --config file, command-line options winning', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relay-config-'));
    const file = join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify({ connectWaitMs: 100, retryAfterSeconds: 9, httpPort: 1 }));
    const { ports } = await startRelayProcess(['--config', file]);
    expect(ports.httpPort).not.toBe(1); // --http-port 0 on the command line wins
    const reply = await request(`http://127.0.0.1:${ports.httpPort}/`);
    expect(reply.status).toBe(503);
    expect(reply.headers['retry-after']).toBe('9');
  });
});

describe('start-up errors name the option and the fix', () => {
  it('the relay refuses to start without an agent token', async () => {
    const relay = run(
      RELAY,
      ['start', '--http-port', '0', '--https-port', '0', '--tunnel-port', '0', '--certs-dir', join(certsDir(), 'none')],
      { RELAY_AGENT_TOKEN: '' },
    );
    expect(await relay.exited).toBe(2);
    expect(relay.stderr.join('\n')).toMatch(/--agent-token-file.*RELAY_AGENT_TOKEN/);
  });

  it('the relay refuses a bad port and a lone --cert', async () => {
    const badPort = run(RELAY, ['start', '--http-port', '70000'], { RELAY_AGENT_TOKEN: TOKEN });
    expect(await badPort.exited).toBe(2);
    expect(badPort.stderr.join('\n')).toMatch(/--http-port: 70000 is not valid; expected an integer from 0 to 65535/);
    const lone = run(RELAY, ['start', '--cert', join(certsDir(), 'relay.crt')], { RELAY_AGENT_TOKEN: TOKEN });
    expect(await lone.exited).toBe(2);
    expect(lone.stderr.join('\n')).toMatch(/--cert and --key go together/);
  });

  it('the relay answers only its own names on the admin port, plus --admin-allowed-hosts, and refuses a bad entry', async () => {
    const bad = run(RELAY, ['start', '--admin-allowed-hosts', 'ok.example,bad host'], { RELAY_AGENT_TOKEN: TOKEN });
    expect(await bad.exited).toBe(2);
    expect(bad.stderr.join('\n')).toMatch(/--admin-allowed-hosts: .*"bad host" is not a host name/);
    const { relay, ports } = await startRelayProcess(['--admin-allowed-hosts', 'status.dmz.example']);
    const adminPort = (ports as unknown as { adminPort: number }).adminPort;
    const status = (host: string): Promise<number> =>
      request(`http://127.0.0.1:${adminPort}/status`, { headers: { host } }).then((r) => r.status);
    expect(await status('evil.example')).toBe(421);
    expect(await status('status.dmz.example')).toBe(200);
    expect(await status(`127.0.0.1:${adminPort}`)).toBe(200);
    relay.child.kill('SIGTERM');
    expect(await relay.exited).toBe(0);
  });

  it('the agent refuses a malformed fingerprint, a ws:// relay, --backend without the platform server, and a bad --listen', async () => {
    const fp = run(AGENT, ['start', '--relay', 'wss://localhost:1', '--relay-fingerprint', 'abc', '--sample-app'], {
      PLATFORM_AGENT_TOKEN: TOKEN,
    });
    expect(await fp.exited).toBe(2);
    expect(fp.stderr.join('\n')).toMatch(/--relay-fingerprint: "abc" is not valid/);
    const plain = run(AGENT, ['start', '--relay', 'ws://localhost:1', '--sample-app'], { PLATFORM_AGENT_TOKEN: TOKEN });
    expect(await plain.exited).toBe(2);
    expect(plain.stderr.join('\n')).toMatch(/use wss:\/\/host:port/);
    const mixed = run(AGENT, ['start', '--relay', 'wss://localhost:1', '--sample-app', '--backend', 'http://127.0.0.1:1'], {
      PLATFORM_AGENT_TOKEN: TOKEN,
    });
    expect(await mixed.exited).toBe(2);
    expect(mixed.stderr.join('\n')).toMatch(/--backend belongs to the built-in platform server/);
    const panel = run(AGENT, ['start', '--relay', 'wss://localhost:1', '--sample-app', '--console-through-relay'], {
      PLATFORM_AGENT_TOKEN: TOKEN,
    });
    expect(await panel.exited).toBe(2);
    expect(panel.stderr.join('\n')).toMatch(/--console-through-relay belongs to the built-in platform server/);
    const admin = run(AGENT, ['start', '--relay', 'wss://localhost:1', '--sample-app', '--admin-through-relay'], {
      PLATFORM_AGENT_TOKEN: TOKEN,
    });
    expect(await admin.exited).toBe(2);
    expect(admin.stderr.join('\n')).toMatch(/--admin-through-relay belongs to the built-in platform server/);
    const hosts = run(AGENT, ['start', '--listen', '127.0.0.1:0', '--listen-allowed-hosts', 'under_score.example'], {
      PLATFORM_AGENT_TOKEN: '',
    });
    expect(await hosts.exited).toBe(2);
    expect(hosts.stderr.join('\n')).toMatch(/--listen-allowed-hosts: .*"under_score.example" is not a host name/);
    const noRelay = run(AGENT, ['start', '--sample-app'], { PLATFORM_AGENT_TOKEN: TOKEN });
    expect(await noRelay.exited).toBe(2);
    expect(noRelay.stderr.join('\n')).toMatch(/--relay: give at least one relay/);
    const noToken = run(AGENT, ['start', '--relay', 'wss://localhost:1', '--sample-app'], { PLATFORM_AGENT_TOKEN: '' });
    expect(await noToken.exited).toBe(2);
    expect(noToken.stderr.join('\n')).toMatch(/no token given/);
    const data = mkdtempSync(join(tmpdir(), 'agent-data-'));
    const listen = run(AGENT, ['start', '--relay', 'wss://localhost:1', '--data', data, '--listen', 'localhost'], {
      PLATFORM_AGENT_TOKEN: TOKEN,
    });
    expect(await listen.exited).toBe(2);
    expect(listen.stderr.join('\n')).toMatch(/--listen: "localhost" is not valid; expected host:port/);
    const nothing = run(AGENT, ['start', '--data', data, '--listen', 'off'], { PLATFORM_AGENT_TOKEN: '' });
    expect(await nothing.exited).toBe(2);
    expect(nothing.stderr.join('\n')).toMatch(/--listen off and no relay connection in use/);
    expect(nothing.stderr.join('\n')).not.toContain('First administrator created'); // the one-time password is not used up
    const lone = run(AGENT, ['start', '--data', data, '--listen-cert', join(certsDir(), 'relay.crt')], { PLATFORM_AGENT_TOKEN: '' });
    expect(await lone.exited).toBe(2);
    expect(lone.stderr.join('\n')).toMatch(/--listen-cert and --listen-key go together/);
    const stranger = join(data, 'other.key');
    writeFileSync(stranger, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const mismatch = run(AGENT, ['start', '--data', data, '--listen-cert', join(certsDir(), 'relay.crt'), '--listen-key', stranger], {
      PLATFORM_AGENT_TOKEN: '',
    });
    expect(await mismatch.exited).toBe(2);
    expect(mismatch.stderr.join('\n')).toMatch(
      /--listen-cert: .* is not valid; not usable with --listen-key: the private key does not belong/,
    );
  });

  it('the agent starts without a relay (tunnel off) and serves HTTPS on --listen with --listen-cert/--listen-key', async () => {
    const data = mkdtempSync(join(tmpdir(), 'agent-listen-tls-'));
    const agent = run(
      AGENT,
      [
        'start',
        '--data',
        data,
        '--listen',
        '127.0.0.1:0',
        '--listen-cert',
        join(certsDir(), 'relay.crt'),
        '--listen-key',
        join(certsDir(), 'relay.key'),
      ],
      { PLATFORM_AGENT_TOKEN: '' },
    );
    const listening = await agent.waitFor((l) => l.event === 'platform_listening');
    expect((await agent.waitFor((l) => l.event === 'relay_off')).msg).toMatch(/control panel/);
    await agent.waitFor((l) => l.event === 'agent_ready');
    const port = Number(listening.port);
    const fingerprint = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false }, () => {
        resolve(socket.getPeerX509Certificate()!.fingerprint256);
        socket.destroy();
      });
      socket.once('error', reject);
    });
    expect(fingerprint).toBe(relayFingerprint());
    expect((await request(`https://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect((await request(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    agent.child.kill('SIGTERM');
    expect(await agent.exited).toBe(0);
  });
});
