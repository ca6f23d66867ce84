/**
 * End to end through the relay: the built `relay` and `platform-agent` executables (the agent
 * running the built-in platform server on a temp data folder). A mobile client logs in on the
 * relay's HTTPS port, uses its token, gets its device locked by wrong passwords; the
 * administrator sees the lock and clears it; the lock survives a restart of the platform side.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TOKEN, request, type Reply } from '../fixtures/harness.js';
import { AGENT, run, startAgentProcess, startRelayProcess, type Proc } from '../fixtures/processes.js';

const dataDir = mkdtempSync(join(tmpdir(), 'platform-e2e-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const body = (r: Reply): Record<string, unknown> => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;

function post(url: string, payload: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  return request(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(payload) });
}

async function startPlatform(tunnelPort: number): Promise<{ agent: Proc; internal: string }> {
  const agent = await startAgentProcess(tunnelPort, ['--data', dataDir, '--listen', '127.0.0.1:0']);
  const listening = await agent.waitFor((l) => l.event === 'platform_listening');
  return { agent, internal: `http://127.0.0.1:${String(listening.port)}` };
}

describe('platform server behind the relay', () => {
  it('logs a mobile client in through HTTPS, locks its device, shows the lock to the admin, and keeps it across a restart', async () => {
    const { ports } = await startRelayProcess();
    const edge = `https://localhost:${ports.httpsPort}`;
    const first = await startPlatform(ports.tunnelPort);

    // The first administrator's password is printed once, on stderr, and never logged.
    const shown = first.agent.stderr.join('\n');
    const password = /password: (\S+)/.exec(shown)?.[1];
    expect(password).toBeDefined();
    expect(JSON.stringify(first.agent.lines)).not.toContain(password!);
    expect(JSON.stringify(first.agent.lines)).not.toContain(TOKEN);

    // The admin API is not served through the relay: the answer of a path that does not exist.
    const outside = await post(`${edge}/admin/api/v1/auth/login`, { username: 'admin', password });
    expect(outside.status).toBe(404);
    expect(body(outside).error).toBe('not_found');
    expect(body(await request(`${edge}/admin/api/v1/users`))).toEqual(body(await request(`${edge}/no/such/path`)));
    const adminLogin = await post(`${first.internal}/admin/api/v1/auth/login`, { username: 'admin', password });
    expect(adminLogin.status).toBe(200);
    const admin = { authorization: `Bearer ${String(body(adminLogin).access_token)}` };
    // Every login here comes from 127.0.0.1: give the address more than the default 10 a minute.
    const limit = await request(`${first.internal}/admin/api/v1/settings/security`, {
      method: 'PATCH',
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ ip_login_attempts_per_minute: 100 }),
    });
    expect(limit.status).toBe(200);
    expect(
      (await post(`${first.internal}/admin/api/v1/users`, { username: 'mia', password: 'mobile-secret-1', role: 'mobile' }, admin)).status,
    ).toBe(201);

    // Log in through the relay and use the token.
    const login = await post(`${edge}/api/v1/auth/login`, { username: 'mia', password: 'mobile-secret-1' }, { 'x-device-id': 'mia-phone' });
    expect(login.status).toBe(200);
    const me = await request(`${edge}/api/v1/me`, { headers: { authorization: `Bearer ${String(body(login).access_token)}` } });
    expect(body(me)).toMatchObject({ username: 'mia', role: 'mobile', device_id: 'mia-phone' });

    // Five wrong passwords lock the device; the right one is then refused with 429.
    for (let i = 0; i < 5; i++) {
      const wrong = await post(`${edge}/api/v1/auth/login`, { username: 'mia', password: 'not-it' }, { 'x-device-id': 'mia-phone' });
      expect(body(wrong).error).toBe('invalid_credentials');
    }
    const locked = await post(
      `${edge}/api/v1/auth/login`,
      { username: 'mia', password: 'mobile-secret-1' },
      { 'x-device-id': 'mia-phone' },
    );
    expect(locked.status).toBe(429);
    expect(body(locked).error).toBe('device_locked');

    // The platform logs the lock with the client address the relay saw, and never the password.
    const event = await first.agent.waitFor((l) => l.event === 'device_locked');
    expect(event).toMatchObject({ deviceId: 'mia-phone', username: 'mia' });
    const failed = await first.agent.waitFor((l) => l.event === 'login_failed');
    expect(failed.ip).toBe('127.0.0.1');
    expect(JSON.stringify(first.agent.lines)).not.toContain('mobile-secret-1');

    // Restart the platform side: the lock is still there.
    first.agent.child.kill('SIGTERM');
    expect(await first.agent.exited).toBe(0);
    const second = await startPlatform(ports.tunnelPort);
    expect(second.agent.stderr.join('\n')).not.toMatch(/password:/);
    const stillLocked = await post(
      `${edge}/api/v1/auth/login`,
      { username: 'mia', password: 'mobile-secret-1' },
      { 'x-device-id': 'mia-phone' },
    );
    expect(body(stillLocked).error).toBe('device_locked');

    // The administrator (inside the network, on --listen) sees the lock and clears it.
    const admin2 = await post(`${second.internal}/admin/api/v1/auth/login`, { username: 'admin', password });
    const auth2 = { authorization: `Bearer ${String(body(admin2).access_token)}` };
    const device = await request(`${second.internal}/admin/api/v1/devices/mia-phone`, { headers: auth2 });
    expect(body(device)).toMatchObject({ locked: true, last_username: 'mia' });
    const cleared = await request(`${second.internal}/admin/api/v1/devices/mia-phone`, {
      method: 'PATCH',
      headers: { ...auth2, 'content-type': 'application/json' },
      body: JSON.stringify({ locked: false }),
    });
    expect(body(cleared).locked).toBe(false);
    const again = await post(`${edge}/api/v1/auth/login`, { username: 'mia', password: 'mobile-secret-1' }, { 'x-device-id': 'mia-phone' });
    expect(again.status).toBe(200);
  });

  it('keeps its relay settings: a restart without --relay or a token reconnects, and the admin turns the tunnel off and on with the process running', async () => {
    const { ports } = await startRelayProcess(['--connect-wait-ms', '100']);
    const edge = `https://localhost:${ports.httpsPort}`;
    const data = mkdtempSync(join(tmpdir(), 'platform-relay-settings-'));
    try {
      const first = await startAgentProcess(ports.tunnelPort, ['--data', data, '--listen', 'off']);
      await first.waitFor((l) => l.event === 'relay_settings_seeded');
      const password = /password: (\S+)/.exec(first.stderr.join('\n'))?.[1];
      first.child.kill('SIGTERM');
      expect(await first.exited).toBe(0);

      // No --relay, no --token, no PLATFORM_AGENT_TOKEN: the stored settings are used.
      const env = { PLATFORM_AGENT_TOKEN: '' };
      // --admin-through-relay: this platform's administrators may also use the admin API from outside.
      const second = run(AGENT, ['start', '--data', data, '--listen', '127.0.0.1:0', '--admin-through-relay'], env);
      await second.waitFor((l) => l.event === 'tunnel_connected');
      const internal = `http://127.0.0.1:${String((await second.waitFor((l) => l.event === 'platform_listening')).port)}`;
      expect(second.lines.some((l) => l.event === 'relay_setting_overridden')).toBe(false);
      expect(JSON.stringify(second.lines)).not.toContain(TOKEN);

      const login = await post(`${edge}/admin/api/v1/auth/login`, { username: 'admin', password });
      const admin = { authorization: `Bearer ${String(body(login).access_token)}`, 'content-type': 'application/json' };
      // Turned off through the tunnel itself: the answer still arrives, then the relay has no agent.
      const off = await request(`${edge}/admin/api/v1/settings/relay`, {
        method: 'PATCH',
        headers: admin,
        body: JSON.stringify({ enabled: false }),
      });
      expect(off.status).toBe(200);
      expect(body(off)).toMatchObject({ settings: { enabled: false, token_set: true }, status: { state: 'off' } });
      await second.waitFor((l) => l.event === 'agent_stopped');
      expect((await request(`${edge}/healthz`)).status).toBe(503);
      // On again from inside the network (the internal listener).
      const on = await request(`${internal}/admin/api/v1/settings/relay`, {
        method: 'PATCH',
        headers: admin,
        body: JSON.stringify({ enabled: true }),
      });
      expect(on.status).toBe(200);
      await second.waitFor(
        (l) => l.event === 'tunnel_connected' && second.lines.indexOf(l) > second.lines.findIndex((x) => x.event === 'agent_stopped'),
      );
      expect((await request(`${edge}/healthz`)).status).toBe(200);
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
    } finally {
      rmSync(data, { recursive: true, force: true });
    }
  });

  it('still takes the old name --console-through-relay for --admin-through-relay, with a warning', async () => {
    const { ports } = await startRelayProcess();
    const data = mkdtempSync(join(tmpdir(), 'platform-old-option-'));
    try {
      const agent = await startAgentProcess(ports.tunnelPort, ['--data', data, '--listen', 'off', '--console-through-relay']);
      expect(await agent.waitFor((l) => l.event === 'deprecated_option')).toMatchObject({
        option: '--console-through-relay',
        use: '--admin-through-relay',
      });
      const password = /password: (\S+)/.exec(agent.stderr.join('\n'))?.[1];
      const login = await post(`https://localhost:${ports.httpsPort}/admin/api/v1/auth/login`, { username: 'admin', password });
      expect(login.status).toBe(200);
      agent.child.kill('SIGTERM');
      expect(await agent.exited).toBe(0);
    } finally {
      rmSync(data, { recursive: true, force: true });
    }
  });
});
