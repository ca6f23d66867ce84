/**
 * Access and refresh JWTs (jose), signed with an Ed25519 key kept in the store. One algorithm
 * is pinned (EdDSA); `iss`, `aud`, `exp`, `iat`, `jti`, `typ` are required and checked, so an
 * access token never passes as a refresh token, nor an API token as an administrator's.
 *
 * Every token carries the store's token generation (`gen`): changing a validity or rotating the
 * key bumps it, and every token issued before is refused at once. Every token also names its
 * refresh family (`fam`): logging out, a user lock, or a reused refresh token revokes the family,
 * and with it the access tokens issued from it. Refresh tokens are single-use; the store keeps
 * only the SHA-256 of the current one's `jti`.
 */
import { createHash, randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import type { Clock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import type { PlatformStore, Role, SigningKeyRecord } from '../store/store.js';
import { validityMs, type SecuritySettings } from './settings.js';

export const ALGORITHM = 'EdDSA';
export const ISSUER = 'dmz-relay-platform';
/** Audiences: API users (mobile, external) and administrators. */
export const AUDIENCE = Object.freeze({ api: 'platform-api', admin: 'platform-admin' });
export type Audience = keyof typeof AUDIENCE;

export interface TokenClaims {
  sub: string;
  role: Role;
  /** Device id given at login (API users), or null. */
  did: string | null;
  fam: string;
  gen: number;
  jti: string;
  typ: 'access' | 'refresh';
  aud: Audience;
  iat: number;
  exp: number;
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  /** Seconds. */
  expires_in: number;
  refresh_expires_in: number;
}

interface LoadedKey {
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

export function sha256(value: string): string {
  return createHash('sha256').update(value).digest('base64url');
}

/** A new signing key record (private JWK included: it lives only in the store). */
export async function newSigningKey(now: number): Promise<SigningKeyRecord> {
  const { privateKey, publicKey } = await generateKeyPair(ALGORITHM, { crv: 'Ed25519', extractable: true });
  return {
    kid: randomUUID(),
    privateJwk: JSON.stringify(await exportJWK(privateKey)),
    publicJwk: JSON.stringify(await exportJWK(publicKey)),
    createdAt: now,
  };
}

const invalidToken = (): RelayError => new RelayError('PLATFORM_ERR_INVALID_TOKEN');

export class TokenService {
  private key: LoadedKey | null = null;

  constructor(
    private readonly store: PlatformStore,
    private readonly clock: Clock,
  ) {}

  /** The current key; made on first use, reloaded when another process rotated it. */
  private async currentKey(): Promise<LoadedKey> {
    // The first key is stored only if no one else stored one meanwhile: it changes no token generation.
    const record = (await this.store.getSigningKey()) ?? (await this.store.initSigningKey(await newSigningKey(this.clock.now())));
    if (this.key?.kid === record.kid) return this.key;
    this.key = {
      kid: record.kid,
      privateKey: (await importJWK(JSON.parse(record.privateJwk) as Record<string, unknown>, ALGORITHM)) as CryptoKey,
      publicKey: (await importJWK(JSON.parse(record.publicJwk) as Record<string, unknown>, ALGORITHM)) as CryptoKey,
    };
    return this.key;
  }

  async rotateKey(): Promise<void> {
    await this.store.rotateSigningKey(await newSigningKey(this.clock.now()));
    this.key = null;
  }

  private async sign(claims: Omit<TokenClaims, 'iat' | 'exp' | 'jti'>, jti: string, nowMs: number, lifetimeMs: number): Promise<string> {
    const key = await this.currentKey();
    const iat = Math.floor(nowMs / 1000);
    return new SignJWT({ role: claims.role, did: claims.did, fam: claims.fam, gen: claims.gen, typ: claims.typ })
      .setProtectedHeader({ alg: ALGORITHM, kid: key.kid, typ: 'JWT' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE[claims.aud])
      .setSubject(claims.sub)
      .setJti(jti)
      .setIssuedAt(iat)
      .setExpirationTime(iat + Math.floor(lifetimeMs / 1000))
      .sign(key.privateKey);
  }

  /**
   * Issues an access and a refresh token. Without `familyId` a new family starts (a login);
   * with one, the family's current refresh token is rotated by the caller (see `refresh`).
   */
  private async issue(
    subject: { username: string; role: Role; deviceId: string | null; audience: Audience },
    settings: SecuritySettings,
    generation: number,
    familyId: string,
    refreshJti: string,
    nowMs: number,
  ): Promise<TokenPair> {
    const accessMs = validityMs(subject.audience === 'admin' ? settings.admin_token_validity : settings.api_token_validity);
    const refreshMs = validityMs(settings.refresh_token_validity);
    const base = {
      sub: subject.username,
      role: subject.role,
      did: subject.deviceId,
      fam: familyId,
      gen: generation,
      aud: subject.audience,
    };
    const [access, refresh] = await Promise.all([
      this.sign({ ...base, typ: 'access' }, randomUUID(), nowMs, accessMs),
      this.sign({ ...base, typ: 'refresh' }, refreshJti, nowMs, refreshMs),
    ]);
    return {
      access_token: access,
      refresh_token: refresh,
      token_type: 'Bearer',
      expires_in: Math.floor(accessMs / 1000),
      refresh_expires_in: Math.floor(refreshMs / 1000),
    };
  }

  /** A login: a new refresh family and its first pair. */
  async login(subject: { username: string; role: Role; deviceId: string | null; audience: Audience }): Promise<TokenPair> {
    const now = this.clock.now();
    const { settings, tokenGeneration } = await this.store.getSettings();
    const familyId = randomUUID();
    const refreshJti = randomUUID();
    await this.store.createFamily({
      familyId,
      username: subject.username,
      deviceId: subject.deviceId,
      audience: subject.audience,
      currentJtiHash: sha256(refreshJti),
      createdAt: now,
      lastUsedAt: now,
      expiresAt: now + validityMs(settings.refresh_token_validity),
      revokedAt: null,
    });
    return this.issue(subject, settings, tokenGeneration, familyId, refreshJti, now);
  }

  /**
   * Verifies signature, algorithm, issuer, audience, expiry, type, generation and family. Throws
   * PLATFORM_ERR_INVALID_TOKEN for any failure (one code: a client learns nothing about why).
   */
  async verify(token: string, typ: 'access' | 'refresh', audience: Audience | 'any'): Promise<TokenClaims> {
    const now = this.clock.now();
    const key = await this.currentKey();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key.publicKey, {
        algorithms: [ALGORITHM],
        issuer: ISSUER,
        audience: audience === 'any' ? [AUDIENCE.api, AUDIENCE.admin] : AUDIENCE[audience],
        requiredClaims: ['iss', 'aud', 'exp', 'iat', 'jti', 'sub', 'typ'],
        currentDate: new Date(now),
        clockTolerance: 0,
      }));
    } catch {
      throw invalidToken();
    }
    if (payload.typ !== typ) throw invalidToken();
    const aud = payload.aud === AUDIENCE.admin ? 'admin' : 'api';
    const role = payload.role;
    if (role !== 'mobile' && role !== 'external' && role !== 'admin') throw invalidToken();
    if (aud === 'admin' && role !== 'admin') throw invalidToken();
    if (typeof payload.fam !== 'string' || typeof payload.gen !== 'number') throw invalidToken();
    const { tokenGeneration } = await this.store.getSettings();
    if (payload.gen !== tokenGeneration) throw invalidToken();
    const family = await this.store.getFamily(payload.fam);
    if (!family || family.revokedAt !== null || family.username !== payload.sub) throw invalidToken();
    return {
      sub: payload.sub!,
      role,
      did: typeof payload.did === 'string' ? payload.did : null,
      fam: payload.fam,
      gen: payload.gen,
      jti: payload.jti!,
      typ,
      aud,
      iat: payload.iat!,
      exp: payload.exp!,
    };
  }

  /**
   * Spends a refresh token for a new pair in the same family. A token that was already spent
   * revokes the family (every token of it stops working) and fails. `check` runs before
   * rotation so that the caller can refuse a locked or expired account.
   */
  async refresh(refreshToken: string, check: (claims: TokenClaims) => Promise<{ role: Role }>): Promise<TokenPair> {
    const claims = await this.verify(refreshToken, 'refresh', 'any');
    const { role } = await check(claims);
    const now = this.clock.now();
    const { settings, tokenGeneration } = await this.store.getSettings();
    const nextJti = randomUUID();
    const result = await this.store.rotateFamily(
      claims.fam,
      sha256(claims.jti),
      sha256(nextJti),
      now,
      now + validityMs(settings.refresh_token_validity),
    );
    if (result !== 'rotated') throw invalidToken();
    return this.issue(
      { username: claims.sub, role, deviceId: claims.did, audience: claims.aud },
      settings,
      tokenGeneration,
      claims.fam,
      nextJti,
      now,
    );
  }

  async revoke(familyId: string): Promise<void> {
    await this.store.revokeFamily(familyId, this.clock.now());
  }
}
