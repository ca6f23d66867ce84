/**
 * The API users' routes: login, refresh, logout, and `GET /api/v1/me`. Also who a request under
 * `/api/` is: a Bearer access token, or one of the mobile authenticators (session cookie,
 * `twx-mobile-token`, `Authorization: Mobile …`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RelayError } from '../../../shared/errors.js';
import type { IpDecision } from '../../../shared/ip-rules.js';
import type { AuthService, LoginAttempt } from '../security/auth.js';
import { MOBILE_TOKEN_HEADER, SESSION_COOKIE, type MobileAuthenticators, isMobileAuthorization } from '../security/mobile-auth.js';
import type { Role } from '../store/store.js';
import { bearerToken, cookie, header, readJson, sendJson, sendNoContent, stringField } from './http-io.js';

export interface RequestContext {
  /** The client's address: from the tunnel's OPEN metadata, or the internal socket. */
  ip: string;
  ipDecision: IpDecision;
  /** The request arrived on the internal listener (not through the relay). */
  internal?: boolean;
}

export interface ApiIdentity {
  username: string;
  role: Role;
  deviceId: string | null;
  via: 'bearer' | 'session' | 'mobile-authorization' | 'mobile-token';
  expiresAt: number | null;
  familyId: string | null;
  /** Response headers the authentication produced (a session cookie, a new mobile token). */
  responseHeaders: Record<string, string>;
}

export const DEVICE_ID_HEADER = 'x-device-id';
const MAX_DEVICE_ID = 128;

/**
 * Device ids the server gives its own devices: `admin-console@<ip>` (a console login, or an
 * administrator's login without X-Device-Id) and `mobile@<ip>` (an `Authorization: Mobile` login
 * without one). A client may not claim them (400 device_id_reserved): failures it caused under
 * such a name would count against the server's own device for that user.
 */
const RESERVED_DEVICE_ID = /^(admin-console|mobile)@/i;

/** The X-Device-Id header, required for logins (400 device_id_required); a reserved name is refused (400 device_id_reserved). */
export function deviceId(req: IncomingMessage, required: boolean): string | null {
  const v = header(req, DEVICE_ID_HEADER);
  if (v === undefined || v.length > MAX_DEVICE_ID || !/^[\x21-\x7e]+$/.test(v)) {
    if (required)
      throw new RelayError(
        'PLATFORM_ERR_DEVICE_ID_REQUIRED',
        `the X-Device-Id header is required (1-${MAX_DEVICE_ID} visible ASCII characters)`,
      );
    return null;
  }
  if (RESERVED_DEVICE_ID.test(v)) throw new RelayError('PLATFORM_ERR_DEVICE_ID_RESERVED');
  return v;
}

/**
 * What a login body names: `{username, password}`; for an API login also the device logins of
 * Mobile SMARTS, `{password}` alone or `{barcode}` (auth.ts refuses them while their setting is off).
 */
function loginSecret(body: Record<string, unknown>, audience: 'api' | 'admin'): Pick<LoginAttempt, 'username' | 'password' | 'method'> {
  if (audience === 'api' && body.barcode !== undefined && body.username === undefined && body.password === undefined)
    return { username: '', password: stringField(body, 'barcode', 1024), method: 'barcode' };
  if (audience === 'api' && body.username === undefined && body.password !== undefined)
    return { username: '', password: stringField(body, 'password', 1024), method: 'password' };
  return { username: stringField(body, 'username', 256), password: stringField(body, 'password', 1024) };
}

export class AuthRoutes {
  constructor(
    private readonly auth: AuthService,
    private readonly mobile: MobileAuthenticators,
    private readonly secureCookies: (req: IncomingMessage) => boolean,
  ) {}

  async login(req: IncomingMessage, res: ServerResponse, ctx: RequestContext, audience: 'api' | 'admin'): Promise<void> {
    const device = audience === 'api' ? deviceId(req, true)! : (deviceId(req, false) ?? `admin-console@${ctx.ip}`);
    const body = await readJson(req);
    const pair = await this.auth.login({
      ...loginSecret(body, audience),
      deviceId: device,
      ip: ctx.ip,
      ipDecision: ctx.ipDecision,
      audience,
      ...(ctx.internal === true ? { internal: true } : {}),
    });
    sendJson(res, 200, pair);
  }

  async refresh(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJson(req);
    sendJson(res, 200, await this.auth.refresh(stringField(body, 'refresh_token', 4096)));
  }

  async logout(req: IncomingMessage, res: ServerResponse, audience: 'api' | 'admin'): Promise<void> {
    const token = bearerToken(req);
    if (!token) throw new RelayError('PLATFORM_ERR_INVALID_TOKEN');
    await this.auth.logout(await this.auth.authenticate(token, audience));
    sendNoContent(res);
  }

  async me(res: ServerResponse, who: ApiIdentity): Promise<void> {
    sendJson(
      res,
      200,
      {
        username: who.username,
        role: who.role,
        device_id: who.deviceId,
        expires_at: who.expiresAt === null ? null : new Date(who.expiresAt).toISOString(),
        authenticated_by: who.via,
      },
      who.responseHeaders,
    );
  }

  /** Who is calling an `/api/` route; throws 401 when nobody valid. */
  async identify(req: IncomingMessage, ctx: RequestContext): Promise<ApiIdentity> {
    const bearer = bearerToken(req);
    if (bearer) {
      const claims = await this.auth.authenticate(bearer, 'api');
      return {
        username: claims.sub,
        role: claims.role,
        deviceId: claims.did,
        via: 'bearer',
        expiresAt: claims.exp * 1000,
        familyId: claims.fam,
        responseHeaders: {},
      };
    }
    const authorization = req.headers.authorization;
    const device = deviceId(req, false);
    const result = await this.mobile.authenticate({
      ...(isMobileAuthorization(authorization) ? { authorization: authorization! } : {}),
      ...(header(req, MOBILE_TOKEN_HEADER) !== undefined ? { mobileToken: header(req, MOBILE_TOKEN_HEADER)! } : {}),
      ...(cookie(req, SESSION_COOKIE) !== undefined ? { sessionId: cookie(req, SESSION_COOKIE)! } : {}),
      ...(device !== null ? { deviceId: device } : {}),
      ip: ctx.ip,
      ipDecision: ctx.ipDecision,
    });
    if (!result)
      throw new RelayError('PLATFORM_ERR_INVALID_TOKEN', 'authentication required: a Bearer access token or a mobile authenticator');
    const responseHeaders: Record<string, string> = {};
    if (result.newSessionId) {
      const secure = this.secureCookies(req) ? '; Secure' : '';
      responseHeaders['set-cookie'] = `${SESSION_COOKIE}=${result.newSessionId}; Path=/; HttpOnly; SameSite=Strict${secure}`;
    }
    if (result.newMobileToken) responseHeaders[MOBILE_TOKEN_HEADER] = result.newMobileToken;
    return {
      username: result.username,
      role: result.role,
      deviceId: result.deviceId ?? device,
      via: result.via,
      expiresAt: null,
      familyId: null,
      responseHeaders,
    };
  }
}
