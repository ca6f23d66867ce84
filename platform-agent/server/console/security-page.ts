/**
 * Settings → Security: the Authentication, Authorization failures and mobile authenticator
 * fields, rendered from the stored settings or from a form that failed validation (what the
 * administrator typed stays), and turned back into an `applySettingsPatch` patch. Validation
 * lives in security/settings.ts only: a form value that is no number reaches it as a string and
 * comes back as a RelayError naming the field, which the page shows next to that field.
 */
import { defaultSettings, type SecuritySettings } from '../security/settings.js';
import { csrfInput, esc } from './html.js';

/** Form values by field name (`lockout.device_failures`); checkboxes are 'on' or ''. */
export type FormValues = Record<string, string>;

/** A validation error to show next to a field (`details.field` of the RelayError). */
export interface FieldError {
  field: string;
  message: string;
}

export const CONFIRM_INVALIDATE = 'confirm_invalidate';
export const CONFIRM_ROTATE = 'confirm_rotate';
export const INVALIDATE_WARNING = 'Changing token validity logs everyone out';

interface NumberInput {
  name: string;
  label: string;
  unit: string;
}

interface Row {
  /** The setting this row edits; errors whose field is it or below it show here. */
  key: string;
  label: string;
  kind: 'numbers' | 'text' | 'checkbox';
  inputs: NumberInput[];
  hint: string;
}

const d = defaultSettings;
const validityHint = (v: { days: number; hours: number }): string => `Default: ${v.days} days ${v.hours} hours.`;
const validityRow = (key: string, label: string, hint: string): Row => ({
  key,
  label,
  kind: 'numbers',
  inputs: [
    { name: `${key}.days`, label: `${label}, days`, unit: 'days' },
    { name: `${key}.hours`, label: `${label}, hours`, unit: 'hours' },
  ],
  hint,
});
const numberRow = (key: string, label: string, unit: string, hint: string): Row => ({
  key,
  label,
  kind: 'numbers',
  inputs: [{ name: key, label, unit }],
  hint,
});

const AUTHENTICATION: Row[] = [
  validityRow('api_token_validity', 'JWT validity for API users', validityHint(d.api_token_validity)),
  validityRow('admin_token_validity', 'JWT validity for administrators', validityHint(d.admin_token_validity)),
  validityRow(
    'refresh_token_validity',
    'Refresh token validity',
    `${validityHint(d.refresh_token_validity)} Must be longer than both JWT validities.`,
  ),
  {
    key: 'admin_inactivity_timeout',
    label: 'Administrator inactivity timeout',
    kind: 'text',
    inputs: [{ name: 'admin_inactivity_timeout', label: 'Administrator inactivity timeout', unit: 'hh:mm' }],
    hint: 'For example 00:30. Empty: no timeout (the default).',
  },
  numberRow(
    'account_validity_days',
    'Account validity for all users',
    'days',
    "Empty: unlimited (the default). A user's own period overrides it.",
  ),
];

const checkboxRow = (key: string, label: string, hint: string): Row => ({
  key,
  label,
  kind: 'checkbox',
  inputs: [{ name: key, label, unit: '' }],
  hint,
});

const l = d.lockout;
const SMART_LOCKOUT = 'lockout.smart_lockout';
const AUTHORIZATION_FAILURES: Row[] = [
  numberRow('lockout.device_failures', 'Failures before a device lock', 'failures', `Default: ${l.device_failures}.`),
  numberRow('lockout.failure_reset_minutes', 'Failure counter reset time', 'minutes', `Default: ${l.failure_reset_minutes} minutes.`),
  numberRow('lockout.device_lock_minutes', 'Device lock time', 'minutes', `Default: ${l.device_lock_minutes} minutes.`),
  numberRow('lockout.user_device_locks', 'Device locks before a user lock', 'device locks', `Default: ${l.user_device_locks}.`),
  numberRow('lockout.device_lock_reset_hours', 'Device lock counter reset time', 'hours', `Default: ${l.device_lock_reset_hours} hours.`),
  numberRow('lockout.user_lock_days', 'User lock time', 'days', `Default: ${l.user_lock_days} day.`),
  checkboxRow(
    SMART_LOCKOUT,
    'Smart lockout',
    'A device where the user logged in before keeps working through a user lock caused from other devices, and a repeated wrong password counts once. Trade-off: a stolen known device keeps working until you lock the user or the device. Default: off.',
  ),
];

const MOBILE: Row[] = [
  checkboxRow(
    'mobile_authorization.enabled',
    'Mobile authorization authenticator',
    'Accepts "Authorization: Mobile <base64 user:password>". Default: off.',
  ),
  checkboxRow('mobile_token.enabled', 'Mobile token authenticator', 'Accepts the "twx-mobile-token" header. Default: off.'),
  numberRow(
    'mobile_authorization.token_lifetime_seconds',
    'Mobile token lifetime',
    'seconds',
    `Default: ${d.mobile_authorization.token_lifetime_seconds.toLocaleString('en-US')} seconds (30 days).`,
  ),
];

const ENCRYPTION: Row[] = [
  checkboxRow(
    'https.api',
    'HTTPS for the API',
    "API calls over plain HTTP are refused (403 https_required): mobile clients use the relay's HTTPS port (10443), internal clients https:// on this port. Default: off (HTTP).",
  ),
  checkboxRow(
    'https.control_panel',
    'HTTPS for the Control Panel',
    'The control panel over plain HTTP is redirected to https:// on the same port. Default: off (HTTP).',
  ),
];

const on = (b: boolean): string => (b ? 'on' : '');
const ALL_ROWS = [...ENCRYPTION, ...AUTHENTICATION, ...AUTHORIZATION_FAILURES, ...MOBILE];

/** The form values that show `s`. */
export function valuesFromSettings(s: SecuritySettings): FormValues {
  const v: FormValues = {};
  v['https.api'] = on(s.https.api);
  v['https.control_panel'] = on(s.https.control_panel);
  for (const key of ['api_token_validity', 'admin_token_validity', 'refresh_token_validity'] as const) {
    v[`${key}.days`] = String(s[key].days);
    v[`${key}.hours`] = String(s[key].hours);
  }
  v.admin_inactivity_timeout = s.admin_inactivity_timeout ?? '';
  v.account_validity_days = s.account_validity_days === null ? '' : String(s.account_validity_days);
  for (const [key, value] of Object.entries(s.lockout)) v[`lockout.${key}`] = typeof value === 'boolean' ? on(value) : String(value);
  v['mobile_authorization.enabled'] = on(s.mobile_authorization.enabled);
  v['mobile_token.enabled'] = on(s.mobile_token.enabled);
  v['mobile_authorization.token_lifetime_seconds'] = String(s.mobile_authorization.token_lifetime_seconds);
  return v;
}

/** The submitted form's values for every field the page shows (a missing checkbox is off). */
export function valuesFromForm(form: URLSearchParams): FormValues {
  const v: FormValues = {};
  for (const row of ALL_ROWS) for (const input of row.inputs) v[input.name] = (form.get(input.name) ?? '').trim();
  v[CONFIRM_INVALIDATE] = form.get(CONFIRM_INVALIDATE) === 'on' ? 'on' : '';
  return v;
}

/** A whole number as a number; anything else stays a string for the validator to name. */
const num = (v: string | undefined): unknown => (/^\d{1,9}$/.test(v ?? '') ? Number(v) : (v ?? ''));

/** The patch the form asks for. */
export function patchFromValues(v: FormValues): Record<string, unknown> {
  const validity = (key: string): unknown => ({ days: num(v[`${key}.days`]), hours: num(v[`${key}.hours`]) });
  const lockout: Record<string, unknown> = {};
  for (const row of AUTHORIZATION_FAILURES)
    lockout[row.key.slice('lockout.'.length)] = row.kind === 'checkbox' ? v[row.key] === 'on' : num(v[row.key]);
  return {
    https: { api: v['https.api'] === 'on', control_panel: v['https.control_panel'] === 'on' },
    api_token_validity: validity('api_token_validity'),
    admin_token_validity: validity('admin_token_validity'),
    refresh_token_validity: validity('refresh_token_validity'),
    admin_inactivity_timeout: v.admin_inactivity_timeout === '' ? null : v.admin_inactivity_timeout,
    account_validity_days: v.account_validity_days === '' ? null : num(v.account_validity_days),
    lockout,
    mobile_authorization: {
      enabled: v['mobile_authorization.enabled'] === 'on',
      token_lifetime_seconds: num(v['mobile_authorization.token_lifetime_seconds']),
    },
    mobile_token: { enabled: v['mobile_token.enabled'] === 'on' },
  };
}

const id = (name: string): string => `f-${name.replace(/[^A-Za-z0-9_-]/g, '-')}`;
const errorFor = (row: { key: string }, error: FieldError | null): FieldError | null =>
  error && (error.field === row.key || error.field.startsWith(`${row.key}.`)) ? error : null;

function errorText(error: FieldError, key: string): string {
  return `<p class="error" id="${id(key)}-error" role="alert">${esc(error.message)}</p>`;
}

function renderRow(row: Row, v: FormValues, error: FieldError | null): string {
  const err = errorFor(row, error);
  const described = `${id(row.key)}-hint${err ? ` ${id(row.key)}-error` : ''}`;
  const invalid = err ? ' aria-invalid="true"' : '';
  let label: string;
  let inputs: string;
  if (row.kind === 'checkbox') {
    const input = row.inputs[0]!;
    label = `<label for="${id(input.name)}">${esc(row.label)}</label>`;
    inputs = `<input type="checkbox" id="${id(input.name)}" name="${esc(input.name)}"${v[input.name] === 'on' ? ' checked' : ''} aria-describedby="${described}"${invalid}>`;
  } else if (row.inputs.length === 1) {
    const input = row.inputs[0]!;
    const type = row.kind === 'text' ? 'text' : 'number';
    const extra = row.kind === 'text' ? ' placeholder="hh:mm" size="8" inputmode="numeric"' : ' min="0" step="1"';
    label = `<label for="${id(input.name)}">${esc(row.label)}</label>`;
    inputs = `<input type="${type}" id="${id(input.name)}" name="${esc(input.name)}" value="${esc(v[input.name])}"${extra} aria-describedby="${described}"${invalid}> <span>${esc(input.unit)}</span>`;
  } else {
    label = `<span class="label" id="${id(row.key)}-label">${esc(row.label)}</span>`;
    inputs = row.inputs
      .map(
        (input) =>
          `<label><input type="number" min="0" step="1" id="${id(input.name)}" name="${esc(input.name)}" value="${esc(v[input.name])}" aria-label="${esc(input.label)}" aria-describedby="${described}"${invalid}> ${esc(input.unit)}</label>`,
      )
      .join('');
  }
  return `<div class="row${err ? ' invalid' : ''}">${label}<div class="inputs">${inputs}<p class="hint" id="${id(row.key)}-hint">${esc(row.hint)}</p>${err ? errorText(err, row.key) : ''}</div></div>`;
}

export interface SecurityPageInput {
  values: FormValues;
  csrf: string;
  error: FieldError | null;
  notice: string | null;
  /** SHA-256 fingerprint of the internal HTTPS certificate, once there is one. */
  tlsFingerprint: string | null;
  /** The Relay server form (relay-section.ts), when this process manages a relay connection. */
  relaySection: string | null;
}

/** The body of Settings → Security. */
export function securityPage(p: SecurityPageInput): string {
  const rows = (list: Row[]): string => list.map((r) => renderRow(r, p.values, p.error)).join('');
  const general = p.error && !ALL_ROWS.some((r) => errorFor(r, p.error)) ? p.error : null;
  const fingerprint = p.tlsFingerprint
    ? `<p class="hint">This port's HTTPS certificate, SHA-256: <code>${esc(p.tlsFingerprint)}</code></p>`
    : '';
  const confirmError = errorFor({ key: CONFIRM_INVALIDATE }, p.error);
  const rotateError = errorFor({ key: CONFIRM_ROTATE }, p.error);
  return `<h2>Settings → Security</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
${general && general.field !== CONFIRM_INVALIDATE && general.field !== CONFIRM_ROTATE ? `<p class="alert" role="alert">${esc(general.message)}</p>` : ''}
<form method="post" action="/console/settings/security" novalidate>${csrfInput(p.csrf)}
<fieldset><legend>Encryption</legend>${rows(ENCRYPTION)}${fingerprint}</fieldset>
<fieldset><legend>Authentication</legend>${rows(AUTHENTICATION)}
<div class="row${confirmError ? ' invalid' : ''}"><span class="label">Token validity change</span><div class="inputs">
<p class="warning" id="${id(CONFIRM_INVALIDATE)}-hint">${INVALIDATE_WARNING}: every access and refresh token becomes invalid, yours included, and everyone must log in again.</p>
<label><input type="checkbox" id="${id(CONFIRM_INVALIDATE)}" name="${CONFIRM_INVALIDATE}"${p.values[CONFIRM_INVALIDATE] === 'on' ? ' checked' : ''} aria-describedby="${id(CONFIRM_INVALIDATE)}-hint"> I understand: a token validity change logs everyone out</label>
${confirmError ? errorText(confirmError, CONFIRM_INVALIDATE) : ''}</div></div>
</fieldset>
<fieldset><legend>Authorization failures</legend>${rows(AUTHORIZATION_FAILURES)}</fieldset>
<fieldset><legend>Mobile authenticators</legend>${rows(MOBILE)}</fieldset>
<div class="actions"><button type="submit">Save security settings</button></div>
</form>
${p.relaySection ?? ''}
<form method="post" action="/console/settings/security/rotate-signing-key">${csrfInput(p.csrf)}
<fieldset><legend>Signing key</legend>
<div class="row${rotateError ? ' invalid' : ''}"><span class="label">New signing key</span><div class="inputs">
<p class="warning" id="${id(CONFIRM_ROTATE)}-hint">A new signing key makes every token issued so far invalid: everyone, you included, must log in again.</p>
<label><input type="checkbox" id="${id(CONFIRM_ROTATE)}" name="${CONFIRM_ROTATE}" aria-describedby="${id(CONFIRM_ROTATE)}-hint"> I understand: everyone is logged out</label>
<button type="submit" class="secondary">Generate new signing key</button>
${rotateError ? errorText(rotateError, CONFIRM_ROTATE) : ''}</div></div>
</fieldset></form>`;
}
