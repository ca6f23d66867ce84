#!/usr/bin/env node
/**
 * `npm run bench`: direct vs relay (HTTP and HTTPS) on this machine, measured in one run.
 *
 * Spawns the sample app as its own upstream process (upstream.ts), the relay CLI (per-request
 * info logging on, stdout to /dev/null) and the platform agent CLI in pipe mode
 * (--upstream, 2 tunnel connections). Small GETs are driven by `wrk`; 64 MiB downloads and
 * uploads by Node's http/https clients. Prints one Markdown table with PASS/MISS against the
 * targets. Everything stays on 127.0.0.1; every child is stopped at the end, also on error.
 *
 * Env: BENCH_SECONDS (measured wrk run, default 5), BENCH_WARMUP_SECONDS (default 2),
 * BENCH_RELAY_LOG=<file> (keep the relay's log in a file instead of /dev/null, for diagnosis).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, closeSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { relayNodeFlags } from '../../relay/node-flags.js';
import { fingerprintSha256 } from '../../shared/certs.js';
import { patternChunks } from '../../platform-agent/sample-app.js';
import { canConnect } from '../../shared/net-probe.js';

const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SECONDS = positiveInt('BENCH_SECONDS', 5);
const WARMUP_SECONDS = positiveInt('BENCH_WARMUP_SECONDS', 2);
const BULK_BYTES = 64 * 1024 * 1024;
const SLICE_BYTES = 1024 * 1024;
const BULK_TIMEOUT_MS = 120_000;
const BULK_RUNS = 2;

const TARGETS = { c64Ratio: 0.35, addedP50Ms: 1, bulkMiBps: 150 };

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 3600) throw new Error(`${name} must be an integer from 1 to 3600 (got ${JSON.stringify(raw)})`);
  return n;
}

// ---------------------------------------------------------------- children

interface Child {
  name: string;
  proc: ChildProcess;
  /** Last lines of its stdout/stderr (when piped), for error reports. */
  tail: string[];
}

const children: Child[] = [];

function spawnNode(
  name: string,
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  stdout: 'pipe' | 'ignore' | number,
  nodeFlags: readonly string[] = [],
): Child {
  const proc = spawn(process.execPath, [...nodeFlags, join(DIST, script), ...args], {
    stdio: ['ignore', stdout, 'pipe'],
    env: { ...process.env, ...env },
  });
  const child: Child = { name, proc, tail: [] };
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      child.tail.push(line);
      if (child.tail.length > 200) child.tail.shift();
    }
  };
  proc.stderr?.on('data', keep);
  proc.stdout?.on('data', keep);
  proc.on('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`bench: ${name} exited unexpectedly (${signal ?? code})\n${child.tail.slice(-20).join('\n')}\n`);
  });
  children.push(child);
  return child;
}

let stopping = false;
async function stopAll(): Promise<void> {
  stopping = true;
  await Promise.all(
    children.map(async ({ proc }) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), 5_000))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        proc.kill('SIGKILL');
        await Promise.race([exited, sleep(2_000)]);
      }
    }),
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function alive(child: Child): void {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) {
    throw new Error(
      `${child.name} is not running (exit ${child.proc.signalCode ?? child.proc.exitCode})\n${child.tail.slice(-20).join('\n')}`,
    );
  }
}

// ---------------------------------------------------------------- ports and readiness

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function waitForTcp(port: number, timeoutMs: number, watch: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    alive(watch);
    if (await canConnect(port)) return;
    if (Date.now() > deadline) throw new Error(`${watch.name} did not open port ${port} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Reads the `{"port":N}` line a helper process (upstream, reference proxy) prints once listening. */
async function readPort(child: Child, timeoutMs: number): Promise<number> {
  const stdout = child.proc.stdout!;
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => done(new Error(`${child.name} did not print its port within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      buf += chunk.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const port = (JSON.parse(buf.slice(0, nl)) as { port?: unknown }).port;
        if (typeof port !== 'number') throw new Error(`no port in ${buf.slice(0, nl)}`);
        done(null, port);
      } catch (err) {
        done(err as Error);
      }
    };
    const onExit = (): void => done(new Error(`${child.name} exited before printing its port\n${child.tail.join('\n')}`));
    function done(err: Error | null, port?: number): void {
      clearTimeout(timer);
      stdout.off('data', onData);
      child.proc.off('exit', onExit);
      if (err) reject(err);
      else resolve(port!);
    }
    stdout.on('data', onData);
    child.proc.once('exit', onExit);
  });
}

/** One GET with a fresh connection: status and body. */
function get(url: string, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    const req = mod.get(url, { agent: false, rejectUnauthorized: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

async function waitFor200(url: string, timeoutMs: number, watch: Child[]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    for (const c of watch) alive(c);
    try {
      const r = await get(url, 2_000);
      if (r.status === 200) return;
      last = `HTTP ${r.status} ${r.body.slice(0, 200)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 within ${timeoutMs} ms (last: ${last})`);
    await sleep(200);
  }
}

// ---------------------------------------------------------------- wrk

interface WrkResult {
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  non2xx: number;
  socketErrors: number;
  raw: string;
}

function wrkAvailable(): boolean {
  const r = spawnSync('wrk', ['--version'], { stdio: 'ignore' });
  return !(r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT');
}

function toMs(value: string, unit: string): number {
  const n = Number(value);
  switch (unit) {
    case 'us':
      return n / 1000;
    case 'ms':
      return n;
    case 's':
      return n * 1000;
    case 'm':
      return n * 60_000;
    case 'h':
      return n * 3_600_000;
    default:
      throw new Error(`unknown wrk latency unit ${unit}`);
  }
}

function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s*50(?:\.000)?%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(out);
  const p99 = /^\s*99(?:\.000)?%\s+([\d.]+)(us|ms|s|m|h)\s*$/m.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !p50 || !p99 || !total) throw new Error(`cannot parse wrk output:\n${out}`);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    reqPerSec: Number(rps[1]),
    p50Ms: toMs(p50[1]!, p50[2]!),
    p99Ms: toMs(p99[1]!, p99[2]!),
    requests: Number(total[1]),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    raw: out,
  };
}

function runWrk(url: string, connections: number, seconds: number): Promise<WrkResult> {
  const threads = connections === 1 ? 1 : 2;
  const args = [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency', url];
  return new Promise((resolve, reject) => {
    const proc = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    proc.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    const timer = setTimeout(() => proc.kill('SIGKILL'), (seconds + 30) * 1000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`wrk ${args.join(' ')} failed (${signal ?? code}): ${err}${out}`));
      try {
        resolve(parseWrk(out));
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

// ---------------------------------------------------------------- bulk

function requestModule(url: string): typeof http | typeof https {
  return url.startsWith('https:') ? https : http;
}

/** Streams a 64 MiB download, counting bytes. Returns seconds. */
function download(base: string): Promise<number> {
  const url = `${base}/bytes?n=${BULK_BYTES}`;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    // rejectUnauthorized:false only for this loopback benchmark against the relay's self-signed certificate.
    const req = requestModule(url).get(url, { agent: false, rejectUnauthorized: false }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => {
        const seconds = (performance.now() - start) / 1000;
        if (res.statusCode !== 200) return reject(new Error(`GET ${url}: HTTP ${res.statusCode}`));
        if (bytes !== BULK_BYTES) return reject(new Error(`GET ${url}: got ${bytes} bytes, expected ${BULK_BYTES}`));
        resolve(seconds);
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`GET ${url}: response aborted after ${bytes} bytes`)));
    });
    req.setTimeout(BULK_TIMEOUT_MS, () => req.destroy(new Error(`GET ${url}: no progress for ${BULK_TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

/** Streams a 64 MiB upload in 1 MiB slices with backpressure; checks the app's count and digest. Returns seconds. */
function upload(base: string, body: Buffer, sha256: string): Promise<number> {
  const url = `${base}/upload`;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const req = requestModule(url).request(
      url,
      {
        method: 'POST',
        agent: false,
        rejectUnauthorized: false,
        headers: { 'content-type': 'application/octet-stream', 'content-length': body.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const seconds = (performance.now() - start) / 1000;
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) return reject(new Error(`POST ${url}: HTTP ${res.statusCode} ${text.slice(0, 300)}`));
          let reply: { bytes?: unknown; sha256?: unknown };
          try {
            reply = JSON.parse(text) as typeof reply;
          } catch {
            return reject(new Error(`POST ${url}: not JSON: ${text.slice(0, 300)}`));
          }
          if (reply.bytes !== BULK_BYTES)
            return reject(new Error(`POST ${url}: upstream counted ${String(reply.bytes)} bytes, expected ${BULK_BYTES}`));
          if (reply.sha256 !== sha256) return reject(new Error(`POST ${url}: sha256 mismatch (${String(reply.sha256)} vs ${sha256})`));
          resolve(seconds);
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(BULK_TIMEOUT_MS, () => req.destroy(new Error(`POST ${url}: no progress for ${BULK_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    let offset = 0;
    const pump = (): void => {
      while (offset < body.length) {
        const slice = body.subarray(offset, offset + SLICE_BYTES);
        offset += slice.length;
        if (!req.write(slice)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

/** One unmeasured warm-up transfer (JIT, TCP buffer autotuning), then the best of BULK_RUNS. */
async function bestMiBps(run: () => Promise<number>): Promise<number> {
  await run();
  let best = Infinity;
  for (let i = 0; i < BULK_RUNS; i++) best = Math.min(best, await run());
  return BULK_BYTES / (1024 * 1024) / best;
}

// ---------------------------------------------------------------- memory

function memMiB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(m[1]) / 1024;
  };
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

// ---------------------------------------------------------------- main

type Path = 'direct' | 'nodeProxy' | 'relayHttp' | 'relayHttps';
const PATHS: Path[] = ['direct', 'nodeProxy', 'relayHttp', 'relayHttps'];

interface Results {
  c1: Record<Path, WrkResult>;
  c64: Record<Path, WrkResult>;
  down: Record<Path, number>;
  up: Record<Path, number>;
  relayMem: { rss: number; hwm: number };
  agentMem: { rss: number; hwm: number };
}

async function main(): Promise<void> {
  if (!wrkAvailable()) {
    process.stderr.write('bench: `wrk` is not on PATH. Install it (Debian/Ubuntu: `apt-get install wrk`) and run again.\n');
    process.exitCode = 2;
    return;
  }
  const tmp = mkdtempSync(join(os.tmpdir(), 'relay-bench-'));
  let relayLogFd: number | undefined;
  try {
    const token = randomBytes(24).toString('base64url'); // 32 characters
    const [httpPort, httpsPort, tunnelPort] = [await freePort(), await freePort(), await freePort()];

    const upstreamChild = spawnNode('upstream', 'test/bench/upstream.js', [], {}, 'pipe');
    const upstreamPort = await readPort(upstreamChild, 15_000);
    const nodeProxyChild = spawnNode('node-proxy', 'test/bench/node-proxy.js', [`http://127.0.0.1:${upstreamPort}`], {}, 'pipe');
    const nodeProxyPort = await readPort(nodeProxyChild, 15_000);

    relayLogFd = process.env.BENCH_RELAY_LOG ? openSync(process.env.BENCH_RELAY_LOG, 'w') : undefined;
    const relay = spawnNode(
      'relay',
      'relay/cli.js',
      [
        'start',
        '--host',
        '127.0.0.1',
        '--http-port',
        String(httpPort),
        '--https-port',
        String(httpsPort),
        '--tunnel-port',
        String(tunnelPort),
        '--certs-dir',
        tmp,
        '--admin-port',
        'off',
        '--log-level',
        'info',
      ],
      { RELAY_AGENT_TOKEN: token },
      relayLogFd ?? 'ignore',
      // as the systemd unit and npm run relay start it
      relayNodeFlags,
    );
    await waitForTcp(tunnelPort, 30_000, relay);
    const certFile = join(tmp, 'relay.crt');
    if (!existsSync(certFile)) throw new Error(`${certFile} is missing after the relay started`);
    const fingerprint = fingerprintSha256(readFileSync(certFile, 'utf8'));

    const agent = spawnNode(
      'platform-agent',
      'platform-agent/cli.js',
      [
        'start',
        '--relay',
        `wss://localhost:${tunnelPort}`,
        '--relay-fingerprint',
        fingerprint,
        '--upstream',
        `http://127.0.0.1:${upstreamPort}`,
        '--connections',
        '2',
        '--log-level',
        'warn',
      ],
      { PLATFORM_AGENT_TOKEN: token },
      'pipe',
    );

    const base: Record<Path, string> = {
      direct: `http://127.0.0.1:${upstreamPort}`,
      nodeProxy: `http://127.0.0.1:${nodeProxyPort}`,
      relayHttp: `http://127.0.0.1:${httpPort}`,
      relayHttps: `https://127.0.0.1:${httpsPort}`,
    };
    const all = [upstreamChild, nodeProxyChild, relay, agent];
    await waitFor200(`${base.direct}/hello`, 15_000, all);
    await waitFor200(`${base.nodeProxy}/hello`, 15_000, all);
    await waitFor200(`${base.relayHttp}/hello`, 30_000, all);
    await waitFor200(`${base.relayHttps}/hello`, 30_000, all);
    process.stderr.write(
      `bench: ready (upstream :${upstreamPort}, relay http :${httpPort} https :${httpsPort} tunnel :${tunnelPort}); ${SECONDS} s per run, ${WARMUP_SECONDS} s warm-up\n`,
    );

    const small = async (connections: number): Promise<Record<Path, WrkResult>> => {
      const out = {} as Record<Path, WrkResult>;
      for (const p of PATHS) {
        for (const c of all) alive(c);
        await runWrk(`${base[p]}/hello`, connections, WARMUP_SECONDS);
        out[p] = await runWrk(`${base[p]}/hello`, connections, SECONDS);
        process.stderr.write(
          `bench: GET /hello c=${connections} ${p}: ${out[p].reqPerSec.toFixed(0)} req/s, p50 ${out[p].p50Ms.toFixed(3)} ms, p99 ${out[p].p99Ms.toFixed(3)} ms, errors ${out[p].non2xx + out[p].socketErrors}\n`,
        );
      }
      return out;
    };
    const c1 = await small(1);
    const c64 = await small(64);

    const body = Buffer.concat([...patternChunks(BULK_BYTES, 'bench-upload')]);
    const bodySha = createHash('sha256').update(body).digest('hex');
    const down = {} as Record<Path, number>;
    const up = {} as Record<Path, number>;
    for (const p of PATHS) {
      for (const c of all) alive(c);
      down[p] = await bestMiBps(() => download(base[p]));
      process.stderr.write(`bench: download 64 MiB ${p}: ${down[p].toFixed(1)} MiB/s\n`);
    }
    for (const p of PATHS) {
      for (const c of all) alive(c);
      up[p] = await bestMiBps(() => upload(base[p], body, bodySha));
      process.stderr.write(`bench: upload 64 MiB ${p}: ${up[p].toFixed(1)} MiB/s\n`);
    }

    for (const c of all) alive(c);
    const results: Results = { c1, c64, down, up, relayMem: memMiB(relay.proc.pid!), agentMem: memMiB(agent.proc.pid!) };
    process.stdout.write(renderTable(results));
    const agentProblems = agent.tail.filter((l) => /"level":(4|5|6)\d/.test(l));
    if (agentProblems.length > 0)
      process.stderr.write(
        `bench: the agent logged ${agentProblems.length} warning/error line(s) (last ones):\n${agentProblems.slice(-5).join('\n')}\n`,
      );
    const relayStderr = relay.tail;
    if (relayStderr.length > 0) process.stderr.write(`bench: relay stderr (last lines):\n${relayStderr.slice(-5).join('\n')}\n`);
  } finally {
    await stopAll();
    if (relayLogFd !== undefined) closeSync(relayLogFd);
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- output

function f(n: number, digits: number): string {
  return n.toFixed(digits);
}

function verdict(ok: Record<'relayHttp' | 'relayHttps', boolean>): string {
  const word = (b: boolean): string => (b ? 'PASS' : 'MISS');
  return `HTTP ${word(ok.relayHttp)} · HTTPS ${word(ok.relayHttps)}`;
}

function renderTable(r: Results): string {
  const rows: string[][] = [];
  const perPath = (label: string, value: (p: Path) => string, target = '', result = ''): void => {
    rows.push([label, ...PATHS.map(value), target, result]);
  };
  const errors = (w: WrkResult): string => String(w.non2xx + w.socketErrors);
  for (const [name, set] of [
    ['c=1', r.c1],
    ['c=64', r.c64],
  ] as const) {
    perPath(`GET /hello ${name}: req/s`, (p) => f(set[p].reqPerSec, 0));
    perPath(`GET /hello ${name}: p50 ms`, (p) => f(set[p].p50Ms, 3));
    perPath(`GET /hello ${name}: p99 ms`, (p) => f(set[p].p99Ms, 3));
    perPath(`GET /hello ${name}: errors (non-2xx + socket) / requests`, (p) => `${errors(set[p])} / ${set[p].requests}`);
  }
  const ratio = (p: Path): number => r.c64[p].reqPerSec / r.c64.direct.reqPerSec;
  const added = (p: Path): number => r.c1[p].p50Ms - r.c1.direct.p50Ms;
  perPath(
    'c=64 req/s ÷ direct c=64 req/s',
    (p) => (p === 'direct' ? '1.00' : f(ratio(p), 2)),
    `≥ ${TARGETS.c64Ratio}×`,
    verdict({ relayHttp: ratio('relayHttp') >= TARGETS.c64Ratio, relayHttps: ratio('relayHttps') >= TARGETS.c64Ratio }),
  );
  perPath(
    'added p50 at c=1 (ms, − direct p50)',
    (p) => (p === 'direct' ? '—' : f(added(p), 3)),
    `< ${TARGETS.addedP50Ms} ms`,
    verdict({ relayHttp: added('relayHttp') < TARGETS.addedP50Ms, relayHttps: added('relayHttps') < TARGETS.addedP50Ms }),
  );
  perPath(
    '64 MiB download: MiB/s (best of 2, after a warm-up)',
    (p) => f(r.down[p], 1),
    `≥ ${TARGETS.bulkMiBps} MiB/s`,
    verdict({ relayHttp: r.down.relayHttp >= TARGETS.bulkMiBps, relayHttps: r.down.relayHttps >= TARGETS.bulkMiBps }),
  );
  perPath(
    '64 MiB upload: MiB/s (best of 2, after a warm-up)',
    (p) => f(r.up[p], 1),
    `≥ ${TARGETS.bulkMiBps} MiB/s`,
    verdict({ relayHttp: r.up.relayHttp >= TARGETS.bulkMiBps, relayHttps: r.up.relayHttps >= TARGETS.bulkMiBps }),
  );
  const mem = (m: { rss: number; hwm: number }): string => `${f(m.rss, 1)} / ${f(m.hwm, 1)}`;
  rows.push(['relay process RSS / peak (VmHWM) MiB, after the load', '—', '—', mem(r.relayMem), '(same process)', '', '']);
  rows.push(['agent process RSS / peak (VmHWM) MiB, after the load', '—', '—', mem(r.agentMem), '(same process)', '', '']);

  const header = ['', 'direct', 'Node one hop (reference)', 'relay HTTP', 'relay HTTPS', 'target', 'PASS/MISS'];
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  return [
    '',
    line(header),
    line(['---', '---:', '---:', '---:', '---:', '---', '---']),
    ...rows.map(line),
    '',
    `Machine: ${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}, ${os.platform()} ${os.release()}; ` +
      `wrk ${SECONDS} s per run after ${WARMUP_SECONDS} s warm-up (c=1: -t1 -c1, c=64: -t2 -c64); relay log level info (stdout to ${process.env.BENCH_RELAY_LOG ? process.env.BENCH_RELAY_LOG : '/dev/null'}), node ${relayNodeFlags.join(' ')}; agent --connections 2; all on 127.0.0.1. ` +
      `"Node one hop" is test/bench/node-proxy.ts: http-proxy with a keep-alive agent straight to the upstream, no tunnel, no agent, no logs — the ceiling of the relay's HTTP stack here, not a target.`,
    '',
  ].join('\n');
}

const onSignal = (): void => {
  process.stderr.write('bench: interrupted, stopping children\n');
  void stopAll().then(() => process.exit(130));
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

try {
  await main();
} catch (err) {
  process.stderr.write(`bench: FAILED: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
}
