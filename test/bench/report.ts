/**
 * The bench's one Markdown table: every measurement for every path, then the relay's ratios
 * against its peers with PASS/MISS against the targets, then one note line.
 */
import type { Memory } from './proc-stats.js';
import type { WrkResult } from './wrk.js';

/** The columns, in order. */
export const PATHS = ['direct', 'nginx', 'ssh', 'relayHttp', 'relayHttps'] as const;
export type PathId = (typeof PATHS)[number];

const HEADINGS: Record<PathId, string> = {
  direct: 'direct',
  nginx: 'nginx one hop',
  ssh: '`ssh -R` tunnel',
  relayHttp: 'relay HTTP',
  relayHttps: 'relay HTTPS',
};

/** The targets, all relative to peers measured in the same run except memory. */
export const TARGETS = {
  /** c=64 req/s, relay ÷ ssh -R, at least. */
  c64VsSsh: { relayHttp: 1.0, relayHttps: 0.8 },
  /** CPU per small request, relay + agent ÷ nginx, at most. */
  cpuVsNginx: 3,
  /** c=1 p50, relay ÷ ssh -R, at most. */
  p50VsSsh: 1.0,
  /** 64 MiB download and upload, relay ÷ ssh -R, at least. */
  bulkVsSsh: 1.0,
  relayIdleRssMiB: 80,
  relayPeakRssMiB: 120,
} as const;

/** One wrk run of a path with the CPU each of the path's processes spent on it. */
export interface SmallRun {
  wrk: WrkResult;
  /** µs of CPU per request, by process name (`upstream` first, then the path's own processes). */
  cpuUsPerRequest: Map<string, number>;
}

/** Everything measured; a path that did not run (peer not installed) has no entries. */
export interface Results {
  c1: Partial<Record<PathId, SmallRun>>;
  c64: Partial<Record<PathId, SmallRun>>;
  downMiBps: Partial<Record<PathId, number>>;
  upMiBps: Partial<Record<PathId, number>>;
  /** By process name (relay, agent, nginx, sshd, ssh): VmRSS after readiness. */
  idle: Partial<Record<PathId, Map<string, Memory>>>;
  /** By process name: VmHWM at the end. */
  end: Partial<Record<PathId, Map<string, Memory>>>;
}

const NA = 'n/a';
const NONE = '—';

function fixed(n: number | undefined, digits: number): string {
  return n === undefined || !Number.isFinite(n) ? NONE : n.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

/** `nginx 48` or `sshd 60 + ssh 50 = 110`. */
function parts(values: [string, number][], digits: number): string {
  if (values.length === 0) return NONE;
  const total = values.reduce((s, [, v]) => s + v, 0);
  const each = values.map(([name, v]) => `${name} ${v.toFixed(digits)}`).join(' + ');
  return values.length === 1 ? each : `${each} = ${total.toFixed(digits)}`;
}

/** CPU µs per request of the path's own processes (the upstream left out), summed. */
export function proxyCpu(run: SmallRun | undefined): number | undefined {
  if (!run) return undefined;
  const own = [...run.cpuUsPerRequest].filter(([name]) => name !== 'upstream');
  return own.length === 0 ? undefined : own.reduce((s, [, v]) => s + v, 0);
}

function word(ok: boolean | undefined): string {
  return ok === undefined ? NA : ok ? 'PASS' : 'MISS';
}

/** Renders the table and its note. `note` is the machine and settings line. */
export function renderTable(r: Results, available: Set<PathId>, note: string): string {
  const rows: string[][] = [];
  const cells = (value: (p: PathId) => string): string[] => PATHS.map((p) => (available.has(p) ? value(p) : NONE));
  const row = (label: string, value: (p: PathId) => string, target = '', result = ''): void => {
    rows.push([label, ...cells(value), target, result]);
  };

  for (const [name, set] of [
    ['c=1', r.c1],
    ['c=64', r.c64],
  ] as const) {
    row(`GET /hello ${name}: req/s`, (p) => fixed(set[p]?.wrk.reqPerSec, 0));
    row(`GET /hello ${name}: p50 ms`, (p) => fixed(set[p]?.wrk.p50Ms, 3));
    row(`GET /hello ${name}: p99 ms`, (p) => fixed(set[p]?.wrk.p99Ms, 3));
    row(`GET /hello ${name}: errors (non-2xx + socket) / requests`, (p) => {
      const w = set[p]?.wrk;
      return w ? `${w.non2xx + w.socketErrors} / ${w.requests}` : NONE;
    });
    row(`GET /hello ${name}: CPU µs/request, upstream`, (p) => fixed(set[p]?.cpuUsPerRequest.get('upstream'), 0));
    row(`GET /hello ${name}: CPU µs/request, the path's own processes`, (p) =>
      parts(
        [...(set[p]?.cpuUsPerRequest ?? [])].filter(([n]) => n !== 'upstream'),
        0,
      ),
    );
  }
  row('64 MiB download: MiB/s (best of 2, after a warm-up)', (p) => fixed(r.downMiBps[p], 1));
  row('64 MiB upload: MiB/s (best of 2, after a warm-up)', (p) => fixed(r.upMiBps[p], 1));
  const memory = (by: Partial<Record<PathId, Map<string, Memory>>>, pick: (m: Memory) => number) => (p: PathId) => {
    if (p === 'relayHttps') return '(same processes)';
    return parts(
      [...(by[p] ?? [])].map(([n, m]) => [n, pick(m)]),
      1,
    );
  };
  row(
    'RSS MiB, idle (after start-up, before load)',
    memory(r.idle, (m) => m.rssMiB),
  );
  row(
    'RSS MiB, peak (VmHWM at the end, summed over processes)',
    memory(r.end, (m) => m.peakMiB),
  );

  // Ratios. Each cell is that path against the reference; the verdict is for the relay's two columns.
  const relays = ['relayHttp', 'relayHttps'] as const;
  const ratioRow = (
    label: string,
    value: (p: PathId) => number | undefined,
    ref: PathId,
    target: string,
    pass?: (x: number, p: (typeof relays)[number]) => boolean,
  ): void => {
    const refOk = available.has(ref);
    const cell = (p: PathId): string => (refOk ? fixed(ratio(value(p), value(ref)), 2) : NA);
    const verdict = pass
      ? relays
          .map((p) => {
            const x = refOk ? ratio(value(p), value(ref)) : undefined;
            return `${p === 'relayHttp' ? 'HTTP' : 'HTTPS'} ${word(x === undefined ? undefined : pass(x, p))}`;
          })
          .join(' · ')
      : '(information)';
    row(label, cell, target, verdict);
  };
  ratioRow(
    'c=64 req/s ÷ ssh -R c=64 req/s',
    (p) => r.c64[p]?.wrk.reqPerSec,
    'ssh',
    `HTTP ≥ ${TARGETS.c64VsSsh.relayHttp.toFixed(1)}× · HTTPS ≥ ${TARGETS.c64VsSsh.relayHttps.toFixed(1)}×`,
    (x, p) => x >= TARGETS.c64VsSsh[p],
  );
  ratioRow('c=64 req/s ÷ nginx c=64 req/s', (p) => r.c64[p]?.wrk.reqPerSec, 'nginx', '');
  ratioRow(
    "c=64 CPU/request of the path's own processes ÷ nginx's",
    (p) => proxyCpu(r.c64[p]),
    'nginx',
    `≤ ${TARGETS.cpuVsNginx}×`,
    (x) => x <= TARGETS.cpuVsNginx,
  );
  ratioRow("c=64 CPU/request of the path's own processes ÷ sshd + ssh's", (p) => proxyCpu(r.c64[p]), 'ssh', '');
  ratioRow(
    'c=1 p50 ÷ ssh -R c=1 p50',
    (p) => r.c1[p]?.wrk.p50Ms,
    'ssh',
    `≤ ${TARGETS.p50VsSsh.toFixed(1)}×`,
    (x) => x <= TARGETS.p50VsSsh,
  );
  ratioRow(
    '64 MiB download MiB/s ÷ ssh -R',
    (p) => r.downMiBps[p],
    'ssh',
    `≥ ${TARGETS.bulkVsSsh.toFixed(1)}×`,
    (x) => x >= TARGETS.bulkVsSsh,
  );
  ratioRow(
    '64 MiB upload MiB/s ÷ ssh -R',
    (p) => r.upMiBps[p],
    'ssh',
    `≥ ${TARGETS.bulkVsSsh.toFixed(1)}×`,
    (x) => x >= TARGETS.bulkVsSsh,
  );
  const relayIdle = r.idle.relayHttp?.get('relay')?.rssMiB;
  const relayPeak = r.end.relayHttp?.get('relay')?.peakMiB;
  const relayOnly = (v: number | undefined) => (p: PathId) =>
    p === 'relayHttp' ? fixed(v, 1) : p === 'relayHttps' ? '(same process)' : '';
  row(
    'relay process RSS MiB, idle',
    relayOnly(relayIdle),
    `≤ ${TARGETS.relayIdleRssMiB} MiB`,
    word(relayIdle === undefined ? undefined : relayIdle <= TARGETS.relayIdleRssMiB),
  );
  row(
    'relay process RSS MiB, peak',
    relayOnly(relayPeak),
    `≤ ${TARGETS.relayPeakRssMiB} MiB`,
    word(relayPeak === undefined ? undefined : relayPeak <= TARGETS.relayPeakRssMiB),
  );

  const header = ['', ...PATHS.map((p) => HEADINGS[p]), 'target', 'PASS/MISS'];
  const align = ['---', ...PATHS.map(() => '---:'), '---', '---'];
  const widths = header.map((h, i) => Math.max(h.length, 3, ...rows.map((cellsOfRow) => cellsOfRow[i]!.length)));
  const line = (cellsOfRow: string[], isAlign = false): string =>
    `| ${cellsOfRow
      .map((c, i) => {
        const w = widths[i]!;
        if (isAlign) return c === '---:' ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w);
        return align[i] === '---:' ? c.padStart(w) : c.padEnd(w);
      })
      .join(' | ')} |`;
  return ['', line(header), line(align, true), ...rows.map((cellsOfRow) => line(cellsOfRow)), '', note, ''].join('\n');
}
