/**
 * Floods of idle TLS connections against a child relay, and its memory after each: `cycles`
 * times, open `connections` TLS connections to the relay's HTTPS port (loopback only), hold them
 * `holdMs`, close them, let the relay settle, and read its RSS (and what it says of its heap).
 * Prints one line per cycle and a summary. The relay is spawned with its file-descriptor limit
 * raised (`ulimit -n`), and so is this script (it re-executes itself under `sh -c 'ulimit -n …'`).
 *
 *   node dist/test/bench/tls-flood.js [--cycles 7] [--connections 9900] [--mode handshake|hello|tcp]
 *        [--hold-ms 2000] [--settle-ms 3000] [--env MALLOC_ARENA_MAX=2 ...] [--json]
 *
 * `handshake`: each connection completes its handshake and then sends nothing (slowloris over
 * TLS; the relay's header timeout would cut it after 20 s); `hello`: only a ClientHello is sent
 * (the handshake is never finished); `tcp`: nothing is sent at all.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The built project: this file's `dist/` when it runs compiled, else the checkout's (an e2e test imports the source). */
const DIST = here.split(/[\\/]/).includes('dist') ? join(here, '..', '..') : join(here, '..', '..', 'dist');

export interface FloodOptions {
  cycles: number;
  connections: number;
  mode: 'handshake' | 'hello' | 'tcp';
  holdMs: number;
  settleMs: number;
  /** Extra environment of the relay process (MALLOC_ARENA_MAX=2, …). */
  env: Record<string, string>;
  /** Extra relay options. */
  relayArgs: string[];
  /** File descriptors the relay may hold. */
  nofile: number;
}

export interface FloodResult {
  startRssMiB: number;
  /** RSS after each cycle's connections were closed and the relay settled. */
  rssMiB: number[];
  /** The most the relay held during a cycle (sampled while connections were open). */
  peakRssMiB: number[];
  /** Connections that were open at once in each cycle. */
  opened: number[];
}

export const floodDefaults: FloodOptions = {
  cycles: 7,
  connections: 9_900,
  mode: 'handshake',
  holdMs: 2_000,
  settleMs: 3_000,
  env: {},
  relayArgs: [],
  nofile: 65_536,
};

const TOKEN = 'tls-flood-token-0123456789';

/** Shell: the soft limit of open files raised to `n`, or to the hard limit when that is lower. */
function raiseNofile(n: number): string {
  return `{ ulimit -n ${n} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; }`;
}

/** RSS of a process, MiB, from /proc. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Spawns the built relay with `ulimit -n` raised; resolves with its HTTPS port once it has started. */
export async function spawnRelay(
  options: FloodOptions,
  certsDir: string,
): Promise<{ child: ChildProcess; httpsPort: number; adminPort: number; pid: number }> {
  const args = [
    join(DIST, 'relay/cli.js'),
    'start',
    '--host',
    '127.0.0.1',
    '--http-port',
    '0',
    '--https-port',
    '0',
    '--tunnel-port',
    '0',
    '--admin-port',
    '0',
    '--certs-dir',
    certsDir,
    '--max-connections-per-ip',
    '0',
    '--log-level',
    'info',
    ...options.relayArgs,
  ];
  const quoted = [process.execPath, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  // `exec`: the pid is the relay's own, and so is the RSS read from /proc
  const child = spawn('sh', ['-c', `${raiseNofile(options.nofile)} && exec ${quoted}`], {
    env: { ...process.env, RELAY_AGENT_TOKEN: TOKEN, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => stderr.push(l));
  const { httpsPort, adminPort } = await new Promise<{ httpsPort: number; adminPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay did not start: ${stderr.join('\n')}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.includes('relay_started')) return;
      clearTimeout(timer);
      resolve(JSON.parse(line) as { httpsPort: number; adminPort: number });
    });
    child.once('exit', (code) => reject(new Error(`relay exited (${code}): ${stderr.join('\n')}`)));
  });
  return { child, httpsPort, adminPort, pid: child.pid! };
}

/** The relay's own view of its memory (its Prometheus process metrics), MiB: V8 heap used and total, external. */
export async function heapMiB(adminPort: number): Promise<{ heapUsed: number; heapTotal: number; external: number }> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const metric = (name: string): number => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN) / 1024 / 1024;
  return {
    heapUsed: metric('relay_nodejs_heap_size_used_bytes'),
    heapTotal: metric('relay_nodejs_heap_size_total_bytes'),
    external: metric('relay_nodejs_external_memory_bytes'),
  };
}

/** A real ClientHello, caught by a server that answers nothing. */
async function clientHello(): Promise<Buffer> {
  const catcher = net.createServer();
  await new Promise<void>((r) => catcher.listen(0, '127.0.0.1', r));
  const hello = new Promise<Buffer>((resolve) => catcher.once('connection', (s) => s.once('data', resolve)));
  const client = tls.connect({ host: '127.0.0.1', port: (catcher.address() as net.AddressInfo).port, rejectUnauthorized: false });
  client.on('error', () => {});
  const bytes = await hello;
  client.destroy();
  catcher.close();
  return bytes;
}

/** Opens `count` connections, at most `parallel` in the making at once; resolves with the open ones. */
async function openMany(port: number, count: number, mode: FloodOptions['mode'], hello: Buffer): Promise<net.Socket[]> {
  const open: net.Socket[] = [];
  let next = 0;
  const parallel = 128;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const done = (socket: net.Socket | null): void => {
        if (socket) open.push(socket);
        resolve();
      };
      if (mode === 'handshake') {
        // rejectUnauthorized:false only for this loopback flood against the relay's self-signed certificate
        const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'localhost' }, () => done(s));
        s.once('error', () => done(null));
      } else {
        const s = net.connect(port, '127.0.0.1', () => {
          if (mode === 'hello') s.write(hello);
          done(s);
        });
        s.once('error', () => done(null));
      }
    });
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return open;
}

export async function flood(options: FloodOptions, log: (line: string) => void = () => {}): Promise<FloodResult> {
  const certsDir = mkdtempSync(join(os.tmpdir(), 'tls-flood-'));
  const relay = await spawnRelay(options, certsDir);
  const hello = await clientHello();
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  try {
    await sleep(500);
    const result: FloodResult = { startRssMiB: rssMiB(relay.pid), rssMiB: [], peakRssMiB: [], opened: [] };
    log(`relay pid ${relay.pid}, RSS at start ${result.startRssMiB.toFixed(0)} MiB; env ${JSON.stringify(options.env)}`);
    for (let cycle = 1; cycle <= options.cycles; cycle++) {
      const started = performance.now();
      const sockets = await openMany(relay.httpsPort, options.connections, options.mode, hello);
      for (const s of sockets) s.on('error', () => {});
      await sleep(options.holdMs);
      const peak = rssMiB(relay.pid);
      const stillOpen = sockets.filter((s) => !s.destroyed).length;
      for (const s of sockets) s.destroy();
      await sleep(options.settleMs);
      const after = rssMiB(relay.pid);
      const heap = await heapMiB(relay.adminPort);
      result.rssMiB.push(after);
      result.peakRssMiB.push(peak);
      result.opened.push(sockets.length);
      const prev = cycle === 1 ? result.startRssMiB : result.rssMiB[cycle - 2]!;
      log(
        `cycle ${cycle}: ${sockets.length} opened (${stillOpen} still open after ${options.holdMs} ms) in ${Math.round(performance.now() - started)} ms; ` +
          `RSS held ${peak.toFixed(0)} MiB, after close ${after.toFixed(0)} MiB (${after - prev >= 0 ? '+' : ''}${(after - prev).toFixed(0)}); ` +
          `heap used/total ${heap.heapUsed.toFixed(0)}/${heap.heapTotal.toFixed(0)} MiB, external ${heap.external.toFixed(0)} MiB`,
      );
    }
    return result;
  } finally {
    relay.child.kill('SIGKILL');
    rmSync(certsDir, { recursive: true, force: true });
  }
}

function parseArgs(argv: string[]): FloodOptions & { json: boolean } {
  const o: FloodOptions & { json: boolean } = { ...floodDefaults, env: {}, relayArgs: [], json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => argv[++i] ?? '';
    if (a === '--cycles') o.cycles = Number(v());
    else if (a === '--connections') o.connections = Number(v());
    else if (a === '--mode') o.mode = v() as FloodOptions['mode'];
    else if (a === '--hold-ms') o.holdMs = Number(v());
    else if (a === '--settle-ms') o.settleMs = Number(v());
    else if (a === '--env') {
      const [k, ...rest] = v().split('=');
      o.env[k!] = rest.join('=');
    } else if (a === '--relay-arg') o.relayArgs.push(v());
    else if (a === '--json') o.json = true;
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

async function main(): Promise<void> {
  const options = parseArgs(process.argv.slice(2));
  // this process holds as many sockets as the relay: raise its own limit by running again under ulimit
  if (process.env.TLS_FLOOD_ULIMIT !== '1') {
    const quoted = [process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)].map((a) => `'${a.replace(/'/g, "'\\''")}'`);
    const r = spawnSync('sh', ['-c', `${raiseNofile(options.nofile)} && exec ${quoted.join(' ')}`], {
      stdio: 'inherit',
      env: { ...process.env, TLS_FLOOD_ULIMIT: '1' },
    });
    process.exit(r.status ?? 1);
  }
  const result = await flood(options, (line) => console.log(line));
  const steps = result.rssMiB.map((v, i) => v - (i === 0 ? result.startRssMiB : result.rssMiB[i - 1]!));
  console.log(`increments: ${steps.map((s) => `${s >= 0 ? '+' : ''}${s.toFixed(0)}`).join(', ')} MiB`);
  if (options.json) console.log(JSON.stringify(result));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
