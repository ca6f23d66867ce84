/**
 * The mobile authenticators (ThingWorx style), each switched on and off in the settings:
 * - authorization: `Authorization: Mobile base64(user:password)`, checked by the same login rules
 *   as a JSON login (limits, device lock, lockout); while `generate_tokens` is on, a mobile token
 *   is handed back;
 * - token: `twx-mobile-token: <token>`, valid until its creation + `token_lifetime_seconds`.
 * Either one opens a session (a cookie) with an idle timeout (default 30 min); a session that came
 * from a token can be renewed with the token while the token is valid. A disabled authenticator
 * honours nothing: neither its credentials nor the sessions it opened.
 * Tokens and session ids are 256-bit random values; the store keeps only their SHA-256.
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../../../shared/clock.js';
import { MINUTE_MS } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import type { IpDecision } from '../../../shared/ip-rules.js';
import type { PlatformStore, Role } from '../store/store.js';
import { accountUsable } from './account-rules.js';
import type { AuthService } from './auth.js';
import type { SecuritySettings } from './settings.js';
import { sha256 } from './tokens.js';

export const MOBILE_TOKEN_HEADER = 'twx-mobile-token';
export const SESSION_COOKIE = 'platform_session';

export interface MobileCredentials {
  /** The raw Authorization header value, when it uses the `Mobile` scheme. */
  authorization?: string;
  mobileToken?: string;
  sessionId?: string;
  deviceId?: string;
  ip: string;
  ipDecision: IpDecision;
}

export interface MobileAuthResult {
  username: string;
  role: Role;
  via: 'session' | 'mobile-authorization' | 'mobile-token';
  /** The device id the login ran under (the client's, or the derived `mobile@<ip>`). */
  deviceId?: string;
  /** A new session id to set as a cookie. */
  newSessionId?: string;
  /** A new mobile token to return in the `twx-mobile-token` response header. */
  newMobileToken?: string;
}

function decodeMobileAuthorization(value: string): { username: string; password: string } | null {
  const m = /^Mobile\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(value);
  if (!m) return null;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return null;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** The device id of an `Authorization: Mobile` login that sent no X-Device-Id: `mobile@<client address>`. */
export function mobileDeviceId(ip: string): string {
  return `mobile@${ip}`;
}

export function isMobileAuthorization(value: string | undefined): boolean {
  return value !== undefined && /^Mobile\s/i.test(value);
}

export class MobileAuthenticators {
  constructor(
    private readonly store: PlatformStore,
    private readonly auth: AuthService,
    private readonly clock: Clock,
  ) {}

  private tokenExpiry(createdAt: number, s: SecuritySettings): number {
    return createdAt + s.mobile_authorization.token_lifetime_seconds * 1000;
  }

  private async openSession(username: string, tokenHash: string | null): Promise<string> {
    const id = randomBytes(32).toString('base64url');
    const now = this.clock.now();
    await this.store.putMobileSession({ sessionHash: sha256(id), username, tokenHash, createdAt: now, lastSeenAt: now });
    return id;
  }

  /** The user behind a token hash, if the token authenticator is on and the token and account are valid. */
  private async tokenUser(tokenHash: string, s: SecuritySettings): Promise<{ username: string; role: Role } | null> {
    if (!s.mobile_token.enabled) return null;
    const token = await this.store.getMobileToken(tokenHash);
    const now = this.clock.now();
    if (!token || now >= this.tokenExpiry(token.createdAt, s)) return null;
    const user = await this.store.getLoginUser(token.username);
    return user && accountUsable(user, s, now) ? { username: user.username, role: user.role } : null;
  }

  /**
   * Authenticates a request by session, then token, then Mobile authorization. Returns null when
   * the request carries none of them. A refusal gives its true reason, the same for every
   * account: PLATFORM_ERR_AUTHENTICATOR_OFF when the authenticator the credential belongs to is
   * switched off; PLATFORM_ERR_SESSION_EXPIRED ("log in again") for a session that is idle, unknown,
   * void (token generation) or whose token or account can no longer be used; PLATFORM_ERR_INVALID_TOKEN
   * for such a mobile token; the login errors for bad Mobile credentials.
   */
  async authenticate(c: MobileCredentials): Promise<MobileAuthResult | null> {
    const s = (await this.store.getSettings()).settings;
    const now = this.clock.now();
    let sessionRefusal: RelayError | null = null;
    if (c.sessionId) {
      const found = await this.store.touchMobileSession(sha256(c.sessionId), now, s.mobile_session_idle_minutes * MINUTE_MS);
      if ('session' in found) {
        const session = found.session;
        const viaToken = session.tokenHash !== null;
        const enabled = viaToken ? s.mobile_token.enabled : s.mobile_authorization.enabled;
        const user = await this.store.getLoginUser(session.username);
        const tokenOk = !viaToken || (await this.tokenUser(session.tokenHash!, s)) !== null;
        if (!enabled) sessionRefusal = new RelayError('PLATFORM_ERR_AUTHENTICATOR_OFF');
        else if (tokenOk && user && accountUsable(user, s, now)) return { username: user.username, role: user.role, via: 'session' };
      }
      // A refused session falls through to the credentials sent with it, if any.
    }
    if (c.mobileToken !== undefined) {
      if (!s.mobile_token.enabled) throw new RelayError('PLATFORM_ERR_AUTHENTICATOR_OFF');
      const hash = sha256(c.mobileToken);
      const user = await this.tokenUser(hash, s);
      if (!user) throw new RelayError('PLATFORM_ERR_INVALID_TOKEN');
      return { ...user, via: 'mobile-token', newSessionId: await this.openSession(user.username, hash) };
    }
    if (c.authorization !== undefined && isMobileAuthorization(c.authorization)) {
      if (!s.mobile_authorization.enabled) throw new RelayError('PLATFORM_ERR_AUTHENTICATOR_OFF');
      const creds = decodeMobileAuthorization(c.authorization);
      if (!creds) throw new RelayError('PLATFORM_ERR_INVALID_CREDENTIALS');
      // ThingWorx clients send no device id: the login gets one the server derives from the client
      // address (a reserved name no client may claim), so its failures count like any device's.
      const deviceId = c.deviceId ?? mobileDeviceId(c.ip);
      const user = await this.auth.checkCredentials({ ...creds, deviceId, ip: c.ip, ipDecision: c.ipDecision });
      let newMobileToken: string | undefined;
      if (s.mobile_authorization.generate_tokens) {
        newMobileToken = randomBytes(32).toString('base64url');
        const tokenHash = sha256(newMobileToken);
        await this.store.putMobileToken({ tokenHash, username: user.username, createdAt: now, expiresAt: this.tokenExpiry(now, s) });
      }
      return {
        username: user.username,
        role: user.role,
        via: 'mobile-authorization',
        deviceId,
        // The session belongs to the authorization authenticator; the token opens its own sessions.
        newSessionId: await this.openSession(user.username, null),
        ...(newMobileToken ? { newMobileToken } : {}),
      };
    }
    // A session that is gone (idle, void, ended with its account's sessions) means: log in again.
    if (c.sessionId) throw sessionRefusal ?? new RelayError('PLATFORM_ERR_SESSION_EXPIRED');
    return null;
  }
}
