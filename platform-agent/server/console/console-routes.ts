/**
 * The control panel under `/console/`: server-rendered pages for administrators, served on the
 * internal listener only (PlatformServer decides; a tunnel stream never reaches this file).
 *
 * Session: the administrator's access token (audience `admin`) in an HttpOnly, SameSite=Strict
 * cookie, Secure over TLS. Each page authenticates it through AuthService, so the inactivity
 * timeout applies; an expired or invalid token sends the browser to the login page with "Your
 * session expired. Log in again." CSRF: each POST form carries an HMAC of the session token (of a
 * pre-login nonce cookie, for the login form) under a key made at start; a POST without it is 403.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import type { IpRuleLineError } from '../../../shared/ip-rule-files.js';
import type { Logger } from '../../../shared/logger.js';
import type { RequestContext } from '../http/auth-routes.js';
import { cookie, readBody } from '../http/http-io.js';
import { type Accounts } from '../security/accounts.js';
import { userView } from '../security/account-rules.js';
import type { AuthService } from '../security/auth.js';
import { waivedAdmin, type Groups, type Operation } from '../security/groups.js';
import type { SettingsService } from '../security/settings-service.js';
import type { TokenClaims } from '../security/tokens.js';
import type { PlatformStore } from '../store/store.js';
import type { RelayControl } from '../relay-control.js';
import { csrfInput, esc, HOST_HEADER, page, redirect, sendCss, sendHtml } from './html.js';
import { relayPatchFromForm, relaySection, relayValuesFromForm, relayValuesFromSettings, type RelayFormValues } from './relay-section.js';
import {
  CONFIRM_INVALIDATE,
  CONFIRM_ROTATE,
  INVALIDATE_WARNING,
  patchFromValues,
  securityPage,
  valuesFromForm,
  valuesFromSettings,
  type FieldError,
  type FormValues,
} from './security-page.js';
import { devicesPage, filterDevices } from './devices-page.js';
import {
  emptyGroupValues,
  groupsPage,
  groupValuesFromForm,
  type GroupFormKey,
  type GroupFormValues,
  type GroupsPageInput,
} from './groups-page.js';
import { filterUsers, LOCK_FIELD, userHref, usersPage } from './users-page.js';
import {
  CONFIRM_DELETE,
  emptyUserValues,
  fieldMessage,
  formFields,
  LOCK_SHOWN_FIELD,
  newUserInput,
  PASSWORD_FIELD,
  PASSWORD_MISMATCH,
  REPEAT_FIELD,
  userPage,
  userPatch,
  userValuesFromForm,
  userValuesFromRecord,
  type UserPageInput,
} from './user-page.js';
import { IP_LISTS, type IpGuard, type IpListDraft, type IpListName } from '../http/ip-guard.js';
import {
  CONFIRM_SELF_BLOCK,
  entriesText,
  ipRulesPage,
  loadedField,
  textHash,
  type IpListForm,
  type IpRulesPageInput,
} from './ip-rules-page.js';

export const SESSION_COOKIE = 'console_session';
/** The pre-login nonce the login form's CSRF token is bound to. */
export const LOGIN_COOKIE = 'console_login';
export const SESSION_EXPIRED_MESSAGE = 'Your session expired. Log in again.';
/** The cookie naming a form kept when the session expired under it. */
export const DRAFT_COOKIE = 'console_draft';
export const DRAFT_KEPT_MESSAGE = 'Your session expired. Log in again: what you typed in the form is kept (passwords excepted).';
export const DRAFT_BACK_MESSAGE =
  'Your session expired before this form was saved. What you typed is back (passwords excepted): check it and save again.';
/** How long a kept form waits for its administrator to log in again, and how many are kept at most. */
const DRAFT_TTL_MS = 60 * 60 * 1000;
const MAX_DRAFTS = 200;
/** Form fields never kept: secrets, the old CSRF token, and confirmations (they are given again, knowingly). */
const UNKEPT_FIELD = /password|token|^csrf$|^confirm/i;

/** Largest form body the console reads; its forms are a few hundred bytes. */
const MAX_FORM_BYTES = 16 * 1024;

const LOGIN_MESSAGES: Record<string, string> = {
  expired: SESSION_EXPIRED_MESSAGE,
  draft: DRAFT_KEPT_MESSAGE,
  out: 'You have logged out.',
  tokens: 'Security settings saved. The token validity changed, so everyone, you included, must log in again.',
  key: 'A new signing key was generated. Everyone, you included, must log in again.',
  https: 'HTTPS is on for the control panel. Log in again, now over HTTPS (the session that began over plain HTTP has ended).',
  self: 'You changed your own account (password, role or lock), which ended your session. Log in again.',
  'self-deleted': 'You deleted your own account, which ended your session.',
};

interface Session {
  token: string;
  claims: TokenClaims;
  csrf: string;
}

async function readForm(req: IncomingMessage, limit = MAX_FORM_BYTES): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    req.resume();
    throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'expected a form (application/x-www-form-urlencoded)');
  }
  return new URLSearchParams((await readBody(req, limit)).toString('utf8'));
}

/** What the console needs of the server around it. */
export interface ConsoleHost {
  /** Whether the request came over TLS (cookies get `Secure`). */
  secure(req: IncomingMessage): boolean;
  /** SHA-256 fingerprint of the internal HTTPS certificate; with `create`, made now when there is none. */
  tlsFingerprint(create: boolean): string | null;
  /** The relay connection this process manages, if any (the agent attaches it). */
  relay(): RelayControl | null;
}

/** What the Settings → Security page shows besides the stored settings. */
interface SecurityView {
  values?: FormValues;
  error?: FieldError | null;
  notice?: string | null;
  relay?: { values?: RelayFormValues; error?: FieldError | null; notice?: string | null };
}

/** The forms kept across a session expiry (by the path they post to); one-click actions are not kept. */
const DRAFT_TARGETS = [/^settings\/(security|relay|ip-rules)$/, /^users\/new$/, /^users\/[^/]+\/edit$/, /^groups(\/[^/]+)?$/];

/** A form whose session expired under it, kept until its administrator logs in again. */
interface Draft {
  /** The page path the form was posted to (below /console/). */
  path: string;
  form: URLSearchParams;
  at: number;
}

export class ConsoleRoutes {
  /** Per-process key for CSRF tokens: a restart invalidates open forms, never a session. */
  private readonly csrfKey = randomBytes(32);
  /** Kept forms by random id (the id is in the browser's DRAFT_COOKIE); bounded in number and age. */
  private readonly drafts = new Map<string, Draft>();

  constructor(
    private readonly store: PlatformStore,
    private readonly auth: AuthService,
    private readonly accounts: Accounts,
    private readonly groups: Groups,
    private readonly settings: SettingsService,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly host: ConsoleHost,
    private readonly ipGuard: IpGuard,
  ) {}

  private csrfToken(purpose: 'session' | 'login', value: string): string {
    return createHmac('sha256', this.csrfKey).update(`${purpose}\0${value}`).digest('base64url');
  }

  private csrfOk(form: URLSearchParams, purpose: 'session' | 'login', value: string | undefined): boolean {
    const sent = Buffer.from(form.get('csrf') ?? '');
    if (value === undefined) return false;
    const expected = Buffer.from(this.csrfToken(purpose, value));
    return sent.length === expected.length && timingSafeEqual(sent, expected);
  }

  private cookieHeader(req: IncomingMessage, name: string, value: string, maxAgeSeconds?: number): string {
    const age = maxAgeSeconds === undefined ? '' : `; Max-Age=${maxAgeSeconds}`;
    return `${name}=${value}; Path=/console; HttpOnly; SameSite=Strict${this.host.secure(req) ? '; Secure' : ''}${age}`;
  }

  /** Serves `path` (the whole path, `/console` or below `/console/`); false when no page matches (404). */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, ctx: RequestContext): Promise<boolean> {
    if (path === '/console') {
      redirect(res, '/console/');
      return true;
    }
    const sub = path.slice('/console/'.length);
    const method = req.method ?? 'GET';
    const query = new URL(req.url ?? '/', 'http://console.invalid').searchParams;
    try {
      if (sub === 'console.css' && method === 'GET') {
        sendCss(res);
        return true;
      }
      if (sub === 'login') {
        if (method === 'POST') await this.login(req, res, ctx);
        else this.loginPage(req, res, 200, LOGIN_MESSAGES[query.get('m') ?? ''] ?? null, '');
        return true;
      }
      const userPath = /^users\/([^/]+)\/(edit|delete|lock)$/.exec(sub);
      const pathUser = userPath ? pathSegment(userPath[1]!) : null;
      const groupPath = /^groups\/([^/]+?)(\/delete)?$/.exec(sub);
      const deviceUnlock = /^devices\/([^/]+)\/unlock$/.exec(sub);
      const known =
        [
          '',
          'logout',
          'settings/security',
          'settings/relay',
          'settings/security/rotate-signing-key',
          'users',
          'groups',
          'devices',
        ].includes(sub) ||
        sub === 'users/new' ||
        pathUser !== null ||
        sub === 'settings/ip-rules' ||
        groupPath ||
        deviceUnlock;
      if (!known) return false;

      const session = await this.session(req, res, method === 'POST' ? sub : null);
      if (!session) return true;
      let form: URLSearchParams | null = null;
      if (method === 'POST') {
        // The IP rules form may be megabytes: only someone allowed to save it gets it read.
        if (sub === 'settings/ip-rules') await this.authorize(session, 'admin.settings');
        form = await readForm(req, sub === 'settings/ip-rules' ? this.ipRulesFormBytes() : MAX_FORM_BYTES);
        if (!this.csrfOk(form, 'session', session.token)) {
          this.errorPage(res, 403, 'Forbidden', 'The form was missing its security token. Reload the page and try again.', session.csrf);
          return true;
        }
      } else if (method !== 'GET' && method !== 'HEAD') {
        this.errorPage(res, 405, 'Method not allowed', 'Use the forms on the page.', session.csrf);
        return true;
      }

      if (sub === '' || (sub === 'logout' && !form)) redirect(res, '/console/settings/security');
      else if (sub === 'logout') await this.logout(req, res, session);
      else if (sub === 'settings/security') {
        await this.authorize(session, 'admin.settings');
        if (form) await this.saveSettings(req, res, session, form);
        else {
          const draft = this.takeDraft(req, 'settings/security', 'settings/relay');
          await this.settingsPage(res, session, 200, {
            notice: query.get('saved') ? 'Security settings saved.' : draft?.path === 'settings/security' ? DRAFT_BACK_MESSAGE : null,
            ...(draft?.path === 'settings/security' ? { values: valuesFromForm(draft.form) } : {}),
            relay:
              draft?.path === 'settings/relay'
                ? { values: relayValuesFromForm(draft.form), notice: DRAFT_BACK_MESSAGE }
                : { notice: query.get('relay') ? 'Relay settings saved and applied.' : null },
          });
        }
      } else if (sub === 'settings/relay') {
        await this.authorize(session, 'admin.settings');
        if (form) await this.saveRelay(res, session, form);
        else redirect(res, '/console/settings/security#relay');
      } else if (sub === 'settings/security/rotate-signing-key') {
        await this.authorize(session, 'admin.settings');
        if (form) await this.rotateKey(req, res, session, form);
        else redirect(res, '/console/settings/security');
      } else if (sub === 'settings/ip-rules') {
        await this.authorize(session, 'admin.settings');
        if (form) await this.saveIpRules(res, session, form, ctx);
        else {
          const draft = this.takeDraft(req, 'settings/ip-rules');
          await this.ipRulesPage(
            res,
            session,
            ctx,
            200,
            { notice: draft ? DRAFT_BACK_MESSAGE : this.ipRulesNotice(query.get('saved')) },
            draft?.form,
          );
        }
      } else if (sub === 'users') {
        await this.authorize(session, 'admin.users');
        await this.usersPage(res, session, query.get('q') ?? '', userNotice(query));
      } else if (sub === 'users/new') {
        await this.authorize(session, 'admin.users');
        if (form) await this.createUser(res, session, form);
        else {
          const draft = this.takeDraft(req, sub);
          await this.userPage(res, session, 200, null, draft ? { values: userValuesFromForm(draft.form), notice: DRAFT_BACK_MESSAGE } : {});
        }
      } else if (pathUser !== null) {
        await this.authorize(session, 'admin.users');
        const action = userPath![2];
        if (action === 'edit' && form) await this.saveUser(req, res, session, pathUser, form);
        else if (action === 'edit') {
          const draft = this.takeDraft(req, sub);
          await this.userPage(
            res,
            session,
            200,
            pathUser,
            draft ? { values: userValuesFromForm(draft.form), notice: DRAFT_BACK_MESSAGE } : {},
          );
        } else if (action === 'delete' && form) await this.deleteUser(req, res, session, pathUser, form);
        else if (form) await this.saveLock(res, session, pathUser, form);
        else redirect(res, action === 'delete' ? userHref(pathUser) : '/console/users');
      } else if (sub === 'groups') {
        await this.authorize(session, 'admin.users');
        if (form) await this.createGroup(res, session, form);
        else {
          const draft = this.takeDraftWhere(req, (path) => /^groups(\/[^/]+)?$/.test(path));
          const group = draft?.path.startsWith('groups/') ? pathSegment(draft.path.slice('groups/'.length)) : null;
          await this.groupsPage(res, session, 200, {
            notice: draft ? DRAFT_BACK_MESSAGE : groupNotice(query),
            ...(draft && !group ? { newValues: groupValuesFromForm(draft.form) } : {}),
            ...(draft && group ? { editValues: { group, values: { ...groupValuesFromForm(draft.form), name: group } } } : {}),
          });
        }
      } else if (groupPath) {
        await this.authorize(session, 'admin.users');
        const name = decodeURIComponent(groupPath[1]!);
        if (!form) redirect(res, '/console/groups');
        else if (groupPath[2]) await this.deleteGroup(res, session, name);
        else await this.updateGroup(res, session, name, form);
      } else if (sub === 'devices') {
        await this.authorize(session, 'admin.devices');
        const unlocked = query.get('unlocked');
        await this.devicesPage(res, session, query.get('q') ?? '', unlocked === null ? null : `Device ${unlocked} is unlocked.`);
      } else if (deviceUnlock) {
        await this.authorize(session, 'admin.devices');
        if (form) await this.unlockDevice(res, session, decodeURIComponent(deviceUnlock[1]!), form.get('q') ?? '');
        else redirect(res, '/console/devices');
      }
      return true;
    } catch (err) {
      if (!(err instanceof RelayError) || err.httpStatus === undefined) throw err;
      if (err.httpStatus === 401) this.expired(req, res);
      else this.errorPage(res, err.httpStatus, 'Error', err.message, undefined);
      return true;
    }
  }

  /**
   * The session, or null after redirecting to the login page (with the expiry message when a
   * token was there). A form posted under an expired session (`postedTo`) is kept when its CSRF
   * token shows it came from this console for that session: it is offered again after the login.
   */
  private async session(req: IncomingMessage, res: ServerResponse, postedTo: string | null): Promise<Session | null> {
    const token = cookie(req, SESSION_COOKIE);
    if (!token) {
      redirect(res, '/console/login');
      return null;
    }
    try {
      const claims = await this.auth.authenticate(token, 'admin');
      return { token, claims, csrf: this.csrfToken('session', token) };
    } catch (err) {
      if (err instanceof RelayError && err.httpStatus === 401) {
        const draft = postedTo !== null && DRAFT_TARGETS.some((t) => t.test(postedTo)) ? await this.keepDraft(req, postedTo, token) : null;
        this.expired(req, res, draft);
        return null;
      }
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
    const now = this.clock.now();
    for (const [id, d] of this.drafts) if (now - d.at > DRAFT_TTL_MS || this.drafts.size >= MAX_DRAFTS) this.drafts.delete(id);
    const id = randomBytes(16).toString('base64url');
    this.drafts.set(id, { path, form, at: now });
    return id;
  }

  /** The kept form for the page at `path`, taken (used once); null when the browser has none for it. */
  private takeDraft(req: IncomingMessage, ...paths: string[]): Draft | null {
    return this.takeDraftWhere(req, (path) => paths.includes(path));
  }

  private takeDraftWhere(req: IncomingMessage, matches: (path: string) => boolean): Draft | null {
    const id = cookie(req, DRAFT_COOKIE);
    const draft = id === undefined ? undefined : this.drafts.get(id);
    if (!draft || !matches(draft.path) || this.clock.now() - draft.at > DRAFT_TTL_MS) return null;
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

  private expired(req: IncomingMessage, res: ServerResponse, draft: string | null = null): void {
    const cookies = [this.cookieHeader(req, SESSION_COOKIE, '', 0)];
    if (draft) cookies.push(this.cookieHeader(req, DRAFT_COOKIE, draft, DRAFT_TTL_MS / 1000));
    redirect(res, `/console/login?m=${draft ? 'draft' : 'expired'}`, { 'set-cookie': cookies });
  }

  private async authorize(session: Session, operation: Operation): Promise<void> {
    await this.groups.authorize(session.claims.sub, operation);
  }

  private errorPage(res: ServerResponse, status: number, title: string, message: string, csrf: string | undefined): void {
    const body = `<h2>${esc(title)}</h2><p class="alert" role="alert">${esc(message)}</p><p><a href="/console/">Back to the control panel</a></p>`;
    sendHtml(res, status, page({ title, body, ...(csrf !== undefined ? { csrf } : {}) }));
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
    const body = `<div class="login"><h2>Administrator login</h2>${note}
<form method="post" action="/console/login">${csrfInput(this.csrfToken('login', nonce))}
<fieldset><legend>Log in</legend>
<div class="row"><label for="username">User name</label><div class="inputs"><input type="text" id="username" name="username" value="${esc(username)}" autocomplete="username" required autofocus></div></div>
<div class="row"><label for="password">Password</label><div class="inputs"><input type="password" id="password" name="password" autocomplete="current-password" required></div></div>
</fieldset><div class="actions"><button type="submit">Log in</button></div></form></div>`;
    sendHtml(res, status, page({ title: 'Log in', body }), { 'set-cookie': this.cookieHeader(req, LOGIN_COOKIE, nonce) });
  }

  private async login(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): Promise<void> {
    const form = await readForm(req);
    const username = (form.get('username') ?? '').slice(0, 256);
    if (!this.csrfOk(form, 'login', cookie(req, LOGIN_COOKIE))) {
      this.loginPage(req, res, 403, 'The login form expired. Try again.', username, true);
      return;
    }
    try {
      const pair = await this.auth.login({
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
          ? 'Wrong user name or password, or the account may not log in here.'
          : err.retryAfterSeconds !== undefined
            ? `${err.message}. Try again in ${waitText(err.retryAfterSeconds)}.`
            : err.message;
      this.loginPage(req, res, err.httpStatus, message, username, true);
    }
  }

  private async logout(req: IncomingMessage, res: ServerResponse, session: Session): Promise<void> {
    await this.auth.logout(session.claims);
    this.logger.info({ event: 'console_logout', username: session.claims.sub }, 'administrator logged out of the control panel');
    redirect(res, '/console/login?m=out', { 'set-cookie': this.cookieHeader(req, SESSION_COOKIE, '', 0) });
  }

  /** Settings → Security from the stored settings, or with a failed form's values and its error. */
  private async settingsPage(res: ServerResponse, session: Session, status: number, view: SecurityView): Promise<void> {
    const { settings } = await this.store.getSettings();
    const relay = this.host.relay();
    const stored = relay?.settings();
    const relayHtml =
      relay && stored
        ? relaySection({
            values: view.relay?.values ?? relayValuesFromSettings(stored),
            tokenSet: stored.token !== null,
            flagFields: relay.flagFields(),
            status: relay.status(),
            csrf: session.csrf,
            error: view.relay?.error ?? null,
            notice: view.relay?.notice ?? null,
          })
        : null;
    const body = securityPage({
      values: view.values ?? valuesFromSettings(settings),
      csrf: session.csrf,
      error: view.error ?? null,
      notice: view.notice ?? null,
      tlsFingerprint: this.host.tlsFingerprint(settings.https.api || settings.https.control_panel),
      relaySection: relayHtml,
    });
    sendHtml(res, status, page({ title: 'Settings → Security', current: 'settings', csrf: session.csrf, body }));
  }

  private async saveRelay(res: ServerResponse, session: Session, form: URLSearchParams): Promise<void> {
    const relay = this.host.relay();
    if (!relay) throw new RelayError('RELAY_ERR_NOT_FOUND', 'this platform server has no relay connection to manage');
    const values = relayValuesFromForm(form);
    try {
      await relay.update(
        relayPatchFromForm(values, (form.get('relay.token') ?? '').trim(), relay.flagFields()),
        session.claims.sub,
        'console',
      );
    } catch (err) {
      const field = err instanceof RelayError ? err.details?.field : undefined;
      if (typeof field !== 'string') throw err;
      const error = { field, message: sentence((err as RelayError).message.replace(`${field}: `, '')) };
      await this.settingsPage(res, session, 400, { relay: { values, error } });
      return;
    }
    redirect(res, '/console/settings/security?relay=saved#relay');
  }

  private async saveSettings(req: IncomingMessage, res: ServerResponse, session: Session, form: URLSearchParams): Promise<void> {
    const values = valuesFromForm(form);
    const again = (error: FieldError): Promise<void> => this.settingsPage(res, session, 400, { values, error });
    let change;
    try {
      change = await this.settings.check(patchFromValues(values));
    } catch (err) {
      const field = err instanceof RelayError ? err.details?.field : undefined;
      if (typeof field !== 'string') throw err;
      await again({ field, message: (err as RelayError).message.replace(`${field}: `, '') });
      return;
    }
    if (change.invalidatesTokens && values[CONFIRM_INVALIDATE] !== 'on') {
      await again({ field: CONFIRM_INVALIDATE, message: `${INVALIDATE_WARNING}: tick the box to confirm, then save again.` });
      return;
    }
    if (change.next.https.api || change.next.https.control_panel) this.host.tlsFingerprint(true); // the certificate exists before the first TLS client
    await this.settings.save(change, session.claims.sub, 'console');
    const endCookie = { 'set-cookie': this.cookieHeader(req, SESSION_COOKIE, '', 0) };
    if (change.invalidatesTokens) redirect(res, '/console/login?m=tokens', endCookie);
    else if (change.next.https.control_panel && !this.host.secure(req)) {
      // The session's token travelled in clear and its cookie cannot follow to https:// (a
      // SameSite=Strict cookie from http:// is another site's there): end it, log in over TLS.
      await this.auth.logout(session.claims);
      const host = req.headers.host;
      redirect(res, `${host && HOST_HEADER.test(host) ? `https://${host}` : ''}/console/login?m=https`, endCookie);
    } else redirect(res, '/console/settings/security?saved=1');
  }

  private async rotateKey(req: IncomingMessage, res: ServerResponse, session: Session, form: URLSearchParams): Promise<void> {
    if (form.get(CONFIRM_ROTATE) !== 'on') {
      await this.settingsPage(res, session, 400, {
        error: { field: CONFIRM_ROTATE, message: 'Tick the box to confirm, then generate the key again.' },
      });
      return;
    }
    await this.auth.tokens.rotateKey();
    this.logger.warn(
      { event: 'signing_key_rotated', by: session.claims.sub, via: 'console' },
      'signing key rotated: every token issued before is invalid',
    );
    redirect(res, '/console/login?m=key', { 'set-cookie': this.cookieHeader(req, SESSION_COOKIE, '', 0) });
  }

  /**
   * Both lists as url-encoded text may be three times the file size limit each (every byte
   * %XX): any file the reader accepts can be saved from the page, and a larger one meets the
   * size check with its clear message rather than a bare 413.
   */
  private ipRulesFormBytes(): number {
    return 2 * 3 * this.ipGuard.maxFileBytes + MAX_FORM_BYTES;
  }

  private async ipRulesPage(
    res: ServerResponse,
    session: Session,
    ctx: RequestContext,
    status: number,
    extra: Partial<IpRulesPageInput>,
    draft?: URLSearchParams,
  ): Promise<void> {
    const lists = {} as Record<IpListName, IpListForm>;
    for (const list of IP_LISTS) {
      const { text, summary } = this.ipGuard.contents(list);
      const typed = text === null ? null : (draft?.get(list) ?? null);
      lists[list] =
        typed !== null
          ? { text: typed, loaded: draft!.get(loadedField(list)) ?? textHash(text ?? ''), summary, error: null }
          : { text, loaded: textHash(text ?? ''), summary, error: null };
    }
    const { settings } = await this.store.getSettings();
    const body = ipRulesPage({
      csrf: session.csrf,
      notice: null,
      alert: null,
      lists,
      client: { ip: ctx.ip, decision: this.ipGuard.decide(ctx.ip) },
      loginLimit: settings.ip_login_attempts_per_minute,
      selfBlock: null,
      ...extra,
    });
    sendHtml(res, status, page({ title: 'Settings → IP rules', current: 'ip-rules', csrf: session.csrf, body }));
  }

  /** "Whitelist saved: 3 entries." for `?saved=whitelist,blacklist`, with the counts in force now. */
  private ipRulesNotice(saved: string | null): string | null {
    if (saved === null) return null;
    const lists = IP_LISTS.filter((list) => saved.split(',').includes(list));
    if (lists.length === 0) return 'Nothing to save: neither list was changed.';
    const summaries = this.ipGuard.summary();
    return lists
      .map((list) => `${list === 'whitelist' ? 'Whitelist' : 'Blacklist'} saved: ${entriesText(summaries[list].entries)}.`)
      .join(' ');
  }

  /**
   * Checks every changed list, then the self-block rule over both, then saves: all or nothing as
   * far as validation goes. A list whose text is what the page showed is left alone.
   */
  private async saveIpRules(res: ServerResponse, session: Session, form: URLSearchParams, ctx: RequestContext): Promise<void> {
    const lists = {} as Record<IpListName, IpListForm>;
    const drafts: IpListDraft[] = [];
    let refused: RelayError | null = null;
    for (const list of IP_LISTS) {
      const typed = form.get(list);
      const { text, summary } = this.ipGuard.contents(list);
      const loaded = form.get(loadedField(list)) ?? textHash(text ?? '');
      lists[list] = { text: typed ?? text, loaded, summary, error: null };
      // Absent: the textarea was disabled (unreadable file). Same hash: not edited on the page.
      if (typed === null || textHash(typed) === loaded) continue;
      try {
        drafts.push(this.ipGuard.prepare(list, typed));
      } catch (err) {
        if (!(err instanceof RelayError) || (err.code !== 'RELAY_ERR_INVALID_IP_RULES' && err.code !== 'RELAY_ERR_IP_RULES_TOO_LARGE'))
          throw err;
        const problems = (err.details?.problems ?? []) as IpRuleLineError[];
        const count = typeof err.details?.problem_count === 'number' ? err.details.problem_count : problems.length;
        lists[list].error = { message: `${sentence(err.message)}. Nothing was saved.`, problems, problemCount: count };
        refused ??= err;
      }
    }
    if (refused) {
      await this.ipRulesPage(res, session, ctx, refused.httpStatus ?? 400, { lists });
      return;
    }
    const blocking = this.ipGuard.blockingRule(ctx.ip, drafts);
    if (blocking && form.get(CONFIRM_SELF_BLOCK) !== 'on') {
      const selfBlock = `Not saved: these rules would block your own address ${ctx.ip} (blacklist line ${blocking.line}: ${blocking.text}), and you could no longer reach this control panel from it. Whitelist your address, or tick the box to confirm and save again.`;
      await this.ipRulesPage(res, session, ctx, 409, { lists, selfBlock });
      return;
    }
    const saved: IpListName[] = [];
    for (const draft of drafts) {
      try {
        const summary = this.ipGuard.save(draft);
        saved.push(draft.list);
        this.logger[blocking ? 'warn' : 'info'](
          {
            event: 'ip_rules_changed',
            list: draft.list,
            entries: summary.entries,
            by: session.claims.sub,
            via: 'console',
            ...(blocking ? { selfBlocked: ctx.ip } : {}),
          },
          blocking ? `IP ${draft.list} changed: it blocks the address of the administrator who saved it` : `IP ${draft.list} changed`,
        );
      } catch (err) {
        if (!(err instanceof RelayError) || err.code !== 'RELAY_ERR_IP_RULES_WRITE') throw err;
        const done = saved.length ? ` The ${saved.join(' and ')} was saved.` : '';
        await this.ipRulesPage(res, session, ctx, 500, { lists, alert: `${sentence(err.message)}.${done}` });
        return;
      }
    }
    redirect(res, `/console/settings/ip-rules?saved=${saved.join(',')}`);
  }

  private async usersPage(res: ServerResponse, session: Session, q: string, notice: string | null): Promise<void> {
    const now = this.clock.now();
    const { settings } = await this.store.getSettings();
    const waived = await waivedAdmin(this.store, now);
    const users = (await this.store.listUsers()).map((u) => userView(u, settings, now, waived));
    const body = usersPage({
      users: filterUsers(users, q),
      q,
      csrf: session.csrf,
      notice,
      error: null,
    });
    sendHtml(res, 200, page({ title: 'Users', current: 'users', csrf: session.csrf, body }));
  }

  private async saveLock(res: ServerResponse, session: Session, username: string, form: URLSearchParams): Promise<void> {
    const q = form.get('q') ?? '';
    const back = (extra: string): string => `/console/users?q=${encodeURIComponent(q)}${extra}`;
    if (form.get(LOCK_FIELD) === 'on') {
      redirect(res, back(''));
      return;
    }
    await this.accounts.update(username, { locked_for_security_reasons: false });
    this.logger.info({ event: 'user_changed', username, fields: [LOCK_FIELD], by: session.claims.sub, via: 'console' }, 'user unlocked');
    redirect(res, back(`&unlocked=${encodeURIComponent(username)}`));
  }

  /**
   * "New user" (`username` null) or one user's page (404 when there is none), showing the stored
   * user unless `extra` carries typed values, an error or an alert.
   */
  private async userPage(
    res: ServerResponse,
    session: Session,
    status: number,
    username: string | null,
    extra: Partial<UserPageInput>,
  ): Promise<void> {
    const { settings } = await this.store.getSettings();
    let user: UserPageInput['user'] = 'new';
    let values = emptyUserValues();
    if (username !== null) {
      const record = await this.accounts.get(username);
      const view = userView(record, settings, this.clock.now(), await waivedAdmin(this.store, this.clock.now()));
      user = { record, view };
      values = userValuesFromRecord(record, view.locked_for_security_reasons);
    }
    const body = userPage({
      user,
      values,
      groups: await this.groups.list(),
      accountValidityDays: settings.account_validity_days,
      csrf: session.csrf,
      error: null,
      alert: null,
      retyped: false,
      ...extra,
    });
    sendHtml(res, status, page({ title: username === null ? 'New user' : `User ${username}`, current: 'users', csrf: session.csrf, body }));
  }

  /**
   * Shows a failed user change on its page: an error naming a field of the form next to that
   * field, any other (the last administrator) as a readable alert starting with `what`; `kept` holds
   * the typed values (passwords never). Errors without an HTTP status, 401, 403 and an unknown user are rethrown.
   */
  private async userFailed(
    res: ServerResponse,
    session: Session,
    err: unknown,
    username: string | null,
    kept: Pick<Partial<UserPageInput>, 'values' | 'retyped'>,
    what: string,
  ): Promise<void> {
    if (
      !(err instanceof RelayError) ||
      err.httpStatus === undefined ||
      err.httpStatus === 401 ||
      err.httpStatus === 403 ||
      err.code === 'PLATFORM_ERR_USER_NOT_FOUND'
    )
      throw err;
    let field = typeof err.details?.field === 'string' ? err.details.field : undefined;
    if (field === undefined && err.code === 'PLATFORM_ERR_USER_EXISTS') field = 'username';
    if (field !== undefined && formFields(username === null).includes(field))
      await this.userPage(res, session, err.httpStatus, username, { ...kept, error: { field, message: fieldMessage(field, err.message) } });
    else await this.userPage(res, session, err.httpStatus, username, { ...kept, alert: `${what}: ${err.message}.` });
  }

  /** Whether the session still authenticates (a change to one's own account may have ended it). */
  private async sessionLives(session: Session): Promise<boolean> {
    try {
      await this.auth.authenticate(session.token, 'admin');
      return true;
    } catch (err) {
      if (err instanceof RelayError && err.httpStatus === 401) return false;
      throw err;
    }
  }

  private async createUser(res: ServerResponse, session: Session, form: URLSearchParams): Promise<void> {
    const values = userValuesFromForm(form);
    const password = form.get(PASSWORD_FIELD) ?? '';
    try {
      if (password !== (form.get(REPEAT_FIELD) ?? '')) throw passwordMismatch();
      const user = await this.accounts.create(newUserInput(values, password));
      this.logger.info(
        { event: 'user_created', username: user.username, role: user.role, group: user.group, by: session.claims.sub, via: 'console' },
        'user created',
      );
      redirect(res, `/console/users?created=${encodeURIComponent(user.username)}`);
    } catch (err) {
      await this.userFailed(res, session, err, null, { values, retyped: password !== '' }, 'The user was not created');
    }
  }

  /** Saves what changed on a user's page; blank password fields keep the password. */
  private async saveUser(
    req: IncomingMessage,
    res: ServerResponse,
    session: Session,
    username: string,
    form: URLSearchParams,
  ): Promise<void> {
    const values = { ...userValuesFromForm(form), username };
    const password = form.get(PASSWORD_FIELD) ?? '';
    try {
      if (password !== (form.get(REPEAT_FIELD) ?? '')) throw passwordMismatch();
      const patch = userPatch(values, await this.accounts.get(username), password, form.get(LOCK_SHOWN_FIELD) === 'on');
      const fields = Object.keys(patch);
      if (fields.length > 0) {
        await this.accounts.update(username, patch);
        this.logger.info({ event: 'user_changed', username, fields, by: session.claims.sub, via: 'console' }, 'user changed');
      }
    } catch (err) {
      await this.userFailed(res, session, err, username, { values, retyped: password !== '' }, `User ${username} was not saved`);
      return;
    }
    // A new password, a new role or a lock of one's own account ends one's own session, as it would anywhere.
    if (username === session.claims.sub && !(await this.sessionLives(session)))
      redirect(res, '/console/login?m=self', { 'set-cookie': this.cookieHeader(req, SESSION_COOKIE, '', 0) });
    else redirect(res, `/console/users?saved=${encodeURIComponent(username)}`);
  }

  private async deleteUser(
    req: IncomingMessage,
    res: ServerResponse,
    session: Session,
    username: string,
    form: URLSearchParams,
  ): Promise<void> {
    if (form.get(CONFIRM_DELETE) !== 'on') {
      const error = { field: CONFIRM_DELETE, message: 'Tick the box to confirm, then delete again.' };
      await this.userPage(res, session, 400, username, { error });
      return;
    }
    try {
      await this.accounts.delete(username);
    } catch (err) {
      await this.userFailed(res, session, err, username, {}, `User ${username} was not deleted`);
      return;
    }
    this.logger.info({ event: 'user_deleted', username, by: session.claims.sub, via: 'console' }, 'user deleted');
    if (username === session.claims.sub)
      redirect(res, '/console/login?m=self-deleted', { 'set-cookie': this.cookieHeader(req, SESSION_COOKIE, '', 0) });
    else redirect(res, `/console/users?deleted=${encodeURIComponent(username)}`);
  }

  private async groupsPage(res: ServerResponse, session: Session, status: number, extra: Partial<GroupsPageInput>): Promise<void> {
    const body = groupsPage({
      groups: await this.groups.list(),
      csrf: session.csrf,
      notice: null,
      alert: null,
      error: null,
      newValues: emptyGroupValues(),
      editValues: null,
      ...extra,
    });
    sendHtml(res, status, page({ title: 'Groups', current: 'groups', csrf: session.csrf, body }));
  }

  /**
   * Shows a failed group change on the page: an error naming a field next to that field of `form`
   * (with `values` kept), any other as a readable alert. Errors without an HTTP status are rethrown.
   */
  private async groupFailed(
    res: ServerResponse,
    session: Session,
    err: unknown,
    form: GroupFormKey,
    values: GroupFormValues | null,
  ): Promise<void> {
    if (!(err instanceof RelayError) || err.httpStatus === undefined || err.httpStatus === 401 || err.httpStatus === 403) throw err;
    let field = typeof err.details?.field === 'string' ? err.details.field : undefined;
    if (field === undefined && err.code === 'PLATFORM_ERR_GROUP_EXISTS') field = 'name';
    const message = sentence(field ? err.message.replace(`${field}: `, '') : err.message);
    const kept = {
      ...(values && form.kind === 'new' ? { newValues: values } : {}),
      ...(values && form.kind === 'edit' ? { editValues: { group: form.group, values } } : {}),
    };
    if (field) await this.groupsPage(res, session, err.httpStatus, { ...kept, error: { field, message, form } });
    else {
      const what = form.kind === 'edit' ? `Group ${form.group}: ` : '';
      await this.groupsPage(res, session, err.httpStatus, { ...kept, alert: `${what}${message}` });
    }
  }

  private async createGroup(res: ServerResponse, session: Session, form: URLSearchParams): Promise<void> {
    const values = groupValuesFromForm(form);
    try {
      const group = await this.groups.create({
        name: values.name,
        role: values.role,
        operations: values.operations,
        ...(values.description ? { description: values.description } : {}),
      });
      this.logger.info(
        { event: 'group_created', group: group.name, role: group.role, by: session.claims.sub, via: 'console' },
        'user group created',
      );
      redirect(res, `/console/groups?created=${encodeURIComponent(group.name)}`);
    } catch (err) {
      await this.groupFailed(res, session, err, { kind: 'new' }, values);
    }
  }

  private async updateGroup(res: ServerResponse, session: Session, name: string, form: URLSearchParams): Promise<void> {
    const values = { ...groupValuesFromForm(form), name };
    try {
      await this.groups.update(name, { operations: values.operations, description: values.description || null });
      this.logger.info(
        { event: 'group_changed', group: name, fields: ['operations', 'description'], by: session.claims.sub, via: 'console' },
        'user group changed',
      );
      redirect(res, `/console/groups?saved=${encodeURIComponent(name)}`);
    } catch (err) {
      await this.groupFailed(res, session, err, { kind: 'edit', group: name }, values);
    }
  }

  private async deleteGroup(res: ServerResponse, session: Session, name: string): Promise<void> {
    try {
      await this.groups.delete(name);
      this.logger.info({ event: 'group_deleted', group: name, by: session.claims.sub, via: 'console' }, 'user group deleted');
      redirect(res, `/console/groups?deleted=${encodeURIComponent(name)}`);
    } catch (err) {
      if (err instanceof RelayError && err.code === 'PLATFORM_ERR_GROUP_IN_USE') {
        const users = await this.store.countUsersInGroup(name);
        const alert = `Group ${name} cannot be deleted: it still has ${users} ${users === 1 ? 'user' : 'users'}. Move them to another group first.`;
        await this.groupsPage(res, session, 409, { alert });
        return;
      }
      await this.groupFailed(res, session, err, { kind: 'edit', group: name }, null);
    }
  }

  private async devicesPage(res: ServerResponse, session: Session, q: string, notice: string | null): Promise<void> {
    const devices = filterDevices(await this.store.listDevices(), q);
    const usernames = new Set((await this.store.listUsers()).map((u) => u.username));
    const body = devicesPage({ devices, q, usernames, now: this.clock.now(), csrf: session.csrf, notice });
    sendHtml(res, 200, page({ title: 'Devices', current: 'devices', csrf: session.csrf, body }));
  }

  /** Unlocks a device and goes back to the list as it was searched. */
  private async unlockDevice(res: ServerResponse, session: Session, deviceId: string, q: string): Promise<void> {
    if (!(await this.store.unlockDevice(deviceId))) throw new RelayError('PLATFORM_ERR_DEVICE_NOT_FOUND');
    this.logger.info({ event: 'device_unlocked', deviceId, by: session.claims.sub, via: 'console' }, 'device unlocked');
    redirect(res, `/console/devices?${q ? `q=${encodeURIComponent(q)}&` : ''}unlocked=${encodeURIComponent(deviceId)}`);
  }
}

/** A message with a capital first letter (the vendor's wording otherwise kept as it is). */
function sentence(message: string): string {
  return message.charAt(0).toUpperCase() + message.slice(1);
}

/** The decoded path segment, or null when it is no valid percent-encoding. */
function pathSegment(raw: string): string | null {
  try {
    return decodeURIComponent(raw);
  } catch {
    return null;
  }
}

function passwordMismatch(): RelayError {
  return new RelayError('PLATFORM_ERR_INVALID_REQUEST', PASSWORD_MISMATCH, { details: { field: REPEAT_FIELD } });
}

function userNotice(query: URLSearchParams): string | null {
  const created = query.get('created');
  const saved = query.get('saved');
  const deleted = query.get('deleted');
  const unlocked = query.get('unlocked');
  if (created !== null) return `User ${created} created.`;
  if (saved !== null) return `User ${saved} saved.`;
  if (deleted !== null) return `User ${deleted} deleted.`;
  if (unlocked) return `${unlocked} is unlocked.`;
  return null;
}

function groupNotice(query: URLSearchParams): string | null {
  const created = query.get('created');
  const saved = query.get('saved');
  const deleted = query.get('deleted');
  if (created !== null) return `Group ${created} created.`;
  if (saved !== null) return `Group ${saved} saved.`;
  if (deleted !== null) return `Group ${deleted} deleted.`;
  return null;
}

/** A wait as the login page says it: seconds below a minute, else whole minutes (rounded up). */
function waitText(seconds: number): string {
  return seconds < 60 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`;
}
