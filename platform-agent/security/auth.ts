/**
 * The login rules, in the order a login meets them: address limits, device lock, password,
 * account state, then the failure bookkeeping (device lock, user lock) or the token pair.
 * Every wrong answer looks the same from outside: unknown user, wrong password, locked user and
 * expired account all fail with RELAY_ERR_INVALID_CREDENTIALS after the same scrypt work.
 * Nothing here knows HTTP; routes translate.
 */
import type { Clock } from '../../shared/clock.js';
import { MINUTE_MS } from '../../shared/clock.js';
import { RelayError } from '../../shared/errors.js';
import type { IpDecision } from '../../shared/ip-rules.js';
import type { PlatformStore, Role, UserRecord } from '../store/store.js';
import { accountUsable } from './accounts.js';
import { adminAccountKey, adminAddressKey, adminWaitPolicy } from './admin-waits.js';
import { isLastUserManager, validityWaived } from './groups.js';
import { defaultScryptParams, hashPassword, verifyPassword, type ScryptParams } from './passwords.js';
import { inactivityMs, lockoutPolicy, type SecuritySettings } from './settings.js';
import { TokenService, type Audience, type TokenClaims, type TokenPair } from './tokens.js';

export interface LoginAttempt {
  username: string;
  password: string;
  deviceId: string;
  /** The client's address as the relay saw it (tunnel OPEN metadata), or the internal socket's. */
  ip: string;
  ipDecision: IpDecision;
  audience: Audience;
  /** The login arrived on the internal listener (not through the relay). */
  internal?: boolean;
}

export interface Identity {
  username: string;
  role: Role;
  deviceId: string | null;
}

/** Events worth a log line; the caller logs them (never a password or token). */
export type AuthEvent =
  | { event: 'login_ok'; username: string; deviceId: string; ip: string; audience: Audience }
  | { event: 'login_failed'; username: string; deviceId: string; ip: string }
  | { event: 'device_locked'; deviceId: string; username: string; until: number }
  | { event: 'user_locked'; username: string; until: number }
  | { event: 'ip_limited'; ip: string }
  | { event: 'admin_login_delayed'; username: string; ip: string; retryAfterMs: number }
  | { event: 'refresh_reuse'; username: string; family: string };

const secondsUntil = (ms: number, now: number): number => Math.max(1, Math.ceil((ms - now) / 1000));

export class AuthService {
  readonly tokens: TokenService;
  private dummyHash: Promise<string>;

  constructor(
    private readonly store: PlatformStore,
    private readonly clock: Clock,
    private readonly onEvent: (e: AuthEvent) => void = () => {},
    scrypt: ScryptParams = defaultScryptParams,
  ) {
    this.tokens = new TokenService(store, clock);
    // Unknown users are checked against this, so that they cost the same scrypt work as known ones.
    this.dummyHash = hashPassword('dummy password for unknown users', scrypt);
  }

  settings(): Promise<SecuritySettings> {
    return this.store.getSettings().then((s) => s.settings);
  }

  /**
   * Checks an attempt against every rule and records its outcome. Returns the user on success;
   * throws RELAY_ERR_IP_BLOCKED, _TOO_MANY_ATTEMPTS, _DEVICE_LOCKED (with retry-after) or
   * _INVALID_CREDENTIALS. Shared by the JSON login and the `Authorization: Mobile` authenticator.
   */
  async checkCredentials(a: Omit<LoginAttempt, 'audience'> & { requireRole?: Role }): Promise<UserRecord> {
    const now = this.clock.now();
    const settings = await this.settings();
    if (a.ipDecision === 'blacklisted') throw new RelayError('RELAY_ERR_IP_BLOCKED');
    if (a.ipDecision !== 'whitelisted') {
      const hit = await this.store.hitIpAttempt(a.ip, now, MINUTE_MS, settings.ip_login_attempts_per_minute);
      if (!hit.allowed) {
        this.onEvent({ event: 'ip_limited', ip: a.ip });
        throw new RelayError('RELAY_ERR_TOO_MANY_ATTEMPTS', undefined, { retryAfterSeconds: Math.ceil(hit.retryAfterMs / 1000) });
      }
    }
    const user = await this.store.getUser(a.username);
    // Administrators have their own rule, whichever route they log in on (growing waits, no lock).
    if (a.requireRole === 'admin' || user?.role === 'admin') return this.checkAdmin(a, user, settings);
    const device = await this.store.getDevice(a.deviceId);
    if (device?.lockedUntil != null && device.lockedUntil > now)
      throw new RelayError('RELAY_ERR_DEVICE_LOCKED', undefined, { retryAfterSeconds: secondsUntil(device.lockedUntil, now) });

    const passwordOk = await verifyPassword(a.password, user?.passwordHash ?? (await this.dummyHash));
    const roleOk = !a.requireRole || user?.role === a.requireRole;
    const deviceLocked = (until: number): RelayError =>
      new RelayError('RELAY_ERR_DEVICE_LOCKED', undefined, { retryAfterSeconds: secondsUntil(until, this.clock.now()) });
    // Guesses sent at once all pass the lock check above while their scrypt runs; the store decides
    // again, atomically, so that once the device is locked no outcome (right or wrong) is revealed.
    if (user && passwordOk && roleOk && (await this.usable(user, settings))) {
      if (await this.store.recordLoginSuccess(a.deviceId, user.username, this.clock.now())) return user;
      const locked = await this.store.getDevice(a.deviceId);
      throw deviceLocked(locked?.lockedUntil ?? this.clock.now());
    }
    const result = await this.store.recordLoginFailure(a.deviceId, a.username, this.clock.now(), lockoutPolicy(settings), user !== null);
    if (result.deviceLockedUntil !== null && !result.deviceLockedNow) throw deviceLocked(result.deviceLockedUntil);
    this.onEvent({ event: 'login_failed', username: a.username, deviceId: a.deviceId, ip: a.ip });
    if (result.deviceLockedNow && result.deviceLockedUntil !== null)
      this.onEvent({ event: 'device_locked', deviceId: a.deviceId, username: a.username, until: result.deviceLockedUntil });
    if (result.userLockedUntil !== null) this.onEvent({ event: 'user_locked', username: a.username, until: result.userLockedUntil });
    throw new RelayError('RELAY_ERR_INVALID_CREDENTIALS');
  }

  /**
   * The administrators' rule (security/admin-waits.ts): the attempt is counted per address and per
   * account name before the password is looked at; one made during a wait gets
   * RELAY_ERR_TOO_MANY_ATTEMPTS with its retry-after and no password check. Devices are recorded
   * but never counted or locked, nor is the account. The last administrator who can manage users
   * has no per-account wait on the internal listener: however many guesses arrive through the
   * relay, that administrator can still log in from inside (the per-address wait still applies).
   */
  private async checkAdmin(
    a: Omit<LoginAttempt, 'audience'> & { requireRole?: Role },
    user: UserRecord | null,
    settings: SecuritySettings,
  ): Promise<UserRecord> {
    const exempt = a.internal === true && user !== null && (await isLastUserManager(this.store, this.clock.now(), user.username));
    const keys = [adminAddressKey(a.ip), ...(exempt ? [] : [adminAccountKey(a.username)])];
    const hit = await this.store.hitAdminLogin(keys, this.clock.now(), adminWaitPolicy);
    if (!hit.allowed) {
      this.onEvent({ event: 'admin_login_delayed', username: a.username, ip: a.ip, retryAfterMs: hit.retryAfterMs });
      throw new RelayError('RELAY_ERR_TOO_MANY_ATTEMPTS', 'too many failed administrator logins; wait before trying again', {
        retryAfterSeconds: Math.max(1, Math.ceil(hit.retryAfterMs / 1000)),
      });
    }
    const passwordOk = await verifyPassword(a.password, user?.passwordHash ?? (await this.dummyHash));
    const roleOk = !a.requireRole || user?.role === a.requireRole;
    if (user && passwordOk && roleOk && (await this.usable(user, settings))) {
      await this.store.clearAdminLogin(keys);
      await this.store.recordLoginSuccess(a.deviceId, user.username, this.clock.now());
      return user;
    }
    this.onEvent({ event: 'login_failed', username: a.username, deviceId: a.deviceId, ip: a.ip });
    throw new RelayError('RELAY_ERR_INVALID_CREDENTIALS');
  }

  /** `POST …/auth/login`: the rules, then a new token pair. Administrators log in with audience 'admin' and must have that role. */
  async login(a: LoginAttempt): Promise<TokenPair> {
    const user = await this.checkCredentials({ ...a, ...(a.audience === 'admin' ? { requireRole: 'admin' as const } : {}) });
    this.onEvent({ event: 'login_ok', username: user.username, deviceId: a.deviceId, ip: a.ip, audience: a.audience });
    return this.tokens.login({ username: user.username, role: user.role, deviceId: a.deviceId, audience: a.audience });
  }

  /** Unlocked and valid now; the last administrator who can manage users is never expired (security/groups.ts). */
  private async usable(user: UserRecord, settings: SecuritySettings): Promise<boolean> {
    const now = this.clock.now();
    return accountUsable(user, settings, now) || (await validityWaived(this.store, user, now));
  }

  /** The account behind a token must still exist, be unlocked and valid, and hold the token's role. */
  private async usableUser(claims: TokenClaims): Promise<UserRecord> {
    const user = await this.store.getUser(claims.sub);
    const settings = await this.settings();
    if (!user || user.role !== claims.role || !(await this.usable(user, settings))) throw new RelayError('RELAY_ERR_INVALID_TOKEN');
    return user;
  }

  /**
   * Verifies an access token for `audience` and the account behind it. For administrators, also
   * the inactivity timeout: a token idle longer fails with RELAY_ERR_SESSION_EXPIRED; any use
   * moves its family's last activity.
   */
  async authenticate(token: string, audience: Audience): Promise<TokenClaims> {
    const claims = await this.tokens.verify(token, 'access', audience);
    await this.usableUser(claims);
    if (audience === 'admin') {
      const now = this.clock.now();
      const idleMs = inactivityMs((await this.settings()).admin_inactivity_timeout);
      const family = await this.store.getFamily(claims.fam);
      if (!family) throw new RelayError('RELAY_ERR_INVALID_TOKEN');
      if (idleMs !== null && now - family.lastUsedAt > idleMs) {
        await this.store.revokeFamily(claims.fam, now);
        throw new RelayError('RELAY_ERR_SESSION_EXPIRED');
      }
      await this.store.touchFamily(claims.fam, now);
    }
    return claims;
  }

  /** `POST …/auth/refresh`: a spent refresh token revokes its family. */
  async refresh(refreshToken: string): Promise<TokenPair> {
    try {
      return await this.tokens.refresh(refreshToken, async (claims) => {
        const user = await this.usableUser(claims);
        if (claims.aud === 'admin') {
          const idleMs = inactivityMs((await this.settings()).admin_inactivity_timeout);
          const family = await this.store.getFamily(claims.fam);
          if (idleMs !== null && family && this.clock.now() - family.lastUsedAt > idleMs) {
            await this.store.revokeFamily(claims.fam, this.clock.now());
            throw new RelayError('RELAY_ERR_SESSION_EXPIRED');
          }
        }
        return { role: user.role };
      });
    } catch (err) {
      if ((err as RelayError).code === 'RELAY_ERR_INVALID_TOKEN') await this.noteReuse(refreshToken);
      throw err;
    }
  }

  /** Logs a revoked family after a reuse (best effort: the token is already refused). */
  private async noteReuse(refreshToken: string): Promise<void> {
    try {
      const payload = JSON.parse(Buffer.from(refreshToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
        fam?: unknown;
        sub?: unknown;
      };
      if (typeof payload.fam !== 'string') return;
      const family = await this.store.getFamily(payload.fam);
      if (family?.revokedAt === this.clock.now())
        this.onEvent({ event: 'refresh_reuse', username: family.username, family: family.familyId });
    } catch {
      // not a JWT at all: nothing to note
    }
  }

  async logout(claims: TokenClaims): Promise<void> {
    await this.tokens.revoke(claims.fam);
  }
}
