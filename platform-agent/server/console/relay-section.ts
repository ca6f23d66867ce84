/**
 * Settings → Security → Relay server: the "Use Relay Server" checkbox and its boxes (relays,
 * agent token, relay CA or fingerprint pin, connections), the live state of the tunnel, and the
 * form turned back into a relay-settings patch. A field set by a command-line flag is shown
 * read-only with the flag's name: the flag wins for this run (relay-settings.ts).
 */
import type { RelayConnectionStatus } from '../relay-control.js';
import { FLAG_OF, type RelayConnectionSettings, type RelayFlagField } from '../relay-settings.js';
import { csrfInput, esc } from './html.js';
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
  return iso === null ? '—' : `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
}

const STATE_TEXT: Record<RelayConnectionStatus['state'], string> = {
  off: 'Off',
  connecting: 'Connecting…',
  connected: 'Connected',
  degraded: 'Partly connected',
};

function stateTable(status: RelayConnectionStatus): string {
  const rows = status.relays
    .map((r) => {
      const state = r.connected === 0 ? 'Connecting…' : `Connected (${r.connected} of ${r.connections})`;
      const error = r.lastError === null ? '—' : `${esc(r.lastError)} <span class="hint">(${esc(when(r.lastErrorAt))})</span>`;
      return `<tr><td><code>${esc(r.url)}</code></td><td>${esc(state)}</td><td>${esc(when(r.since))}</td><td>${error}</td></tr>`;
    })
    .join('');
  return `<div class="row"><span class="label">Tunnel state</span><div class="inputs">
<p id="relay-state" role="status"><strong>${esc(STATE_TEXT[status.state])}</strong> <a href="/console/settings/security#relay">Refresh</a></p>
${
  rows
    ? `<table aria-label="Relay connections"><thead><tr><th scope="col">Relay</th><th scope="col">State</th><th scope="col">Since</th><th scope="col">Last error</th></tr></thead><tbody>${rows}</tbody></table>`
    : ''
}</div></div>`;
}

/** The Relay server form (its own form: it is saved and applied apart from the security settings). */
export function relaySection(p: RelaySectionInput): string {
  const err = (field: string): FieldError | null => (p.error && p.error.field === field ? p.error : null);
  const flagNote = (field: RelayFlagField): string =>
    p.flagFields.includes(field)
      ? `<p class="warning">Set by <code>${FLAG_OF[field]}</code> on the command line: it wins over the value saved here until the agent starts without it.</p>`
      : '';
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
<fieldset id="relay"><legend>Relay server</legend>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}${general ? `<p class="alert" role="alert">${esc(general.message)}</p>` : ''}
${row(
  'enabled',
  'Use Relay Server',
  `<input type="checkbox" id="${id('enabled')}" name="relay.enabled"${p.values.enabled ? ' checked' : ''}${aria('enabled')}>`,
  "The platform dials out to the relay in the DMZ and keeps the tunnel open; mobile clients reach it on the relay's ports 10080 (HTTP) and 10443 (HTTPS). No inbound port is opened. Saving starts or stops the tunnel at once.",
)}
${row(
  'relays',
  'Relay addresses',
  `<textarea id="${id('relays')}" name="relay.relays" rows="2" spellcheck="false"${ro('relays')}${aria('relays')}>${esc(p.values.relays)}</textarea>`,
  'The relay tunnel URL, <code>wss://host:port</code> (the relay listens on 10900 by default); one a line to use several relays.',
  flagNote('relays'),
)}
${row(
  'token',
  'Agent token',
  `<input type="password" id="${id('token')}" name="relay.token" autocomplete="off" size="48" placeholder="${p.tokenSet ? 'set — leave empty to keep it' : 'not set'}"${ro('token')}${aria('token')}>`,
  'The token <code>relay token create</code> printed for this platform. Never shown again; leave the box empty to keep the current one — except when you change the relay addresses, CA or pin: then type it again.',
  flagNote('token'),
)}
${row(
  'relay_ca',
  'Relay CA',
  `<textarea id="${id('relay_ca')}" name="relay.relay_ca" rows="3" spellcheck="false" placeholder="-----BEGIN CERTIFICATE-----"${ro('relay_ca')}${aria('relay_ca')}>${esc(p.values.relay_ca)}</textarea>`,
  "PEM certificate of the CA that signed the relay's certificate (<code>relay cert init</code>). Empty: the system's CAs, or the pin below.",
  flagNote('relay_ca'),
)}
${row(
  'relay_fingerprint',
  'Relay certificate pin',
  `<input type="text" id="${id('relay_fingerprint')}" name="relay.relay_fingerprint" value="${esc(p.values.relay_fingerprint)}" size="64" spellcheck="false"${ro('relay_fingerprint')}${aria('relay_fingerprint')}>`,
  "SHA-256 fingerprint of the relay's certificate, as the relay prints it at start-up; pins that certificate instead of checking a CA.",
  flagNote('relay_fingerprint'),
)}
${row(
  'connections',
  'Connections per relay',
  `<input type="number" id="${id('connections')}" name="relay.connections" value="${esc(p.values.connections)}" min="1" max="64" step="1"${ro('connections')}${aria('connections')}>`,
  'Default: 2.',
  flagNote('connections'),
)}
${stateTable(p.status)}
</fieldset>
<div class="actions"><button type="submit">Save relay settings</button></div>
</form>`;
}
