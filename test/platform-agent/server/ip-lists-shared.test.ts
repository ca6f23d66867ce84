/**
 * The IP whitelist and blacklist in a shared store, on a real private PostgreSQL
 * (test/fixtures/postgres.ts): two platform server instances on one database, each with its own
 * data folder and the same lookup key file. A save through one instance's admin API is in force
 * on the other after it polls; the data folder's files are imported on the first start only; a
 * lost database keeps the rules in force; `platform-agent ip-rules export|import` (the built CLI)
 * works on both stores. Polls are driven by a short `ipRulesPollMs` and `until`, or by
 * `ipGuard.refresh()`; nothing sleeps long.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { MuxStream } from '../../../shared/mux/stream.js';
import { exportIpList, importIpList } from '../../../platform-agent/server/http/ip-guard.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { PgStore } from '../../../platform-agent/server/store/pg-store.js';
import { SqliteStore } from '../../../platform-agent/server/store/sqlite-store.js';
import { hasPostgres, usePostgres } from '../../fixtures/postgres.js';
import { bearer, json, jsonRequest, testLogger, until, type Reply } from '../../fixtures/harness.js';
import { AGENT } from '../../fixtures/processes.js';
import { rejectedRelayError } from '../../fixtures/error-code.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };
const HOUR = 3_600_000;

interface LogLine {
  level: number;
  msg: string;
  event?: string;
  [field: string]: unknown;
}

interface Instance {
  server: PlatformServer;
  base: string;
  log: LogLine[];
  dir: string;
}

let root: string;
/** The lookup key file of every instance on a database (and the CLI's `--data`, where it looks for it). */
let keyDir: string;
const running: PlatformServer[] = [];
const closers: (() => void)[] = [];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'ip-lists-shared-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
afterEach(async () => {
  for (const close of closers.splice(0)) close();
  for (const server of running.splice(0)) await server.close();
});

let dirs = 0;
const newDir = (): string => mkdtempSync(join(root, `d${dirs++}-`));

/** A platform server instance on the database at `url` (or on SQLite in `dir` without one), ready and listening. */
async function instance(url: string | null, opts: { dir?: string; pollMs?: number } = {}): Promise<Instance> {
  const dir = opts.dir ?? newDir();
  const log: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void log.push(JSON.parse(line) as LogLine) });
  const store = url
    ? await PgStore.open({ url, lookupKeyFile: join(keyDir, 'lookup.key'), logger, statementTimeoutMs: 2000 })
    : new SqliteStore(dir);
  const server = new PlatformServer({ dataDir: dir, logger, store, scrypt: FAST_SCRYPT, ipRulesPollMs: opts.pollMs ?? HOUR });
  running.push(server);
  await server.ready();
  const { port } = await server.listen('127.0.0.1', 0);
  return { server, base: `http://127.0.0.1:${port}`, log, dir };
}

const events = (i: Instance, event: string): LogLine[] => i.log.filter((l) => l.event === event);

/** A login token of the platform's first administrator (made once per database, on the instance given). */
async function adminToken(i: Instance): Promise<Record<string, string>> {
  const admin = await i.server.ensureAdmin();
  if (!admin) throw new Error('the administrator exists already: log in through the instance that made it');
  const r = await jsonRequest(`${i.base}/admin/api/v1/auth/login`, 'POST', { username: admin.username, password: admin.password });
  expect(r.status, r.body.toString()).toBe(200);
  return bearer(json(r).access_token);
}

const putList = (i: Instance, list: string, text: string, admin: Record<string, string>): Promise<Reply> =>
  jsonRequest(`${i.base}/admin/api/v1/ip-rules/${list}`, 'PUT', { text }, admin);

/** The base URL of a listener whose connections instance `i` sees as tunnel streams from `ip`. */
async function from(i: Instance, ip: string): Promise<string> {
  const tunnel = net.createServer((socket) => {
    Object.defineProperty(socket, 'remoteAddress', { value: ip });
    i.server.handleStream(socket as unknown as MuxStream);
  });
  await new Promise<void>((resolve) => tunnel.listen(0, '127.0.0.1', resolve));
  closers.push(() => tunnel.close());
  return `http://127.0.0.1:${(tunnel.address() as AddressInfo).port}`;
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The built CLI (`npm run build` first). */
function cli(args: string[]): Promise<Result> {
  const child = spawn(process.execPath, [AGENT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe.skipIf(!hasPostgres)('IP lists in a shared store (PostgreSQL)', () => {
  const cluster = usePostgres();
  let url: string;

  beforeAll(() => {
    if (!existsSync(join(process.cwd(), 'dist/platform-agent/server/admin-cli.js')))
      throw new Error('dist/ has no admin-cli.js: run `npm run build` first (`npm test` does)');
  });

  /** A database and a lookup key of its own for every test. */
  const fresh = async (): Promise<string> => {
    keyDir = newDir();
    url = await cluster().createDatabase();
    return url;
  };

  it('keeps each list with a version that only grows, even for two saves in one millisecond', async () => {
    await fresh();
    const store = await PgStore.open({ url, lookupKeyFile: join(keyDir, 'lookup.key'), logger: testLogger() });
    try {
      const lists = store.ipLists;
      expect(await lists.versions()).toEqual({ whitelist: null, blacklist: null });
      expect(await lists.get('whitelist')).toBeNull();
      expect(await lists.put('blacklist', '10.0.0.0/8\n', 1000)).toBe(1000);
      expect(await lists.put('blacklist', '# none\n', 1000)).toBe(1001);
      expect(await lists.put('blacklist', '', 500)).toBe(1002);
      expect(await lists.put('whitelist', '10.1.0.0/16\n', 2000)).toBe(2000);
      expect(await lists.get('blacklist')).toEqual({ text: '', updatedAt: 1002 });
      expect(await lists.versions()).toEqual({ whitelist: 2000, blacklist: 1002 });
      expect(lists.describe()).toBe(store.shown);
      expect(lists.describe()).not.toContain(cluster().password);
    } finally {
      await store.close();
    }
  });

  it('puts a blacklist saved through instance A in force on instance B once B polls', async () => {
    await fresh();
    const a = await instance(url);
    const b = await instance(url, { pollMs: 50 });
    const admin = await adminToken(a);
    const viaB = await from(b, '203.0.113.7');
    expect((await jsonRequest(`${viaB}/healthz`, 'GET')).status).toBe(200);

    const r = await putList(a, 'blacklist', '# abuse\r\n203.0.113.0/24', admin);
    expect(r.status, r.body.toString()).toBe(200);
    expect(json(r)).toMatchObject({ text: '# abuse\n203.0.113.0/24\n', entries: 1, status: 'loaded' });
    // In force at once on A (the save), and on B within its poll interval.
    expect(a.server.ipGuard.decide('203.0.113.7')).toBe('blacklisted');
    await until(() => b.server.ipGuard.decide('203.0.113.7') === 'blacklisted', 5000);
    const blocked = await jsonRequest(`${viaB}/healthz`, 'GET');
    expect(blocked.status).toBe(403);
    expect(json(blocked).error).toBe('ip_blocked');

    // B shows the list as A saved it (one platform: A's token is good on B).
    const shown = await jsonRequest(`${b.base}/admin/api/v1/ip-rules/blacklist`, 'GET', undefined, admin);
    expect(json(shown)).toMatchObject({ text: '# abuse\n203.0.113.0/24\n', entries: 1, status: 'loaded' });
    expect(b.server.ipGuard.summary().blacklist.file).toMatch(/\/ip_lists\/blacklist$/);

    // A whitelist entry saved on B lets the address through on A, after A's next poll (driven here).
    expect((await putList(b, 'whitelist', '203.0.113.7', admin)).status).toBe(200);
    expect(a.server.ipGuard.decide('203.0.113.7')).toBe('blacklisted');
    await a.server.ipGuard.refresh();
    expect(a.server.ipGuard.decide('203.0.113.7')).toBe('whitelisted');

    // Each instance says once where the lists live, and neither read a file.
    for (const i of [a, b]) {
      expect(events(i, 'ip_lists_in_store')).toHaveLength(1);
      expect(events(i, 'ip_lists_in_store')[0]!.store).toBe(a.server.store.ipLists!.describe());
      expect(events(i, 'ip_list_imported')).toHaveLength(0);
    }
  });

  it("imports the data folder's files on the first start only; after that the files are not read", async () => {
    await fresh();
    const dirA = newDir();
    writeFileSync(join(dirA, 'whitelist.dat'), '# office\n10.1.0.0/16\n');
    writeFileSync(join(dirA, 'blacklist.dat'), '198.51.100.0/24\r\nnot-an-address\n2001:db8:bad::/48');
    let a = await instance(url, { dir: dirA });
    const imported = events(a, 'ip_list_imported');
    expect(imported.map((l) => [l.list, l.entries, l.problems])).toEqual([
      ['whitelist', 1, 0],
      ['blacklist', 2, 1],
    ]);
    expect(a.server.ipGuard.decide('198.51.100.9')).toBe('blacklisted');
    expect(a.server.ipGuard.decide('10.1.2.3')).toBe('whitelisted');
    // Imported as it was (line endings made \n): the bad line is skipped in force and shown, as for a file.
    expect(a.server.ipGuard.contents('blacklist')).toMatchObject({
      text: '198.51.100.0/24\nnot-an-address\n2001:db8:bad::/48\n',
      summary: { status: 'loaded', entries: 2, problems: [expect.objectContaining({ line: 2, text: 'not-an-address' })] },
    });

    // Emptied through the guard (as the API does), then the files change: nothing of them is read.
    const guard = a.server.ipGuard;
    await guard.commit(guard.prepare('blacklist', ''));
    writeFileSync(join(dirA, 'blacklist.dat'), '192.0.2.0/24\n');
    await guard.refresh();
    expect(guard.decide('192.0.2.1')).toBe('neutral');
    expect(guard.decide('198.51.100.9')).toBe('neutral');

    // A second start (the same data folder) and a new instance with files of its own import nothing.
    await a.server.close();
    running.splice(running.indexOf(a.server), 1);
    a = await instance(url, { dir: dirA });
    const dirB = newDir();
    writeFileSync(join(dirB, 'blacklist.dat'), '192.0.2.0/24\n');
    const b = await instance(url, { dir: dirB });
    for (const i of [a, b]) {
      expect(events(i, 'ip_list_imported')).toHaveLength(0);
      expect(i.server.ipGuard.decide('192.0.2.1')).toBe('neutral');
      expect(i.server.ipGuard.contents('blacklist').text).toBe('');
      expect(i.server.ipGuard.decide('10.1.2.3')).toBe('whitelisted');
    }
    // The files stay where they were: the store has not written them.
    expect(readFileSync(join(dirA, 'blacklist.dat'), 'utf8')).toBe('192.0.2.0/24\n');
  });

  it('refuses every address until the lists are loaded', async () => {
    await fresh();
    const dir = newDir();
    const store = await PgStore.open({ url, lookupKeyFile: join(keyDir, 'lookup.key'), logger: testLogger() });
    const server = new PlatformServer({ dataDir: dir, logger: testLogger(), store, scrypt: FAST_SCRYPT, ipRulesPollMs: HOUR });
    running.push(server);
    expect(server.ipGuard.decide('10.0.0.1')).toBe('blacklisted');
    await server.ready();
    expect(server.ipGuard.decide('10.0.0.1')).toBe('neutral');
  });

  it('keeps the rules in force while the database is lost, warns once, and says when it is back', async () => {
    await fresh();
    const a = await instance(url, { pollMs: 50 });
    const admin = await adminToken(a);
    expect((await putList(a, 'blacklist', '203.0.113.0/24\n', admin)).status).toBe(200);
    const guard = a.server.ipGuard;
    await cluster().stop();
    try {
      const summary = await guard.refresh();
      expect(summary.blacklist).toMatchObject({ status: 'kept', entries: 1, error: expect.stringMatching(/cannot be read/) });
      expect(guard.decide('203.0.113.7')).toBe('blacklisted');
      // Polls keep failing: one warning for the whole outage, the rules still in force.
      const polls = events(a, 'ip_lists_poll_failed').length;
      expect(polls).toBe(1);
      await new Promise((r) => setTimeout(r, 300));
      expect(events(a, 'ip_lists_poll_failed')).toHaveLength(1);
      expect(guard.decide('203.0.113.7')).toBe('blacklisted');
      expect(guard.contents('blacklist').text).toBe('203.0.113.0/24\n');
      // A save cannot reach the store: refused (503), nothing changed.
      const refused = await rejectedRelayError(guard.commit(guard.prepare('blacklist', '')));
      expect(refused.code).toBe('PLATFORM_ERR_STORE_UNAVAILABLE');
      expect(guard.decide('203.0.113.7')).toBe('blacklisted');
    } finally {
      await cluster().start();
    }
    await until(() => events(a, 'ip_lists_poll_recovered').length === 1, 10_000);
    expect(guard.summary().blacklist).toMatchObject({ status: 'loaded', entries: 1 });
    expect(guard.summary().blacklist.error).toBeUndefined();
    expect(guard.decide('203.0.113.7')).toBe('blacklisted');
  });

  it('exports and imports a list through the CLI, checked as the API checks a save', async () => {
    await fresh();
    const a = await instance(url);
    const store = ['--store', url, '--data', keyDir];
    const file = join(keyDir, 'new-blacklist.txt');
    writeFileSync(file, '# partners\r\n10.0.0.0/8\r\n\r\n2001:db8::/32 # docs');

    let r = await cli(['ip-rules', 'import', 'blacklist', '--file', file, ...store]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^blacklist: 2 entries imported from .* into postgres:\/\/.*\/ip_lists\/blacklist;/);
    expect(r.stdout).not.toContain(cluster().password);
    await a.server.ipGuard.refresh();
    expect(a.server.ipGuard.decide('10.9.9.9')).toBe('blacklisted');

    // stdout is the text exactly as saved; the summary is on stderr.
    r = await cli(['ip-rules', 'export', 'blacklist', ...store]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('# partners\n10.0.0.0/8\n\n2001:db8::/32 # docs\n');
    expect(r.stderr).toMatch(/^blacklist: 2 entries exported from postgres:\/\/.*\/ip_lists\/blacklist\n$/);

    // Round trip: export to a file, import it as the whitelist, export that: the same text.
    const out = join(keyDir, 'exported.txt');
    r = await cli(['ip-rules', 'export', 'blacklist', '--out', out, ...store]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^blacklist: 2 entries exported from .* to .*exported\.txt\n$/);
    r = await cli(['ip-rules', 'import', 'whitelist', '--file', out, ...store]);
    expect(r.code).toBe(0);
    r = await cli(['ip-rules', 'export', 'whitelist', ...store]);
    expect(r.stdout).toBe(readFileSync(out, 'utf8'));

    // A bad line is refused, named; nothing changes.
    writeFileSync(file, '10.0.0.1\n10.0.0.300\n');
    r = await cli(['ip-rules', 'import', 'blacklist', '--file', file, ...store]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^platform-agent: the blacklist was not saved: 1 line is not valid: line 2 "10\.0\.0\.300": .*\n$/);
    r = await cli(['ip-rules', 'export', 'blacklist', ...store]);
    expect(r.stdout).toBe('# partners\n10.0.0.0/8\n\n2001:db8::/32 # docs\n');

    // The same checks in process, with their codes.
    const pg = a.server.store;
    const invalid = await rejectedRelayError(importIpList(pg, keyDir, 'blacklist', 'ok\n10.0.0.1\n', Date.now(), testLogger()));
    expect(invalid.code).toBe('RELAY_ERR_INVALID_IP_RULES');
    expect(invalid.details).toMatchObject({ list: 'blacklist', problem_count: 1, problems: [{ line: 1, text: 'ok' }] });
    const large = await rejectedRelayError(importIpList(pg, keyDir, 'blacklist', '10.0.0.1\n'.repeat(2_000_000), Date.now(), testLogger()));
    expect(large.code).toBe('RELAY_ERR_IP_RULES_TOO_LARGE');
    expect((await exportIpList(pg, keyDir, 'blacklist', testLogger())).entries).toBe(2);
  });
});

describe('the IP-rules CLI on the embedded store (SQLite): the files of the data folder', () => {
  beforeAll(() => {
    if (!existsSync(join(process.cwd(), 'dist/platform-agent/server/admin-cli.js')))
      throw new Error('dist/ has no admin-cli.js: run `npm run build` first (`npm test` does)');
  });

  it('imports into whitelist.dat / blacklist.dat and exports them, refusing bad lines and a list too large', async () => {
    const i = await instance(null);
    expect(i.server.store.ipLists).toBeNull();
    expect(i.server.ipGuard.source).toEqual({ kind: 'files' });
    const data = ['--data', i.dir];
    const file = join(i.dir, 'in.txt');
    writeFileSync(file, '# lab\r\n192.0.2.0/24');

    let r = await cli(['ip-rules', 'import', 'blacklist', '--file', file, ...data]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^blacklist: 1 entry imported from .*in\.txt into .*blacklist\.dat;/);
    expect(readFileSync(join(i.dir, 'blacklist.dat'), 'utf8')).toBe('# lab\n192.0.2.0/24\n');
    // The running server picks the file up at its next poll (driven here).
    await i.server.ipGuard.refresh();
    expect(i.server.ipGuard.decide('192.0.2.1')).toBe('blacklisted');

    r = await cli(['ip-rules', 'export', 'blacklist', ...data]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('# lab\n192.0.2.0/24\n');
    r = await cli(['ip-rules', 'export', 'whitelist', ...data]);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^whitelist: 0 entries exported from .*whitelist\.dat\n$/);

    writeFileSync(file, '192.0.2.1\n\nfoo bar\n10.0.0.0/33\n');
    r = await cli(['ip-rules', 'import', 'blacklist', '--file', file, ...data]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/2 lines are not valid: line 3 "foo bar": .*; line 4 "10\.0\.0\.0\/33": /);
    expect(readFileSync(join(i.dir, 'blacklist.dat'), 'utf8')).toBe('# lab\n192.0.2.0/24\n');

    const invalid = await rejectedRelayError(importIpList(i.server.store, i.dir, 'whitelist', 'nope', Date.now(), testLogger()));
    expect(invalid.code).toBe('RELAY_ERR_INVALID_IP_RULES');
    writeFileSync(file, '10.0.0.1\n'.repeat(2_000_000));
    r = await cli(['ip-rules', 'import', 'whitelist', '--file', file, ...data]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^platform-agent: the whitelist is 18000000 bytes, over the limit of \d+; nothing was saved\n$/);
    expect(existsSync(join(i.dir, 'whitelist.dat'))).toBe(false);

    // A data folder that is no platform's is refused, as every administrator's command refuses it.
    r = await cli(['ip-rules', 'export', 'whitelist', '--data', join(i.dir, 'nowhere')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no platform\.db there/);
  });
});
