/**
 * The administrators' brute-force rule against real attacks: a real platform server (SQLite in a
 * temp folder, ManualClock) on its internal listener, reached from two loopback addresses
 * (127.0.0.2, 127.0.0.3 with localAddress), and through a real relay when the attacker is on the
 * internet. Failed admin logins slow down (per address and per account, growing waits); nothing
 * locks an administrator, and the last one who can manage users always gets in from inside.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HOUR_MS, ManualClock, MINUTE_MS } from '../../../shared/clock.js';
import { defaults } from '../../../shared/defaults.js';
import { agentConfig } from '../../../platform-agent/agent/agent.js';
import { PlatformServer } from '../../../platform-agent/server/platform-server.js';
import { RelayConnection } from '../../../platform-agent/agent/relay-connection.js';
import { adminWaitMs } from '../../../platform-agent/server/security/admin-waits.js';
import type { Relay } from '../../../relay/relay.js';
import { bearer, json, relayFingerprint, request, startRelay, testLogger, TOKEN, until, type Reply } from '../../fixtures/harness.js';

const FAST_SCRYPT = { logN: 10, r: 8, p: 1 };
const ATTACKER = '127.0.0.2';
const OTHER = '127.0.0.3';

let dir: string;
let clock: ManualClock;
let server: PlatformServer;
let port: number;
let password: string;
let relay: Relay | null;
let connection: RelayConnection | null;

describe('administrators: the waits', () => {
  it('the waits: none for the first 3 failures, then 1 s doubling per failure up to 15 min', () => {
    expect([0, 1, 2].map((f) => adminWaitMs(f))).toEqual([0, 0, 0]);
    expect([3, 4, 5, 6].map((f) => adminWaitMs(f))).toEqual([1_000, 2_000, 4_000, 8_000]);
    expect(adminWaitMs(13)).toBe(15 * MINUTE_MS);
    expect(adminWaitMs(10_000)).toBe(defaults.adminLoginMaxWaitMs);
  });
});

async function open(adminThroughRelay = false): Promise<void> {
  server = new PlatformServer({ dataDir: dir, logger: testLogger(), clock, scrypt: FAST_SCRYPT, adminThroughRelay });
  password = (await server.ensureAdmin())!.password;
  port = (await server.listen('127.0.0.1', 0)).port;
}

/** Also dials a real relay; returns the relay's HTTP base (the internet's side). */
async function withRelay(): Promise<string> {
  relay = await startRelay({ connectWaitMs: 200 });
  connection = new RelayConnection({
    target: server.streamTarget,
    store: server.store,
    logger: testLogger(),
    clock,
    flags: { relays: [`wss://localhost:${relay.ports!.tunnelPort}`], token: TOKEN, relay_fingerprint: relayFingerprint(), connections: 1 },
    agent: agentConfig({ relays: [], token: '', trust: {}, reconnectMinMs: 20, reconnectMaxMs: 200, drainTimeoutMs: 500 }),
  });
  server.attachRelayControl(connection);
  await connection.open();
  await until(() => relay!.registry.list().length === 1);
  return `http://127.0.0.1:${relay.ports!.httpPort}`;
}

function post(base: string, path: string, body: unknown, from?: string, headers: Record<string, string> = {}): Promise<Reply> {
  return request(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    ...(from ? { localAddress: from } : {}),
  });
}

const internal = (): string => `http://127.0.0.1:${port}`;
const adminLogin = (username: string, pw: string, from: string, base = internal(), headers: Record<string, string> = {}): Promise<Reply> =>
  post(base, '/admin/api/v1/auth/login', { username, password: pw }, from, headers);

async function token(): Promise<Record<string, string>> {
  const r = await adminLogin('admin', password, '127.0.0.1');
  expect(r.status).toBe(200);
  return bearer(json(r).access_token);
}

async function addAdmin(username: string, pw = 'ops-password-1'): Promise<void> {
  const r = await post(internal(), '/admin/api/v1/users', { username, password: pw, role: 'admin' }, undefined, await token());
  expect(r.status, r.body.toString()).toBe(201);
}

function expectWait(r: Reply, seconds: number): void {
  expect(r.status).toBe(429);
  expect(json(r).error).toBe('too_many_attempts');
  expect(r.headers['retry-after']).toBe(String(seconds));
}

describe('administrators: growing waits, never a lock', () => {
  beforeEach(async () => {
    dir = mkdtempSync(join(os.tmpdir(), 'admin-logins-'));
    clock = new ManualClock();
    relay = null;
    connection = null;
  });

  afterEach(async () => {
    await connection?.close(0);
    await server.close();
    await relay?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('after 3 failures a login waits 1 s, then 2 s, 4 s …; during the wait even the right password gets 429 without being checked', async () => {
    await open();
    await addAdmin('ops');
    for (let i = 0; i < 3; i++) expect(json(await adminLogin('ops', 'wrong', ATTACKER)).error).toBe('invalid_credentials');
    expectWait(await adminLogin('ops', 'ops-password-1', ATTACKER), 1);
    clock.advance(1_000);
    expect((await adminLogin('ops', 'wrong', ATTACKER)).status).toBe(401);
    expectWait(await adminLogin('ops', 'wrong', ATTACKER), 2);
    clock.advance(2_000);
    expect((await adminLogin('ops', 'wrong', ATTACKER)).status).toBe(401);
    expectWait(await adminLogin('ops', 'wrong', ATTACKER), 4);
    // Per account: another address waits for ops too; per address: another account from the attacker's address waits.
    expectWait(await adminLogin('ops', 'ops-password-1', OTHER), 4);
    expectWait(await adminLogin('nobody', 'x', ATTACKER), 4);
    expect((await adminLogin('admin', password, OTHER)).status).toBe(200);
    // Up to the cap, never more: 15 min, then the right password works and clears the count.
    for (let i = 0; i < 12; i++) {
      clock.advance(defaults.adminLoginMaxWaitMs);
      expect((await adminLogin('ops', 'wrong', ATTACKER)).status).toBe(401);
    }
    expectWait(await adminLogin('ops', 'wrong', ATTACKER), 900);
    clock.advance(defaults.adminLoginMaxWaitMs);
    expect((await adminLogin('ops', 'ops-password-1', ATTACKER)).status).toBe(200);
    expect((await adminLogin('ops', 'wrong', ATTACKER)).status).toBe(401);
    expect((await adminLogin('ops', 'ops-password-1', ATTACKER)).status).toBe(200);
    // No lock anywhere: the account is active.
    const ops = await request(`${internal()}/admin/api/v1/users/ops`, { headers: await token() });
    expect(json(ops)).toMatchObject({ locked_for_security_reasons: false, status: 'Active' });
  });

  it('forgets the count 12 h after the last failure', async () => {
    await open();
    await addAdmin('ops');
    for (let i = 0; i < 3; i++) await adminLogin('ops', 'wrong', ATTACKER);
    clock.advance(12 * HOUR_MS);
    for (let i = 0; i < 3; i++) expect((await adminLogin('ops', 'wrong', ATTACKER)).status).toBe(401);
    expectWait(await adminLogin('ops', 'wrong', ATTACKER), 1);
  });

  it('guesses sent at once meet the wait as well: at most 3 are checked', async () => {
    await open();
    await addAdmin('ops');
    const replies = await Promise.all(Array.from({ length: 12 }, () => adminLogin('ops', 'wrong', ATTACKER)));
    expect(replies.filter((r) => r.status === 401)).toHaveLength(3);
    expect(replies.filter((r) => r.status === 429)).toHaveLength(9);
  });

  it('fifteen wrong passwords from three made-up X-Device-Ids, through the relay on both login routes, lock nobody', async () => {
    await open(true);
    const edge = await withRelay();
    for (const deviceId of ['fake-1', 'fake-2', 'fake-3'])
      for (let i = 0; i < 5; i++) {
        for (const path of ['/admin/api/v1/auth/login', '/api/v1/auth/login']) {
          clock.advance(defaults.adminLoginMaxWaitMs); // out-wait every wait: each guess is checked
          const r = await post(edge, path, { username: 'admin', password: 'guess' }, undefined, { 'x-device-id': deviceId });
          expect(json(r).error, path).toBe('invalid_credentials');
        }
      }
    clock.advance(defaults.adminLoginMaxWaitMs);
    // The administrator is not locked, nor is any device; the right password works from inside and outside.
    expect((await adminLogin('admin', password, ATTACKER, edge)).status).toBe(200);
    const admin = await token();
    expect(json(await request(`${internal()}/admin/api/v1/users/admin`, { headers: admin }))).toMatchObject({
      locked_for_security_reasons: false,
      status: 'Active',
    });
    const devices = json(await request(`${internal()}/admin/api/v1/devices`, { headers: admin })).devices as { locked: boolean }[];
    expect(devices.some((d) => d.locked)).toBe(false);
  });

  it('the last administrator who can manage users always gets in on the internal listener, whatever the relay sees', async () => {
    await open(true);
    const edge = await withRelay();
    // An attacker on the internet keeps the account waiting at the cap.
    for (let i = 0; i < 20; i++) {
      clock.advance(defaults.adminLoginMaxWaitMs);
      await post(edge, '/admin/api/v1/auth/login', { username: 'admin', password: 'guess' });
    }
    const outside = await adminLogin('admin', password, ATTACKER, edge);
    expect(outside.status).toBe(429);
    // Inside, from an address of its own, the right password works at once (console and API share the rule).
    expect((await adminLogin('admin', password, OTHER)).status).toBe(200);
    // Guesses on the internal listener still slow that address down, never the account there.
    for (let i = 0; i < 3; i++) expect((await adminLogin('admin', 'guess', ATTACKER)).status).toBe(401);
    expectWait(await adminLogin('admin', password, ATTACKER), 1);
    expect((await adminLogin('admin', password, OTHER)).status).toBe(200);
  });

  it('a second administrator who can manage users has no such exemption: the account waits inside too', async () => {
    await open();
    await addAdmin('ops');
    for (let i = 0; i < 3; i++) await adminLogin('admin', 'guess', ATTACKER);
    expectWait(await adminLogin('admin', password, OTHER), 1);
  });

  it('the control panel login shares the rule', async () => {
    await open();
    await addAdmin('ops');
    const consoleLogin = async (username: string, pw: string, from: string): Promise<Reply> => {
      const page = await request(`${internal()}/console/login`, { localAddress: from });
      const csrf = /name="csrf" value="([^"]+)"/.exec(page.body.toString())![1]!;
      const cookie = String(page.headers['set-cookie']![0]).split(';', 1)[0]!;
      return request(`${internal()}/console/login`, {
        method: 'POST',
        localAddress: from,
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie },
        body: new URLSearchParams({ csrf, username, password: pw }).toString(),
      });
    };
    // Two wrong in the API, one in the console: the console's next attempt waits.
    await adminLogin('ops', 'wrong', ATTACKER);
    await adminLogin('ops', 'wrong', ATTACKER);
    expect((await consoleLogin('ops', 'wrong', ATTACKER)).status).toBe(401);
    const waiting = await consoleLogin('ops', 'ops-password-1', ATTACKER);
    expect(waiting.status).toBe(429);
    expect(waiting.body.toString()).toContain('Try again in 1 s');
    expectWait(await adminLogin('ops', 'ops-password-1', ATTACKER), 1);
    clock.advance(1_000);
    expect((await consoleLogin('ops', 'ops-password-1', ATTACKER)).status).toBe(303);
  });
});
