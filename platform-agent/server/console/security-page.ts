/**
 * Settings → Security: the Authentication, Authorization failures and mobile authenticator
 * fields, rendered from the stored settings or from a form that failed validation (what the
 * administrator typed stays), and turned back into an `applySettingsPatch` patch. Validation
 * lives in security/settings.ts only: a form value that is no number reaches it as a string and
 * comes back as a RelayError naming the field, which the page shows next to that field.
 */
import { defaultSettings, type SecuritySettings } from '../security/settings.js';
import { csrfInput, esc } from './html.js';
import type { CertificateDescription } from '../../../shared/certs.js';
import { formatDate, formatNumber, t, type MessageKey } from './i18n/i18n.js';

/** Form values by field name (`lockout.device_failures`); checkboxes are 'on' or ''. */
export type FormValues = Record<string, string>;

/** A validation error to show next to a field (`details.field` of the RelayError). */
export interface FieldError {
  field: string;
  message: string;
}

export const CONFIRM_INVALIDATE = 'confirm_invalidate';
export const CONFIRM_ROTATE = 'confirm_rotate';

interface NumberInput {
  name: string;
  /** The input's own accessible name (of the row's label, for a row of two inputs). */
  label: () => string;
  unit: MessageKey | null;
}

interface Row {
  /** The setting this row edits; errors whose field is it or below it show here. */
  key: string;
  label: MessageKey;
  kind: 'numbers' | 'text' | 'checkbox';
  inputs: NumberInput[];
  hint: () => string;
}

const d = defaultSettings;
const validityHint = (v: { days: number; hours: number }): string => t('hint.default_validity', { days: v.days, hours: v.hours });
const validityRow = (key: string, label: MessageKey, hint: () => string): Row => ({
  key,
  label,
  kind: 'numbers',
  inputs: [
    { name: `${key}.days`, label: () => t('input.days', { label: t(label) }), unit: 'unit.days' },
    { name: `${key}.hours`, label: () => t('input.hours', { label: t(label) }), unit: 'unit.hours' },
  ],
  hint,
});
const numberRow = (key: string, label: MessageKey, unit: MessageKey, hint: () => string): Row => ({
  key,
  label,
  kind: 'numbers',
  inputs: [{ name: key, label: () => t(label), unit }],
  hint,
});
const defaultHint = (value: () => string) => (): string => t('hint.default', { value: value() });

const AUTHENTICATION: Row[] = [
  validityRow('api_token_validity', 'field.api_token_validity', () => validityHint(d.api_token_validity)),
  validityRow('admin_token_validity', 'field.admin_token_validity', () => validityHint(d.admin_token_validity)),
  validityRow(
    'refresh_token_validity',
    'field.refresh_token_validity',
    () => `${validityHint(d.refresh_token_validity)} ${t('hint.refresh_token_validity')}`,
  ),
  {
    key: 'admin_inactivity_timeout',
    label: 'field.admin_inactivity_timeout',
    kind: 'text',
    inputs: [{ name: 'admin_inactivity_timeout', label: () => t('field.admin_inactivity_timeout'), unit: 'unit.hhmm' }],
    hint: () => t('hint.admin_inactivity_timeout'),
  },
  numberRow('account_validity_days', 'field.account_validity_days', 'unit.days', () => t('hint.account_validity_days')),
];

const checkboxRow = (key: string, label: MessageKey, hint: MessageKey): Row => ({
  key,
  label,
  kind: 'checkbox',
  inputs: [{ name: key, label: () => t(label), unit: null }],
  hint: () => t(hint),
});

const l = d.lockout;
const SMART_LOCKOUT = 'lockout.smart_lockout';
const AUTHORIZATION_FAILURES: Row[] = [
  numberRow(
    'lockout.device_failures',
    'field.device_failures',
    'unit.failures',
    defaultHint(() => formatNumber(l.device_failures)),
  ),
  numberRow(
    'lockout.failure_reset_minutes',
    'field.failure_reset_minutes',
    'unit.minutes',
    defaultHint(() => t('count.minutes', { count: l.failure_reset_minutes })),
  ),
  numberRow(
    'lockout.device_lock_minutes',
    'field.device_lock_minutes',
    'unit.minutes',
    defaultHint(() => t('count.minutes', { count: l.device_lock_minutes })),
  ),
  numberRow(
    'lockout.user_device_locks',
    'field.user_device_locks',
    'unit.device_locks',
    defaultHint(() => formatNumber(l.user_device_locks)),
  ),
  numberRow(
    'lockout.device_lock_reset_hours',
    'field.device_lock_reset_hours',
    'unit.hours',
    defaultHint(() => t('count.hours', { count: l.device_lock_reset_hours })),
  ),
  numberRow(
    'lockout.user_lock_days',
    'field.user_lock_days',
    'unit.days',
    defaultHint(() => t('count.days', { count: l.user_lock_days })),
  ),
  checkboxRow(SMART_LOCKOUT, 'field.smart_lockout', 'hint.smart_lockout'),
];

const MOBILE: Row[] = [
  checkboxRow('mobile_authorization.enabled', 'field.mobile_authorization', 'hint.mobile_authorization'),
  checkboxRow('mobile_authorization.generate_tokens', 'field.mobile_generate_tokens', 'hint.mobile_generate_tokens'),
  checkboxRow('mobile_token.enabled', 'field.mobile_token', 'hint.mobile_token'),
  numberRow('mobile_authorization.token_lifetime_seconds', 'field.mobile_token_lifetime', 'unit.seconds', () =>
    t('hint.mobile_token_lifetime', { seconds: formatNumber(d.mobile_authorization.token_lifetime_seconds) }),
  ),
  numberRow(
    'mobile_session_idle_minutes',
    'field.mobile_session_idle',
    'unit.minutes',
    defaultHint(() => t('count.minutes', { count: d.mobile_session_idle_minutes })),
  ),
];

/** The per-address login limit, shown with the authorization failures. */
const ADDRESS_LIMIT: Row[] = [
  numberRow('ip_login_attempts_per_minute', 'field.ip_login_attempts', 'unit.attempts_per_minute', () =>
    t('hint.ip_login_attempts', { value: formatNumber(d.ip_login_attempts_per_minute) }),
  ),
];

const DEVICE_LOGINS: Row[] = [
  checkboxRow('device_login.password_only', 'field.device_login_password_only', 'hint.device_login_password_only'),
  checkboxRow('device_login.barcode', 'field.device_login_barcode', 'hint.device_login_barcode'),
];

const PASSWORDS: Row[] = [
  numberRow('password_policy.min_length', 'field.password_min_length', 'unit.characters', () => t('hint.password_min_length')),
  checkboxRow('password_policy.require_mixed_case', 'field.password_mixed_case', 'hint.password_mixed_case'),
  checkboxRow('password_policy.require_digit', 'field.password_digit', 'hint.password_digit'),
];

const ENCRYPTION: Row[] = [
  checkboxRow('https.api', 'field.https_api', 'hint.https_api'),
  checkboxRow('https.control_panel', 'field.https_control_panel', 'hint.https_control_panel'),
];

const on = (b: boolean): string => (b ? 'on' : '');
const ALL_ROWS = [...ENCRYPTION, ...AUTHENTICATION, ...AUTHORIZATION_FAILURES, ...ADDRESS_LIMIT, ...MOBILE, ...DEVICE_LOGINS, ...PASSWORDS];

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
  v['mobile_authorization.generate_tokens'] = on(s.mobile_authorization.generate_tokens);
  v.mobile_session_idle_minutes = String(s.mobile_session_idle_minutes);
  v.ip_login_attempts_per_minute = String(s.ip_login_attempts_per_minute);
  v['device_login.password_only'] = on(s.device_login.password_only);
  v['device_login.barcode'] = on(s.device_login.barcode);
  v['password_policy.min_length'] = String(s.password_policy.min_length);
  v['password_policy.require_mixed_case'] = on(s.password_policy.require_mixed_case);
  v['password_policy.require_digit'] = on(s.password_policy.require_digit);
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
      generate_tokens: v['mobile_authorization.generate_tokens'] === 'on',
      token_lifetime_seconds: num(v['mobile_authorization.token_lifetime_seconds']),
    },
    mobile_token: { enabled: v['mobile_token.enabled'] === 'on' },
    mobile_session_idle_minutes: num(v.mobile_session_idle_minutes),
    ip_login_attempts_per_minute: num(v.ip_login_attempts_per_minute),
    device_login: { password_only: v['device_login.password_only'] === 'on', barcode: v['device_login.barcode'] === 'on' },
    password_policy: {
      min_length: num(v['password_policy.min_length']),
      require_mixed_case: v['password_policy.require_mixed_case'] === 'on',
      require_digit: v['password_policy.require_digit'] === 'on',
    },
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
    label = `<label for="${id(input.name)}">${esc(t(row.label))}</label>`;
    inputs = `<input type="checkbox" id="${id(input.name)}" name="${esc(input.name)}"${v[input.name] === 'on' ? ' checked' : ''} aria-describedby="${described}"${invalid}>`;
  } else if (row.inputs.length === 1) {
    const input = row.inputs[0]!;
    const type = row.kind === 'text' ? 'text' : 'number';
    const extra = row.kind === 'text' ? ` placeholder="${esc(t('unit.hhmm'))}" size="8" inputmode="numeric"` : ' min="0" step="1"';
    label = `<label for="${id(input.name)}">${esc(t(row.label))}</label>`;
    inputs = `<input type="${type}" id="${id(input.name)}" name="${esc(input.name)}" value="${esc(v[input.name])}"${extra} aria-describedby="${described}"${invalid}> <span>${esc(input.unit ? t(input.unit) : '')}</span>`;
  } else {
    label = `<span class="label" id="${id(row.key)}-label">${esc(t(row.label))}</span>`;
    inputs = row.inputs
      .map(
        (input) =>
          `<label><input type="number" min="0" step="1" id="${id(input.name)}" name="${esc(input.name)}" value="${esc(v[input.name])}" aria-label="${esc(input.label())}" aria-describedby="${described}"${invalid}> ${esc(input.unit ? t(input.unit) : '')}</label>`,
      )
      .join('');
  }
  return `<div class="row${err ? ' invalid' : ''}">${label}<div class="inputs">${inputs}<p class="hint" id="${id(row.key)}-hint">${esc(row.hint())}</p>${err ? errorText(err, row.key) : ''}</div></div>`;
}

export interface SecurityPageInput {
  values: FormValues;
  csrf: string;
  error: FieldError | null;
  notice: string | null;
  /** The internal HTTPS certificate (holder, issuer, dates, SHA-256 fingerprint), once there is one. */
  tlsCertificate: CertificateDescription | null;
  /** The Relay server form (relay-section.ts), when this process manages a relay connection. */
  relaySection: string | null;
}

/** The body of Settings → Security. */
export function securityPage(p: SecurityPageInput): string {
  const rows = (list: Row[]): string => list.map((r) => renderRow(r, p.values, p.error)).join('');
  const general = p.error && !ALL_ROWS.some((r) => errorFor(r, p.error)) ? p.error : null;
  const c = p.tlsCertificate;
  const fingerprint = c
    ? `<p class="hint">${t('security.certificate_html', {
        subject: esc(c.subject),
        issuer: esc(c.issuer),
        from: esc(formatDate(c.notBefore.getTime())),
        to: esc(formatDate(c.notAfter.getTime())),
        fingerprint: esc(c.fingerprint),
      })}</p>`
    : '';
  const confirmError = errorFor({ key: CONFIRM_INVALIDATE }, p.error);
  const rotateError = errorFor({ key: CONFIRM_ROTATE }, p.error);
  return `<h2>${esc(t('security.title'))}</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
${general && general.field !== CONFIRM_INVALIDATE && general.field !== CONFIRM_ROTATE ? `<p class="alert" role="alert">${esc(general.message)}</p>` : ''}
<form method="post" action="/console/settings/security" novalidate>${csrfInput(p.csrf)}
<fieldset><legend>${esc(t('security.encryption'))}</legend>${rows(ENCRYPTION)}${fingerprint}</fieldset>
<fieldset><legend>${esc(t('security.authentication'))}</legend>${rows(AUTHENTICATION)}
<div class="row${confirmError ? ' invalid' : ''}"><span class="label">${esc(t('security.invalidate_label'))}</span><div class="inputs">
<p class="warning" id="${id(CONFIRM_INVALIDATE)}-hint">${esc(t('security.invalidate_warning'))}</p>
<label><input type="checkbox" id="${id(CONFIRM_INVALIDATE)}" name="${CONFIRM_INVALIDATE}"${p.values[CONFIRM_INVALIDATE] === 'on' ? ' checked' : ''} aria-describedby="${id(CONFIRM_INVALIDATE)}-hint"> ${esc(t('security.invalidate_confirm'))}</label>
${confirmError ? errorText(confirmError, CONFIRM_INVALIDATE) : ''}</div></div>
</fieldset>
<fieldset><legend>${esc(t('security.failures'))}</legend>${rows(AUTHORIZATION_FAILURES)}${rows(ADDRESS_LIMIT)}</fieldset>
<fieldset><legend>${esc(t('security.passwords'))}</legend>${rows(PASSWORDS)}</fieldset>
<fieldset><legend>${esc(t('security.device_logins'))}</legend>${rows(DEVICE_LOGINS)}</fieldset>
<fieldset><legend>${esc(t('security.mobile'))}</legend>${rows(MOBILE)}</fieldset>
<div class="actions"><button type="submit">${esc(t('security.save'))}</button></div>
</form>
${p.relaySection ?? ''}
<form method="post" action="/console/settings/security/rotate-signing-key">${csrfInput(p.csrf)}
<fieldset><legend>${esc(t('security.signing_key'))}</legend>
<div class="row${rotateError ? ' invalid' : ''}"><span class="label">${esc(t('security.new_key'))}</span><div class="inputs">
<p class="warning" id="${id(CONFIRM_ROTATE)}-hint">${esc(t('security.rotate_warning'))}</p>
<label><input type="checkbox" id="${id(CONFIRM_ROTATE)}" name="${CONFIRM_ROTATE}" aria-describedby="${id(CONFIRM_ROTATE)}-hint"> ${esc(t('security.rotate_confirm'))}</label>
<button type="submit" class="secondary">${esc(t('security.rotate_submit'))}</button>
${rotateError ? errorText(rotateError, CONFIRM_ROTATE) : ''}</div></div>
</fieldset></form>`;
}
