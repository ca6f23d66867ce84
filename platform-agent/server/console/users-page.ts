/**
 * Users: the list with its search box, each user's role, group, description and status
 * ("Locked until …"), and for a locked user the checked "Locked for Security Reasons" box:
 * unchecking it and saving unlocks the user. Each name links to the user's page (user-page.ts);
 * "New user" leads to the create form.
 */
import type { UserView } from '../security/account-rules.js';
import { roleLabel } from './groups-page.js';
import { csrfInput, esc } from './html.js';
import { DEFAULT_LANGUAGE, formatDate, language, t } from './i18n/i18n.js';

export const LOCK_FIELD = 'locked_for_security_reasons';

/** Users whose name, group, role or description contains `q` (case-insensitive); all when `q` is empty. */
export function filterUsers(users: UserView[], q: string): UserView[] {
  const needle = q.trim().toLowerCase();
  if (needle === '') return users;
  return users.filter((u) => [u.username, u.group, u.role, u.description].some((s) => s?.toLowerCase().includes(needle)));
}

export interface UsersPageInput {
  users: UserView[];
  q: string;
  csrf: string;
  notice: string | null;
  error: string | null;
}

function lockCell(u: UserView, csrf: string, q: string): string {
  if (!u.locked_for_security_reasons) return '';
  const fid = `lock-${encodeURIComponent(u.username).replace(/%/g, '_')}`;
  return `<form method="post" action="/console/users/${esc(encodeURIComponent(u.username))}/lock">${csrfInput(csrf)}
<input type="hidden" name="q" value="${esc(q)}">
<label for="${fid}"><input type="checkbox" id="${fid}" name="${LOCK_FIELD}" checked> ${esc(t('users.locked_box'))}</label>
<button type="submit" class="secondary" aria-label="${esc(t('users.save_lock', { user: u.username }))}">${esc(t('users.save'))}</button></form>`;
}

/** A moment of a status ("2026-11-30 14:00 UTC", security/account-rules.ts formatUtc) in the console's language. */
const statusDate = (text: string): string => {
  const ms = Date.parse(`${text.replace(' UTC', '').replace(' ', 'T')}Z`);
  return Number.isNaN(ms) ? text : formatDate(ms);
};

/**
 * A user's status (security/account-rules.ts userView, in English) in the console's language:
 * its known forms are translated, any other is shown as it is.
 */
export function statusText(status: string): string {
  if (language() === DEFAULT_LANGUAGE) return status;
  if (status === 'Active') return t('status.active');
  if (status === 'Locked until an administrator unlocks it') return t('status.locked_admin');
  if (status === 'Active: the last administrator who can manage users is never expired') return t('status.active_waived');
  const m = /^(Locked until|Not valid before|Expired on) (\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC)$/.exec(status);
  if (!m) return status;
  const date = statusDate(m[2]!);
  return m[1] === 'Locked until'
    ? t('status.locked_until', { date })
    : m[1] === 'Not valid before'
      ? t('status.not_before', { date })
      : t('status.expired', { date });
}

/** The path of a user's page. */
export const userHref = (username: string): string => `/console/users/${encodeURIComponent(username)}/edit`;

export function usersPage(p: UsersPageInput): string {
  const rows = p.users
    .map(
      (u) =>
        `<tr><td><a href="${esc(userHref(u.username))}">${esc(u.username)}</a></td><td>${esc(roleLabel(u.role))}</td><td>${esc(u.group ?? '—')}</td>` +
        `<td class="description">${esc(u.description ?? '')}</td>` +
        `<td${u.locked_for_security_reasons ? ' class="locked"' : ''}>${esc(statusText(u.status))}</td><td>${lockCell(u, p.csrf, p.q)}</td></tr>`,
    )
    .join('\n');
  return `<h2>${esc(t('users.title'))}</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
${p.error ? `<p class="alert" role="alert">${esc(p.error)}</p>` : ''}
<div class="toolbar"><form method="get" action="/console/users" class="search" role="search">
<label for="q">${esc(t('users.search_label'))}</label><input type="search" id="q" name="q" value="${esc(p.q)}" size="30">
<button type="submit">${esc(t('search.submit'))}</button></form>
<a class="button" href="/console/users/new">${esc(t('users.new'))}</a></div>
<table><caption class="hint">${esc(p.q ? t('users.count_matching', { count: p.users.length, q: p.q }) : t('users.count', { count: p.users.length }))}</caption>
<thead><tr><th scope="col">${esc(t('users.col.name'))}</th><th scope="col">${esc(t('users.col.role'))}</th><th scope="col">${esc(t('users.col.group'))}</th><th scope="col">${esc(t('users.col.description'))}</th><th scope="col">${esc(t('users.col.status'))}</th><th scope="col">${esc(t('users.col.lock'))}</th></tr></thead>
<tbody>${rows || `<tr><td colspan="6">${esc(t('users.none'))}</td></tr>`}</tbody></table>`;
}
