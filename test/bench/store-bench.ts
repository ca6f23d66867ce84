/**
 * The bench's store section: what an authenticated request costs with the platform server's state
 * in PostgreSQL against SQLite.
 *
 * Starts a private PostgreSQL (PgCluster from test/fixtures/pg-cluster.ts: 127.0.0.1, random port,
 * fsync off) with one database, then the built platform agent twice in turn, each with the
 * built-in platform server's internal listener only (`--listen 127.0.0.1:<port>`, no relay, its
 * own temp `--data`): `--store sqlite`, then `--store postgres://…`. For each: reads the first
 * administrator's password from the agent's stderr, logs in as that administrator, creates a
 * mobile user (`POST /admin/api/v1/users`), logs that user in (`POST /api/v1/auth/login`), then
 * drives `GET /api/v1/me` with its Bearer token with wrk at c=1 and c=16 (JWT check plus the
 * store reads: settings, key, user, locks) and the login itself (scrypt) at c=1 and c=4. CPU per
 * request comes from /proc/PID/stat: the agent process, and for PostgreSQL the postmaster's
 * whole process tree (backends, checkpointer, walwriter, autovacuum). Plain HTTP on the listener
 * (it answers HTTP and HTTPS on one port), so TLS stays out of the figures.
 *
 * Last, with `log_statement = all` switched on for a moment, a few sequential requests of each
 * kind are sent and the statements PostgreSQL logged counted: every statement is one round trip
 * from the agent to the database.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { PgCluster, hasPostgres, pgBin } from '../fixtures/pg-cluster.js';
import { type Child, alive, atStop, freePort, sleep, spawnNode, stopChildren, waitForTcp } from './children.js';
import { clockTicksPerSecond, sampleCpuTicks } from './proc-stats.js';
import { type WrkOptions, type WrkResult, runWrk, wrkThreads } from './wrk.js';

export interface StoreBenchOptions {
  seconds: number;
  warmupSeconds: number;
  /** The bench's temp folder (removed at the end): the agents' `--data` folders go below it. */
  tmp: string;
  log: (line: string) => void;
}

type StoreId = 'sqlite' | 'postgres';
type Kind = 'me' | 'login';

interface Row {
  store: StoreId;
  kind: Kind;
  connections: number;
  wrk: WrkResult;
  agentUs: number;
  /** undefined for SQLite (in the agent's process). */
  dbUs: number | undefined;
}

/** What the statement count found for one kind of request. */
interface StatementCount {
  kind: Kind;
  requests: number;
  /** Statement text (whitespace folded, as logged) → times logged. */
  statements: Map<string, number>;
}

const ME_CONNECTIONS = [1, 16];
const LOGIN_CONNECTIONS = [1, 4];
const COUNT_ME = 50;
const COUNT_LOGIN = 5;
const DEVICE = 'bench-device-1';

/** One request with a fresh connection; the body is JSON when given. */
function request(
  method: string,
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
  agent: http.Agent | false = false,
): Promise<{ status: number; json: Record<string, unknown> | undefined; text: string }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      url,
      {
        method,
        agent,
        timeout: 10_000,
        headers: {
          ...headers,
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> | undefined;
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, json, text });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

async function mustRequest(what: string, expect: number, ...args: Parameters<typeof request>): Promise<Record<string, unknown>> {
  const r = await request(...args);
  if (r.status !== expect || !r.json) throw new Error(`${what}: HTTP ${r.status} (expected ${expect}): ${r.text.slice(0, 300)}`);
  return r.json;
}

/** Waits for the first administrator's password on the agent's stderr (platform-agent/cli.ts firstAdmin). */
async function firstAdminPassword(agent: Child, timeoutMs: number): Promise<{ username: string; password: string }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    alive(agent);
    for (const line of agent.tail) {
      const m = /First administrator created: username "([^"]+)", password: (\S+)/.exec(line);
      if (m) return { username: m[1]!, password: m[2]! };
    }
    if (Date.now() > deadline) throw new Error(`${agent.name} printed no first administrator within ${timeoutMs} ms`);
    await sleep(100);
  }
}

interface Agent {
  child: Child;
  base: string;
  token: string;
  user: { username: string; password: string };
  /** The access token's lifetime, s (`expires_in`). */
  expiresIn?: number;
}

async function startAgent(store: StoreId, storeArg: string, dataDir: string): Promise<Agent> {
  mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const child = spawnNode(
    `agent (--store ${store})`,
    'platform-agent/cli.js',
    ['start', '--store', storeArg, '--data', dataDir, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'],
    {},
    'pipe',
  );
  await waitForTcp(port, 30_000, child);
  const base = `http://127.0.0.1:${port}`;
  const admin = await firstAdminPassword(child, 30_000);
  const adminLogin = await mustRequest('administrator login', 200, 'POST', `${base}/admin/api/v1/auth/login`, admin);
  const user = { username: 'bench-mobile', password: `Bench-${randomBytes(12).toString('hex')}-1` };
  await mustRequest(
    'creating the mobile user',
    201,
    'POST',
    `${base}/admin/api/v1/users`,
    { ...user, role: 'mobile' },
    {
      authorization: `Bearer ${String(adminLogin.access_token)}`,
    },
  );
  const login = await mustRequest('mobile login', 200, 'POST', `${base}/api/v1/auth/login`, user, { 'x-device-id': DEVICE });
  const token = String(login.access_token);
  const expiresIn = Number(login.expires_in);
  const me = await mustRequest('GET /api/v1/me', 200, 'GET', `${base}/api/v1/me`, undefined, { authorization: `Bearer ${token}` });
  if (me.username !== user.username) throw new Error(`GET /api/v1/me answered ${JSON.stringify(me)}`);
  return { child, base, token, user, ...(Number.isFinite(expiresIn) ? { expiresIn } : {}) };
}

/** Reads the postmaster's pid from its lock file (the first line of <data>/postmaster.pid). */
function postmasterPid(cluster: PgCluster): number {
  const pid = Number(readFileSync(join(cluster.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) throw new Error('no postmaster pid in postmaster.pid');
  return pid;
}

async function adminQuery(cluster: PgCluster, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: cluster.adminUrl });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

/** Sets `log_statement` for the whole cluster (ALTER SYSTEM + reload) and gives the backends a moment to reread it. */
async function logStatements(cluster: PgCluster, on: boolean): Promise<void> {
  await adminQuery(cluster, on ? "ALTER SYSTEM SET log_statement = 'all'" : 'ALTER SYSTEM RESET log_statement');
  await adminQuery(cluster, 'SELECT pg_reload_conf()');
  await sleep(500);
}

/** Statements logged in `text` (`LOG:  statement: …` for simple queries, `LOG:  execute <name>: …` for prepared ones). */
function countStatements(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /\bLOG:\s+(?:statement|execute [^:]*):\s+(.*)$/.exec(line);
    if (!m) continue;
    const sql = m[1]!.replace(/\s+/g, ' ').trim();
    out.set(sql, (out.get(sql) ?? 0) + 1);
  }
  return out;
}

/** Sends `n` requests one after the other on one keep-alive connection; throws on a non-2xx answer. */
async function sequential(n: number, send: (agent: http.Agent) => Promise<{ status: number; text: string }>): Promise<void> {
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    for (let i = 0; i < n; i++) {
      const r = await send(keepAlive);
      if (r.status < 200 || r.status > 299) throw new Error(`HTTP ${r.status} while counting statements: ${r.text.slice(0, 200)}`);
    }
  } finally {
    keepAlive.destroy();
  }
}

async function countRoundTrips(cluster: PgCluster, a: Agent): Promise<{ idlePerSecond: number; counts: StatementCount[] }> {
  await logStatements(cluster, true);
  try {
    // Statements the agent issues on its own (timers), over 2 s with no request: subtracted by eye.
    let from = cluster.log().length;
    await sleep(2_000);
    const idle = [...countStatements(cluster.log().slice(from)).values()].reduce((s, v) => s + v, 0);
    const counts: StatementCount[] = [];
    from = cluster.log().length;
    await sequential(COUNT_ME, (agent) => request('GET', `${a.base}/api/v1/me`, undefined, { authorization: `Bearer ${a.token}` }, agent));
    await sleep(300); // the log is written by the server process: let the last lines land
    counts.push({ kind: 'me', requests: COUNT_ME, statements: countStatements(cluster.log().slice(from)) });
    from = cluster.log().length;
    await sequential(COUNT_LOGIN, (agent) => request('POST', `${a.base}/api/v1/auth/login`, a.user, { 'x-device-id': DEVICE }, agent));
    await sleep(300);
    counts.push({ kind: 'login', requests: COUNT_LOGIN, statements: countStatements(cluster.log().slice(from)) });
    return { idlePerSecond: idle / 2, counts };
  } finally {
    await logStatements(cluster, false);
  }
}

function loginScript(dir: string, user: { username: string; password: string }): string {
  const file = join(dir, 'login.lua');
  // The body is JSON of a generated name and hex password: no character a Lua long string would mind.
  writeFileSync(
    file,
    [
      'wrk.method = "POST"',
      `wrk.body = [[${JSON.stringify(user)}]]`,
      'wrk.headers["Content-Type"] = "application/json"',
      `wrk.headers["X-Device-Id"] = "${DEVICE}"`,
      '',
    ].join('\n'),
  );
  return file;
}

async function measureAgent(store: StoreId, a: Agent, dbPid: number | undefined, dataDir: string, opts: StoreBenchOptions): Promise<Row[]> {
  const hz = clockTicksPerSecond();
  const rows: Row[] = [];
  const agentPid = a.child.proc.pid!;
  const runs: [Kind, number, string, WrkOptions][] = [
    ...ME_CONNECTIONS.map((c): [Kind, number, string, WrkOptions] => [
      'me',
      c,
      `${a.base}/api/v1/me`,
      { headers: [`Authorization: Bearer ${a.token}`] },
    ]),
    ...LOGIN_CONNECTIONS.map((c): [Kind, number, string, WrkOptions] => [
      'login',
      c,
      `${a.base}/api/v1/auth/login`,
      { script: loginScript(dataDir, a.user), timeoutSeconds: 10 },
    ]),
  ];
  for (const [kind, connections, url, wrkOpts] of runs) {
    alive(a.child);
    await runWrk(url, connections, opts.warmupSeconds, wrkOpts);
    const pids = dbPid === undefined ? [agentPid] : [agentPid, dbPid];
    const before = sampleCpuTicks(pids);
    const wrk = await runWrk(url, connections, opts.seconds, wrkOpts);
    const after = sampleCpuTicks(pids);
    const perRequest = (pid: number): number =>
      wrk.requests > 0 ? ((((after.get(pid) ?? 0) - (before.get(pid) ?? 0)) / hz) * 1e6) / wrk.requests : NaN;
    const row: Row = {
      store,
      kind,
      connections,
      wrk,
      agentUs: perRequest(agentPid),
      dbUs: dbPid === undefined ? undefined : perRequest(dbPid),
    };
    rows.push(row);
    const errors = wrk.non2xx + wrk.socketErrors;
    opts.log(
      `${label(kind)} c=${connections} ${store}: ${wrk.reqPerSec.toFixed(0)} req/s, p50 ${wrk.p50Ms.toFixed(3)} ms, p99 ${wrk.p99Ms.toFixed(3)} ms, ` +
        `errors ${errors}; CPU µs/request: agent ${row.agentUs.toFixed(0)}${row.dbUs === undefined ? '' : `, postgres ${row.dbUs.toFixed(0)}`}`,
    );
    if (errors > 0)
      opts.log(
        `WARNING: ${errors} of ${wrk.requests} ${label(kind)} requests failed: ${wrk.non2xx} non-2xx, ${wrk.socketErrors} socket errors (connect, read, write, timeout)`,
      );
  }
  return rows;
}

function runsPerStore(): number {
  return ME_CONNECTIONS.length + LOGIN_CONNECTIONS.length;
}

function label(kind: Kind): string {
  return kind === 'me' ? 'GET /api/v1/me (Bearer)' : 'POST /api/v1/auth/login';
}

function fixed(n: number | undefined, digits: number): string {
  return n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(digits);
}

function renderStoreTable(rows: Row[], counts: StatementCount[] | undefined, idlePerSecond: number | undefined, note: string): string {
  const header = ['store', 'request', 'c', 'req/s', 'p50 ms', 'p99 ms', 'errors / requests', 'agent µs/req', 'db µs/req', 'total µs/req'];
  const right = [false, false, true, true, true, true, true, true, true, true];
  const body = rows.map((r) => [
    r.store === 'sqlite' ? 'SQLite' : 'PostgreSQL',
    label(r.kind),
    String(r.connections),
    fixed(r.wrk.reqPerSec, 0),
    fixed(r.wrk.p50Ms, 3),
    fixed(r.wrk.p99Ms, 3),
    `${r.wrk.non2xx + r.wrk.socketErrors} / ${r.wrk.requests}`,
    fixed(r.agentUs, 0),
    r.dbUs === undefined ? '(in the agent)' : fixed(r.dbUs, 0),
    fixed(r.agentUs + (r.dbUs ?? 0), 0),
  ]);
  // PostgreSQL ÷ SQLite, same request and concurrency.
  for (const pgRow of rows.filter((r) => r.store === 'postgres')) {
    const lite = rows.find((r) => r.store === 'sqlite' && r.kind === pgRow.kind && r.connections === pgRow.connections);
    if (!lite) continue;
    const ratio = (a: number, b: number): string => (b > 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : '—');
    body.push([
      'PostgreSQL ÷ SQLite',
      label(pgRow.kind),
      String(pgRow.connections),
      ratio(pgRow.wrk.reqPerSec, lite.wrk.reqPerSec),
      ratio(pgRow.wrk.p50Ms, lite.wrk.p50Ms),
      ratio(pgRow.wrk.p99Ms, lite.wrk.p99Ms),
      '',
      ratio(pgRow.agentUs, lite.agentUs),
      '',
      ratio(pgRow.agentUs + (pgRow.dbUs ?? 0), lite.agentUs),
    ]);
  }
  const widths = header.map((h, i) => Math.max(h.length, 3, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const align = `| ${widths.map((w, i) => (right[i] ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`;
  const out = ['', line(header), align, ...body.map(line), '', note, ''];
  if (counts) {
    out.push(
      `PostgreSQL statements (round trips) per request, counted with log_statement = all over sequential requests after the measured runs ` +
        `(${fixed(idlePerSecond, 1)} statements/s logged with no request at all):`,
    );
    for (const c of counts) {
      const total = [...c.statements.values()].reduce((s, v) => s + v, 0);
      out.push(`- ${label(c.kind)}: ${fixed(total / c.requests, 2)} per request (${total} over ${c.requests} requests)`);
      for (const [sql, n] of [...c.statements].sort((x, y) => y[1] - x[1]))
        out.push(`  - ${fixed(n / c.requests, 2)}× \`${sql.length > 160 ? `${sql.slice(0, 157)}...` : sql}\``);
    }
    out.push('');
  }
  return out.join('\n');
}

/** Runs the section; returns its table and notes (Markdown). */
export async function runStoreBench(opts: StoreBenchOptions): Promise<string> {
  const loadavg = os.loadavg();
  let cluster: PgCluster | undefined;
  if (hasPostgres) {
    cluster = await PgCluster.start();
    const started = cluster;
    // On error or a signal: the atStop hooks are synchronous, destroySync() is (and a no-op after destroy()).
    atStop(() => started.destroySync());
  } else opts.log('PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/initdb): measuring SQLite only');
  try {
    const pgUrl = cluster ? await cluster.createDatabase('platform_bench') : undefined;
    const pgVersion = cluster ? String((await adminQuery(cluster, 'SHOW server_version')).rows[0]?.server_version) : undefined;
    const rows: Row[] = [];
    let counts: StatementCount[] | undefined;
    let idlePerSecond: number | undefined;
    const stores: [StoreId, string][] = [['sqlite', 'sqlite'], ...(pgUrl ? [['postgres', pgUrl] as [StoreId, string]] : [])];
    for (const [store, storeArg] of stores) {
      const dataDir = join(opts.tmp, `store-${store}`);
      const a = await startAgent(store, storeArg, dataDir);
      opts.log(`store ${store}: agent ready on ${a.base} (mobile user ${a.user.username} logged in)`);
      const needed = runsPerStore() * (opts.seconds + opts.warmupSeconds) + 30;
      if (a.expiresIn !== undefined && a.expiresIn < needed)
        opts.log(`WARNING: the access token lives ${a.expiresIn} s, the runs take about ${needed} s: later requests may get 401`);
      try {
        const dbPid = store === 'postgres' && cluster ? postmasterPid(cluster) : undefined;
        rows.push(...(await measureAgent(store, a, dbPid, dataDir, opts)));
        if (store === 'postgres' && cluster) ({ idlePerSecond, counts } = await countRoundTrips(cluster, a));
        const problems = a.child.tail.filter((l) => /"level":(5|6)\d/.test(l));
        if (problems.length > 0)
          opts.log(`the ${store} agent logged ${problems.length} error line(s) (last ones):\n${problems.slice(-5).join('\n')}`);
      } finally {
        await stopChildren([a.child]);
      }
    }
    const cpu = os.cpus();
    const note =
      `Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}, ${os.platform()} ${os.release()}, ` +
      `load average ${loadavg.map((l) => l.toFixed(2)).join(' ')} before this section; ` +
      `PostgreSQL ${pgVersion ?? 'not installed'}${pgBin ? ` (${pgBin})` : ''}, private cluster on 127.0.0.1 (fsync and full_page_writes off: a commit waits for no disk; the store's sessions still ask synchronous_commit=on), ` +
      `agent --store-pool-size default (10 connections); SQLite in the agent's process (its --data folder on ${os.tmpdir()}). ` +
      `One agent at a time, internal listener only (plain HTTP, no relay), --log-level warn. ` +
      `wrk ${opts.seconds} s per run after ${opts.warmupSeconds} s warm-up (-t${wrkThreads(1)} for c=1, -t${wrkThreads(16)} above), keep-alive; ` +
      `wrk, agent and postgres share the cores. CPU: utime+stime (+ reaped children) from /proc/PID/stat over the measured run ÷ its requests ` +
      `(CLK_TCK ${clockTicksPerSecond()}): agent = the node process, db = the postmaster and all its children. ` +
      `Logins: one user, one device, every login a new refresh-token family; wrk --timeout 10s for them (2 s for GETs).`;
    return renderStoreTable(rows, counts, idlePerSecond, note);
  } finally {
    await cluster?.destroy();
  }
}
