/**
 * CPU time and memory of the measured processes, read from Linux's /proc (proc(5)): CPU from
 * `/proc/PID/stat`, resident memory from `/proc/PID/status`. A process is counted with every
 * process it forked (sshd forks per connection, nginx's master forks its worker).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** The fields of `/proc/PID/stat` the bench uses. */
export interface ProcStat {
  pid: number;
  /** Field 3: R running, S sleeping, Z zombie (exited, not yet reaped), … */
  state: string;
  ppid: number;
  /** utime + stime + cutime + cstime (fields 14–17), in clock ticks: own CPU plus that of reaped children. */
  ticks: number;
  /** Field 22, clock ticks after boot: with the pid, names one process even after pid reuse. */
  startTime: number;
}

/** Reads `/proc/PID/stat`; undefined when the process is gone. */
export function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (comm) is in parentheses and may itself hold spaces and ')': split after the last ')'.
  // The rest starts at field 3, so field n is rest[n - 3].
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const field = (n: number): number => Number(rest[n - 3]);
  return { pid, state: rest[0] ?? '', ppid: field(4), ticks: field(14) + field(15) + field(16) + field(17), startTime: field(22) };
}

function allStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

function treeOf(root: number, stats: ProcStat[]): ProcStat[] {
  const byParent = new Map<number, ProcStat[]>();
  let rootStat: ProcStat | undefined;
  for (const s of stats) {
    if (s.pid === root) rootStat = s;
    const list = byParent.get(s.ppid);
    if (list) list.push(s);
    else byParent.set(s.ppid, [s]);
  }
  if (!rootStat) return [];
  const out: ProcStat[] = [];
  const queue = [rootStat];
  // Bounded: a pid appears once in /proc, so the walk visits each process at most once.
  while (queue.length > 0 && out.length < stats.length) {
    const s = queue.shift()!;
    out.push(s);
    queue.push(...(byParent.get(s.pid) ?? []));
  }
  return out;
}

/** The pid `root` and all its descendants (by walking the ppid field of every /proc/PID/stat). */
export function processTree(root: number): number[] {
  return treeOf(root, allStats()).map((s) => s.pid);
}

/**
 * CPU ticks used so far by each root's process tree, from one scan of /proc. Counting cutime and
 * cstime too keeps the sum right when a child exits and is reaped between two samples.
 */
export function sampleCpuTicks(roots: number[]): Map<number, number> {
  const stats = allStats();
  const out = new Map<number, number>();
  for (const root of roots)
    out.set(
      root,
      treeOf(root, stats).reduce((sum, s) => sum + s.ticks, 0),
    );
  return out;
}

let clockTicks: number | undefined;

/** `getconf CLK_TCK` (the unit of /proc/PID/stat times), usually 100; 100 when getconf fails. */
export function clockTicksPerSecond(): number {
  if (clockTicks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5_000 });
    const n = Number(r.stdout?.trim());
    clockTicks = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

/** Resident set size now (VmRSS) and its peak (VmHWM), MiB. */
export interface Memory {
  rssMiB: number;
  peakMiB: number;
}

function memoryOf(pid: number): Memory | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) / 1024 : 0;
  };
  return { rssMiB: field('VmRSS'), peakMiB: field('VmHWM') };
}

/** VmRSS and VmHWM of `root` and its descendants, each summed over the processes (MiB). */
export function treeMemory(root: number): Memory {
  const sum: Memory = { rssMiB: 0, peakMiB: 0 };
  for (const pid of processTree(root)) {
    const m = memoryOf(pid);
    if (!m) continue;
    sum.rssMiB += m.rssMiB;
    sum.peakMiB += m.peakMiB;
  }
  return sum;
}
