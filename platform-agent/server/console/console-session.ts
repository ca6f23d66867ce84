/**
 * The console's session: the administrator's access token (audience `admin`) in an HttpOnly,
 * SameSite=Strict cookie, Secure over TLS. Each page authenticates it through AuthService, so
 * the inactivity timeout applies; an expired or invalid token sends the browser to the login
 * page with "Your session expired. Log in again." CSRF: each POST form carries an HMAC of the
 * session token (of a pre-login nonce cookie, for the login form) under a key made at start.
 *
 * Drafts: a form posted under an expired session, with a CSRF token that shows it came from this
 * console for that session, is kept (passwords and confirmations dropped) and offered again on its
 * page after the next login. Also the login page, the login and the logout.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RelayError } from '../../../shared/errors.js';
import type { RequestContext } from '../http/auth-routes.js';
import { cookie } from '../http/http-io.js';
import { MAX_FORM_BYTES, readForm, type ConsoleHost, type ConsoleServices, type Session } from './console-request.js';
import { errorMessage } from './error-text.js';
import { csrfInput, esc, page, redirect, sendHtml } from './html.js';
import { t, type MessageKey } from './i18n/i18n.js';

const SESSION_COOKIE = 'console_session';
/** The pre-login nonce the login form's CSRF token is bound to. */
const LOGIN_COOKIE = 'console_login';
/** The cookie naming a form kept when the session expired under it. */
const DRAFT_COOKIE = 'console_draft';
/** The notice of a page whose form came back after the login. */
export const draftBackMessage = (): string => t('draft.back');
/** How long a kept form waits for its administrator to log in again, and how many are kept at most. */
const DRAFT_TTL_MS = 60 * 60 * 1000;
const MAX_DRAFTS = 200;
/** Form fields never kept: secrets, the old CSRF token, and confirmations (they are given again, knowingly). */
const UNKEPT_FIELD = /password|token|barcode|^csrf$|^confirm/i;

/** The notices of the login page by its `?m=`. */
const LOGIN_MESSAGES: Record<string, MessageKey> = {
  expired: 'login.m.expired',
  draft: 'login.m.draft',
  out: 'login.m.out',
  tokens: 'login.m.tokens',
  key: 'login.m.key',
  https: 'login.m.https',
  self: 'login.m.self',
  'self-deleted': 'login.m.self-deleted',
};

/** A form whose session expired under it, kept until its administrator logs in again. */
export interface Draft {
  /** The page path the form was posted to (below /console/). */
  readonly path: string;
  readonly form: URLSearchParams;
  readonly at: number;
}

export class ConsoleSessions {
  /**
   * The CSRF tokens' key, derived from the store's lookup key (a secret kept outside the
   * database, the same file on every instance of a shared store): a form one instance served may
   * be posted to another, as happens behind a relay with several agents. Tokens are bound to the
   * session (or the login page's nonce cookie), so they end with it.
   */
  private csrfKey: Buffer | null = null;
  /** Kept forms by random id (the id is in the browser's DRAFT_COOKIE); bounded in number and age. */
  private readonly drafts = new Map<string, Draft>();

  constructor(
    private readonly s: ConsoleServices,
    private readonly host: ConsoleHost,
  ) {}

  /** Makes the CSRF key ready; every console request awaits it first (console-routes.ts). */
  async ready(): Promise<void> {
    this.csrfKey ??= createHmac('sha256', await this.s.store.lookupKey())
      .update('console csrf')
      .digest();
  }

  private csrfToken(purpose: 'session' | 'login', value: string): string {
    if (this.csrfKey === null) throw new Error('ConsoleSessions.ready() was not awaited');
    return createHmac('sha256', this.csrfKey).update(`${purpose}\0${value}`).digest('base64url');
  }

  private csrfOk(form: URLSearchParams, purpose: 'session' | 'login', value: string | undefined): boolean {
    const sent = Buffer.from(form.get('csrf') ?? '');
    if (value === undefined) return false;
    const expected = Buffer.from(this.csrfToken(purpose, value));
    return sent.length === expected.length && timingSafeEqual(sent, expected);
  }

  /** Whether a form posted in `session` carries its CSRF token. */
  formOk(form: URLSearchParams, session: Session): boolean {
    return this.csrfOk(form, 'session', session.token);
  }

  cookieHeader(req: IncomingMessage, name: string, value: string, maxAgeSeconds?: number): string {
    const age = maxAgeSeconds === undefined ? '' : `; Max-Age=${maxAgeSeconds}`;
    return `${name}=${value}; Path=/console; HttpOnly; SameSite=Strict${this.host.secure(req) ? '; Secure' : ''}${age}`;
  }

  /** The Set-Cookie header that ends the session in the browser. */
  endCookie(req: IncomingMessage): string {
    return this.cookieHeader(req, SESSION_COOKIE, '', 0);
  }

  /**
   * The session, or null after redirecting to the login page (with the expiry message when a
   * token was there). A form posted under an expired session to a page that keeps drafts
   * (`keepDraftOf`, its path) is kept when its CSRF token shows it came from this console for
   * that session: it is offered again after the login.
   */
  async session(req: IncomingMessage, res: ServerResponse, keepDraftOf: string | null): Promise<Session | null> {
    const token = cookie(req, SESSION_COOKIE);
    if (!token) {
      redirect(res, '/console/login');
      return null;
    }
    try {
      const claims = await this.s.auth.authenticate(token, 'admin');
      return { token, claims, csrf: this.csrfToken('session', token) };
    } catch (err) {
      if (err instanceof RelayError && err.httpStatus === 401) {
        const draft = keepDraftOf !== null ? await this.keepDraft(req, keepDraftOf, token) : null;
        this.expired(req, res, draft);
        return null;
      }
      throw err;
    }
  }

  /** The user name of the request's session when it authenticates, else null (no redirect, no draft). */
  async peek(req: IncomingMessage): Promise<string | null> {
    const token = cookie(req, SESSION_COOKIE);
    if (!token) return null;
    try {
      return (await this.s.auth.authenticate(token, 'admin')).sub;
    } catch (err) {
      if (err instanceof RelayError && err.httpStatus === 401) return null;
      throw err;
    }
  }

  /** Whether the session still authenticates (a change to one's own account may have ended it). */
  async lives(session: Session): Promise<boolean> {
    try {
      await this.s.auth.authenticate(session.token, 'admin');
      return true;
    } catch (err) {
      if (err instanceof RelayError && err.httpStatus === 401) return false;
      throw err;
    }
  }

  /** Keeps a form posted under an expired session; returns its id, or null when it is not kept. */
  private async keepDraft(req: IncomingMessage, path: string, token: string): Promise<string | null> {
    let form: URLSearchParams;
    try {
      form = await readForm(req, MAX_FORM_BYTES);
    } catch {
      return null;
    }
    if (!this.csrfOk(form, 'session', token)) return null;
    for (const key of [...form.keys()]) if (UNKEPT_FIELD.test(key)) form.delete(key);
    const now = this.s.clock.now();
    for (const [id, d] of this.drafts) if (now - d.at > DRAFT_TTL_MS || this.drafts.size >= MAX_DRAFTS) this.drafts.delete(id);
    const id = randomBytes(16).toString('base64url');
    this.drafts.set(id, { path, form, at: now });
    return id;
  }

  /** The kept form for the page at one of `paths`, taken (used once); null when the browser has none for it. */
  takeDraft(req: IncomingMessage, ...paths: string[]): Draft | null {
    return this.takeDraftWhere(req, (path) => paths.includes(path));
  }

  takeDraftWhere(req: IncomingMessage, matches: (path: string) => boolean): Draft | null {
    const id = cookie(req, DRAFT_COOKIE);
    const draft = id === undefined ? undefined : this.drafts.get(id);
    if (!draft || !matches(draft.path) || this.s.clock.now() - draft.at > DRAFT_TTL_MS) return null;
    this.drafts.delete(id!);
    return draft;
  }

  /** Where a kept form is shown again after the login: its own page. */
  private draftPage(req: IncomingMessage): string | null {
    const id = cookie(req, DRAFT_COOKIE);
    const draft = id === undefined ? undefined : this.drafts.get(id);
    if (!draft) return null;
    if (draft.path === 'settings/relay') return '/console/settings/security#relay';
    if (/^groups\/[^/]+$/.test(draft.path)) return '/console/groups';
    return `/console/${draft.path}`;
  }

  /** To the login page, the session cookie cleared (and the kept form's id set, if one was kept). */
  expired(req: IncomingMessage, res: ServerResponse, draft: string | null = null): void {
    const cookies = [this.endCookie(req)];
    if (draft) cookies.push(this.cookieHeader(req, DRAFT_COOKIE, draft, DRAFT_TTL_MS / 1000));
    redirect(res, `/console/login?m=${draft ? 'draft' : 'expired'}`, { 'set-cookie': cookies });
  }

  /** `GET /console/login` (any method but POST): the form, with the message `?m=` names. */
  showLogin(req: IncomingMessage, res: ServerResponse, query: URLSearchParams): void {
    const m = query.get('m') ?? '';
    this.loginPage(req, res, 200, Object.hasOwn(LOGIN_MESSAGES, m) ? t(LOGIN_MESSAGES[m]!) : null, '');
  }

  private loginPage(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    message: string | null,
    username: string,
    isError = false,
  ): void {
    const nonce = cookie(req, LOGIN_COOKIE) ?? randomBytes(16).toString('base64url');
    const note = message ? `<p class="${isError ? 'alert' : 'notice'}" role="${isError ? 'alert' : 'status'}">${esc(message)}</p>` : '';
    const body = `<div class="login"><h2>${esc(t('login.heading'))}</h2>${note}
<form method="post" action="/console/login">${csrfInput(this.csrfToken('login', nonce))}
<fieldset><legend>${esc(t('login.legend'))}</legend>
<div class="row"><label for="username">${esc(t('login.username'))}</label><div class="inputs"><input type="text" id="username" name="username" value="${esc(username)}" autocomplete="username" required autofocus></div></div>
<div class="row"><label for="password">${esc(t('login.password'))}</label><div class="inputs"><input type="password" id="password" name="password" autocomplete="current-password" required></div></div>
</fieldset><div class="actions"><button type="submit">${esc(t('login.submit'))}</button></div></form></div>`;
    sendHtml(res, status, page({ title: t('login.title'), body }), { 'set-cookie': this.cookieHeader(req, LOGIN_COOKIE, nonce) });
  }

  /** `POST /console/login`: checks the form's CSRF token, logs in, sets the session cookie, goes to a kept form's page or Settings. */
  async login(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): Promise<void> {
    const form = await readForm(req);
    const username = (form.get('username') ?? '').slice(0, 256);
    if (!this.csrfOk(form, 'login', cookie(req, LOGIN_COOKIE))) {
      this.loginPage(req, res, 403, t('login.expired_form'), username, true);
      return;
    }
    try {
      const pair = await this.s.auth.login({
        username,
        password: (form.get('password') ?? '').slice(0, 1024),
        deviceId: `admin-console@${ctx.ip}`,
        ip: ctx.ip,
        ipDecision: ctx.ipDecision,
        audience: 'admin',
        ...(ctx.internal === true ? { internal: true } : {}),
      });
      redirect(res, this.draftPage(req) ?? '/console/settings/security', {
        'set-cookie': [this.cookieHeader(req, SESSION_COOKIE, pair.access_token), this.cookieHeader(req, LOGIN_COOKIE, '', 0)],
      });
    } catch (err) {
      if (!(err instanceof RelayError) || err.httpStatus === undefined) throw err;
      const message =
        err.code === 'PLATFORM_ERR_INVALID_CREDENTIALS'
          ? t('login.wrong')
          : err.retryAfterSeconds !== undefined
            ? t('login.retry', { message: errorMessage(err), wait: waitText(err.retryAfterSeconds) })
            : errorMessage(err);
      this.loginPage(req, res, err.httpStatus, message, username, true);
    }
  }

  /** `POST /console/logout`. */
  async logout(req: IncomingMessage, res: ServerResponse, session: Session): Promise<void> {
    await this.s.auth.logout(session.claims);
    this.s.logger.info({ event: 'console_logout', username: session.claims.sub }, 'administrator logged out of the control panel');
    redirect(res, '/console/login?m=out', { 'set-cookie': this.endCookie(req) });
  }
}

/** A wait as the login page says it: seconds below a minute, else whole minutes (rounded up). */
function waitText(seconds: number): string {
  return seconds < 60 ? t('login.wait_seconds', { n: seconds }) : t('login.wait_minutes', { n: Math.ceil(seconds / 60) });
}
