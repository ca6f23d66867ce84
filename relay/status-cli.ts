/**
 * `relay status`: reads GET /status from a running relay's admin listener and prints the agent
 * connections and platform readiness as a table (or the JSON as is, with --json). Exit status 1
 * when the relay cannot be reached or answers with something else than a status.
 */
import type { Argv } from 'yargs';
import { configError } from '../shared/errors.js';
import { ADMIN_DEFAULT_HOST, ADMIN_DEFAULT_PORT, type AgentStatus, type RelayStatus } from './admin/admin-server.js';

export const DEFAULT_ADMIN_URL = `http://${ADMIN_DEFAULT_HOST}:${ADMIN_DEFAULT_PORT}`;
const FETCH_TIMEOUT_MS = 5_000;

/** Where the command writes; tests pass their own. */
export interface StatusOutput {
  out(text: string): void;
  err(text: string): void;
}

const processOutput: StatusOutput = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

/** Adds `status [--admin-url <url>] [--json]` to a yargs instance. */
export function registerStatusCommand(y: Argv, output: StatusOutput = processOutput): Argv {
  return y.command(
    'status',
    "print the relay's connected agents and platform readiness (from its admin listener)",
    (cmd) =>
      cmd
        .option('admin-url', { type: 'string', default: DEFAULT_ADMIN_URL, describe: "the relay's admin listener" })
        .option('json', { type: 'boolean', default: false, describe: 'print the raw /status JSON' }),
    async (argv) => {
      process.exitCode = await runStatus(String(argv.adminUrl), argv.json === true, output);
    },
  );
}

/** Fetches and prints the status; returns the exit status (0, or 1 when it could not be read). */
export async function runStatus(adminUrl: string, json: boolean, output: StatusOutput): Promise<number> {
  const url = statusUrl(adminUrl);
  let status: RelayStatus;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS), headers: { accept: 'application/json' } });
    const text = await res.text();
    if (!res.ok) throw new Error(`HTTP ${res.status} from ${url}`);
    status = parseStatus(text, url);
  } catch (err) {
    output.err(
      `error: cannot read the relay status at ${url} (${describeFailure(err)}).\n` +
        `Is the relay running, and is its admin listener there? Point --admin-url at it (default ${DEFAULT_ADMIN_URL}).\n`,
    );
    return 1;
  }
  output.out(json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
  return 0;
}

/** `http://host:port[/prefix]` → `…/status`; anything else is a config error naming --admin-url. */
function statusUrl(adminUrl: string): string {
  let url: URL;
  try {
    url = new URL(adminUrl);
  } catch {
    throw configError('admin-url', adminUrl, `expected the admin listener's URL, e.g. ${DEFAULT_ADMIN_URL}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw configError('admin-url', adminUrl, `expected an http:// URL, e.g. ${DEFAULT_ADMIN_URL}`);
  }
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/status`;
  url.search = '';
  return url.toString();
}

function parseStatus(text: string, url: string): RelayStatus {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${url} did not answer with JSON`);
  }
  const v = value as Partial<RelayStatus> | null;
  if (!v || !Array.isArray(v.platforms) || !Array.isArray(v.agents)) throw new Error(`${url} did not answer with a relay status`);
  return v as RelayStatus;
}

function describeFailure(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === 'TimeoutError') return `no answer within ${FETCH_TIMEOUT_MS / 1000} s`;
  // fetch wraps the socket error: ECONNREFUSED and friends are in its cause
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? err.message;
}

/** The status as text: a header line, platform readiness, then one row per agent connection. */
export function formatStatus(status: RelayStatus): string {
  const lines: string[] = [];
  lines.push(`relay ${clean(status.version)}, up ${formatDuration(status.uptime_s)}`);
  lines.push('');

  const missing = status.platforms.filter((p) => !p.ready).map((p) => clean(p.id));
  if (status.platforms.length === 0) lines.push('no platforms configured');
  else {
    lines.push(
      ...table(
        ['PLATFORM', 'AGENTS', 'READY'],
        status.platforms.map((p) => [clean(p.id), String(p.agents), p.ready ? 'yes' : 'NO']),
      ),
    );
  }
  lines.push(missing.length === 0 ? 'ready: yes' : `ready: NO (no agent connected for ${missing.join(', ')})`);
  lines.push('');

  if (status.agents.length === 0) lines.push('no agents connected');
  else {
    const rows = status.agents.map((a: AgentStatus) => [
      clean(a.connectionId ?? a.agentId),
      clean(a.platform),
      clean(a.address),
      clean(a.since.replace(/\.\d+Z$/, 'Z')),
      String(a.streams),
      formatBytes(a.bytesIn),
      formatBytes(a.bytesOut),
      a.rttMs === null ? '-' : `${a.rttMs.toFixed(1)} ms`,
    ]);
    lines.push(...table(['ID', 'PLATFORM', 'ADDRESS', 'SINCE', 'STREAMS', 'IN', 'OUT', 'RTT'], rows, [4, 5, 6, 7]));
  }
  return `${lines.join('\n')}\n`;
}

/** Columns padded to their widest cell; the columns in `right` are right-aligned (numbers). */
function table(header: string[], rows: string[][], right: number[] = [1]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((cell, i) => (right.includes(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** 1536 → `1.5 KiB`. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** 93784 → `1d 2h 3m 4s`. */
export function formatDuration(seconds: number): string {
  let s = Math.max(0, Math.floor(seconds));
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
  ] as const) {
    if (s >= size || parts.length > 0) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  parts.push(`${s}s`);
  return parts.join(' ');
}

// The status comes over the network: keep terminal control sequences out of the output.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
function clean(value: unknown): string {
  return String(value).replace(CONTROL, '?');
}
