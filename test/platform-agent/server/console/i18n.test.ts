import { describe, expect, it } from 'vitest';
import { IntlMessageFormat } from 'intl-messageformat';
import {
  CATALOGS,
  formatDate,
  formatNumber,
  language,
  LANGUAGES,
  languageFromHeader,
  messageArguments,
  setLanguage,
  t,
  withLanguage,
  type MessageKey,
} from '../../../../platform-agent/server/console/i18n/i18n.js';
import { page } from '../../../../platform-agent/server/console/html.js';
import { errorMessage, fieldMessage } from '../../../../platform-agent/server/console/error-text.js';
import { statusText } from '../../../../platform-agent/server/console/users-page.js';
import { RelayError } from '../../../../shared/errors.js';
import { NO_OPERATION_MESSAGE } from '../../../../platform-agent/server/security/groups.js';

const keys = Object.keys(CATALOGS.en.catalog) as MessageKey[];

describe('the message catalogs', () => {
  it('has every key in every language, and no other', () => {
    for (const lang of LANGUAGES) expect(Object.keys(CATALOGS[lang].catalog).sort(), lang).toEqual([...keys].sort());
  });

  it('parses every message of every language', () => {
    for (const lang of LANGUAGES)
      for (const key of keys) {
        const message = CATALOGS[lang].catalog[key];
        expect(message.trim(), `${lang} ${key}`).not.toBe('');
        expect(() => new IntlMessageFormat(message, CATALOGS[lang].tag, undefined, { ignoreTag: true }), `${lang} ${key}`).not.toThrow();
      }
  });

  it('gives each key the same ICU arguments in every language', () => {
    for (const key of keys) {
      const expected = messageArguments(CATALOGS.en.catalog[key], 'en');
      for (const lang of LANGUAGES) expect(messageArguments(CATALOGS[lang].catalog[key], lang), `${lang} ${key}`).toEqual(expected);
    }
  });

  it('keeps markup to the keys that say so (_html)', () => {
    for (const lang of LANGUAGES)
      for (const key of keys) if (!key.endsWith('_html')) expect(CATALOGS[lang].catalog[key], `${lang} ${key}`).not.toMatch(/<\/?code>/);
  });

  it('finds the arguments inside plural forms', () => {
    expect(messageArguments('{n, plural, one {# {unit}} other {# {unit}s}} {x}', 'en')).toEqual(['n', 'unit', 'x']);
  });
});

describe('plural forms and formats', () => {
  it('says 1 день, 2 дня, 5 дней, 21 день', () => {
    expect([1, 2, 5, 21, 11, 22, 111].map((count) => t('count.days', { count }, 'ru'))).toEqual([
      '1 день',
      '2 дня',
      '5 дней',
      '21 день',
      '11 дней',
      '22 дня',
      '111 дней',
    ]);
    expect([1, 2, 5, 21].map((count) => t('count.days', { count }, 'en'))).toEqual(['1 day', '2 days', '5 days', '21 days']);
    expect([1, 3, 5, 21].map((count) => t('count.hours', { count }, 'ru'))).toEqual(['1 час', '3 часа', '5 часов', '21 час']);
    expect([1, 2, 5, 21].map((count) => t('count.minutes', { count }, 'ru'))).toEqual(['1 минута', '2 минуты', '5 минут', '21 минута']);
  });

  it('writes the default validity with its plural forms', () => {
    expect(t('hint.default_validity', { days: 1, hours: 0 }, 'ru')).toBe('По умолчанию: 1 день 0 часов.');
    expect(t('hint.default_validity', { days: 45, hours: 2 }, 'ru')).toBe('По умолчанию: 45 дней 2 часа.');
    expect(t('hint.default_validity', { days: 1, hours: 0 }, 'en')).toBe('Default: 1 days 0 hours.');
  });

  it('formats numbers and dates for the language', () => {
    expect(formatNumber(2592000, 'en')).toBe('2,592,000');
    expect(formatNumber(2592000, 'ru')).toBe('2\u00a0592\u00a0000');
    const at = Date.UTC(2026, 10, 30, 14, 5);
    expect(formatDate(at, 'en')).toBe('2026-11-30 14:05 UTC');
    expect(formatDate(at, 'ru')).toBe('30.11.2026, 14:05 UTC');
  });
});

describe('the language of a request', () => {
  it('chooses Russian for ru and ru-RU, English for anything else', () => {
    expect(languageFromHeader('ru-RU')).toBe('ru');
    expect(languageFromHeader('ru')).toBe('ru');
    expect(languageFromHeader('RU-ru,en;q=0.5')).toBe('ru');
    expect(languageFromHeader('en-US,en;q=0.9')).toBe('en');
    expect(languageFromHeader('de-DE,fr;q=0.8')).toBe('en');
    expect(languageFromHeader(undefined)).toBe('en');
    expect(languageFromHeader('')).toBe('en');
    expect(languageFromHeader('*')).toBe('en');
    expect(languageFromHeader('garbage;;;,,')).toBe('en');
  });

  it('honours q-values', () => {
    expect(languageFromHeader('en;q=0.5, ru;q=0.9')).toBe('ru');
    expect(languageFromHeader('ru;q=0.5, en;q=0.9')).toBe('en');
    expect(languageFromHeader('de, ru-RU;q=0.7, en;q=0.3')).toBe('ru');
    expect(languageFromHeader('ru;q=0, en;q=0.1')).toBe('en');
    expect(languageFromHeader('ru;q=0')).toBe('en');
    expect(languageFromHeader('en;q=0.8, ru;q=0.8')).toBe('en');
    expect(languageFromHeader('ru;q=abc, en;q=0.2')).toBe('en');
  });

  it('keeps the language for the request it was set in, English outside one', async () => {
    expect(language()).toBe('en');
    await withLanguage('ru', async () => {
      await Promise.resolve();
      expect(language()).toBe('ru');
      expect(t('nav.users')).toBe('Пользователи');
      setLanguage('en');
      expect(t('nav.users')).toBe('Users');
    });
    setLanguage('ru'); // outside a request: no effect
    expect(language()).toBe('en');
  });

  it('sets <html lang> and the switch in the page frame', () => {
    const html = withLanguage('ru', () => page({ title: 'X', csrf: 'c', body: '' }));
    expect(html).toContain('<html lang="ru">');
    expect(html).toContain('aria-current="true">Русский</a>');
    expect(html).toContain('href="?lang=en"');
    expect(html).toContain('Выйти');
    const english = page({ title: 'X', body: '' });
    expect(english).toContain('<html lang="en">');
    expect(english).toContain('aria-current="true">English</a>');
    expect(english).toContain('<title>X · Platform control panel</title>');
  });
});

describe('texts from ../security/ in the console language', () => {
  it('translates user statuses in Russian and keeps them in English', () => {
    expect(statusText('Locked until 2026-11-30 14:00 UTC')).toBe('Locked until 2026-11-30 14:00 UTC');
    withLanguage('ru', () => {
      expect(statusText('Active')).toBe('Активен');
      expect(statusText('Locked until 2026-11-30 14:00 UTC')).toBe('Заблокирован до 30.11.2026, 14:00 UTC');
      expect(statusText('Expired on 2026-01-02 00:00 UTC')).toBe('Срок действия истёк 02.01.2026, 00:00 UTC');
      expect(statusText('Something new')).toBe('Something new');
    });
  });

  it('translates the field messages and error codes it knows, and shows the others as they are', () => {
    const code = 'PLATFORM_ERR_INVALID_REQUEST';
    expect(fieldMessage(code, 'operations', NO_OPERATION_MESSAGE)).toBe(NO_OPERATION_MESSAGE);
    withLanguage('ru', () => {
      expect(fieldMessage(code, 'operations', NO_OPERATION_MESSAGE)).toBe('Группа пользователей должна иметь хотя бы одну операцию');
      expect(fieldMessage(code, 'name', 'too long')).toBe('too long');
      expect(errorMessage(new RelayError('PLATFORM_ERR_USER_NOT_FOUND'))).toBe('Такого пользователя нет');
      expect(errorMessage(new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'odd'))).toBe('odd');
    });
    expect(errorMessage(new RelayError('PLATFORM_ERR_FORBIDDEN', 'this account may not do that: it lacks admin.users'))).toBe(
      'this account may not do that: it lacks admin.users',
    );
  });
});
