import { generateKeyPair, importJWK, SignJWT, decodeJwt, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS } from '../../../../shared/clock.js';
import { ALGORITHM, AUDIENCE, ISSUER, sha256, TokenService, type TokenPair } from '../../../../platform-agent/server/security/tokens.js';
import { applySettingsPatch, lockoutPolicy } from '../../../../platform-agent/server/security/settings.js';
import { rejectsWith, useSecurityEnv } from './fixtures.js';

const env = useSecurityEnv();

async function mobileLogin(username = 'alice', deviceId = 'phone-1'): Promise<TokenPair> {
  if (!(await env().store.getUser(username))) await env().addUser(username);
  return env().login({ username, deviceId });
}

async function adminLogin(username = 'root'): Promise<TokenPair> {
  if (!(await env().store.getUser(username))) await env().addUser(username, 'admin');
  return env().login({ username, deviceId: 'console', audience: 'admin' });
}

/** Signs `payload` with the store's own current private key: only what the test changes differs from a real token. */
async function signWithStoreKey(payload: JWTPayload, header: { alg?: string; kid?: string } = {}): Promise<string> {
  const record = (await env().store.getSigningKey())!;
  const key = await importJWK(JSON.parse(record.privateJwk) as Record<string, unknown>, ALGORITHM);
  return new SignJWT(payload).setProtectedHeader({ alg: ALGORITHM, kid: record.kid, typ: 'JWT', ...header }).sign(key);
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('tokens: a login pair', () => {
  it('verifies as an access token and a refresh token of the same family, with the expected claims', async () => {
    const pair = await mobileLogin();
    expect(pair.token_type).toBe('Bearer');
    expect(pair.expires_in).toBe(14 * 86_400);
    expect(pair.refresh_expires_in).toBe(45 * 86_400);
    const access = await env().auth.tokens.verify(pair.access_token, 'access', 'api');
    const refresh = await env().auth.tokens.verify(pair.refresh_token, 'refresh', 'api');
    const { tokenGeneration } = await env().store.getSettings();
    expect(access).toMatchObject({ sub: 'alice', role: 'mobile', did: 'phone-1', typ: 'access', aud: 'api', gen: tokenGeneration });
    expect(refresh).toMatchObject({ sub: 'alice', role: 'mobile', did: 'phone-1', typ: 'refresh', aud: 'api', fam: access.fam });
    expect(access.exp - access.iat).toBe(14 * 86_400);
    expect(refresh.exp - refresh.iat).toBe(45 * 86_400);
    expect(access.jti).not.toBe(refresh.jti);
  });

  it('issues valid tokens to the first logins on a fresh store, even when they arrive together', async () => {
    await env().addUser('alice');
    const pairs = await Promise.all(['d1', 'd2', 'd3', 'd4'].map((deviceId) => env().login({ username: 'alice', deviceId })));
    for (const pair of pairs) await env().auth.authenticate(pair.access_token, 'api');
  });

  it('makes the first signing key on first use without changing the token generation', async () => {
    expect(await env().store.getSigningKey()).toBeNull();
    const pair = await mobileLogin();
    expect((await env().store.getSigningKey())?.kid).toBeDefined();
    expect((await env().store.getSettings()).tokenGeneration).toBe(1);
    expect(decodeJwt(pair.access_token).gen).toBe(1);
  });

  it('is signed with EdDSA by the issuer for the API audience', async () => {
    const pair = await mobileLogin();
    const header = JSON.parse(Buffer.from(pair.access_token.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;
    expect(header.alg).toBe('EdDSA');
    expect(decodeJwt(pair.access_token)).toMatchObject({ iss: ISSUER, aud: AUDIENCE.api });
  });

  it('keeps only the SHA-256 of the current refresh token id in the store', async () => {
    const pair = await mobileLogin();
    const { jti, fam } = decodeJwt(pair.refresh_token) as { jti: string; fam: string };
    const family = await env().store.getFamily(fam);
    expect(family?.currentJtiHash).toBe(sha256(jti));
    expect(family?.currentJtiHash).not.toContain(jti);
  });

  it('never passes an access token as a refresh token, nor a refresh token as an access token', async () => {
    const pair = await mobileLogin();
    await rejectsWith(env().auth.tokens.verify(pair.access_token, 'refresh', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.tokens.verify(pair.refresh_token, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(pair.refresh_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(pair.access_token), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it('never passes an API token as an administrator token, nor the reverse', async () => {
    const api = await mobileLogin();
    await rejectsWith(env().auth.tokens.verify(api.access_token, 'access', 'admin'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(api.access_token, 'admin'), 'PLATFORM_ERR_INVALID_TOKEN');
    // An administrator's own API-audience token is still not an administrator token.
    await env().addUser('root', 'admin');
    const adminViaApi = await env().login({ username: 'root', deviceId: 'laptop' });
    await rejectsWith(env().auth.authenticate(adminViaApi.access_token, 'admin'), 'PLATFORM_ERR_INVALID_TOKEN');
    const admin = await adminLogin();
    await rejectsWith(env().auth.authenticate(admin.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    expect((await env().auth.authenticate(admin.access_token, 'admin')).role).toBe('admin');
  });

  it('refuses an administrator-audience token that names a non-admin role, even when properly signed', async () => {
    const pair = await mobileLogin();
    const forged = await signWithStoreKey({ ...decodeJwt(pair.access_token), aud: AUDIENCE.admin });
    await rejectsWith(env().auth.tokens.verify(forged, 'access', 'admin'), 'PLATFORM_ERR_INVALID_TOKEN');
  });
});

describe('tokens: refused tokens', () => {
  it('accepts a token re-signed with the store key unchanged (the control for the cases below)', async () => {
    const pair = await mobileLogin();
    const resigned = await signWithStoreKey(decodeJwt(pair.access_token));
    expect((await env().auth.tokens.verify(resigned, 'access', 'api')).sub).toBe('alice');
  });

  it('refuses a tampered signature or payload', async () => {
    const pair = await mobileLogin();
    const [h, p, s] = pair.access_token.split('.') as [string, string, string];
    const flipped = (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    await rejectsWith(env().auth.tokens.verify(`${h}.${p}.${flipped}`, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    const otherPayload = b64({ ...decodeJwt(pair.access_token), sub: 'root' });
    await rejectsWith(env().auth.tokens.verify(`${h}.${otherPayload}.${s}`, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.tokens.verify('not a jwt', 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.tokens.verify('', 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it('refuses an HS256 token keyed with the public key (algorithm confusion)', async () => {
    const pair = await mobileLogin();
    const record = (await env().store.getSigningKey())!;
    const publicJwk = JSON.parse(record.publicJwk) as { x: string };
    for (const secret of [Buffer.from(publicJwk.x, 'base64url'), Buffer.from(record.publicJwk)]) {
      const hs = await new SignJWT(decodeJwt(pair.access_token)).setProtectedHeader({ alg: 'HS256', kid: record.kid }).sign(secret);
      await rejectsWith(env().auth.tokens.verify(hs, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    }
  });

  it('refuses an unsigned token (alg none)', async () => {
    const pair = await mobileLogin();
    const payload = b64(decodeJwt(pair.access_token));
    for (const alg of ['none', 'None', 'NONE']) {
      const unsigned = `${b64({ alg, typ: 'JWT' })}.${payload}.`;
      await rejectsWith(env().auth.tokens.verify(unsigned, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    }
  });

  it('refuses a token signed by another Ed25519 key, even under the current key id', async () => {
    const pair = await mobileLogin();
    const record = (await env().store.getSigningKey())!;
    const { privateKey } = await generateKeyPair(ALGORITHM, { crv: 'Ed25519' });
    const foreign = await new SignJWT(decodeJwt(pair.access_token))
      .setProtectedHeader({ alg: ALGORITHM, kid: record.kid })
      .sign(privateKey);
    await rejectsWith(env().auth.tokens.verify(foreign, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it.each([
    ['another issuer', { iss: 'someone-else' }],
    ['another audience', { aud: 'some-other-api' }],
    ['a typ that is neither access nor refresh', { typ: 'id' }],
    ['an unknown role', { role: 'superuser' }],
    ['a generation from before', { gen: 0 }],
    ['a generation given as a string', { gen: '1' }],
    ['a family that does not exist', { fam: 'no-such-family' }],
    ['another subject than the family', { sub: 'mallory' }],
  ])('refuses a properly signed token with %s', async (_what, change) => {
    const pair = await mobileLogin();
    const forged = await signWithStoreKey({ ...decodeJwt(pair.access_token), ...change });
    await rejectsWith(env().auth.tokens.verify(forged, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it.each(['iss', 'aud', 'exp', 'iat', 'jti', 'sub', 'typ', 'fam', 'gen', 'role'])(
    'refuses a properly signed token without the %s claim',
    async (claim) => {
      const pair = await mobileLogin();
      const payload: Record<string, unknown> = { ...decodeJwt(pair.access_token) };
      delete payload[claim];
      const forged = await signWithStoreKey(payload);
      await rejectsWith(env().auth.tokens.verify(forged, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    },
  );

  it('refuses an access token once its 14 days have passed, and a refresh token after 45 days', async () => {
    const pair = await mobileLogin();
    env().clock.advance(14 * DAY_MS - 1000);
    await env().auth.authenticate(pair.access_token, 'api');
    env().clock.advance(1000);
    await rejectsWith(env().auth.authenticate(pair.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await env().auth.tokens.verify(pair.refresh_token, 'refresh', 'api');
    env().clock.advance(31 * DAY_MS);
    await rejectsWith(env().auth.tokens.verify(pair.refresh_token, 'refresh', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(pair.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it('refuses an administrator access token after the administrator validity, which is set apart from the API one', async () => {
    await env().patchSettings({ admin_token_validity: { days: 0, hours: 8 } });
    const admin = await adminLogin();
    const api = await mobileLogin();
    expect(admin.expires_in).toBe(8 * 3600);
    env().clock.advance(8 * HOUR_MS);
    await rejectsWith(env().auth.authenticate(admin.access_token, 'admin'), 'PLATFORM_ERR_INVALID_TOKEN');
    await env().auth.authenticate(api.access_token, 'api');
  });
});

describe('tokens: invalidating every current token', () => {
  it.each([
    ['the API validity', { api_token_validity: { days: 7 } }],
    ['the administrator validity', { admin_token_validity: { hours: 1 } }],
    ['the refresh validity', { refresh_token_validity: { days: 60 } }],
  ])('invalidates every current token when %s changes (saveSettings with invalidateTokens)', async (_what, patch) => {
    const api = await mobileLogin();
    const admin = await adminLogin();
    const { settings, tokenGeneration } = await env().store.getSettings();
    const change = applySettingsPatch(settings, patch);
    expect(change.invalidatesTokens).toBe(true);
    const saved = await env().store.saveSettings(change.next, { invalidateTokens: true, recalculateLocks: null, now: env().clock.now() });
    expect(saved.tokenGeneration).toBe(tokenGeneration + 1);
    await rejectsWith(env().auth.authenticate(api.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(admin.access_token, 'admin'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(api.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(admin.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    const again = await env().login({ username: 'alice', deviceId: 'phone-1' });
    expect((await env().auth.authenticate(again.access_token, 'api')).gen).toBe(tokenGeneration + 1);
  });

  it('keeps current tokens valid through a change that touches no validity', async () => {
    const api = await mobileLogin();
    const change = await env().patchSettings({ lockout: { device_failures: 3 }, admin_inactivity_timeout: '01:00' });
    expect(change.invalidatesTokens).toBe(false);
    await env().auth.authenticate(api.access_token, 'api');
    await env().auth.refresh(api.refresh_token);
  });

  it('invalidates every current token when the signing key is rotated, also for a second service on the same store', async () => {
    const api = await mobileLogin();
    const admin = await adminLogin();
    const other = new TokenService(env().store, env().clock);
    await other.verify(api.access_token, 'access', 'api');
    const before = await env().store.getSigningKey();
    await env().auth.tokens.rotateKey();
    expect((await env().store.getSigningKey())?.kid).not.toBe(before?.kid);
    await rejectsWith(env().auth.authenticate(api.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(admin.access_token, 'admin'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(api.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(other.verify(api.access_token, 'access', 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    const fresh = await env().login({ username: 'alice', deviceId: 'phone-1' });
    await other.verify(fresh.access_token, 'access', 'api');
  });
});

describe('tokens: refresh rotation and reuse', () => {
  it('gives a new pair in the same family and spends the old refresh token', async () => {
    const first = await mobileLogin();
    env().clock.advance(HOUR_MS);
    const second = await env().auth.refresh(first.refresh_token);
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect(second.access_token).not.toBe(first.access_token);
    const a1 = decodeJwt(first.access_token);
    const a2 = await env().auth.authenticate(second.access_token, 'api');
    expect(a2).toMatchObject({ sub: 'alice', did: 'phone-1', fam: a1.fam });
    expect(a2.iat).toBe(Number(a1.iat) + 3600);
    const family = await env().store.getFamily(a2.fam);
    expect(family?.currentJtiHash).toBe(sha256(decodeJwt(second.refresh_token).jti!));
    expect(family?.expiresAt).toBe(env().clock.now() + 45 * DAY_MS);
  });

  it('revokes the whole family when a spent refresh token comes back: the newest refresh and access tokens fail too', async () => {
    const first = await mobileLogin();
    const second = await env().auth.refresh(first.refresh_token);
    const third = await env().auth.refresh(second.refresh_token);
    const bystander = await mobileLogin('bob', 'phone-2');

    await rejectsWith(env().auth.refresh(first.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');

    await rejectsWith(env().auth.refresh(third.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(third.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(second.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    const family = await env().store.getFamily(decodeJwt(third.access_token).fam as string);
    expect(family?.revokedAt).toBe(env().clock.now());
    expect(env().events).toContainEqual({ event: 'refresh_reuse', username: 'alice', family: family?.familyId });
    // Other families live on.
    await env().auth.authenticate(bystander.access_token, 'api');
    await env().auth.refresh(bystander.refresh_token);
  });

  it('honours a refresh token presented twice at once at most once, and then not at all', async () => {
    const first = await mobileLogin();
    const results = await Promise.allSettled([env().auth.refresh(first.refresh_token), env().auth.refresh(first.refresh_token)]);
    const fulfilled = results.filter((r): r is PromiseFulfilledResult<TokenPair> => r.status === 'fulfilled');
    expect(fulfilled.length).toBeLessThanOrEqual(1);
    for (const r of fulfilled) await rejectsWith(env().auth.authenticate(r.value.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
  });

  it('refuses a refresh for an account whose role changed since the login', async () => {
    const first = await mobileLogin();
    await env().accounts.update('alice', { role: 'external' });
    await rejectsWith(env().auth.refresh(first.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.authenticate(first.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
  });
});

describe('tokens: logout', () => {
  it('revokes the family: the access and refresh tokens of that login fail, other logins of the user stay valid', async () => {
    const phone = await mobileLogin('alice', 'phone-1');
    const tablet = await mobileLogin('alice', 'tablet-1');
    const claims = await env().auth.authenticate(phone.access_token, 'api');
    await env().auth.logout(claims);
    await rejectsWith(env().auth.authenticate(phone.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(phone.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
    await env().auth.authenticate(tablet.access_token, 'api');
  });

  it('is not undone by a restart', async () => {
    const phone = await mobileLogin();
    await env().auth.logout(await env().auth.authenticate(phone.access_token, 'api'));
    await env().restart();
    await rejectsWith(env().auth.authenticate(phone.access_token, 'api'), 'PLATFORM_ERR_INVALID_TOKEN');
    await rejectsWith(env().auth.refresh(phone.refresh_token), 'PLATFORM_ERR_INVALID_TOKEN');
  });
});

describe('tokens: store-level invalidation helpers', () => {
  it('saveSettings without invalidateTokens keeps the generation and the tokens', async () => {
    const api = await mobileLogin();
    const { settings, tokenGeneration } = await env().store.getSettings();
    await env().store.saveSettings(settings, {
      invalidateTokens: false,
      recalculateLocks: lockoutPolicy(settings),
      now: env().clock.now(),
    });
    expect((await env().store.getSettings()).tokenGeneration).toBe(tokenGeneration);
    await env().auth.authenticate(api.access_token, 'api');
  });
});
