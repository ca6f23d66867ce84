#!/usr/bin/env node
/**
 * `node dist/test/bench/mux-bulk.js [distDir ...]`: bulk throughput of the multiplexer alone, no
 * HTTP. Two processes on 127.0.0.1, as in production: this one plays the relay (MuxSession
 * 'server' on a WebSocketServer), a forked child plays the agent (MuxSession 'client', so its
 * frames are masked). Each run moves 64 MiB agent -> relay ("down", a download's direction) and
 * 64 MiB relay -> agent ("up") on one stream, checked byte for byte, and reports MiB/s and the CPU
 * time each process spent. The baseline in the same run is plain `ws` (the same 64 MiB as
 * 256 KiB messages, gated on bufferedAmount): the ceiling the tunnel's framing is measured against.
 *
 * Each distDir (default: this build's) is a compiled tree whose `shared/mux/session.js` is
 * loaded, so an older build can be compared with this one; runs interleave the variants.
 * The WebSocket runs over TLS, as the tunnel does (a self-signed certificate made at start);
 * BENCH_TLS=0 runs it in the clear. Env: BENCH_ROUNDS (default 3), BENCH_CHUNK_BYTES (the size of
 * each write into the stream, default 65536).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createCipheriv } from 'node:crypto';
import { once } from 'node:events';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { WebSocket, WebSocketServer } from 'ws';
import { generateSelfSigned } from '../../shared/cert-making.js';
import type { MuxSession as MuxSessionClass } from '../../shared/mux/session.js';
import type { MuxStream } from '../../shared/mux/stream.js';

const BULK_BYTES = 64 * 1024 * 1024;
/** Size of each write into the stream: 64 KiB is what a socket read hands the relay or the agent. */
const CHUNK_BYTES = Number(process.env.BENCH_CHUNK_BYTES ?? 64 * 1024);
const RAW_MESSAGE_BYTES = 256 * 1024;
const RAW_HIGH_WATER_BYTES = 1024 * 1024;
const META = { clientIp: '127.0.0.1', clientPort: 1, listenerPort: 10443, tls: true };
const THIS_DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const TLS = process.env.BENCH_TLS !== '0';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`BENCH_ROUNDS must be a positive integer (got ${process.env.BENCH_ROUNDS})`);
if (!Number.isInteger(CHUNK_BYTES) || CHUNK_BYTES < 1 || BULK_BYTES % CHUNK_BYTES !== 0) {
  throw new Error(`BENCH_CHUNK_BYTES must divide ${BULK_BYTES} (got ${process.env.BENCH_CHUNK_BYTES})`);
}

type Direction = 'down' | 'up';
/** Parent -> child. */
type Command = { cmd: 'connect'; port: number; dist: string; raw: boolean } | { cmd: 'cpu' } | { cmd: 'exit' };
/** Child -> parent. */
type Reply = { cpu: NodeJS.CpuUsage } | { connected: true } | Received;
interface Received {
  received: number;
  /** Every byte equal to the pattern's, in order. */
  intact: boolean;
}

/**
 * 4 MiB of pseudo-random bytes (an AES-CTR key stream, so both processes make the same), sent 16
 * times: incompressible, and known to the receiver.
 */
const PATTERN = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16)).update(Buffer.alloc(4 * 1024 * 1024));

/** Writes BULK_BYTES in CHUNK_BYTES slices, honouring backpressure, then ends. */
async function writeBulk(stream: MuxStream): Promise<void> {
  for (let sent = 0; sent < BULK_BYTES; sent += CHUNK_BYTES) {
    const at = sent % PATTERN.length;
    if (!stream.write(PATTERN.subarray(at, at + CHUNK_BYTES))) await once(stream, 'drain');
  }
  stream.end();
}

/**
 * Compares what arrives with the pattern, byte for byte and in order (memcmp: far cheaper than
 * hashing, which would dominate the time measured).
 */
class Checker {
  received = 0;
  intact = true;

  check(chunk: Buffer): void {
    for (let off = 0; off < chunk.length;) {
      const at = this.received % PATTERN.length;
      const n = Math.min(chunk.length - off, PATTERN.length - at);
      if (!chunk.subarray(off, off + n).equals(PATTERN.subarray(at, at + n))) this.intact = false;
      off += n;
      this.received += n;
    }
  }

  get result(): Received {
    return { received: this.received, intact: this.intact };
  }
}

function readBulk(stream: MuxStream): Promise<Received> {
  return new Promise((resolve, reject) => {
    const checker = new Checker();
    stream.on('data', (c: Buffer) => checker.check(c));
    stream.once('error', reject);
    stream.once('end', () => resolve(checker.result));
  });
}

async function loadSession(dist: string): Promise<typeof MuxSessionClass> {
  const mod = (await import(pathToFileURL(join(dist, 'shared', 'mux', 'session.js')).href)) as { MuxSession: typeof MuxSessionClass };
  return mod.MuxSession;
}

// ---------------------------------------------------------------- child: the agent side

async function child(): Promise<void> {
  const send = (reply: Reply): void => void process.send!(reply);
  let ws: WebSocket | null = null;
  process.on('message', (command: Command) => {
    if (command.cmd === 'cpu') send({ cpu: process.cpuUsage() });
    else if (command.cmd === 'exit') {
      ws?.terminate();
      process.exit(0);
    } else void connect(command);
  });

  async function connect({ port, dist, raw }: Extract<Command, { cmd: 'connect' }>): Promise<void> {
    ws = new WebSocket(`${TLS ? 'wss' : 'ws'}://127.0.0.1:${port}`, {
      perMessageDeflate: false,
      maxPayload: 4 * 1024 * 1024,
      rejectUnauthorized: false, // the bench's own self-signed certificate
    });
    await once(ws, 'open');
    if (raw) {
      rawChild(ws, send);
    } else {
      const MuxSession = await loadSession(dist);
      new MuxSession(ws, {
        role: 'client',
        pingIntervalMs: 0,
        onStream: (stream) => {
          stream.on('error', fail);
          if (stream.meta.clientPort === 1) void writeBulk(stream).then(() => stream.resume());
          else
            void readBulk(stream).then((got) => {
              stream.end();
              send(got);
            });
        },
      });
    }
    send({ connected: true });
  }
}

/** Plain ws: answers 'down' with BULK_BYTES of messages, counts 'up'. */
function rawChild(ws: WebSocket, send: (reply: Reply) => void): void {
  const checker = new Checker();
  ws.on('message', (data: Buffer) => {
    if (data.length === 4 && data.toString() === 'down') {
      void rawWrite(ws);
      return;
    }
    checker.check(data);
    if (checker.received === BULK_BYTES) send(checker.result);
  });
}

async function rawWrite(ws: WebSocket): Promise<void> {
  for (let sent = 0; sent < BULK_BYTES; sent += RAW_MESSAGE_BYTES) {
    const at = sent % PATTERN.length;
    ws.send(PATTERN.subarray(at, at + RAW_MESSAGE_BYTES));
    while (ws.bufferedAmount > RAW_HIGH_WATER_BYTES) await new Promise((r) => setImmediate(r));
  }
}

// ---------------------------------------------------------------- parent: the relay side

interface Result {
  variant: string;
  direction: Direction;
  mibps: number;
  relayCpuMs: number;
  agentCpuMs: number;
}

class Agent {
  private readonly replies: Reply[] = [];
  private readonly waiters: ((r: Reply) => void)[] = [];
  private stopping = false;
  readonly proc: ChildProcess;

  constructor() {
    this.proc = fork(fileURLToPath(import.meta.url), ['--child'], { stdio: 'inherit' });
    this.proc.once('exit', (code, signal) => {
      if (this.stopping) return;
      console.error(`bench: the agent process exited (${signal ?? code})`);
      process.exit(1);
    });
    this.proc.on('message', (r: Reply) => {
      const w = this.waiters.shift();
      if (w) w(r);
      else this.replies.push(r);
    });
  }

  next(): Promise<Reply> {
    const r = this.replies.shift();
    return r ? Promise.resolve(r) : new Promise((resolve) => this.waiters.push(resolve));
  }

  async cpu(): Promise<NodeJS.CpuUsage> {
    this.proc.send({ cmd: 'cpu' } satisfies Command);
    return ((await this.next()) as { cpu: NodeJS.CpuUsage }).cpu;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const exited = once(this.proc, 'exit');
    this.proc.send({ cmd: 'exit' } satisfies Command);
    await exited;
  }
}

function fail(err: Error): never {
  console.error('bench:', err);
  process.exit(1);
}

function cpuMs(u: NodeJS.CpuUsage): number {
  return (u.user + u.system) / 1000;
}

/** One pair, one transfer each way. */
async function runOnce(variant: string, dist: string | null): Promise<Result[]> {
  const server = TLS ? https.createServer(certificate) : null;
  const wsOptions = { perMessageDeflate: false, maxPayload: 4 * 1024 * 1024 };
  const wss = server ? new WebSocketServer({ server, ...wsOptions }) : new WebSocketServer({ host: '127.0.0.1', port: 0, ...wsOptions });
  if (server) server.listen(0, '127.0.0.1');
  await once(server ?? wss, 'listening');
  const agent = new Agent();
  const accepted = once(wss, 'connection') as Promise<[WebSocket]>;
  const port = ((server ?? wss).address() as AddressInfo).port;
  agent.proc.send({ cmd: 'connect', port, dist: dist ?? '', raw: dist === null } satisfies Command);
  const [[ws]] = await Promise.all([accepted, agent.next()]);
  const session = dist === null ? null : new (await loadSession(dist))(ws, { role: 'server', pingIntervalMs: 0 });

  const results: Result[] = [];
  for (const direction of ['down', 'up'] as const) {
    const agentCpu0 = await agent.cpu();
    const relayCpu0 = process.cpuUsage();
    const started = performance.now();
    let got: Received;
    if (session) {
      const stream = session.openStream({ ...META, clientPort: direction === 'down' ? 1 : 2 });
      stream.on('error', fail);
      if (direction === 'down') {
        got = await readBulk(stream);
        stream.end();
      } else {
        void writeBulk(stream);
        stream.resume();
        got = (await agent.next()) as Received;
      }
    } else if (direction === 'down') {
      got = await rawRead(ws);
    } else {
      void rawWrite(ws);
      got = (await agent.next()) as Received;
    }
    const seconds = (performance.now() - started) / 1000;
    const relayCpu = process.cpuUsage(relayCpu0);
    const agentCpu = await agent.cpu();
    if (got.received !== BULK_BYTES || !got.intact) {
      throw new Error(`${variant} ${direction}: ${got.received} bytes received, ${got.intact ? 'intact' : 'CORRUPTED'}`);
    }
    results.push({
      variant,
      direction,
      mibps: BULK_BYTES / (1024 * 1024) / seconds,
      relayCpuMs: cpuMs(relayCpu),
      agentCpuMs: cpuMs(agentCpu) - cpuMs(agentCpu0),
    });
  }
  session?.close();
  ws.terminate();
  await agent.stop();
  await new Promise<void>((resolve) => wss.close(() => resolve()));
  if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  return results;
}

/** Plain ws 'down': asks the agent for BULK_BYTES and counts what arrives. */
function rawRead(ws: WebSocket): Promise<Received> {
  return new Promise((resolve) => {
    const checker = new Checker();
    const onMessage = (data: Buffer): void => {
      checker.check(data);
      if (checker.received < BULK_BYTES) return;
      ws.off('message', onMessage);
      resolve(checker.result);
    };
    ws.on('message', onMessage);
    ws.send('down', { binary: true });
  });
}

const certificate = (() => {
  if (!TLS || process.argv[2] === '--child') return { cert: '', key: '' };
  return generateSelfSigned({ commonName: 'localhost', ipAddresses: ['127.0.0.1'] });
})();

async function parent(): Promise<void> {
  const dists = process.argv.slice(2).map((d) => resolve(d));
  const variants: [string, string | null][] = [
    ['ws alone', null],
    ...(dists.length ? dists : [THIS_DIST]).map((d) => [d, d] as [string, string]),
  ];
  const all: Result[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, dist] of variants) {
      for (const r of await runOnce(name, dist)) {
        all.push(r);
        console.error(`round ${round} ${r.variant} ${r.direction}: ${r.mibps.toFixed(0)} MiB/s`);
      }
    }
  }
  console.log('| variant | direction | MiB/s median (each run) | relay CPU ms median (each) | agent CPU ms median (each) |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const [name] of variants) {
    for (const direction of ['down', 'up'] as const) {
      const rs = all.filter((r) => r.variant === name && r.direction === direction);
      const cell = (f: (r: Result) => number): string => {
        const values = rs.map(f);
        return `**${median(values).toFixed(0)}** (${values.map((v) => v.toFixed(0)).join(' ')})`;
      };
      console.log(`| ${name} | ${direction} | ${cell((r) => r.mibps)} | ${cell((r) => r.relayCpuMs)} | ${cell((r) => r.agentCpuMs)} |`);
    }
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

await (process.argv[2] === '--child' ? child() : parent());
