/**
 * Small GETs driven by `wrk` (https://github.com/wg/wrk): one run, its output parsed into the
 * numbers the table shows.
 */
import { spawn, spawnSync } from 'node:child_process';
import { trackTransient } from './children.js';

/** What one wrk run measured. */
export interface WrkResult {
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** Requests completed in the run (the divisor of CPU per request). */
  requests: number;
  non2xx: number;
  socketErrors: number;
}

/** True when `wrk` is on PATH. */
export function wrkAvailable(): boolean {
  const r = spawnSync('wrk', ['--version'], { stdio: 'ignore', timeout: 5_000 });
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

/** Parses wrk's `--latency` report. Throws, quoting the output, when a figure is missing. */
export function parseWrk(out: string): WrkResult {
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
  };
}

/** wrk's thread count for a connection count: one thread for c=1, two (the machine's cores) above. */
export function wrkThreads(connections: number): number {
  return connections === 1 ? 1 : 2;
}

/**
 * Extra wrk arguments: request headers (`-H`, e.g. `Authorization: Bearer …`), a Lua script (`-s`,
 * for a POST) and the socket timeout (`--timeout`, wrk's default 2 s; a slower answer counts as a
 * socket error).
 */
export interface WrkOptions {
  headers?: string[];
  script?: string;
  timeoutSeconds?: number;
}

/**
 * Runs `wrk -t<threads> -c<connections> -d<seconds>s [-H …] [-s …] --latency <url>` and parses
 * it. Killed after `seconds + 30` s if it has not finished.
 */
export function runWrk(url: string, connections: number, seconds: number, opts: WrkOptions = {}): Promise<WrkResult> {
  const args = [`-t${wrkThreads(connections)}`, `-c${connections}`, `-d${seconds}s`];
  for (const h of opts.headers ?? []) args.push('-H', h);
  if (opts.script !== undefined) args.push('-s', opts.script);
  if (opts.timeoutSeconds !== undefined) args.push('--timeout', `${opts.timeoutSeconds}s`);
  args.push('--latency', url);
  return new Promise((resolve, reject) => {
    const proc = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    trackTransient(proc);
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
