import { describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS, MINUTE_MS } from '../../../../shared/clock.js';
import {
  isMobileAuthorization,
  type MobileAuthResult,
  type MobileCredentials,
} from '../../../../platform-agent/server/security/mobile-auth.js';
import { sha256 } from '../../../../platform-agent/server/security/tokens.js';
import { PASSWORD, rejectsWith, useSecurityEnv, WRONG_PASSWORD } from './fixtures.js';

const env = useSecurityEnv();

const mobileHeader = (username: string, password: string): string => `Mobile ${Buffer.from(`${username}:${password}`).toString('base64')}`;

function request(c: Partial<MobileCredentials>): Promise<MobileAuthResult | null> {
  return env().mobile.authenticate({ deviceId: 'phone-1', ip: env().freshIp(), ipDecision: 'neutral', ...c });
}

async function enable(patch: Record<string, unknown> = {}): Promise<void> {
  await env().patchSettings({ mobile_authorization: { enabled: true }, mobile_token: { enabled: true }, ...patch });
}

/** Logs alice in with `Authorization: Mobile`, returning the new session id and mobile token. */
async function mobileLogin(): Promise<{ sessionId: string; token: string | undefined }> {
  const result = await request({ authorization: mobileHeader('alice', PASSWORD) });
  expect(result?.newSessionId).toBeDefined();
  return { sessionId: result!.newSessionId!, token: result!.newMobileToken };
}

describe('mobile authenticators: off by default', () => {
  it('refuses Authorization: Mobile while the authorization authenticator is disabled (the default), saying so', async () => {
    await env().addUser('alice');
    const err = await rejectsWith(request({ authorization: mobileHeader('alice', PASSWORD) }), 'PLATFORM_ERR_AUTHENTICATOR_OFF');
    expect(err.httpStatus).toBe(401);
    // The same answer for a name that is no account: it says nothing about accounts.
    await rejectsWith(request({ authorization: mobileHeader('nobody', PASSWORD) }), 'PLATFORM_ERR_AUTHENTICATOR_OFF');
    expect(await env().store.getDevice('phone-1')).toBeNull();
  });

  it('refuses a twx-mobile-token while the token authenticator is disabled (the default), saying so', async () => {
    await env().addUser('alice');
    await env().patchSettings({ mobile_authorization: { enabled: true } });
    const { token } = await mobileLogin();
    expect(token).toBeDefined();
    await rejectsWith(request({ mobileToken: token! }), 'PLATFORM_ERR_AUTHENTICATOR_OFF');
    await rejectsWith(request({ mobileToken: 'made-up' }), 'PLATFORM_ERR_AUTHENTICATOR_OFF');
  });

  it('answers null for a request that carries none of its credentials', async () => {
    await enable();
    expect(await request({})).toBeNull();
    expect(await request({ authorization: 'Bearer abc' })).toBeNull();
    expect(isMobileAuthorization('Mobile abc')).toBe(true);
    expect(isMobileAuthorization('Bearer abc')).toBe(false);
  });
});

describe('mobile authenticators: Authorization: Mobile', () => {
  it('authenticates, opens a session and returns a mobile token while generate_tokens is on (the default)', async () => {
    await env().addUser('alice');
    await enable();
    const result = await request({ authorization: mobileHeader('alice', PASSWORD) });
    expect(result).toMatchObject({ username: 'alice', role: 'mobile', via: 'mobile-authorization' });
    expect(result?.newSessionId).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(result?.newMobileToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // Only hashes are stored.
    expect(await env().store.getMobileToken(result!.newMobileToken!)).toBeNull();
    expect(await env().store.getMobileToken(sha256(result!.newMobileToken!))).toMatchObject({
      username: 'alice',
      createdAt: env().clock.now(),
      expiresAt: env().clock.now() + 2_592_000_000,
    });
    expect(await request({ sessionId: result!.newSessionId! })).toMatchObject({ username: 'alice', via: 'session' });
    // The device is recorded as a JSON login records it.
    expect(await env().store.getDevice('phone-1')).toMatchObject({ lastUsername: 'alice', lastSeenAt: env().clock.now(), failures: 0 });
  });

  it('returns no mobile token while generate_tokens is off', async () => {
    await env().addUser('alice');
    await enable({ mobile_authorization: { enabled: true, generate_tokens: false } });
    const result = await request({ authorization: mobileHeader('alice', PASSWORD) });
    expect(result).toMatchObject({ username: 'alice', via: 'mobile-authorization' });
    expect(result?.newSessionId).toBeDefined();
    expect(result).not.toHaveProperty('newMobileToken');
  });

  it('refuses a wrong password, an unknown user and a malformed value with PLATFORM_ERR_INVALID_CREDENTIALS', async () => {
    await env().addUser('alice');
    await enable();
    await rejectsWith(
      request({ authorization: mobileHeader('alice', WRONG_PASSWORD), deviceId: 'd1' }),
      'PLATFORM_ERR_INVALID_CREDENTIALS',
    );
    await rejectsWith(request({ authorization: mobileHeader('nobody', PASSWORD), deviceId: 'd2' }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await rejectsWith(
      request({ authorization: `Mobile ${Buffer.from('no colon').toString('base64')}`, deviceId: 'd3' }),
      'PLATFORM_ERR_INVALID_CREDENTIALS',
    );
  });

  it('gives a login without X-Device-Id (as ThingWorx clients send it) the device mobile@<client address>', async () => {
    await env().addUser('alice');
    await enable();
    const login = (password: string, ip: string) =>
      env().mobile.authenticate({ authorization: mobileHeader('alice', password), ip, ipDecision: 'neutral' });
    expect(await login(PASSWORD, '127.0.0.2')).toMatchObject({ username: 'alice', deviceId: 'mobile@127.0.0.2' });
    expect(await env().store.getDevice('mobile@127.0.0.2')).toMatchObject({ lastUsername: 'alice' });
    // Its failures count like any device's: five lock alice on mobile@127.0.0.3 only.
    for (let i = 0; i < 5; i++) await rejectsWith(login(WRONG_PASSWORD, '127.0.0.3'), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    await rejectsWith(login(PASSWORD, '127.0.0.3'), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(await login(PASSWORD, '127.0.0.2')).toMatchObject({ deviceId: 'mobile@127.0.0.2' });
  });

  it('counts its failures towards the device lockout, which then also holds for JSON logins', async () => {
    await env().addUser('alice');
    await enable();
    for (let i = 0; i < 5; i++)
      await rejectsWith(request({ authorization: mobileHeader('alice', WRONG_PASSWORD) }), 'PLATFORM_ERR_INVALID_CREDENTIALS');
    const err = await rejectsWith(request({ authorization: mobileHeader('alice', PASSWORD) }), 'PLATFORM_ERR_DEVICE_LOCKED');
    expect(err.retryAfterSeconds).toBe(15 * 60);
    await rejectsWith(env().login({ username: 'alice', deviceId: 'phone-1' }), 'PLATFORM_ERR_DEVICE_LOCKED');
  });

  it('is held to the per-IP limit and the IP lists', async () => {
    await env().addUser('alice');
    await enable();
    // The limit is on failed logins: successes do not use it up.
    for (let i = 0; i < 11; i++) await request({ authorization: mobileHeader('alice', PASSWORD), ip: '203.0.113.5', deviceId: `d${i}` });
    for (let i = 0; i < 10; i++)
      await rejectsWith(
        request({ authorization: mobileHeader('alice', WRONG_PASSWORD), ip: '203.0.113.5', deviceId: `e${i}` }),
        'PLATFORM_ERR_INVALID_CREDENTIALS',
      );
    await rejectsWith(request({ authorization: mobileHeader('alice', PASSWORD), ip: '203.0.113.5' }), 'PLATFORM_ERR_TOO_MANY_ATTEMPTS');
    await rejectsWith(request({ authorization: mobileHeader('alice', PASSWORD), ipDecision: 'blacklisted' }), 'PLATFORM_ERR_IP_BLOCKED');
  });
});

describe('mobile authenticators: twx-mobile-token', () => {
  it('authenticates until creation + token_lifetime_seconds (2,592,000 s by default), opening a session each time', async () => {
    await env().addUser('alice');
    await enable();
    const { token } = await mobileLogin();
    env().clock.advance(2_592_000_000 - 1000);
    const result = await request({ mobileToken: token! });
    expect(result).toMatchObject({ username: 'alice', role: 'mobile', via: 'mobile-token' });
    expect(result?.newSessionId).toBeDefined();
    env().clock.advance(1000);
    await rejectsWith(request({ mobileToken: token! }), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it('follows a configured token lifetime', async () => {
    await env().addUser('alice');
    await enable({ mobile_authorization: { enabled: true, token_lifetime_seconds: 3600 } });
    const { token } = await mobileLogin();
    env().clock.advance(HOUR_MS - 1);
    await request({ mobileToken: token! });
    env().clock.advance(1);
    await rejectsWith(request({ mobileToken: token! }), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it('refuses an unknown token', async () => {
    await enable();
    await rejectsWith(request({ mobileToken: 'made-up' }), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it('refuses the token once the token authenticator is disabled', async () => {
    await env().addUser('alice');
    await enable();
    const { token } = await mobileLogin();
    await request({ mobileToken: token! });
    await env().patchSettings({ mobile_token: { enabled: false } });
    await rejectsWith(request({ mobileToken: token! }), 'PLATFORM_ERR_AUTHENTICATOR_OFF');
  });

  it('refuses the token of a locked or expired account', async () => {
    await env().addUser('alice');
    await env().addUser('bob', 'mobile', { account_valid_until: '2026-11-24' });
    await enable();
    const { token } = await mobileLogin();
    const bob = await request({ authorization: mobileHeader('bob', PASSWORD), deviceId: 'bobs-phone' });
    await env().accounts.update('alice', { locked_for_security_reasons: true });
    await rejectsWith(request({ mobileToken: token! }), 'PLATFORM_ERR_INVALID_TOKEN');
    env().clock.advance(DAY_MS);
    await rejectsWith(request({ mobileToken: bob!.newMobileToken! }), 'PLATFORM_ERR_INVALID_TOKEN');
  });
});

describe('mobile authenticators: sessions', () => {
  it('keeps a session alive for 30 min idle, renewed by every use', async () => {
    await env().addUser('alice');
    await enable();
    const { sessionId } = await mobileLogin();
    for (let i = 0; i < 4; i++) {
      env().clock.advance(30 * MINUTE_MS);
      expect(await request({ sessionId })).toMatchObject({ username: 'alice', via: 'session' });
    }
    env().clock.advance(30 * MINUTE_MS + 1);
    await rejectsWith(request({ sessionId }), 'PLATFORM_ERR_SESSION_EXPIRED');
    // Gone for good, even if used again at once.
    await rejectsWith(request({ sessionId }), 'PLATFORM_ERR_SESSION_EXPIRED');
  });

  it('falls through to the credentials sent with an expired session', async () => {
    await env().addUser('alice');
    await enable();
    const { sessionId } = await mobileLogin();
    env().clock.advance(31 * MINUTE_MS);
    const result = await request({ sessionId, authorization: mobileHeader('alice', PASSWORD) });
    expect(result).toMatchObject({ via: 'mobile-authorization' });
    expect(result?.newSessionId).not.toBe(sessionId);
  });

  it('refuses a session opened by an authenticator that has since been disabled, with that reason', async () => {
    await env().addUser('alice');
    await enable();
    const { sessionId, token } = await mobileLogin();
    const fromToken = (await request({ mobileToken: token! }))!.newSessionId!;
    await env().patchSettings({ mobile_token: { enabled: false } });
    const err = await rejectsWith(request({ sessionId: fromToken }), 'PLATFORM_ERR_AUTHENTICATOR_OFF');
    expect(err.httpStatus).toBe(401);
    expect(await request({ sessionId })).toMatchObject({ via: 'session' });
    await env().patchSettings({ mobile_authorization: { enabled: false } });
    await rejectsWith(request({ sessionId }), 'PLATFORM_ERR_AUTHENTICATOR_OFF');
  });

  it('ends a session opened by a token when the token expires, however recently it was used', async () => {
    await env().addUser('alice');
    await enable({ mobile_authorization: { enabled: true, token_lifetime_seconds: 3600 } });
    const { token } = await mobileLogin();
    const sessionId = (await request({ mobileToken: token! }))!.newSessionId!;
    for (let i = 0; i < 3; i++) {
      env().clock.advance(20 * MINUTE_MS);
      if (i < 2) await request({ sessionId });
    }
    await rejectsWith(request({ sessionId }), 'PLATFORM_ERR_SESSION_EXPIRED');
  });

  it('follows a configured idle timeout', async () => {
    await env().addUser('alice');
    await enable({ mobile_session_idle_minutes: 5 });
    const { sessionId } = await mobileLogin();
    env().clock.advance(5 * MINUTE_MS + 1);
    await rejectsWith(request({ sessionId }), 'PLATFORM_ERR_SESSION_EXPIRED');
  });

  it('ends every mobile session and token of a user when the user is locked by failed logins', async () => {
    await env().addUser('alice');
    await enable();
    const { sessionId, token } = await mobileLogin();
    for (const d of ['d1', 'd2', 'd3']) await env().fail(5, { username: 'alice', deviceId: d });
    await rejectsWith(request({ sessionId }), 'PLATFORM_ERR_SESSION_EXPIRED');
    await rejectsWith(request({ mobileToken: token! }), 'PLATFORM_ERR_INVALID_TOKEN');
    // Still refused once the lock has passed: those sessions were ended, not paused.
    env().clock.advance(DAY_MS);
    await rejectsWith(request({ mobileToken: token! }), 'PLATFORM_ERR_INVALID_TOKEN');
  });
});
