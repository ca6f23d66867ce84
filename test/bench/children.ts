/**
 * The bench's child processes: spawning, readiness checks, and stopping every one of them (and
 * what they forked) on exit, on error and on SIGINT/SIGTERM. Everything listens on 127.0.0.1.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { canConnect } from '../../shared/net-probe.js';
import { processTree, readStat } from './proc-stats.js';
export { freePort } from '../fixtures/ports.js';

/** The `dist/` folder this file was compiled into (the relay and agent CLIs are spawned from it). */
export const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** One long-lived child of the bench. */
export interface Child {
  name: string;
  proc: ChildProcess;
  /** Last lines of its stdout/stderr (when piped), for error reports. */
  tail: string[];
  /** Signals tried in turn when stopping, 5 s apart; SIGKILL follows the last one. */
  stopSignals: NodeJS.Signals[];
  /** Set by {@link stopChildren}: its exit is expected, not reported. */
  stopRequested?: boolean;
}

const children: Child[] = [];
/** Short-lived helpers (wrk runs): killed outright when the bench stops. */
const transient = new Set<ChildProcess>();
let stopping = false;

const STOP_STEP_MS = 5_000;
const TAIL_LINES = 200;

/**
 * Spawns `command` as a long-lived child that {@link stopAll} will stop. stderr is always kept
 * (last {@link TAIL_LINES} lines); stdout is kept when `stdout` is `'pipe'`.
 */
export function spawnChild(
  name: string,
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; stdout?: 'pipe' | 'ignore' | number; stopSignals?: NodeJS.Signals[] } = {},
): Child {
  const stdio: StdioOptions = ['ignore', options.stdout ?? 'pipe', 'pipe'];
  const proc = spawn(command, args, { stdio, env: { ...process.env, ...options.env } });
  const child: Child = { name, proc, tail: [], stopSignals: options.stopSignals ?? ['SIGTERM'] };
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      child.tail.push(line);
      if (child.tail.length > TAIL_LINES) child.tail.shift();
    }
  };
  proc.stderr?.on('data', keep);
  proc.stdout?.on('data', keep);
  proc.on('error', (err) => child.tail.push(`spawn error: ${err.message}`));
  proc.on('exit', (code, signal) => {
    if (!stopping && !child.stopRequested)
      process.stderr.write(`bench: ${name} exited unexpectedly (${signal ?? code})\n${child.tail.slice(-20).join('\n')}\n`);
  });
  children.push(child);
  return child;
}

/** Spawns one of this project's compiled scripts (relative to {@link DIST}) with the running Node. */
export function spawnNode(
  name: string,
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  stdout: 'pipe' | 'ignore' | number,
  nodeFlags: readonly string[] = [],
): Child {
  return spawnChild(name, process.execPath, [...nodeFlags, join(DIST, script), ...args], { env, stdout });
}

/** Registers a short-lived helper process so that {@link stopAll} kills it too. */
export function trackTransient(proc: ChildProcess): void {
  transient.add(proc);
  proc.once('exit', () => transient.delete(proc));
}

function exited(proc: ChildProcess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** True while that very process runs: a zombie has finished, and a reused pid has another start time. */
function sameProcessAlive(pid: number, startTime: number): boolean {
  const stat = readStat(pid);
  return stat !== undefined && stat.startTime === startTime && stat.state !== 'Z';
}

const atStopHooks: (() => void)[] = [];
let stopped: Promise<void> | undefined;

/** Runs `hook` once the children are stopped (removing the temp folder, closing the relay's log). */
export function atStop(hook: () => void): void {
  atStopHooks.push(hook);
}

let interrupted = false;

/** True once SIGINT or SIGTERM arrived (errors after that are the stop's doing, not failures). */
export function wasInterrupted(): boolean {
  return interrupted;
}

/**
 * Stops every child: each gets its stop signals in turn (5 s apart, then SIGKILL). Processes a
 * child forked (sshd's per-connection process, nginx's worker) are recorded first and get
 * SIGTERM, then SIGKILL, if they outlive their parent by 1 s. Then runs the {@link atStop} hooks.
 * Idempotent: every caller waits for the same stop. Bounded: about 20 s at worst.
 */
export function stopAll(): Promise<void> {
  stopping = true;
  stopped ??= (async () => {
    for (const proc of transient) proc.kill('SIGKILL');
    await Promise.all(children.map(stopOne));
    for (const hook of atStopHooks.splice(0)) {
      try {
        hook();
      } catch (err) {
        process.stderr.write(`bench: clean-up failed: ${(err as Error).message}\n`);
      }
    }
  })();
  return stopped;
}

/**
 * Stops the given children now (all of them when none are given), as {@link stopAll} would, but
 * without the {@link atStop} hooks: the bench goes on to its next section.
 */
export async function stopChildren(which: Child[] = [...children]): Promise<void> {
  for (const c of which) c.stopRequested = true;
  await Promise.all(which.map(stopOne));
  for (const c of which) {
    const i = children.indexOf(c);
    if (i >= 0) children.splice(i, 1);
  }
}

async function stopOne({ proc, stopSignals }: Child): Promise<void> {
  if (proc.pid === undefined || exited(proc)) return;
  const forked = processTree(proc.pid)
    .filter((pid) => pid !== proc.pid)
    .map((pid) => ({ pid, startTime: readStat(pid)?.startTime ?? -1 }));
  const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  for (const signal of [...stopSignals, 'SIGKILL' as const]) {
    if (exited(proc)) break;
    proc.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([gone, new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_STEP_MS)))]);
    clearTimeout(timer);
  }
  // Forked processes usually end with their parent (sshd's session when the ssh client goes):
  // give them 1 s, polled, before each signal.
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    let left = forked.filter((f) => sameProcessAlive(f.pid, f.startTime));
    for (let i = 0; i < 10 && left.length > 0; i++) {
      await sleep(100);
      left = left.filter((f) => sameProcessAlive(f.pid, f.startTime));
    }
    if (left.length === 0) return;
    for (const f of left) {
      try {
        process.kill(f.pid, signal);
      } catch {
        // already gone
      }
    }
  }
}

/** Stops the children on SIGINT/SIGTERM, then exits with 130. */
export function stopOnSignals(): void {
  const onSignal = (): void => {
    interrupted = true;
    process.stderr.write('bench: interrupted, stopping children\n');
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Throws, with its last output lines, when the child is no longer running. */
export function alive(child: Child): void {
  if (exited(child.proc)) {
    throw new Error(
      `${child.name} is not running (exit ${child.proc.signalCode ?? child.proc.exitCode})\n${child.tail.slice(-20).join('\n')}`,
    );
  }
}

/** Waits until 127.0.0.1:port accepts connections, polling every 100 ms, up to `timeoutMs`. */
export async function waitForTcp(port: number, timeoutMs: number, watch: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    alive(watch);
    if (await canConnect(port)) return;
    if (Date.now() > deadline) throw new Error(`${watch.name} did not open port ${port} within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** Reads the `{"port":N}` line a helper process (the upstream) prints once listening. */
export async function readPort(child: Child, timeoutMs: number): Promise<number> {
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
export function get(url: string, timeoutMs = 5_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.startsWith('https:') ? https : http;
    // rejectUnauthorized:false only for this loopback benchmark against the relay's self-signed certificate.
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

/** Polls `url` every 200 ms until it answers 200, up to `timeoutMs`; fails early when a watched child dies. */
export async function waitFor200(url: string, timeoutMs: number, watch: Child[]): Promise<void> {
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
