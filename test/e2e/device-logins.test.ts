/**
 * The people the documents speak to, end to end through the relay (real relay and agent
 * processes, the agent running the built-in platform server): a group «Операторы ТСД», users
 * «Иванов» and «Петров», and the device logins of Mobile SMARTS — a password alone, and the user
 * barcode — with their uniqueness refusals and their lockout. The CLI's tables and the platform's
 * logs show the names as written.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import stringWidth from 'string-width';
import { afterAll, describe, expect, it } from 'vitest';
import { request, type Reply } from '../fixtures/harness.js';
import { AGENT, startAgentProcess, startRelayProcess } from '../fixtures/processes.js';

const dataDir = mkdtempSync(join(tmpdir(), 'device-logins-e2e-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const IVANOV = 'Иванов';
const GROUP = 'Операторы ТСД';
const IVANOV_PASSWORD = 'Ivanov-Tsd-1';
const PETROV_PASSWORD = 'Petrov-Tsd-2';
const IVANOV_BARCODE = '2000000012345';

const body = (r: Reply): Record<string, unknown> => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;

function send(method: string, url: string, payload: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return request(url, { method, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(payload) });
}

function cli(args: string[]): Promise<{ code: number | null; stdout: string }> {
  const child = spawn(process.execPath, [AGENT, ...args, '--data', dataDir], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stdin.end();
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout }));
  });
}

describe('Russian names and the Mobile SMARTS device logins, through the relay', () => {
  it('logs «Иванов» of «Операторы ТСД» in by password alone and by barcode, refuses shared secrets, locks a guessing device', async () => {
    const { ports } = await startRelayProcess();
    const edge = `https://localhost:${ports.httpsPort}`;
    const agent = await startAgentProcess(ports.tunnelPort, ['--data', dataDir, '--listen', '127.0.0.1:0']);
    const internal = `http://127.0.0.1:${String((await agent.waitFor((l) => l.event === 'platform_listening')).port)}`;
    const password = /password: (\S+)/.exec(agent.stderr.join('\n'))![1]!;
    const admin = {
      authorization: `Bearer ${String(body(await send('POST', `${internal}/admin/api/v1/auth/login`, { username: 'admin', password })).access_token)}`,
    };
    const api = (method: string, path: string, payload?: unknown): Promise<Reply> =>
      payload === undefined
        ? request(`${internal}/admin/api/v1/${path}`, { method, headers: admin })
        : send(method, `${internal}/admin/api/v1/${path}`, payload, admin);

    // The group and the users of the documents' example, by their own names.
    expect((await api('POST', 'groups', { name: GROUP, role: 'mobile', operations: ['api.read', 'profile.read'] })).status).toBe(201);
    const created = await api('POST', 'users', {
      username: IVANOV,
      password: IVANOV_PASSWORD,
      role: 'mobile',
      group: GROUP,
      barcode: IVANOV_BARCODE,
    });
    expect(created.status).toBe(201);
    expect(body(created)).toMatchObject({ username: IVANOV, group: GROUP, barcode_set: true });
    expect(created.body.toString('utf8')).not.toContain(IVANOV_BARCODE);
    expect(created.headers.location).toBe(`/admin/api/v1/users/${encodeURIComponent(IVANOV)}`);
    expect((await api('POST', 'users', { username: 'Петров', password: PETROV_PASSWORD, role: 'mobile' })).status).toBe(201);
    // Unique without regard to case, in Cyrillic as in Latin; looked up by any case.
    expect(body(await api('POST', 'users', { username: 'иванов', password: 'Other-Pass-3', role: 'mobile' })).error).toBe('user_exists');
    expect(body(await api('GET', `users/${encodeURIComponent('ИВАНОВ')}`))).toMatchObject({ username: IVANOV });
    // A barcode is unique whatever the mode.
    expect(body(await api('PATCH', `users/${encodeURIComponent('Петров')}`, { barcode: IVANOV_BARCODE })).error).toBe('barcode_in_use');

    // Off by default: the device logins are refused, naming the field.
    const off = await send('POST', `${edge}/api/v1/auth/login`, { password: IVANOV_PASSWORD }, { 'x-device-id': 'tsd-1' });
    expect(off.status).toBe(400);
    expect(body(off)).toMatchObject({ error: 'invalid_request', field: 'username' });
    expect(
      (await api('PATCH', 'settings/security', { device_login: { password_only: true, barcode: true }, ip_login_attempts_per_minute: 100 }))
        .status,
    ).toBe(200);

    // A password alone, and the barcode alone, log Иванов in through the relay.
    for (const secret of [{ password: IVANOV_PASSWORD }, { barcode: IVANOV_BARCODE }]) {
      const login = await send('POST', `${edge}/api/v1/auth/login`, secret, { 'x-device-id': 'tsd-1' });
      expect(login.status, JSON.stringify(secret)).toBe(200);
      const me = await request(`${edge}/api/v1/me`, { headers: { authorization: `Bearer ${String(body(login).access_token)}` } });
      expect(body(me)).toMatchObject({ username: IVANOV, role: 'mobile' });
    }

    // With password-only login on, a password equal to another user's is refused.
    expect(body(await api('PATCH', `users/${encodeURIComponent('Петров')}`, { password: IVANOV_PASSWORD })).error).toBe('password_in_use');
    expect(body(await api('POST', 'users', { username: 'Сидоров', password: PETROV_PASSWORD, role: 'mobile' })).error).toBe(
      'password_in_use',
    );

    // Five wrong passwords lock the scanner; then Иванов's own password is refused on it, not on another.
    for (let i = 0; i < 5; i++)
      expect(body(await send('POST', `${edge}/api/v1/auth/login`, { password: `Guess-${i}-Tsd` }, { 'x-device-id': 'tsd-7' })).error).toBe(
        'invalid_credentials',
      );
    const locked = await send('POST', `${edge}/api/v1/auth/login`, { barcode: IVANOV_BARCODE }, { 'x-device-id': 'tsd-7' });
    expect(locked.status).toBe(429);
    expect(body(locked).error).toBe('device_locked');
    expect((await send('POST', `${edge}/api/v1/auth/login`, { password: IVANOV_PASSWORD }, { 'x-device-id': 'tsd-8' })).status).toBe(200);

    // The logs name the users as written, and never a password or a barcode.
    const logged = agent.lines.filter((l) => l.event === 'login_ok').map((l) => l.username);
    expect(logged).toContain(IVANOV);
    const log = JSON.stringify(agent.lines);
    for (const secret of [IVANOV_PASSWORD, PETROV_PASSWORD, IVANOV_BARCODE]) expect(log).not.toContain(secret);

    // The CLI's tables show the names, with the columns lined up.
    const users = await cli(['user', 'list']);
    expect(users.code).toBe(0);
    const rows = users.stdout.trimEnd().split('\n');
    const ivanov = rows.find((r) => r.startsWith(IVANOV))!;
    expect(ivanov).toContain(GROUP);
    expect(ivanov.indexOf(GROUP)).toBe(rows[0]!.indexOf('GROUP'));
    // Wide and combining characters line up too: columns are as wide as a terminal shows them.
    await api('POST', 'users', { username: '山田太郎', password: 'Yamada-Tsd-3', role: 'mobile' });
    await api('POST', 'users', { username: 'Жа\u0301нна', password: 'Zhanna-Tsd-4', role: 'mobile' });
    const wide = (await cli(['user', 'list'])).stdout.trimEnd().split('\n');
    const column = (line: string): number => stringWidth(line.slice(0, line.indexOf('mobile')));
    const roleColumn = stringWidth(wide[0]!.slice(0, wide[0]!.indexOf('ROLE')));
    for (const name of ['山田太郎', 'Жа\u0301нна']) expect(column(wide.find((l) => l.startsWith(name))!), name).toBe(roleColumn);
    const groups = await cli(['group', 'list']);
    expect(groups.stdout).toContain(GROUP);
    const groupRow = groups.stdout.split('\n').find((r) => r.startsWith(GROUP))!;
    expect(groupRow.indexOf('mobile')).toBe(groups.stdout.split('\n')[0]!.indexOf('ROLE'));
  });
});
