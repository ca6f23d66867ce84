/**
 * The console's languages: one catalog file per language (`en.ts`, `ru.ts`: ICU MessageFormat
 * messages by key, formatted with FormatJS `intl-messageformat`), the language of a request
 * (`?lang=`, then the administrator's saved choice, then the `console_lang` cookie, then
 * `Accept-Language`; English when nothing names Russian), and dates and numbers in that language.
 *
 * The language of the request being served is kept in an AsyncLocalStorage (console-routes.ts
 * runs each request in `withLanguage`), so the pages call `t()` without passing it along; outside
 * a request (unit tests of a page) it is English. Messages whose key ends in `_html` hold markup
 * (`<code>`) and are inserted as they are: their arguments must be escaped by the caller. To add a
 * language: add its catalog file (typed `Catalog`, so a missing key does not build) and one line
 * in CATALOGS below.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { IntlMessageFormat } from 'intl-messageformat';
import { en, type MessageKey } from './en.js';
import { ru } from './ru.js';

export type { MessageKey } from './en.js';
export type Catalog = Readonly<Record<MessageKey, string>>;

/** Every language of the console: its catalog and its name in itself (the switch in the page frame). */
export const CATALOGS = {
  en: { catalog: en as Catalog, name: 'English', tag: 'en-US' },
  ru: { catalog: ru, name: 'Русский', tag: 'ru-RU' },
} as const satisfies Record<string, { catalog: Catalog; name: string; tag: string }>;

export type Language = keyof typeof CATALOGS;
export const LANGUAGES = Object.keys(CATALOGS) as Language[];
export const DEFAULT_LANGUAGE: Language = 'en';

/** The query parameter of the language switch, the cookie that remembers it, and the config key per account. */
export const LANG_PARAM = 'lang';
export const LANG_COOKIE = 'console_lang';
export const langConfigKey = (username: string): string => `console.language.${username}`;

export function isLanguage(value: unknown): value is Language {
  return typeof value === 'string' && Object.hasOwn(CATALOGS, value);
}

/**
 * The language an `Accept-Language` header asks for: its ranges by q-value (highest first, ties
 * in the header's order), the first whose primary subtag is a console language; `*` and anything
 * else fall to English. A range with q=0 is refused.
 */
export function languageFromHeader(header: string | undefined): Language {
  if (!header) return DEFAULT_LANGUAGE;
  const ranges = header
    .split(',')
    .slice(0, 32)
    .map((part, index) => {
      const [range = '', ...params] = part.trim().split(';');
      const qParam = params.map((p) => p.trim()).find((p) => /^q=/i.test(p));
      const q = qParam === undefined ? 1 : Number(qParam.slice(2));
      return { primary: range.trim().toLowerCase().split('-', 1)[0]!, q: Number.isFinite(q) ? q : 0, index };
    })
    .filter((r) => r.q > 0 && r.primary !== '')
    .sort((a, b) => b.q - a.q || a.index - b.index);
  for (const r of ranges) {
    if (r.primary === '*') return DEFAULT_LANGUAGE;
    if (isLanguage(r.primary)) return r.primary;
  }
  return DEFAULT_LANGUAGE;
}

interface LanguageContext {
  language: Language;
}

const current = new AsyncLocalStorage<LanguageContext>();

/** Runs `fn` (a request) in `language`; `setLanguage` inside it changes the language of the rest of the request. */
export function withLanguage<T>(language: Language, fn: () => T): T {
  return current.run({ language }, fn);
}

export function setLanguage(language: Language): void {
  const ctx = current.getStore();
  if (ctx) ctx.language = language;
}

/** The language of the request being served (English outside one). */
export function language(): Language {
  return current.getStore()?.language ?? DEFAULT_LANGUAGE;
}

const formats = new Map<string, IntlMessageFormat>();

function format(lang: Language, key: MessageKey): IntlMessageFormat {
  const cacheKey = `${lang}\0${key}`;
  let f = formats.get(cacheKey);
  if (!f) {
    f = new IntlMessageFormat(CATALOGS[lang].catalog[key], CATALOGS[lang].tag, undefined, { ignoreTag: true });
    formats.set(cacheKey, f);
  }
  return f;
}

export type MessageValues = Record<string, string | number>;

/** The message `key` in the request's language (or `lang`), its ICU arguments filled in. */
export function t(key: MessageKey, values?: MessageValues, lang: Language = language()): string {
  return String(format(lang, key).format(values));
}

/** Whether the catalogs have `key` (for messages looked up by an error code). */
export function hasMessage(key: string): key is MessageKey {
  return Object.hasOwn(en, key);
}

/** A number as the language writes it ("2,592,000", «2 592 000»). */
export function formatNumber(n: number, lang: Language = language()): string {
  return new Intl.NumberFormat(CATALOGS[lang].tag).format(n);
}

/**
 * A moment in UTC: "2026-11-30 14:00 UTC" in English (as the console always wrote it),
 * «30.11.2026, 14:00 UTC» in Russian (short: it fits the columns of the tables).
 */
export function formatDate(ms: number, lang: Language = language()): string {
  if (lang === 'en') return `${new Date(ms).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const text = new Intl.DateTimeFormat(CATALOGS[lang].tag, {
    timeZone: 'UTC',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
  }).format(ms);
  return `${text} UTC`;
}

/** The ICU argument names of a message (for the catalog test: the same in every language). */
export function messageArguments(message: string, lang: Language): string[] {
  const names = new Set<string>();
  const walk = (nodes: unknown): void => {
    if (!Array.isArray(nodes)) return;
    for (const node of nodes as Array<Record<string, unknown>>) {
      if (typeof node.value === 'string' && node.type !== 0 /* literal */ && node.type !== 7 /* pound */) names.add(node.value);
      if (node.options && typeof node.options === 'object')
        for (const option of Object.values(node.options as Record<string, { value: unknown }>)) walk(option.value);
      if (Array.isArray(node.children)) walk(node.children);
    }
  };
  walk(new IntlMessageFormat(message, CATALOGS[lang].tag, undefined, { ignoreTag: true }).getAst());
  return [...names].sort();
}
