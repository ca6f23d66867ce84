/**
 * Users: the list with its search box, each user's role, group, description and status
 * ("Locked until …"), and for a locked user the checked "Locked for Security Reasons" box:
 * unchecking it and saving unlocks the user. Each name links to the user's page (user-page.ts);
 * "New user" leads to the create form.
 */
import type { UserView } from '../security/account-rules.js';
import { ROLE_LABELS } from './groups-page.js';
import { csrfInput, esc } from './html.js';

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
<label for="${fid}"><input type="checkbox" id="${fid}" name="${LOCK_FIELD}" checked> Locked for Security Reasons</label>
<button type="submit" class="secondary" aria-label="Save lock of ${esc(u.username)}">Save</button></form>`;
}

/** The path of a user's page. */
export const userHref = (username: string): string => `/console/users/${encodeURIComponent(username)}/edit`;

export function usersPage(p: UsersPageInput): string {
  const rows = p.users
    .map(
      (u) =>
        `<tr><td><a href="${esc(userHref(u.username))}">${esc(u.username)}</a></td><td>${esc(ROLE_LABELS[u.role] ?? u.role)}</td><td>${esc(u.group ?? '—')}</td>` +
        `<td class="description">${esc(u.description ?? '')}</td>` +
        `<td${u.locked_for_security_reasons ? ' class="locked"' : ''}>${esc(u.status)}</td><td>${lockCell(u, p.csrf, p.q)}</td></tr>`,
    )
    .join('\n');
  return `<h2>Users</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
${p.error ? `<p class="alert" role="alert">${esc(p.error)}</p>` : ''}
<div class="toolbar"><form method="get" action="/console/users" class="search" role="search">
<label for="q">Search users</label><input type="search" id="q" name="q" value="${esc(p.q)}" size="30">
<button type="submit">Search</button></form>
<a class="button" href="/console/users/new">New user</a></div>
<table><caption class="hint">${p.users.length} ${p.users.length === 1 ? 'user' : 'users'}${p.q ? ` matching “${esc(p.q)}”` : ''}</caption>
<thead><tr><th scope="col">User name</th><th scope="col">Role</th><th scope="col">Group</th><th scope="col">Description</th><th scope="col">Status</th><th scope="col">Lock</th></tr></thead>
<tbody>${rows || '<tr><td colspan="6">No users found.</td></tr>'}</tbody></table>`;
}
