/**
 * Settings → Security → Relay server: the "Use Relay Server" checkbox and its boxes (relays,
 * agent token, relay CA or fingerprint pin, connections), the live state of the tunnel, and the
 * form turned back into a relay-settings patch. A field set by a command-line flag is shown
 * read-only with the flag's name: the flag wins for this run (relay-settings.ts).
 */
import type { RelayConnectionStatus } from '../relay-control.js';
import { FLAG_OF, type RelayConnectionSettings, type RelayFlagField } from '../relay-settings.js';
import { csrfInput, esc } from './html.js';
import { DEFAULT_LANGUAGE, formatDate, language, t, type MessageKey } from './i18n/i18n.js';
import type { FieldError } from './security-page.js';

const RELAY_FORM_ACTION = '/console/settings/relay';

/** The relay form's values (the token box is never filled back in). */
export interface RelayFormValues {
  enabled: boolean;
  relays: string;
  relay_ca: string;
  relay_fingerprint: string;
  connections: string;
}

export interface RelaySectionInput {
  values: RelayFormValues;
  tokenSet: boolean;
  /** Fields a flag sets (read-only here). */
  flagFields: RelayFlagField[];
  status: RelayConnectionStatus;
  csrf: string;
  error: FieldError | null;
  notice: string | null;
}

export function relayValuesFromSettings(s: RelayConnectionSettings): RelayFormValues {
  return {
    enabled: s.enabled,
    relays: s.relays.join('\n'),
    relay_ca: s.relay_ca ?? '',
    relay_fingerprint: s.relay_fingerprint ?? '',
    connections: String(s.connections),
  };
}

export function relayValuesFromForm(form: URLSearchParams): RelayFormValues {
  return {
    enabled: form.get('relay.enabled') === 'on',
    relays: (form.get('relay.relays') ?? '').trim(),
    relay_ca: (form.get('relay.relay_ca') ?? '').trim(),
    relay_fingerprint: (form.get('relay.relay_fingerprint') ?? '').trim(),
    connections: (form.get('relay.connections') ?? '').trim(),
  };
}

/** The patch the form asks for; fields a flag sets are left out (their boxes are read-only), an empty token box keeps the token. */
export function relayPatchFromForm(v: RelayFormValues, token: string, flagFields: readonly RelayFlagField[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {
    enabled: v.enabled,
    relays: v.relays.split(/[\s,]+/).filter((u) => u !== ''),
    relay_ca: v.relay_ca === '' ? null : v.relay_ca,
    relay_fingerprint: v.relay_fingerprint === '' ? null : v.relay_fingerprint,
    connections: /^\d{1,4}$/.test(v.connections) ? Number(v.connections) : v.connections,
  };
  if (token !== '') patch.token = token;
  for (const field of flagFields) delete patch[field];
  return patch;
}

const id = (field: string): string => `relay-${field.replace(/_/g, '-')}`;

function when(iso: string | null): string {
  if (iso === null) return '—';
  return language() === DEFAULT_LANGUAGE ? `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC` : formatDate(Date.parse(iso));
}

const STATE_TEXT: Record<RelayConnectionStatus['state'], MessageKey> = {
  off: 'relay.state.off',
  connecting: 'relay.state.connecting',
  connected: 'relay.state.connected',
  degraded: 'relay.state.degraded',
};

function stateTable(status: RelayConnectionStatus): string {
  const rows = status.relays
    .map((r) => {
      const state =
        r.connected === 0 ? t('relay.state.connecting') : t('relay.connected_of', { connected: r.connected, connections: r.connections });
      const error = r.lastError === null ? '—' : `${esc(r.lastError)} <span class="hint">(${esc(when(r.lastErrorAt))})</span>`;
      return `<tr><td><code>${esc(r.url)}</code></td><td>${esc(state)}</td><td>${esc(when(r.since))}</td><td>${error}</td></tr>`;
    })
    .join('');
  return `<div class="row"><span class="label">${esc(t('relay.state'))}</span><div class="inputs">
<p id="relay-state" role="status"><strong>${esc(t(STATE_TEXT[status.state]))}</strong> <a href="/console/settings/security#relay">${esc(t('relay.refresh'))}</a></p>
${
  rows
    ? `<table aria-label="${esc(t('relay.table'))}"><thead><tr><th scope="col">${esc(t('relay.col.relay'))}</th><th scope="col">${esc(t('relay.col.state'))}</th><th scope="col">${esc(t('relay.col.since'))}</th><th scope="col">${esc(t('relay.col.error'))}</th></tr></thead><tbody>${rows}</tbody></table>`
    : ''
}</div></div>`;
}

/** The Relay server form (its own form: it is saved and applied apart from the security settings). */
export function relaySection(p: RelaySectionInput): string {
  const err = (field: string): FieldError | null => (p.error && p.error.field === field ? p.error : null);
  const flagNote = (field: RelayFlagField): string =>
    p.flagFields.includes(field) ? `<p class="warning">${t('relay.flag_html', { flag: esc(FLAG_OF[field]) })}</p>` : '';
  const ro = (field: RelayFlagField): string => (p.flagFields.includes(field) ? ' readonly aria-readonly="true"' : '');
  const row = (field: string, label: string, input: string, hint: string, extra = ''): string => {
    const e = err(field);
    return `<div class="row${e ? ' invalid' : ''}"><label for="${id(field)}">${esc(label)}</label><div class="inputs">${input}<p class="hint" id="${id(field)}-hint">${hint}</p>${extra}${
      e ? `<p class="error" id="${id(field)}-error" role="alert">${esc(e.message)}</p>` : ''
    }</div></div>`;
  };
  const aria = (field: string): string =>
    ` aria-describedby="${id(field)}-hint${err(field) ? ` ${id(field)}-error` : ''}"${err(field) ? ' aria-invalid="true"' : ''}`;
  const general =
    p.error && !['enabled', 'relays', 'token', 'relay_ca', 'relay_fingerprint', 'connections'].includes(p.error.field) ? p.error : null;
  return `<form method="post" action="${RELAY_FORM_ACTION}" novalidate>${csrfInput(p.csrf)}
<fieldset id="relay"><legend>${esc(t('relay.legend'))}</legend>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}${general ? `<p class="alert" role="alert">${esc(general.message)}</p>` : ''}
${row(
  'enabled',
  t('relay.enabled'),
  `<input type="checkbox" id="${id('enabled')}" name="relay.enabled"${p.values.enabled ? ' checked' : ''}${aria('enabled')}>`,
  esc(t('relay.enabled_hint')),
)}
${row(
  'relays',
  t('relay.relays'),
  `<textarea id="${id('relays')}" name="relay.relays" rows="2" spellcheck="false"${ro('relays')}${aria('relays')}>${esc(p.values.relays)}</textarea>`,
  t('relay.relays_hint_html'),
  flagNote('relays'),
)}
${row(
  'token',
  t('relay.token'),
  `<input type="password" id="${id('token')}" name="relay.token" autocomplete="off" size="48" placeholder="${esc(t(p.tokenSet ? 'relay.token_set' : 'relay.token_unset'))}"${ro('token')}${aria('token')}>`,
  t('relay.token_hint_html'),
  flagNote('token'),
)}
${row(
  'relay_ca',
  t('relay.ca'),
  `<textarea id="${id('relay_ca')}" name="relay.relay_ca" rows="3" spellcheck="false" placeholder="-----BEGIN CERTIFICATE-----"${ro('relay_ca')}${aria('relay_ca')}>${esc(p.values.relay_ca)}</textarea>`,
  t('relay.ca_hint_html'),
  flagNote('relay_ca'),
)}
${row(
  'relay_fingerprint',
  t('relay.pin'),
  `<input type="text" id="${id('relay_fingerprint')}" name="relay.relay_fingerprint" value="${esc(p.values.relay_fingerprint)}" size="64" spellcheck="false"${ro('relay_fingerprint')}${aria('relay_fingerprint')}>`,
  esc(t('relay.pin_hint')),
  flagNote('relay_fingerprint'),
)}
${row(
  'connections',
  t('relay.connections'),
  `<input type="number" id="${id('connections')}" name="relay.connections" value="${esc(p.values.connections)}" min="1" max="64" step="1"${ro('connections')}${aria('connections')}>`,
  esc(t('relay.connections_hint')),
  flagNote('connections'),
)}
${stateTable(p.status)}
</fieldset>
<div class="actions"><button type="submit">${esc(t('relay.save'))}</button></div>
</form>`;
}
