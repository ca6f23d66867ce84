/**
 * What every console handler is given: the server's services (one object), the request with its
 * administrator's session, and the small steps they share (reading a form, wording a message).
 * Imports no other console module: the session, the handlers and the route table all
 * import this one.
 */
import type { CertificateDescription } from '../../../shared/certs.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import type { RequestContext } from '../http/auth-routes.js';
import { readBody } from '../http/http-io.js';
import type { IpGuard } from '../http/ip-guard.js';
import type { Params } from '../http/router.js';
import type { RelayControl } from '../relay-control.js';
import type { Accounts } from '../security/accounts.js';
import type { AuthService } from '../security/auth.js';
import type { Groups } from '../security/groups.js';
import type { SettingsService } from '../security/settings-service.js';
import type { TokenClaims } from '../security/tokens.js';
import type { PlatformStore } from '../store/store.js';

/** The platform server's services the console uses. */
export interface ConsoleServices {
  readonly store: PlatformStore;
  readonly auth: AuthService;
  readonly accounts: Accounts;
  readonly groups: Groups;
  readonly settings: SettingsService;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly ipGuard: IpGuard;
  /** The relay connection this process manages, if any (the agent attaches it). */
  readonly relay: () => RelayControl | null;
}

/** What the console needs of the server around it besides its services. */
export interface ConsoleHost {
  /** Whether the request came over TLS (cookies get `Secure`). */
  secure(req: IncomingMessage): boolean;
  /** The internal HTTPS certificate (holder, issuer, dates, fingerprint); with `create`, made now when there is none. */
  tlsCertificate(create: boolean): CertificateDescription | null;
}

/** A logged-in administrator: the access token of the session cookie, its claims, the CSRF token of its forms. */
export interface Session {
  readonly token: string;
  readonly claims: TokenClaims;
  readonly csrf: string;
}

/** A request to a page behind the login, its session checked (and, for a POST, its form's CSRF token). */
export interface ConsoleRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly ctx: RequestContext;
  readonly session: Session;
  /** The page's path below `/console/`, as requested (undecoded): kept forms are filed under it. */
  readonly path: string;
  /** The page path's decoded `:name` segments. */
  readonly params: Params;
  readonly query: URLSearchParams;
}

/** Largest form body the console reads; its forms are a few hundred bytes. */
export const MAX_FORM_BYTES = 16 * 1024;

export async function readForm(req: IncomingMessage, limit = MAX_FORM_BYTES): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    req.resume();
    throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'expected a form (application/x-www-form-urlencoded)');
  }
  return new URLSearchParams((await readBody(req, limit)).toString('utf8'));
}

/** A message with a capital first letter (the vendor's wording otherwise kept as it is). */
export function sentence(message: string): string {
  return message.charAt(0).toUpperCase() + message.slice(1);
}
