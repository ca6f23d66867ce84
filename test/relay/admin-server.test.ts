import { createServer, type AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import yargs from 'yargs';
import { ManualClock, DAY_MS } from '../../shared/clock.js';
import {
  AdminServer,
  agentStatus,
  isLoopbackHost,
  type AgentStatus,
  type RelayStatus,
  type StatusSource,
} from '../../relay/admin/admin-server.js';
import { RelayMetrics, rejectReasons, statusClass } from '../../relay/admin/metrics.js';
import { formatBytes, formatDuration, formatStatus, registerStatusCommand } from '../../relay/status-cli.js';
import { request, startAgent, startRelay, testLogger } from '../fixtures/harness.js';

/** A status source the test changes by hand (the relay's is backed by its tunnel registry). */
class FakeStatus implements StatusSource {
  configured = ['erp', 'courier'];
  connected: AgentStatus[] = [];
  platforms(): string[] {
    return this.configured;
  }
  agents(): AgentStatus[] {
    return this.connected;
  }
  stopping = false;
  draining(): boolean {
    return this.stopping;
  }
}

function agent(platform: string, n: number, extra: Partial<AgentStatus> = {}): AgentStatus {
  return {
    agentId: `agent-${platform}`,
    connectionId: `agent-${platform}#${n}`,
    platform,
    address: `10.0.0.${n}`,
    since: '2026-11-23T12:00:00.123Z',
    streams: n,
    bytesIn: 1536 * n,
    bytesOut: 3 * 1024 * 1024 * n,
    rttMs: 0.75,
    ...extra,
  };
}

/**
 * Prometheus text format 0.0.4: every line is a comment (`# HELP name text`, `# TYPE name kind`)
 * or a sample `name{label="value",…} number`. Returns the samples; throws on any other line.
 */
function parsePrometheus(text: string): { types: Map<string, string>; samples: { name: string; labels: string; value: number }[] } {
  const types = new Map<string, string>();
  const samples: { name: string; labels: string; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/.exec(
      line,
    );
    if (!sample) throw new Error(`not Prometheus text: ${JSON.stringify(line)}`);
    samples.push({ name: sample[1]!, labels: sample[2] ?? '', value: Number(sample[3]) });
  }
  return { types, samples };
}

function sampleValue(parsed: ReturnType<typeof parsePrometheus>, name: string, labels: string): number | undefined {
  return parsed.samples.find((s) => s.name === name && s.labels === labels)?.value;
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('admin server', () => {
  const status = new FakeStatus();
  const clock = new ManualClock();
  const metrics = new RelayMetrics({ platforms: status.configured, clock });
  const admin = new AdminServer({ port: 0, metrics, status, logger: testLogger(), version: '9.8.7', clock });
  let base: string;

  beforeAll(async () => {
    const address = await admin.listen();
    expect(address.address).toBe('127.0.0.1');
    base = `http://127.0.0.1:${address.port}`;
  });
  afterAll(() => admin.close());
  afterEach(() => {
    status.stopping = false;
    status.connected = [];
  });

  it('answers /healthz with 200 {"status":"ok"}', async () => {
    const res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('is not ready until every configured platform has an agent, and ready after', async () => {
    let res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: 'not_ready', missing: ['erp', 'courier'] });

    status.connected = [agent('erp', 1)];
    res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: 'not_ready', missing: ['courier'] });

    status.connected = [agent('erp', 1), agent('courier', 2)];
    res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(200);

    // an agent of a platform nobody configured does not make a configured one ready
    status.connected = [agent('erp', 1), agent('stray', 3)];
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
  });

  it('is not ready while the relay drains, even with every platform connected', async () => {
    status.connected = [agent('erp', 1), agent('courier', 2)];
    status.stopping = true;
    const res = await fetch(`${base}/readyz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: 'draining', missing: [] });
  });

  it('serves /metrics as Prometheus text with every relay metric family', async () => {
    metrics.recordRequest('erp', 200, 12);
    metrics.recordRequest('erp', 204, 3);
    metrics.recordRequest('erp', 503, 5000);
    metrics.recordRequest('no-such-platform', 404, 1);
    metrics.recordBytes('erp', 1000, 250_000);
    metrics.observeRtt('courier', 1.5);
    metrics.tunnelConnected('courier');
    metrics.tunnelConnected('courier');
    metrics.tunnelAuthFailed('bad_token');
    metrics.reject('ip_blacklist');
    metrics.reject('per_ip_rate');
    metrics.reject('per_ip_rate');
    metrics.setCertificateExpiry('relay', new Date(clock.now() + 30 * DAY_MS + 3_600_000));
    status.connected = [agent('erp', 1), agent('erp', 4), agent('courier', 2)];

    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const parsed = parsePrometheus(await res.text());

    const families: [string, string][] = [
      ['relay_requests_total', 'counter'],
      ['relay_request_duration_seconds', 'histogram'],
      ['relay_bytes_received_total', 'counter'],
      ['relay_bytes_sent_total', 'counter'],
      ['relay_open_streams', 'gauge'],
      ['relay_tunnel_connections', 'gauge'],
      ['relay_tunnel_rtt_seconds', 'histogram'],
      ['relay_tunnel_connects_total', 'counter'],
      ['relay_tunnel_auth_failures_total', 'counter'],
      ['relay_rejected_total', 'counter'],
      ['relay_certificate_days_left', 'gauge'],
      ['relay_process_cpu_user_seconds_total', 'counter'],
      ['relay_nodejs_eventloop_lag_seconds', 'gauge'],
    ];
    for (const [name, type] of families) expect(parsed.types.get(name), name).toBe(type);

    expect(sampleValue(parsed, 'relay_requests_total', '{platform="erp",status="2xx"}')).toBe(2);
    expect(sampleValue(parsed, 'relay_requests_total', '{platform="erp",status="5xx"}')).toBe(1);
    expect(sampleValue(parsed, 'relay_requests_total', '{platform="unknown",status="4xx"}')).toBe(1);
    expect(sampleValue(parsed, 'relay_request_duration_seconds_count', '{platform="erp"}')).toBe(3);
    expect(sampleValue(parsed, 'relay_request_duration_seconds_bucket', '{le="0.005",platform="erp"}')).toBe(1);
    expect(sampleValue(parsed, 'relay_bytes_received_total', '{platform="erp"}')).toBe(1000);
    expect(sampleValue(parsed, 'relay_bytes_sent_total', '{platform="erp"}')).toBe(250_000);
    expect(sampleValue(parsed, 'relay_open_streams', '{platform="erp"}')).toBe(5);
    expect(sampleValue(parsed, 'relay_open_streams', '{platform="courier"}')).toBe(2);
    expect(sampleValue(parsed, 'relay_tunnel_connections', '{platform="erp"}')).toBe(2);
    expect(sampleValue(parsed, 'relay_tunnel_connections', '{platform="courier"}')).toBe(1);
    expect(sampleValue(parsed, 'relay_tunnel_rtt_seconds_sum', '{platform="courier"}')).toBeCloseTo(0.0015, 6);
    expect(sampleValue(parsed, 'relay_tunnel_connects_total', '{platform="courier"}')).toBe(2);
    expect(sampleValue(parsed, 'relay_tunnel_connects_total', '{platform="erp"}')).toBe(0);
    expect(sampleValue(parsed, 'relay_tunnel_auth_failures_total', '{reason="bad_token"}')).toBe(1);
    expect(sampleValue(parsed, 'relay_rejected_total', '{reason="ip_blacklist"}')).toBe(1);
    expect(sampleValue(parsed, 'relay_rejected_total', '{reason="per_ip_rate"}')).toBe(2);
    for (const reason of rejectReasons) expect(sampleValue(parsed, 'relay_rejected_total', `{reason="${reason}"}`), reason).toBeDefined();
    expect(sampleValue(parsed, 'relay_certificate_days_left', '{certificate="relay"}')).toBe(30);
  });

  it('serves /status with platforms, agents, uptime and version', async () => {
    clock.advance(90_500);
    status.connected = [agent('erp', 1), agent('erp', 2, { rttMs: null })];
    const res = await fetch(`${base}/status`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as RelayStatus;
    expect(body).toEqual({
      platforms: [
        { id: 'erp', agents: 2, ready: true },
        { id: 'courier', agents: 0, ready: false },
      ],
      agents: [agent('erp', 1), agent('erp', 2, { rttMs: null })],
      uptime_s: 90,
      version: '9.8.7',
    });
  });

  it('answers unknown paths with 404 JSON and other methods than GET with 405', async () => {
    const missing = await fetch(`${base}/admin`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toBe('not_found');

    for (const method of ['POST', 'PUT', 'DELETE']) {
      const res = await fetch(`${base}/status`, { method, body: method === 'DELETE' ? undefined : '{}' });
      expect(res.status, method).toBe(405);
      expect(res.headers.get('allow')).toBe('GET, HEAD');
      expect(((await res.json()) as { error: string }).error).toBe('method_not_allowed');
    }
  });

  it('ignores a query string when routing', async () => {
    expect((await fetch(`${base}/healthz?probe=1`)).status).toBe(200);
  });

  it('answers HEAD like GET, without a body', async () => {
    const res = await fetch(`${base}/status`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('');
  });
});

describe('admin server over a real relay', () => {
  it('reports the tunnel connections of a running relay and agent', async () => {
    const relay = await startRelay({ mux: { pingIntervalMs: 50 } });
    const agent = await startAgent(relay, { connections: 2 }, 2);
    const metrics = new RelayMetrics({ platforms: ['default'], processMetrics: false });
    const status: StatusSource = { platforms: () => ['default'], agents: () => relay.registry.list().map(agentStatus) };
    const admin = new AdminServer({ port: 0, metrics, status, logger: testLogger() });
    try {
      const base = `http://127.0.0.1:${(await admin.listen()).port}`;
      expect((await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`)).status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 150)); // a few pings
      expect((await fetch(`${base}/readyz`)).status).toBe(200);
      const body = (await (await fetch(`${base}/status`)).json()) as RelayStatus;
      expect(body.platforms).toEqual([{ id: 'default', agents: 2, ready: true }]);
      for (const a of body.agents) {
        expect(a.platform).toBe('default');
        expect(a.address).toMatch(/127\.0\.0\.1$/);
        expect(Date.parse(a.since)).not.toBeNaN();
        expect(a.rttMs).toBeTypeOf('number');
      }
      // the request went through one of the two connections
      expect(body.agents.reduce((n, a) => n + a.bytesIn, 0)).toBeGreaterThan(0);
      const parsed = parsePrometheus(await (await fetch(`${base}/metrics`)).text());
      expect(sampleValue(parsed, 'relay_tunnel_connections', '{platform="default"}')).toBe(2);
    } finally {
      await admin.close();
      await agent.stop(100);
      await relay.stop(100);
    }
  });
});

describe('admin server bound beyond loopback', () => {
  it('warns that the admin port exposes status to that network', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const admin = new AdminServer({
      host: '0.0.0.0',
      port: 0,
      metrics: new RelayMetrics({ platforms: [], processMetrics: false }),
      status: new FakeStatus(),
      logger,
    });
    await admin.listen();
    await admin.close();
    const warnings = lines.map((l) => JSON.parse(l) as { event?: string; msg: string }).filter((l) => l.event === 'admin_exposed');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toMatch(/not on loopback/);
  });

  it('knows loopback addresses', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1'])
      expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.10', 'relay.example.com']) expect(isLoopbackHost(host), host).toBe(false);
  });
});

describe('relay metrics', () => {
  it('keeps label values bounded', async () => {
    const metrics = new RelayMetrics({ platforms: ['erp'], processMetrics: false });
    expect(statusClass(101)).toBe('1xx');
    expect(statusClass(599)).toBe('5xx');
    expect(statusClass(0)).toBe('other');
    for (let i = 0; i < 50; i++) metrics.recordRequest(`attacker-${i}`, 200 + i, 1);
    metrics.reject('made_up' as never);
    const { samples } = parsePrometheus((await metrics.render()).body);
    const platforms = new Set(samples.filter((s) => s.name === 'relay_requests_total').map((s) => s.labels));
    expect(platforms).toEqual(new Set(['{platform="unknown",status="2xx"}']));
    expect(samples.some((s) => s.labels.includes('made_up'))).toBe(false);
  });

  it('drops the series of a platform removed on reload', async () => {
    const metrics = new RelayMetrics({ platforms: ['erp', 'old'], processMetrics: false });
    metrics.recordRequest('old', 200, 1);
    metrics.setPlatforms(['erp']);
    metrics.recordRequest('old', 200, 1);
    const { samples } = parsePrometheus((await metrics.render()).body);
    expect(samples.some((s) => s.labels.includes('platform="old"'))).toBe(false);
    expect(sampleValue({ types: new Map(), samples }, 'relay_requests_total', '{platform="unknown",status="2xx"}')).toBe(1);
  });

  it('counts certificate days left down at each scrape, negative once expired', async () => {
    const clock = new ManualClock();
    const metrics = new RelayMetrics({ platforms: [], processMetrics: false, clock });
    const daysLeft = async (): Promise<number | undefined> =>
      sampleValue(parsePrometheus((await metrics.render()).body), 'relay_certificate_days_left', '{certificate="relay"}');
    expect(metrics.setCertificateExpiry('relay', new Date(clock.now() + 10 * DAY_MS))).toBe(10);
    expect(await daysLeft()).toBe(10);
    clock.advance(9.5 * DAY_MS);
    expect(await daysLeft()).toBe(0);
    clock.advance(DAY_MS);
    expect(await daysLeft()).toBe(-1);
  });
});

describe('relay status', () => {
  const sample: RelayStatus = {
    platforms: [
      { id: 'erp', agents: 2, ready: true },
      { id: 'courier', agents: 0, ready: false },
    ],
    agents: [agent('erp', 1), agent('erp', 2, { rttMs: null, agentId: 'evil\u001b[2J', connectionId: undefined })],
    uptime_s: 93_784,
    version: '0.1.0',
  };

  it('formats agents and platform readiness as a table', () => {
    const text = formatStatus(sample);
    expect(text).toBe(
      [
        'relay 0.1.0, up 1d 2h 3m 4s',
        '',
        'PLATFORM  AGENTS  READY',
        'erp            2  yes',
        'courier        0  NO',
        'ready: NO (no agent connected for courier)',
        '',
        'ID           PLATFORM  ADDRESS   SINCE                 STREAMS       IN      OUT     RTT',
        'agent-erp#1  erp       10.0.0.1  2026-11-23T12:00:00Z        1  1.5 KiB  3.0 MiB  0.8 ms',
        'evil?[2J     erp       10.0.0.2  2026-11-23T12:00:00Z        2  3.0 KiB  6.0 MiB       -',
        '',
      ].join('\n'),
    );
  });

  it('says so when no agent is connected and nothing is missing', () => {
    const text = formatStatus({ platforms: [], agents: [], uptime_s: 5, version: '1' });
    expect(text).toContain('no platforms configured\nready: yes');
    expect(text).toContain('no agents connected');
  });

  it('formats sizes and durations', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1024 * 1024 * 1024 * 5)).toBe('5.0 GiB');
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(3600)).toBe('1h 0m 0s');
  });

  describe('command', () => {
    const status = new FakeStatus();
    const admin = new AdminServer({
      port: 0,
      metrics: new RelayMetrics({ platforms: status.configured, processMetrics: false }),
      status,
      logger: testLogger(),
      version: '1.2.3',
    });
    let adminUrl: string;
    let out = '';
    let err = '';
    const output = { out: (t: string) => (out += t), err: (t: string) => (err += t) };

    beforeAll(async () => {
      adminUrl = `http://127.0.0.1:${(await admin.listen()).port}`;
      status.connected = [agent('erp', 1), agent('courier', 2)];
    });
    afterAll(() => admin.close());
    afterEach(() => {
      out = '';
      err = '';
      process.exitCode = undefined;
    });

    it('prints the table of a live relay', async () => {
      await registerStatusCommand(yargs(['status', '--admin-url', adminUrl]), output).parseAsync();
      expect(process.exitCode).toBe(0);
      expect(err).toBe('');
      expect(out).toMatch(/^relay 1\.2\.3, up /);
      expect(out).toContain('ready: yes');
      expect(out).toMatch(/agent-courier#2 +courier +10\.0\.0\.2 /);
    });

    it('prints the JSON with --json', async () => {
      await registerStatusCommand(yargs(['status', '--admin-url', `${adminUrl}/`, '--json']), output).parseAsync();
      const body = JSON.parse(out) as RelayStatus;
      expect(body.version).toBe('1.2.3');
      expect(body.agents.map((a) => a.connectionId)).toEqual(['agent-erp#1', 'agent-courier#2']);
    });

    it('exits 1 naming --admin-url when the relay is unreachable', async () => {
      const port = await closedPort();
      await registerStatusCommand(yargs(['status', '--admin-url', `http://127.0.0.1:${port}`]), output).parseAsync();
      expect(process.exitCode).toBe(1);
      expect(out).toBe('');
      expect(err).toContain(`http://127.0.0.1:${port}/status`);
      expect(err).toContain('ECONNREFUSED');
      expect(err).toContain('--admin-url');
    });

    it('exits 1 when the URL answers something that is not a relay status', async () => {
      await registerStatusCommand(yargs(['status', '--admin-url', `${adminUrl}/nothing-here`]), output).parseAsync();
      expect(process.exitCode).toBe(1);
      expect(err).toContain('HTTP 404');
      expect(err).toContain('--admin-url');
    });
  });
});
