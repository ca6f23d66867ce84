/**
 * Devices: every device a login was tried on, under the user of its last login (user, then
 * device), with when it was last seen, its failure count and its status ("Locked until …" or
 * "Active"); an "Unlock" button per locked device, and a search box on user name or device id.
 */
import { DAY_MS } from '../../../shared/clock.js';
import { DEVICE_RETENTION_MS, type DeviceRecord } from '../store/store.js';
import { csrfInput, esc } from './html.js';
import { formatDate, t } from './i18n/i18n.js';
import { userHref } from './users-page.js';

export interface DevicesPageInput {
  /** The devices to show, as the store orders them: by user name, then device id. */
  devices: DeviceRecord[];
  /** The search typed, '' for none. */
  q: string;
  /** The user names that have an account: other names get "(no such user)". */
  usernames: ReadonlySet<string>;
  now: number;
  csrf: string;
  notice: string | null;
}

const deviceLocked = (d: DeviceRecord, now: number): boolean => d.lockedUntil !== null && d.lockedUntil > now;

/** Devices whose user name or device id contains `q` (case-insensitive); all when `q` is empty. */
export function filterDevices(devices: DeviceRecord[], q: string): DeviceRecord[] {
  const needle = q.trim().toLowerCase();
  if (needle === '') return devices;
  return devices.filter((d) => [d.deviceId, d.lastUsername].some((s) => s?.toLowerCase().includes(needle)));
}

function userCell(username: string | null, usernames: ReadonlySet<string>): string {
  if (username === null) return '—';
  if (usernames.has(username)) return `<a href="${esc(userHref(username))}">${esc(username)}</a>`;
  return `${esc(username)} <span class="hint nowrap">${esc(t('devices.no_user'))}</span>`;
}

function deviceRow(d: DeviceRecord, p: DevicesPageInput): string {
  const locked = deviceLocked(d, p.now);
  const seen =
    d.lastSeenAt === null ? '—' : `<time datetime="${new Date(d.lastSeenAt).toISOString()}">${esc(formatDate(d.lastSeenAt))}</time>`;
  const status = locked
    ? `<td class="locked">${esc(t('devices.locked_until'))} <span class="nowrap">${esc(formatDate(d.lockedUntil!))}</span></td>`
    : `<td>${esc(t('devices.active'))}</td>`;
  const unlock = locked
    ? `<form method="post" action="/console/devices/${esc(encodeURIComponent(d.deviceId))}/unlock">${csrfInput(p.csrf)}<input type="hidden" name="q" value="${esc(p.q)}"><button type="submit" class="secondary" aria-label="${esc(t('devices.unlock_label', { device: d.deviceId }))}">${esc(t('devices.unlock'))}</button></form>`
    : '';
  return (
    `<tr${locked ? ' class="locked-row"' : ''}><td class="device">${esc(d.deviceId)}</td><td>${userCell(d.lastUsername, p.usernames)}</td>` +
    `<td class="nowrap">${seen}</td><td class="number">${d.failures}</td>${status}<td>${unlock}</td></tr>`
  );
}

/** One `<tbody>` per user, so that a user's devices read as a group. */
function userGroups(p: DevicesPageInput): string[] {
  const groups: string[][] = [];
  let last: string | null | undefined;
  for (const d of p.devices) {
    if (groups.length === 0 || d.lastUsername !== last) groups.push([]);
    groups[groups.length - 1]!.push(deviceRow(d, p));
    last = d.lastUsername;
  }
  return groups.map((rows) => `<tbody>\n${rows.join('\n')}\n</tbody>`);
}

export function devicesPage(p: DevicesPageInput): string {
  const users = new Set(p.devices.map((d) => d.lastUsername)).size;
  const locked = p.devices.filter((d) => deviceLocked(d, p.now)).length;
  const caption =
    esc(
      p.q
        ? t('devices.count_matching', { devices: p.devices.length, users, q: p.q })
        : t('devices.count', { devices: p.devices.length, users }),
    ) + (locked > 0 ? ` · <span class="locked">${esc(t('devices.count_locked', { count: locked }))}</span>` : '');
  const empty = esc(p.q ? t('devices.none_matching', { q: p.q }) : t('devices.none'));
  const groups = userGroups(p);
  return `<h2>${esc(t('devices.title'))}</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
<div class="toolbar"><form method="get" action="/console/devices" class="search" role="search">
<label for="q">${esc(t('devices.search_label'))}</label><input type="search" id="q" name="q" value="${esc(p.q)}" size="30">
<button type="submit">${esc(t('search.submit'))}</button></form></div>
<p class="hint">${esc(t('devices.hint', { days: DEVICE_RETENTION_MS / DAY_MS }))}</p>
<table class="devices"><caption class="hint">${caption}</caption>
<thead><tr><th scope="col">${esc(t('devices.col.device'))}</th><th scope="col">${esc(t('devices.col.user'))}</th><th scope="col">${esc(t('devices.col.seen'))}</th><th scope="col">${esc(t('devices.col.failures'))}</th><th scope="col">${esc(t('devices.col.status'))}</th><th scope="col">${esc(t('devices.col.unlock'))}</th></tr></thead>
${groups.length > 0 ? groups.join('\n') : `<tbody><tr><td colspan="6">${empty}</td></tr></tbody>`}</table>`;
}
