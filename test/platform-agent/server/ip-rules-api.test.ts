/**
 * The IP whitelist and blacklist in the admin API over real HTTP (the internal listener on
 * 127.0.0.1:0), with a real SQLite store and real files in a temp folder. The IP rule files are
 * polled once an hour here, so whatever takes effect at once was put in force by the save itself.
 * Requests "from" other addresses go through handleStream, as tunnel streams do: a real socket
 * whose remoteAddress says what a stream's OPEN metadata would.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../../shared/clock.js';
import { defaults } from '../../../shared/defaults.js';
import type { MuxStream } from '../../../shared/mux/stream.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { bearer, json, jsonRequest, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };
const PASSWORD = 'correct-horse-1';

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

let dir: string;
let server: PlatformServer;
let base: string;
let adminPassword: string;
let log: LogLine[];
const closers: (() => void)[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(os.tmpdir(), 'ip-rules-api-'));
  log = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void log.push(JSON.parse(line) as LogLine) });
  server = new PlatformServer({ dataDir: dir, logger, clock: new ManualClock(), scrypt: FAST_SCRYPT, ipRulesPollMs: 3_600_000 });
  adminPassword = (await server.ensureAdmin())!.password;
  const { port } = await server.listen('127.0.0.1', 0);
  base = `http://127.0.0.1:${port}`;
});

afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}, at = base): Promise<Reply> =>
  jsonRequest(`${at}${path}`, method, body, headers);

const file = (list: string): string => join(dir, `${list}.dat`);

async function adminLogin(username = 'admin', password = adminPassword): Promise<Record<string, string>> {
  const r = await call('POST', '/admin/api/v1/auth/login', { username, password });
  expect(r.status, r.body.toString()).toBe(200);
  return bearer(json(r).access_token);
}

/** The base URL of a listener whose connections the platform server sees as coming from `ip`. */
async function from(ip: string): Promise<string> {
  const tunnel = net.createServer((socket) => {
    Object.defineProperty(socket, 'remoteAddress', { value: ip });
    server.handleStream(socket as unknown as MuxStream);
  });
  await new Promise<void>((resolve) => tunnel.listen(0, '127.0.0.1', resolve));
  closers.push(() => tunnel.close());
  return `http://127.0.0.1:${(tunnel.address() as AddressInfo).port}`;
}

const put = (list: string, body: unknown, admin: Record<string, string>): Promise<Reply> =>
  call('PUT', `/admin/api/v1/ip-rules/${list}`, body, admin);

describe('IP rules in the admin API', () => {
  it('shows both lists: the text of each file, its entries, and the lines a hand edit got wrong', async () => {
    writeFileSync(file('whitelist'), '# office\n10.1.0.0/16\n');
    writeFileSync(file('blacklist'), '10.0.0.0/8\n10.0.0.300\n\n2001:db8::/32 # docs\n');
    await server.ipGuard.refresh();
    const admin = await adminLogin();
    const r = await call('GET', '/admin/api/v1/ip-rules', undefined, admin);
    expect(r.status).toBe(200);
    expect(r.headers['cache-control']).toBe('no-store');
    expect(json(r)).toEqual({
      whitelist: { text: '# office\n10.1.0.0/16\n', entries: 1, status: 'loaded', problem_count: 0, problems: [] },
      blacklist: {
        text: '10.0.0.0/8\n10.0.0.300\n\n2001:db8::/32 # docs\n',
        entries: 2,
        status: 'loaded',
        problem_count: 1,
        problems: [{ line: 2, text: '10.0.0.300', message: 'entry "10.0.0.300" is not an IP address' }],
      },
    });
    // One list alone, and a list without a file.
    rmSync(file('whitelist'));
    const one = await call('GET', '/admin/api/v1/ip-rules/whitelist', undefined, admin);
    expect(json(one)).toMatchObject({ text: '', entries: 0, status: 'missing' });
  });

  it('saves a list exactly as given and puts it in force for the very next request', async () => {
    const outsider = await from('203.0.113.7');
    expect((await call('GET', '/healthz', undefined, {}, outsider)).status).toBe(200);
    const admin = await adminLogin();
    const text = '# abusive network\r\n203.0.113.0/24\r\n\r\n2001:db8:bad::/48  # and its IPv6';
    const r = await put('blacklist', { text }, admin);
    expect(r.status, r.body.toString()).toBe(200);
    const saved = '# abusive network\n203.0.113.0/24\n\n2001:db8:bad::/48  # and its IPv6\n';
    expect(json(r)).toEqual({ text: saved, entries: 2, status: 'loaded', problem_count: 0, problems: [] });
    expect(readFileSync(file('blacklist'), 'utf8')).toBe(saved);

    const blocked = await call('GET', '/healthz', undefined, {}, outsider);
    expect(blocked.status).toBe(403);
    expect(json(blocked).error).toBe('ip_blocked');
    expect(server.ipGuard.decide('2001:db8:bad::1')).toBe('blacklisted');
    // The whitelist wins: whitelisting the one address lets it in again, at once.
    expect((await put('whitelist', { text: '203.0.113.7' }, admin)).status).toBe(200);
    expect((await call('GET', '/healthz', undefined, {}, outsider)).status).toBe(200);

    const changes = log.filter((line) => line.event === 'ip_rules_changed');
    expect(changes).toMatchObject([
      { level: 30, list: 'blacklist', entries: 2, by: 'admin' },
      { level: 30, list: 'whitelist', entries: 1, by: 'admin' },
    ]);
    const token = admin.authorization!.slice('Bearer '.length);
    expect(JSON.stringify(log)).not.toContain(token);
  });

  it('refuses a list with bad lines (400 invalid_ip_rules, every line number) and leaves the file as it was', async () => {
    writeFileSync(file('whitelist'), '10.0.0.1\n');
    await server.ipGuard.refresh();
    const admin = await adminLogin();
    const r = await put('whitelist', { text: '10.0.0.2\n10.0.0.0/33\n# ok\nexample.com\n10.0.0.5-2001:db8::1\n' }, admin);
    expect(r.status).toBe(400);
    const body = json(r);
    expect(body).toMatchObject({ error: 'invalid_ip_rules', list: 'whitelist', problem_count: 3 });
    expect(body.message).toBe('the whitelist was not saved: 3 lines are not valid');
    expect(body.problems).toEqual([
      { line: 2, text: '10.0.0.0/33', message: 'prefix length "33" must be an integer from 0 to 32 for IPv4' },
      { line: 4, text: 'example.com', message: 'entry "example.com" is not an IP address' },
      { line: 5, text: '10.0.0.5-2001:db8::1', message: 'range mixes IPv4 and IPv6' },
    ]);
    expect(readFileSync(file('whitelist'), 'utf8')).toBe('10.0.0.1\n');
    expect(server.ipGuard.decide('10.0.0.2')).toBe('neutral');
    expect(log.some((line) => line.event === 'ip_rules_changed')).toBe(false);
  });

  it(`refuses a list over the ${defaults.ipRulesMaxFileBytes / 1024 / 1024} MiB file limit (413 ip_rules_too_large) and leaves the file as it was`, async () => {
    writeFileSync(file('blacklist'), '10.0.0.0/8\n');
    await server.ipGuard.refresh();
    const admin = await adminLogin();
    const line = '10.20.30.40\n';
    const text = line.repeat(Math.floor(defaults.ipRulesMaxFileBytes / line.length) + 1);
    expect(text.length).toBeGreaterThan(defaults.ipRulesMaxFileBytes);
    const r = await put('blacklist', { text }, admin);
    expect(r.status).toBe(413);
    expect(json(r)).toMatchObject({
      error: 'ip_rules_too_large',
      list: 'blacklist',
      bytes: text.length,
      max_bytes: defaults.ipRulesMaxFileBytes,
    });
    expect(readFileSync(file('blacklist'), 'utf8')).toBe('10.0.0.0/8\n');
    expect(server.ipGuard.decide('10.20.30.40')).toBe('blacklisted');
    expect(server.ipGuard.blacklist.size).toBe(1);
  });

  it('needs the admin.settings operation (403 forbidden) and an administrator token (401)', async () => {
    const admin = await adminLogin();
    const group = await call('POST', '/admin/api/v1/groups', { name: 'user-admins', role: 'admin', operations: ['admin.users'] }, admin);
    expect(group.status, group.body.toString()).toBe(201);
    const user = await call(
      'POST',
      '/admin/api/v1/users',
      { username: 'uma', password: PASSWORD, role: 'admin', group: 'user-admins' },
      admin,
    );
    expect(user.status, user.body.toString()).toBe(201);
    const uma = await adminLogin('uma', PASSWORD);
    for (const [method, path] of [
      ['GET', '/admin/api/v1/ip-rules'],
      ['GET', '/admin/api/v1/ip-rules/blacklist'],
      ['PUT', '/admin/api/v1/ip-rules/blacklist'],
    ] as const) {
      const r = await call(method, path, method === 'PUT' ? { text: '10.0.0.0/8' } : undefined, uma);
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(json(r)).toMatchObject({ error: 'forbidden', operation: 'admin.settings' });
      expect((await call(method, path)).status, `${method} ${path} without a token`).toBe(401);
    }
    expect(existsSync(file('blacklist'))).toBe(false);
  });

  it('refuses to block the address of the request making the change unless confirm_self_block is true', async () => {
    const admin = await adminLogin();
    // The administrator calls from 127.0.0.1.
    const refused = await put('blacklist', { text: '# loopback\n127.0.0.0/8\n' }, admin);
    expect(refused.status).toBe(409);
    expect(json(refused)).toMatchObject({
      error: 'ip_rules_self_block',
      list: 'blacklist',
      field: 'confirm_self_block',
      ip: '127.0.0.1',
      rule: { line: 2, text: '127.0.0.0/8' },
    });
    expect(String(json(refused).message)).toContain('"confirm_self_block": true');
    expect(existsSync(file('blacklist'))).toBe(false);
    expect((await call('GET', '/healthz')).status).toBe(200);

    // With its own address whitelisted first, the same blacklist is fine: the whitelist wins.
    expect((await put('whitelist', { text: '127.0.0.1' }, admin)).status).toBe(200);
    expect((await put('blacklist', { text: '127.0.0.0/8' }, admin)).status).toBe(200);
    expect(server.ipGuard.decide('127.0.0.2')).toBe('blacklisted');
    expect((await call('GET', '/healthz')).status).toBe(200);
    // Emptying the whitelist would now block it: refused the same way.
    const unsaved = await put('whitelist', { text: '' }, admin);
    expect(unsaved.status).toBe(409);
    expect(json(unsaved)).toMatchObject({ error: 'ip_rules_self_block', list: 'whitelist', rule: { line: 1, text: '127.0.0.0/8' } });
    expect(readFileSync(file('whitelist'), 'utf8')).toBe('127.0.0.1\n');

    // Confirmed: saved, logged as a warning, and the next request from that address is refused.
    const confirmed = await put('whitelist', { text: '', confirm_self_block: true }, admin);
    expect(confirmed.status).toBe(200);
    expect(readFileSync(file('whitelist'), 'utf8')).toBe('');
    expect(log.filter((line) => line.event === 'ip_rules_changed').at(-1)).toMatchObject({
      level: 40,
      list: 'whitelist',
      entries: 0,
      selfBlocked: '127.0.0.1',
    });
    const after = await call('GET', '/admin/api/v1/ip-rules', undefined, admin);
    expect(after.status).toBe(403);
    expect(json(after).error).toBe('ip_blocked');
  });

  it('checks the body and the method', async () => {
    const admin = await adminLogin();
    const cases: [unknown, string][] = [
      [{}, 'text'],
      [{ text: ['10.0.0.1'] }, 'text'],
      [{ text: '10.0.0.1', confirm_self_block: 'yes' }, 'confirm_self_block'],
      [{ text: '10.0.0.1', entries: [] }, 'entries'],
    ];
    for (const [body, field] of cases) {
      const r = await put('blacklist', body, admin);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(json(r)).toMatchObject({ error: 'invalid_request', field });
    }
    expect(json(await put('blacklist', '{"text":', admin)).error).toBe('invalid_json');
    const post = await call('POST', '/admin/api/v1/ip-rules/blacklist', { text: '' }, admin);
    expect(post.status).toBe(405);
    expect(json(post)).toMatchObject({ error: 'method_not_allowed', allowed: ['GET', 'PUT'] });
    expect((await call('PUT', '/admin/api/v1/ip-rules', { text: '' }, admin)).status).toBe(405);
    expect((await call('GET', '/admin/api/v1/ip-rules/greylist', undefined, admin)).status).toBe(404);
    expect(existsSync(file('blacklist'))).toBe(false);
  });
});
