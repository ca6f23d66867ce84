/**
 * The language of a console request: the `console_lang` cookie, else the browser's
 * `Accept-Language` (i18n/i18n.ts); behind the login the administrator's saved choice (the
 * store's config, per account) wins. The switch in the page frame (`?lang=ru` on any page) saves
 * the choice in the cookie and, when logged in, in the account's config, then reloads the page
 * without `?lang=`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { cookie } from '../http/http-io.js';
import type { ConsoleServices } from './console-request.js';
import type { ConsoleSessions } from './console-session.js';
import { redirect } from './html.js';
import { isLanguage, LANG_COOKIE, LANG_PARAM, langConfigKey, languageFromHeader, setLanguage, type Language } from './i18n/i18n.js';

/** How long the browser remembers the choice: a year. */
const LANG_COOKIE_SECONDS = 365 * 24 * 3600;

export class ConsoleLanguages {
  constructor(
    private readonly s: ConsoleServices,
    private readonly sessions: ConsoleSessions,
  ) {}

  /** The language before any session is known: the cookie's, else the Accept-Language header's. */
  fromBrowser(req: IncomingMessage): Language {
    const saved = cookie(req, LANG_COOKIE);
    return isLanguage(saved) ? saved : languageFromHeader(req.headers['accept-language']);
  }

  /** The logged-in administrator's saved language, if any, for the rest of the request. */
  async useSaved(username: string): Promise<void> {
    const saved = await this.s.store.getConfig(langConfigKey(username));
    if (isLanguage(saved)) setLanguage(saved);
  }

  /** `?lang=` on a page: remembers `lang` (for `username` too, when logged in) and goes back to the page without it. */
  async choose(req: IncomingMessage, res: ServerResponse, lang: Language, url: URL, username: string | null): Promise<void> {
    if (username !== null) await this.s.store.putConfig(langConfigKey(username), lang, this.s.clock.now());
    url.searchParams.delete(LANG_PARAM);
    const rest = url.searchParams.toString();
    redirect(res, `${url.pathname}${rest ? `?${rest}` : ''}`, {
      'set-cookie': this.sessions.cookieHeader(req, LANG_COOKIE, lang, LANG_COOKIE_SECONDS),
    });
  }
}
