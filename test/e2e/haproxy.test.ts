/**
 * The built relay behind a real HAProxy (Debian's `haproxy`) in TCP mode: `send-proxy-v2` and
 * `send-proxy` (v1) in front of the HTTP and HTTPS listeners, `--proxy-protocol-from 127.0.0.1/32`
 * on the relay, a client connecting to HAProxy from 127.0.0.5, and the agent's upstream (the
 * sample app) seeing X-Forwarded-For 127.0.0.5. HAProxy checks the relay's admin `/readyz`.
 * Skipped when `haproxy` is not on PATH (CI installs it: .ci/run).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TOKEN } from '../fixtures/harness.js';
import { RELAY, run, startAgentProcess, startRelayProcess } from '../fixtures/processes.js';
import { freePort } from '../fixtures/ports.js';
import { haproxyPath, startHaproxy, statsCommand } from '../fixtures/haproxy.js';

const CLIENT = '127.0.0.5';

if (!haproxyPath) {
  console.warn('test/e2e/haproxy.test.ts: skipped — `haproxy` is not on PATH (apt-get install haproxy; CI installs it)');
}

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.splice(0).reverse()) f();
});

/** GET /hello through `port` from the client address: the sample app's JSON. */
function hello(port: number, tls: boolean): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, path: '/hello', localAddress: CLIENT, agent: false as const };
    const done = (res: http.IncomingMessage): void => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }),
      );
    };
    const req = tls ? https.get({ ...options, servername: 'localhost', rejectUnauthorized: false }, done) : http.get(options, done);
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer through HAProxy')));
  });
}

describe.skipIf(!haproxyPath)('relay behind HAProxy (PROXY protocol)', () => {
  it('send-proxy-v2 and send-proxy: the agent sees the client HAProxy accepted, on HTTP and HTTPS; HAProxy checks /readyz', async () => {
    const { ports } = await startRelayProcess(['--proxy-protocol-from', '127.0.0.1/32']);
    const { httpPort, httpsPort } = ports;
    const adminPort = (ports as unknown as { adminPort: number }).adminPort;
    await startAgentProcess(ports.tunnelPort, ['--sample-app']);

    const dir = mkdtempSync(join(tmpdir(), 'haproxy-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const stats = join(dir, 'stats.sock');
    const [v2Http, v1Http, v2Https] = [await freePort(), await freePort(), await freePort()];
    const check = `check port ${adminPort} inter 200ms fall 2 rise 1`;
    const config = [
      'global',
      `  stats socket ${stats} mode 600 level admin`,
      'defaults',
      '  mode tcp',
      '  timeout connect 2s',
      '  timeout client 15s',
      '  timeout server 15s',
      '  option httpchk',
      `  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1:${adminPort}`,
      '  http-check expect status 200',
      'frontend v2_http',
      `  bind 127.0.0.1:${v2Http}`,
      '  default_backend relay_v2_http',
      'frontend v1_http',
      `  bind 127.0.0.1:${v1Http}`,
      '  default_backend relay_v1_http',
      'frontend v2_https',
      `  bind 127.0.0.1:${v2Https}`,
      '  default_backend relay_v2_https',
      'backend relay_v2_http',
      `  server relay 127.0.0.1:${httpPort} send-proxy-v2 ${check}`,
      'backend relay_v1_http',
      `  server relay 127.0.0.1:${httpPort} send-proxy ${check}`,
      'backend relay_v2_https',
      `  server relay 127.0.0.1:${httpsPort} send-proxy-v2 ${check}`,
      '',
    ].join('\n');
    const cfg = join(dir, 'haproxy.cfg');
    writeFileSync(cfg, config);
    const { process: haproxy, output } = startHaproxy(cfg);
    cleanup.push(() => {
      if (haproxy.exitCode === null) haproxy.kill('SIGKILL');
    });

    // HAProxy's checks of /readyz pass (L7OK) for the three servers
    const deadline = Date.now() + 15_000;
    let state = '';
    for (;;) {
      state = await statsCommand(stats, 'show stat').catch(() => '');
      const rows = state.split('\n').filter((l) => l.includes(',relay,'));
      if (rows.length === 3 && rows.every((r) => r.includes(',UP,') && r.includes('L7OK'))) break;
      if (Date.now() > deadline) throw new Error(`HAProxy servers not UP: ${state}\n${output.join('')}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    for (const [port, tls] of [
      [v2Http, false],
      [v1Http, false],
      [v2Https, true],
    ] as const) {
      const reply = await hello(port, tls);
      expect(reply.status, `through port ${port}`).toBe(200);
      expect(reply.body.forwardedFor).toBe(CLIENT);
      expect(reply.body.socketAddress).toBe(CLIENT);
      expect(reply.body.forwardedProto).toBe(tls ? 'https' : 'http');
    }
  });
});

/** GET /hello on a raw connection from `localAddress`, `prefix` (a PROXY header) first; what came back. */
function rawHello(port: number, prefix: string, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () =>
      s.write(`${prefix}GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => resolve(Buffer.concat(chunks).toString()));
    s.setTimeout(10_000, () => s.destroy());
  });
}

describe('--proxy-protocol-from (the built relay)', () => {
  it('refuses an entry that is not an address or CIDR block (exit 2, the option named)', async () => {
    const bad = run(RELAY, ['start', '--proxy-protocol-from', '10.0.0.0/33'], { RELAY_AGENT_TOKEN: TOKEN });
    expect(await bad.exited).toBe(2);
    expect(bad.stderr.join('\n')).toMatch(/--proxy-protocol-from: .*10\.0\.0\.0\/33.*expected an address or CIDR block/);
  });

  it('takes the list from the --config file: a listed address must send a header, others must not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relay-proxy-config-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify({ 'proxy-protocol-from': ['127.0.0.2', '192.0.2.0/24'] }));
    const { ports } = await startRelayProcess(['--config', file]);
    await startAgentProcess(ports.tunnelPort, ['--sample-app']);
    const through = await rawHello(ports.httpPort, `PROXY TCP4 198.51.100.7 127.0.0.1 40000 ${ports.httpPort}\r\n`, '127.0.0.2');
    expect(through).toMatch(/^HTTP\/1\.1 200/);
    expect(through).toContain('"forwardedFor":"198.51.100.7"');
    expect(await rawHello(ports.httpPort, '', '127.0.0.2')).toBe('');
    expect(await rawHello(ports.httpPort, 'PROXY UNKNOWN\r\n', '127.0.0.3')).toBe('');
    expect(await rawHello(ports.httpPort, '', '127.0.0.3')).toContain('"forwardedFor":"127.0.0.3"');
  });

  it('reloads the list from the --config file on SIGHUP; a bad list keeps the previous one, and one given on the command line stays', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'relay-proxy-reload-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify({ proxyProtocolFrom: ['127.0.0.2'] }));
    const { relay, ports } = await startRelayProcess(['--config', file]);
    await startAgentProcess(ports.tunnelPort, ['--sample-app']);
    const header = `PROXY TCP4 198.51.100.9 127.0.0.1 40000 ${ports.httpPort}\r\n`;
    expect(await rawHello(ports.httpPort, header, '127.0.0.3')).toBe('');

    // the balancer moved to 127.0.0.3
    writeFileSync(file, JSON.stringify({ 'proxy-protocol-from': ['127.0.0.3/32'] }));
    relay.child.kill('SIGHUP');
    expect(await relay.waitFor((l) => l.event === 'proxy_protocol_from_reloaded')).toMatchObject({ entries: ['127.0.0.3/32'] });
    expect(await rawHello(ports.httpPort, header, '127.0.0.3')).toContain('"forwardedFor":"198.51.100.9"');
    expect(await rawHello(ports.httpPort, header, '127.0.0.2')).toBe('');
    expect(await rawHello(ports.httpPort, '', '127.0.0.2')).toContain('"forwardedFor":"127.0.0.2"');

    writeFileSync(file, JSON.stringify({ proxyProtocolFrom: ['127.0.0.0/33'] }));
    relay.child.kill('SIGHUP');
    expect((await relay.waitFor((l) => l.event === 'proxy_protocol_from_reload_failed')).err).toMatch(
      /--proxy-protocol-from: .*127\.0\.0\.0\/33/,
    );
    expect(await rawHello(ports.httpPort, header, '127.0.0.3')).toContain('"forwardedFor":"198.51.100.9"');

    // given on the command line, the list is not taken from the file
    const pinnedFile = join(dir, 'pinned.json');
    writeFileSync(pinnedFile, JSON.stringify({ proxyProtocolFrom: ['127.0.0.3'] }));
    const pinned = await startRelayProcess(['--config', pinnedFile, '--proxy-protocol-from', '127.0.0.2']);
    pinned.relay.child.kill('SIGHUP');
    await pinned.relay.waitFor((l) => l.event === 'proxy_protocol_from_kept');
  });
});
