/**
 * The login rules, in the order a login meets them: address limits, device lock, password,
 * account state, then the failure bookkeeping (device lock, user lock) or the token pair.
 * Every wrong answer looks the same from outside: unknown user, wrong password, locked user and
 * expired account all fail with PLATFORM_ERR_INVALID_CREDENTIALS after the same scrypt work.
 * Nothing here knows HTTP; routes translate.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Clock } from '../../../shared/clock.js';
import { MINUTE_MS } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import type { IpDecision } from '../../../shared/ip-rules.js';
import type { PlatformStore, Role, SecretKind, UserRecord } from '../store/store.js';
import { accountActive, accountUsable } from './account-rules.js';
import { adminAccountKey, adminAddressKey, adminWaitPolicy } from './admin-waits.js';
import { isLastUserManager, validityWaived } from './groups.js';
import { lookupTag } from './lookup-tags.js';
import { nameKey } from './names.js';
import { defaultScryptParams, hashPassword, verifyPassword, type ScryptParams } from './passwords.js';
import { inactivityMs, lockoutPolicy, type SecuritySettings } from './settings.js';
import { TokenService, type Audience, type TokenClaims, type TokenPair } from './tokens.js';

/**
 * How a login names its user: `name` (a name and a password, the default), or one of the device
 * logins of Mobile SMARTS, on only when the settings say so (`device_login`): `password` (a
 * password alone) or `barcode` (the user barcode, sent in `password`). Mobile users only.
 */
export type LoginMethod = 'name' | 'password' | 'barcode';

export interface LoginAttempt {
  /** The name; ignored by the device logins. */
  username: string;
  /** The password, or the barcode of a barcode login. */
  password: string;
  method?: LoginMethod;
  deviceId: string;
  /** The client's address as the relay saw it (tunnel OPEN metadata), or the internal socket's. */
  ip: string;
  ipDecision: IpDecision;
  /** The login arrived on the internal listener (not through the relay). */
  internal?: boolean;
  audience: Audience;
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

/** The config document holding the key of the wrong-password hashes (smart lockout). */
export const LOCKOUT_SECRET_KEY = 'lockout_secret';

/** The (user, device) key of every device login (no name can be it: `*` is not in names). */
export const DEVICE_LOGIN_KEY = '*device-login';

const secondsUntil = (ms: number, now: number): number => Math.max(1, Math.ceil((ms - now) / 1000));

export class AuthService {
  readonly tokens: TokenService;
  private dummyHash: Promise<string>;
  private lockoutSecret: Promise<Buffer> | undefined;

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
   * throws PLATFORM_ERR_IP_BLOCKED, _TOO_MANY_ATTEMPTS, _DEVICE_LOCKED (with retry-after) or
   * _INVALID_CREDENTIALS. Shared by the JSON login and the `Authorization: Mobile` authenticator.
   *
   * The device id is the client's claim: failures and locks count per (user, device), so a client
   * naming someone else's device locks only its own attempts on it. A name that is no account
   * gets a (name, device) row of its own that answers like any other (the same 401s, then the same
   * 429) but locks no user. The per-IP limit counts failed logins only: a success gives its
   * attempt back.
   */
  async checkCredentials(a: Omit<LoginAttempt, 'audience'> & { requireRole?: Role }): Promise<UserRecord> {
    const now = this.clock.now();
    const settings = await this.settings();
    if (a.ipDecision === 'blacklisted') throw new RelayError('PLATFORM_ERR_IP_BLOCKED');
    let attemptId: number | null = null;
    if (a.ipDecision !== 'whitelisted') {
      const hit = await this.store.hitIpAttempt(a.ip, now, MINUTE_MS, settings.ip_login_attempts_per_minute);
      if (!hit.allowed) {
        this.onEvent({ event: 'ip_limited', ip: a.ip });
        throw new RelayError('PLATFORM_ERR_TOO_MANY_ATTEMPTS', undefined, { retryAfterSeconds: Math.ceil(hit.retryAfterMs / 1000) });
      }
      attemptId = hit.attemptId;
    }
    const method = a.method ?? 'name';
    if (method !== 'name') this.checkDeviceLogin(method, settings, a.requireRole);
    const user = method === 'name' ? await this.store.getLoginUser(a.username) : await this.userBySecret(method, a.password);
    // Administrators have their own rule, whichever route they log in on (growing waits, no lock).
    if (method === 'name' && (a.requireRole === 'admin' || user?.role === 'admin')) return this.checkAdmin(a, user, settings, attemptId);
    // The (user, device) rows of a name that is no account are keyed by the name's key. A device
    // login (password alone or barcode) counts on the device under DEVICE_LOGIN_KEY, whoever it
    // finds: a guess names no user, so the lock, the count and the check made again at success must
    // all be the device's own, or a right guess would pass a lock that wrong ones meet.
    const who = method === 'name' ? (user?.username ?? nameKey(a.username)) : DEVICE_LOGIN_KEY;
    const shown = method === 'name' ? a.username : (user?.username ?? `(${method} login)`);
    const lockedUntil = await this.store.deviceLockedUntil(a.deviceId, who, now);
    if (lockedUntil !== null)
      throw new RelayError('PLATFORM_ERR_DEVICE_LOCKED', undefined, { retryAfterSeconds: secondsUntil(lockedUntil, now) });

    const hash = method === 'barcode' ? user?.barcodeHash : user?.passwordHash;
    const passwordOk = await verifyPassword(a.password, hash ?? (await this.dummyHash));
    const roleOk = !a.requireRole || user?.role === a.requireRole;
    const deviceLocked = (until: number): RelayError =>
      new RelayError('PLATFORM_ERR_DEVICE_LOCKED', undefined, { retryAfterSeconds: secondsUntil(until, this.clock.now()) });
    const usable = user !== null && ((await this.usable(user, settings)) || (await this.smartExempt(user, a.deviceId, settings)));
    // Guesses sent at once all pass the lock check above while their scrypt runs; the store decides
    // again, atomically, so that once the device is locked no outcome (right or wrong) is revealed.
    if (user && passwordOk && roleOk && usable) {
      if (await this.store.recordLoginSuccess(a.deviceId, who, this.clock.now())) {
        if (attemptId !== null) await this.store.releaseIpAttempt(attemptId);
        return user;
      }
      throw deviceLocked((await this.store.deviceLockedUntil(a.deviceId, who, this.clock.now())) ?? this.clock.now());
    }
    const policy = lockoutPolicy(settings);
    // Smart lockout: a wrong password repeated counts once. Only a keyed hash is kept, never the password.
    const tag = policy.smart && !passwordOk ? await this.passwordTag(who, a.password) : undefined;
    // Only a name login's failures count towards its user's lock: a device login's name no user.
    const result = await this.store.recordLoginFailure(a.deviceId, who, this.clock.now(), policy, user !== null && method === 'name', tag);
    if (result.deviceLockedUntil !== null && !result.deviceLockedNow) throw deviceLocked(result.deviceLockedUntil);
    this.onEvent({ event: 'login_failed', username: shown, deviceId: a.deviceId, ip: a.ip });
    if (result.deviceLockedNow && result.deviceLockedUntil !== null)
      this.onEvent({ event: 'device_locked', deviceId: a.deviceId, username: shown, until: result.deviceLockedUntil });
    if (result.userLockedUntil !== null) this.onEvent({ event: 'user_locked', username: shown, until: result.userLockedUntil });
    throw new RelayError('PLATFORM_ERR_INVALID_CREDENTIALS');
  }

  /** A device login is refused (400, before any counting) unless its setting is on, and it is for mobile users only. */
  private checkDeviceLogin(method: Exclude<LoginMethod, 'name'>, settings: SecuritySettings, requireRole: Role | undefined): void {
    const on = method === 'password' ? settings.device_login.password_only : settings.device_login.barcode;
    if (!on)
      throw new RelayError(
        'PLATFORM_ERR_INVALID_REQUEST',
        method === 'password' ? 'username: required (password-only login is off)' : 'barcode: barcode login is off',
        { details: { field: method === 'password' ? 'username' : 'barcode' } },
      );
    if (requireRole !== undefined && requireRole !== 'mobile')
      throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'username: required (device logins are for mobile users)', {
        details: { field: 'username' },
      });
  }

  /**
   * The mobile user whose password or barcode has the secret's lookup tag (security/lookup-tags.ts),
   * or null: none, not a mobile user, or several (passwords shared from before password-only login
   * was turned on; the settings refuse to turn it on while any are, so this is a race's leftover).
   */
  private async userBySecret(kind: SecretKind, secret: string): Promise<UserRecord | null> {
    const users = await this.store.usersBySecretTag(kind, lookupTag(await this.store.lookupKey(), kind, secret));
    return users.length === 1 && users[0]!.role === 'mobile' ? users[0]! : null;
  }

  /**
   * Smart lockout (`lockout.smart_lockout`): a user locked by the failure rules (not by an
   * administrator, whose lock has no end) still logs in from a device where they logged in
   * successfully before and that has no lock of its own; the account must otherwise be usable.
   */
  private async smartExempt(user: UserRecord, deviceId: string | null, settings: SecuritySettings): Promise<boolean> {
    const now = this.clock.now();
    if (!settings.lockout.smart_lockout || deviceId === null || !user.lockedForSecurityReasons || user.lockedUntil === null) return false;
    if (!accountActive(user, settings, now)) return false;
    const pair = await this.store.getDeviceUser(deviceId, user.username);
    return pair !== null && pair.known && !(pair.lockedUntil !== null && pair.lockedUntil > now);
  }

  /** HMAC-SHA-256 of a wrong password under the server's lockout secret (made once, kept in the store), bound to the user. */
  private async passwordTag(who: string, password: string): Promise<string> {
    this.lockoutSecret ??= (async () => {
      const saved = await this.store.getConfig(LOCKOUT_SECRET_KEY);
      if (typeof saved === 'string') return Buffer.from(saved, 'base64url');
      const secret = randomBytes(32);
      await this.store.putConfig(LOCKOUT_SECRET_KEY, secret.toString('base64url'), this.clock.now());
      return secret;
    })();
    return createHmac('sha256', await this.lockoutSecret)
      .update(who)
      .update('\0')
      .update(password)
      .digest('base64url');
  }

  /**
   * The administrators' rule (security/admin-waits.ts): the attempt is counted per address and per
   * account name before the password is looked at; one made during a wait gets
   * PLATFORM_ERR_TOO_MANY_ATTEMPTS with its retry-after and no password check. Devices are recorded
   * but never counted or locked, nor is the account. The last administrator who can manage users
   * has no per-account wait on the internal listener: however many guesses arrive through the
   * relay, that administrator can still log in from inside (the per-address wait still applies).
   */
  private async checkAdmin(
    a: Omit<LoginAttempt, 'audience'> & { requireRole?: Role },
    user: UserRecord | null,
    settings: SecuritySettings,
    attemptId: number | null,
  ): Promise<UserRecord> {
    const exempt = a.internal === true && user !== null && (await isLastUserManager(this.store, this.clock.now(), user.username));
    const keys = [adminAddressKey(a.ip), ...(exempt ? [] : [adminAccountKey(user?.username ?? nameKey(a.username))])];
    const hit = await this.store.hitAdminLogin(keys, this.clock.now(), adminWaitPolicy);
    if (!hit.allowed) {
      this.onEvent({ event: 'admin_login_delayed', username: a.username, ip: a.ip, retryAfterMs: hit.retryAfterMs });
      throw new RelayError('PLATFORM_ERR_TOO_MANY_ATTEMPTS', 'too many failed administrator logins; wait before trying again', {
        retryAfterSeconds: Math.max(1, Math.ceil(hit.retryAfterMs / 1000)),
      });
    }
    const passwordOk = await verifyPassword(a.password, user?.passwordHash ?? (await this.dummyHash));
    const roleOk = !a.requireRole || user?.role === a.requireRole;
    if (user && passwordOk && roleOk && (await this.usable(user, settings))) {
      await this.store.clearAdminLogin(keys);
      await this.store.recordLoginSuccess(a.deviceId, user.username, this.clock.now());
      if (attemptId !== null) await this.store.releaseIpAttempt(attemptId);
      return user;
    }
    this.onEvent({ event: 'login_failed', username: a.username, deviceId: a.deviceId, ip: a.ip });
    throw new RelayError('PLATFORM_ERR_INVALID_CREDENTIALS');
  }

  /** Unlocked and valid now; the last administrator who can manage users is never expired (security/groups.ts). */
  private async usable(user: UserRecord, settings: SecuritySettings): Promise<boolean> {
    const now = this.clock.now();
    return accountUsable(user, settings, now) || (await validityWaived(this.store, user, now));
  }

  /** `POST …/auth/login`: the rules, then a new token pair. Administrators log in with audience 'admin' and must have that role. */
  async login(a: LoginAttempt): Promise<TokenPair> {
    const user = await this.checkCredentials({ ...a, ...(a.audience === 'admin' ? { requireRole: 'admin' as const } : {}) });
    this.onEvent({ event: 'login_ok', username: user.username, deviceId: a.deviceId, ip: a.ip, audience: a.audience });
    return this.tokens.login({ username: user.username, role: user.role, deviceId: a.deviceId, audience: a.audience });
  }

  /** The account behind a token must still exist, be unlocked and valid, and hold the token's role. */
  private async usableUser(claims: TokenClaims): Promise<UserRecord> {
    const user = await this.store.getLoginUser(claims.sub);
    const settings = await this.settings();
    if (!user || user.role !== claims.role) throw new RelayError('PLATFORM_ERR_INVALID_TOKEN');
    if (!(await this.usable(user, settings)) && !(await this.smartExempt(user, claims.did, settings)))
      throw new RelayError('PLATFORM_ERR_INVALID_TOKEN');
    return user;
  }

  /**
   * Verifies an access token for `audience` and the account behind it. For administrators, also
   * the inactivity timeout: a token idle longer fails with PLATFORM_ERR_SESSION_EXPIRED; any use
   * moves its family's last activity.
   */
  async authenticate(token: string, audience: Audience): Promise<TokenClaims> {
    const claims = await this.tokens.verify(token, 'access', audience);
    await this.usableUser(claims);
    if (audience === 'admin') {
      const now = this.clock.now();
      const idleMs = inactivityMs((await this.settings()).admin_inactivity_timeout);
      const family = await this.store.getFamily(claims.fam);
      if (!family) throw new RelayError('PLATFORM_ERR_INVALID_TOKEN');
      if (idleMs !== null && now - family.lastUsedAt > idleMs) {
        await this.store.revokeFamily(claims.fam, now);
        throw new RelayError('PLATFORM_ERR_SESSION_EXPIRED');
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
            throw new RelayError('PLATFORM_ERR_SESSION_EXPIRED');
          }
        }
        return { role: user.role };
      });
    } catch (err) {
      if ((err as RelayError).code === 'PLATFORM_ERR_INVALID_TOKEN') await this.noteReuse(refreshToken);
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
