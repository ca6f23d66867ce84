#!/usr/bin/env node
/**
 * `npm run bench`: the relay against real peers on this machine, in one run.
 *
 * Spawns the sample app as the upstream (upstream.ts); nginx as a one-hop reverse proxy and an
 * `ssh -R` tunnel to it (peers.ts); the relay CLI (per-request info logging on, stdout to
 * /dev/null) and the platform agent CLI in pipe mode (--upstream, 2 tunnel connections). Every
 * measurement runs every path in turn: small GETs driven by `wrk` (wrk.ts) with the CPU each
 * process of the path spent per request (proc-stats.ts), then 64 MiB downloads and uploads
 * (bulk.ts). Prints one Markdown table (report.ts) with the relay's ratios to its peers and
 * PASS/MISS against the targets. Everything stays on 127.0.0.1; every child is stopped at the
 * end, on error and on SIGINT/SIGTERM.
 *
 * Then the store section (store-bench.ts): the authenticated-request cost of the built-in platform
 * server with its store in PostgreSQL (a private cluster) against SQLite, a second table.
 *
 * Env: BENCH_SECONDS (measured wrk run, default 5), BENCH_WARMUP_SECONDS (default 2),
 * BENCH_RELAY_LOG=<file> (keep the relay's log in a file instead of /dev/null, for diagnosis),
 * BENCH_ONLY=relay|store (one section alone: `BENCH_ONLY=store npm run bench`; default both).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { relayNodeFlags } from '../../relay/node-flags.js';
import { fingerprintSha256 } from '../../shared/certs.js';
import { patternChunks } from '../../platform-agent/agent/sample-app.js';
import { download, mibPerSecond, upload } from './bulk.js';
import {
  type Child,
  alive,
  atStop,
  wasInterrupted,
  freePort,
  readPort,
  spawnNode,
  stopAll,
  stopChildren,
  stopOnSignals,
  waitFor200,
  waitForTcp,
} from './children.js';
import { type MeasuredProcess, startNginx, startSshTunnel } from './peers.js';
import { clockTicksPerSecond, sampleCpuTicks, treeMemory, type Memory } from './proc-stats.js';
import { PATHS, type PathId, type Results, type SmallRun, renderTable } from './report.js';
import { runStoreBench } from './store-bench.js';
import { runWrk, wrkAvailable, wrkThreads } from './wrk.js';

const SECONDS = positiveInt('BENCH_SECONDS', 5);
const WARMUP_SECONDS = positiveInt('BENCH_WARMUP_SECONDS', 2);
const BULK_RUNS = 2;
const ONLY = only();

function only(): 'relay' | 'store' | undefined {
  const raw = process.env.BENCH_ONLY;
  if (raw === undefined || raw === '') return undefined;
  if (raw === 'relay' || raw === 'store') return raw;
  throw new Error(`BENCH_ONLY must be relay or store (got ${JSON.stringify(raw)})`);
}

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 3600) throw new Error(`${name} must be an integer from 1 to 3600 (got ${JSON.stringify(raw)})`);
  return n;
}

/** One column: where its clients connect and the processes it adds in front of the upstream. */
interface BenchPath {
  base: string;
  processes: MeasuredProcess[];
}

function log(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

async function startRelayAndAgent(
  tmp: string,
  upstreamPort: number,
  relayLogFd: number | undefined,
): Promise<{ relay: Child; agent: Child; httpPort: number; httpsPort: number }> {
  const token = randomBytes(24).toString('base64url'); // 32 characters
  const [httpPort, httpsPort, tunnelPort] = [await freePort(), await freePort(), await freePort()];
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
    // as the systemd unit and `npm run relay` start it
    relayNodeFlags,
  );
  await waitForTcp(tunnelPort, 30_000, relay);
  const certFile = join(tmp, 'relay.crt');
  if (!existsSync(certFile)) throw new Error(`${certFile} is missing after the relay started`);
  const agent = spawnNode(
    'platform-agent',
    'platform-agent/cli.js',
    [
      'start',
      '--relay',
      `wss://localhost:${tunnelPort}`,
      '--relay-fingerprint',
      fingerprintSha256(readFileSync(certFile, 'utf8')),
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
  return { relay, agent, httpPort, httpsPort };
}

async function main(): Promise<void> {
  if (!wrkAvailable()) {
    log('`wrk` is not on PATH. Install it (Debian/Ubuntu: `apt-get install wrk`) and run again.');
    process.exitCode = 2;
    return;
  }
  const tmp = mkdtempSync(join(os.tmpdir(), 'relay-bench-'));
  atStop(() => rmSync(tmp, { recursive: true, force: true }));
  try {
    if (ONLY !== 'store') {
      await relayBench(tmp);
      // the relay section's processes stop before the store section is measured
      await stopChildren();
    }
    if (ONLY !== 'relay') process.stdout.write(await runStoreBench({ seconds: SECONDS, warmupSeconds: WARMUP_SECONDS, tmp, log }));
  } finally {
    await stopAll();
  }
}

/** The relay against its peers: the first table. */
async function relayBench(tmp: string): Promise<void> {
  const upstream = spawnNode('upstream', 'test/bench/upstream.js', [], {}, 'pipe');
  const upstreamPort = await readPort(upstream, 15_000);
  const direct = `http://127.0.0.1:${upstreamPort}`;
  await waitFor200(`${direct}/hello`, 15_000, [upstream]);

  const nginx = await startNginx(tmp, upstreamPort);
  const ssh = await startSshTunnel(tmp, upstreamPort);
  const relayLogFd = process.env.BENCH_RELAY_LOG ? openSync(process.env.BENCH_RELAY_LOG, 'w') : undefined;
  if (relayLogFd !== undefined) atStop(() => closeSync(relayLogFd));
  const { relay, agent, httpPort, httpsPort } = await startRelayAndAgent(tmp, upstreamPort, relayLogFd);
  const relayProcesses = [
    { name: 'relay', child: relay },
    { name: 'agent', child: agent },
  ];
  const paths: Partial<Record<PathId, BenchPath>> = {
    direct: { base: direct, processes: [] },
    ...(nginx && { nginx }),
    ...(ssh && { ssh }),
    relayHttp: { base: `http://127.0.0.1:${httpPort}`, processes: relayProcesses },
    relayHttps: { base: `https://127.0.0.1:${httpsPort}`, processes: relayProcesses },
  };
  const available = PATHS.filter((p) => paths[p] !== undefined);
  const all = [upstream, ...available.flatMap((p) => paths[p]!.processes.map((m) => m.child))];
  const check = (): void => all.forEach(alive);
  for (const p of ['relayHttp', 'relayHttps'] as const) await waitFor200(`${paths[p]!.base}/hello`, 30_000, all);
  log(`ready: ${available.map((p) => `${p} ${paths[p]!.base}`).join(', ')}; ${SECONDS} s per run, ${WARMUP_SECONDS} s warm-up`);

  const memoryOf = (pid: (m: MeasuredProcess) => number) => {
    const out: Partial<Record<PathId, Map<string, Memory>>> = {};
    for (const p of available) out[p] = new Map(paths[p]!.processes.map((m) => [m.name, treeMemory(pid(m))]));
    return out;
  };
  const pidOf = (m: MeasuredProcess): number => m.child.proc.pid!;
  const idle = memoryOf(pidOf);

  const hz = clockTicksPerSecond();
  const small = async (connections: number): Promise<Partial<Record<PathId, SmallRun>>> => {
    const out: Partial<Record<PathId, SmallRun>> = {};
    for (const p of available) {
      check();
      const url = `${paths[p]!.base}/hello`;
      const measured = [{ name: 'upstream', child: upstream }, ...paths[p]!.processes];
      const pids = measured.map(pidOf);
      await runWrk(url, connections, WARMUP_SECONDS);
      const before = sampleCpuTicks(pids);
      const wrk = await runWrk(url, connections, SECONDS);
      const after = sampleCpuTicks(pids);
      const cpuUsPerRequest = new Map(
        measured.map((m) => {
          const ticks = (after.get(pidOf(m)) ?? 0) - (before.get(pidOf(m)) ?? 0);
          return [m.name, wrk.requests > 0 ? ((ticks / hz) * 1e6) / wrk.requests : NaN] as [string, number];
        }),
      );
      out[p] = { wrk, cpuUsPerRequest };
      const cpu = [...cpuUsPerRequest].map(([n, v]) => `${n} ${v.toFixed(0)}`).join(', ');
      log(
        `GET /hello c=${connections} ${p}: ${wrk.reqPerSec.toFixed(0)} req/s, p50 ${wrk.p50Ms.toFixed(3)} ms, p99 ${wrk.p99Ms.toFixed(3)} ms, ` +
          `errors ${wrk.non2xx + wrk.socketErrors}; CPU µs/request: ${cpu}`,
      );
    }
    return out;
  };
  const c1 = await small(1);
  const c64 = await small(64);

  // One unmeasured warm-up transfer per path (JIT, TCP buffer autotuning), then BULK_RUNS rounds
  // that each visit every path; the best round counts.
  const bulk = async (what: string, run: (base: string) => Promise<number>): Promise<Partial<Record<PathId, number>>> => {
    const best: Partial<Record<PathId, number>> = {};
    for (const p of available) {
      check();
      await run(paths[p]!.base);
    }
    for (let round = 0; round < BULK_RUNS; round++) {
      for (const p of available) {
        check();
        const mibps = mibPerSecond(await run(paths[p]!.base));
        best[p] = Math.max(best[p] ?? 0, mibps);
        log(`${what} 64 MiB ${p} (round ${round + 1}): ${mibps.toFixed(1)} MiB/s`);
      }
    }
    return best;
  };
  const downMiBps = await bulk('download', download);
  const body = Buffer.concat([...patternChunks(64 * 1024 * 1024, 'bench-upload')]);
  const bodySha = createHash('sha256').update(body).digest('hex');
  const upMiBps = await bulk('upload', (base) => upload(base, body, bodySha));

  check();
  const results: Results = { c1, c64, downMiBps, upMiBps, idle, end: memoryOf(pidOf) };
  process.stdout.write(renderTable(results, new Set(available), note(nginx?.version, ssh?.version)));

  const agentProblems = agent.tail.filter((l) => /"level":(4|5|6)\d/.test(l));
  if (agentProblems.length > 0)
    log(`the agent logged ${agentProblems.length} warning/error line(s) (last ones):\n${agentProblems.slice(-5).join('\n')}`);
  if (relay.tail.length > 0) log(`relay stderr (last lines):\n${relay.tail.slice(-5).join('\n')}`);
}

function note(nginxVersion: string | undefined, sshVersion: string | undefined): string {
  const cpu = os.cpus();
  return (
    `Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}, ${os.platform()} ${os.release()}; ` +
    `wrk ${SECONDS} s per run after ${WARMUP_SECONDS} s warm-up (c=1: -t${wrkThreads(1)} -c1, c=64: -t${wrkThreads(64)} -c64); ` +
    `relay log level info (stdout to ${process.env.BENCH_RELAY_LOG || '/dev/null'}); agent --connections 2; all on 127.0.0.1, ` +
    `client, proxies and upstream sharing the cores. ` +
    `Upstream: the sample app (one Node process). ` +
    `nginx one hop: ${nginxVersion ?? 'not installed'}, master + 1 worker, upstream keepalive 64, proxy_http_version 1.1, ` +
    `access log on (buffer=64k), responses buffered (default), proxy_request_buffering off (uploads streamed, as the relay and ssh stream them). ` +
    `ssh -R: ${sshVersion ?? 'not installed'}, sshd and \`ssh -N -R\` on loopback, default algorithms (chacha20-poly1305 negotiated), Compression=no; its sshd figures sum the ` +
    `listener and the processes it forked for the session. ` +
    `CPU: utime+stime (+ reaped children) from /proc/PID/stat over the measured wrk run ÷ its requests (CLK_TCK ${clockTicksPerSecond()}). ` +
    `RSS: VmRSS after readiness and VmHWM at the end, summed over each peer's processes.`
  );
}

stopOnSignals();
try {
  await main();
} catch (err) {
  // After SIGINT/SIGTERM the run's failures are the stop's doing; the signal handler sets the exit code.
  if (!wasInterrupted()) {
    process.stderr.write(`bench: FAILED: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
