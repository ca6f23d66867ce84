/**
 * The control panel under `/console/`: server-rendered pages for administrators, served on the
 * internal listener (and through the relay only when the operator says so; PlatformServer decides).
 *
 * This file is the console's route table and the steps every page request takes, in this order:
 * an unknown page is 404 (before any session check); the stylesheet and the login need no
 * session; every other page needs the session (console-session.ts: else to the login page, a
 * form posted under an expired session kept), then a method other than GET, HEAD and POST gets
 * the 405 page, a POST's form is read and its CSRF token checked (403 page), the page's operation
 * is authorised, and its handler runs (settings-handlers.ts, ip-rules-handlers.ts,
 * users-handlers.ts, groups-handlers.ts, devices-handlers.ts). An error with an HTTP status is
 * shown as an error page; a 401 (the session ended meanwhile) goes to the login page.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RelayError } from '../../../shared/errors.js';
import type { RequestContext } from '../http/auth-routes.js';
import { ANY_METHOD, Router } from '../http/router.js';
import type { Operation } from '../security/groups.js';
import { MAX_FORM_BYTES, readForm, type ConsoleHost, type ConsoleRequest, type ConsoleServices, type Session } from './console-request.js';
import { ConsoleSessions } from './console-session.js';
import { DevicesHandlers } from './devices-handlers.js';
import { GroupsHandlers } from './groups-handlers.js';
import { esc, page, redirect, sendCss, sendHtml } from './html.js';
import { errorMessage } from './error-text.js';
import { isLanguage, LANG_PARAM, t, withLanguage } from './i18n/i18n.js';
import { IpRulesHandlers } from './ip-rules-handlers.js';
import { ConsoleLanguages } from './console-language.js';
import { SettingsHandlers } from './settings-handlers.js';
import { UsersHandlers } from './users-handlers.js';

/** A page behind the login: `form` is the posted form (CSRF-checked) of a POST, null for GET and HEAD. */
type PageHandler = (r: ConsoleRequest, form: URLSearchParams | null) => Promise<void> | void;
/** A page served without a session (the stylesheet, the login). */
interface OpenHandler {
  readonly open: (req: IncomingMessage, res: ServerResponse, ctx: RequestContext, query: URLSearchParams) => Promise<void> | void;
}

/** What a page behind the login needs besides its handler (open pages have no data). */
interface ConsolePage {
  /** The operation the page needs; none for the home page and the logout. */
  readonly operation?: Operation;
  /** A form posted to it under an expired session is kept, and offered again after the login. */
  readonly keepsDraft?: boolean;
  /**
   * The most its form may be, when more than MAX_FORM_BYTES: the page's operation is then
   * authorised before the form is read (only someone allowed to save it gets it read).
   */
  readonly formBytes?: () => number;
}

/** GET and HEAD show the page; POST `save`s its form (by default shows the page too). */
function getPost(
  show: (r: ConsoleRequest) => Promise<void> | void,
  save: (r: ConsoleRequest, form: URLSearchParams) => Promise<void> | void = show,
): Record<string, PageHandler> {
  const get: PageHandler = (r) => show(r);
  const post: PageHandler = (r, form) => {
    if (!form) throw new Error('a POST handler without its form');
    return save(r, form);
  };
  return { GET: get, HEAD: get, POST: post };
}

export class ConsoleRoutes {
  private readonly sessions: ConsoleSessions;
  private readonly languages: ConsoleLanguages;
  private readonly router: Router<PageHandler | OpenHandler, ConsolePage | undefined>;

  constructor(
    private readonly s: ConsoleServices,
    host: ConsoleHost,
  ) {
    const sessions = new ConsoleSessions(s, host);
    this.sessions = sessions;
    this.languages = new ConsoleLanguages(s, sessions);
    const settings = new SettingsHandlers(s, host, sessions);
    const ipRules = new IpRulesHandlers(s, sessions);
    const users = new UsersHandlers(s, sessions);
    const groups = new GroupsHandlers(s, sessions);
    const devices = new DevicesHandlers(s);
    const home = ({ res }: ConsoleRequest): void => redirect(res, '/console/settings/security');
    const toRelay = ({ res }: ConsoleRequest): void => redirect(res, '/console/settings/security#relay');
    const SETTINGS = 'admin.settings';
    const USERS = 'admin.users';
    const DEVICES = 'admin.devices';
    // Paths below /console/, read top to bottom (the first that matches decides).
    this.router = new Router<PageHandler | OpenHandler, ConsolePage | undefined>([
      { path: 'console.css', methods: { GET: { open: (_req, res) => sendCss(res) } } },
      {
        path: 'login',
        methods: {
          POST: { open: (req, res, ctx) => sessions.login(req, res, ctx) },
          [ANY_METHOD]: { open: (req, res, _ctx, query) => sessions.showLogin(req, res, query) },
        },
      },
      { path: '', methods: getPost(home), data: {} },
      { path: 'logout', methods: getPost(home, ({ req, res, session }) => sessions.logout(req, res, session)), data: {} },
      { path: 'settings/security', methods: getPost(settings.show, settings.save), data: { operation: SETTINGS, keepsDraft: true } },
      { path: 'settings/relay', methods: getPost(toRelay, settings.saveRelay), data: { operation: SETTINGS, keepsDraft: true } },
      { path: 'settings/security/rotate-signing-key', methods: getPost(home, settings.rotateKey), data: { operation: SETTINGS } },
      {
        path: 'settings/ip-rules',
        methods: getPost(ipRules.show, ipRules.save),
        data: { operation: SETTINGS, keepsDraft: true, formBytes: ipRules.formBytes },
      },
      { path: 'users', methods: getPost(users.list), data: { operation: USERS } },
      { path: 'users/new', methods: getPost(users.showNew, users.create), data: { operation: USERS, keepsDraft: true } },
      { path: 'users/:name/edit', methods: getPost(users.showEdit, users.save), data: { operation: USERS, keepsDraft: true } },
      { path: 'users/:name/delete', methods: getPost(users.toUser, users.delete), data: { operation: USERS } },
      { path: 'users/:name/lock', methods: getPost(users.toList, users.saveLock), data: { operation: USERS } },
      { path: 'groups', methods: getPost(groups.show, groups.create), data: { operation: USERS, keepsDraft: true } },
      { path: 'groups/:name', methods: getPost(groups.toGroups, groups.update), data: { operation: USERS, keepsDraft: true } },
      { path: 'groups/:name/delete', methods: getPost(groups.toGroups, groups.delete), data: { operation: USERS } },
      { path: 'devices', methods: getPost(devices.list), data: { operation: DEVICES } },
      { path: 'devices/:id/unlock', methods: getPost(devices.toList, devices.unlock), data: { operation: DEVICES } },
    ]);
  }

  /** Serves `path` (below `/console/`); false when no page matches (404). */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, ctx: RequestContext): Promise<boolean> {
    return withLanguage(this.languages.fromBrowser(req), () => this.serve(req, res, path, ctx));
  }

  private async serve(req: IncomingMessage, res: ServerResponse, path: string, ctx: RequestContext): Promise<boolean> {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://console.invalid');
    const query = url.searchParams;
    try {
      const match = this.router.match(method, path);
      if (!match) return false;
      await this.sessions.ready();
      const route = match.data;
      const chosen = query.get(LANG_PARAM);
      if ((method === 'GET' || method === 'HEAD') && isLanguage(chosen)) {
        // The language switch: remembered (cookie; the account too when logged in), then the same page without ?lang=.
        await this.languages.choose(req, res, chosen, url, route === undefined ? null : await this.sessions.peek(req));
        return true;
      }
      if (route === undefined) {
        // Served without a session; another method on them (a POST of the stylesheet) finds no page.
        if (match.kind === 'method-not-allowed' || !('open' in match.handler)) return false;
        await match.handler.open(req, res, ctx, query);
        return true;
      }

      const session = await this.sessions.session(req, res, method === 'POST' && route.keepsDraft ? path : null);
      if (!session) return true;
      await this.languages.useSaved(session.claims.sub);
      if (match.kind === 'method-not-allowed') {
        this.errorPage(res, 405, t('error.method_title'), t('error.method_text'), session.csrf);
        return true;
      }
      let form: URLSearchParams | null = null;
      if (method === 'POST') {
        if (route.formBytes) await this.authorize(session, route.operation);
        form = await readForm(req, route.formBytes?.() ?? MAX_FORM_BYTES);
        if (!this.sessions.formOk(form, session)) {
          this.errorPage(res, 403, t('error.forbidden_title'), t('error.forbidden_text'), session.csrf);
          return true;
        }
      }
      await this.authorize(session, route.operation);
      if ('open' in match.handler) throw new Error(`console page ${match.path} has an open handler and page data`);
      await match.handler({ req, res, ctx, session, path, params: match.params, query }, form);
      return true;
    } catch (err) {
      if (!(err instanceof RelayError) || err.httpStatus === undefined) throw err;
      if (err.httpStatus === 401) this.sessions.expired(req, res);
      else this.errorPage(res, err.httpStatus, t('error.title'), errorMessage(err), undefined);
      return true;
    }
  }

  private async authorize(session: Session, operation: Operation | undefined): Promise<void> {
    if (operation) await this.s.groups.authorize(session.claims.sub, operation);
  }

  private errorPage(res: ServerResponse, status: number, title: string, message: string, csrf: string | undefined): void {
    const body = `<h2>${esc(title)}</h2><p class="alert" role="alert">${esc(message)}</p><p><a href="/console/">${esc(t('error.back'))}</a></p>`;
    sendHtml(res, status, page({ title, body, ...(csrf !== undefined ? { csrf } : {}) }));
  }
}
