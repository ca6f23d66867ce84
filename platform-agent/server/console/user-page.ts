/**
 * One user: the "New user" form and a user's edit page (role, group, description, account
 * validity, a new password, the "Locked for Security Reasons" box) with a link to the user's
 * devices and its delete form.
 * Validation lives in security/accounts.ts and the store; a RelayError naming a field comes back
 * here and shows next to that field, with what the administrator typed kept — except passwords,
 * which never go back into a page. Field names are the admin API's, so `details.field` of an
 * error names the input it belongs to.
 */
import { DAY_MS } from '../../../shared/clock.js';
import type { NewUser, UserView } from '../security/account-rules.js';
import type { GroupView } from '../security/groups.js';
import { ROLES, type UserRecord } from '../store/store.js';
import { roleLabel } from './groups-page.js';
import { csrfInput, esc } from './html.js';
import { formatDate, t } from './i18n/i18n.js';
import type { FieldError } from './security-page.js';
import { LOCK_FIELD, statusText, userHref } from './users-page.js';

export const PASSWORD_FIELD = 'password';
export const REPEAT_FIELD = 'password_repeat';
/** The user barcode (a credential: typed or scanned, never shown again, never kept in a draft) and the box that removes it. */
export const BARCODE_FIELD = 'barcode';
export const CLEAR_BARCODE_FIELD = 'barcode_clear';
/** What the lock box showed when the page was made: a lock changes only when the box was moved. */
export const LOCK_SHOWN_FIELD = 'locked_shown';
export const CONFIRM_DELETE = 'confirm_delete';

/** The message of two different passwords (the English text also names the error in the logs). */
export const PASSWORD_MISMATCH = 'The two passwords differ. Type the same password in both fields.';

/** What a user form holds, as typed (passwords are not part of it: they are never shown again). */
export interface UserFormValues {
  username: string;
  role: string;
  /** A group name, or '' for none. */
  group: string;
  description: string;
  /** YYYY-MM-DD (UTC), or '' for not set. */
  account_valid_from: string;
  account_valid_until: string;
  /** The "Locked for Security Reasons" box (edit page only). */
  locked: boolean;
}

/** Readable names for the fields the validators name in their messages. */
const FIELD_LABELS = (): Record<string, string> => ({
  account_valid_from: t('user.quoted', { label: t('user.valid_from') }),
  account_valid_until: t('user.quoted', { label: t('user.valid_until') }),
});

/** The field's message without the leading `field: ` and with API field names made readable, capitalised. */
export function fieldMessage(field: string | undefined, message: string): string {
  let text = field ? message.replace(`${field}: `, '') : message;
  for (const [name, label] of Object.entries(FIELD_LABELS())) text = text.replaceAll(name, label);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The fields a form shows: an error naming another one is shown as a page-level alert instead. */
export function formFields(isNew: boolean): string[] {
  const common = [PASSWORD_FIELD, REPEAT_FIELD, 'role', 'group', 'description', 'account_valid_from', 'account_valid_until'];
  return isNew ? ['username', ...common] : [...common, LOCK_FIELD, CONFIRM_DELETE];
}

export const emptyUserValues = (): UserFormValues => ({
  username: '',
  role: 'mobile',
  group: '',
  description: '',
  account_valid_from: '',
  account_valid_until: '',
  locked: false,
});

/** The values a submitted user form holds. */
export function userValuesFromForm(form: URLSearchParams): UserFormValues {
  const text = (name: string): string => (form.get(name) ?? '').trim();
  return {
    username: text('username'),
    role: text('role'),
    group: text('group'),
    description: text('description'),
    account_valid_from: text('account_valid_from'),
    account_valid_until: text('account_valid_until'),
    locked: form.get(LOCK_FIELD) === 'on',
  };
}

/** The UTC calendar day of `ms` as a date input shows it, or '' for none. */
const dayOf = (ms: number | null): string => (ms === null ? '' : new Date(ms).toISOString().slice(0, 10));

/** The values that show a stored user (its own validity period only, not the global one). */
export function userValuesFromRecord(user: UserRecord, locked: boolean): UserFormValues {
  return {
    username: user.username,
    role: user.role,
    group: user.group ?? '',
    description: user.description ?? '',
    account_valid_from: dayOf(user.validFrom),
    account_valid_until: dayOf(user.validUntil),
    locked,
  };
}

/** The `Accounts.create` input of a new-user form. */
export function newUserInput(v: UserFormValues, password: string, barcode = ''): NewUser {
  return {
    username: v.username,
    password,
    ...(barcode !== '' ? { barcode } : {}),
    role: v.role,
    group: v.group || null,
    description: v.description || null,
    account_valid_from: v.account_valid_from || null,
    account_valid_until: v.account_valid_until || null,
  };
}

/**
 * The `Accounts.update` patch an edit form asks for: only the fields that differ from `user` as
 * the page showed it, so that a date set to the minute through the API survives a save of the
 * day it falls on, and the log names what changed. An empty `password` keeps the current one.
 * The lock changes only when the box differs from what the page showed (`lockShown`): a user
 * locked by failed logins while the page was open stays locked.
 */
export function userPatch(
  v: UserFormValues,
  user: UserRecord,
  password: string,
  lockShown: boolean,
  barcode: { value: string; clear: boolean } = { value: '', clear: false },
): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  if (v.role !== user.role) patch.role = v.role;
  if (v.group !== (user.group ?? '')) patch.group = v.group || null;
  if (v.description !== (user.description ?? '').trim()) patch.description = v.description || null;
  if (v.account_valid_from !== dayOf(user.validFrom)) patch.account_valid_from = v.account_valid_from || null;
  if (v.account_valid_until !== dayOf(user.validUntil)) patch.account_valid_until = v.account_valid_until || null;
  if (password !== '') patch.password = password;
  if (barcode.value !== '') patch.barcode = barcode.value;
  else if (barcode.clear && user.barcodeHash !== null) patch.barcode = null;
  if (v.locked !== lockShown) patch[LOCK_FIELD] = v.locked;
  return patch;
}

export interface UserPageInput {
  /** `new`: the create form; otherwise the user being edited, as stored and as administrators see it. */
  user: 'new' | { record: UserRecord; view: UserView };
  values: UserFormValues;
  groups: GroupView[];
  /** The global "Account validity for all users", in days (null: unlimited). */
  accountValidityDays: number | null;
  csrf: string;
  error: FieldError | null;
  /** A page-level error (last administrator, …). */
  alert: string | null;
  /** A page-level note (a form brought back after the session expired). */
  notice?: string | null;
  /** The form came back after an error: say that the password must be typed again. */
  retyped: boolean;
}

const fid = (field: string): string => `u-${field}`;

function errorText(field: string, error: FieldError | null): string {
  return error?.field === field ? `<p class="error" id="${fid(field)}-error" role="alert">${esc(error.message)}</p>` : '';
}

/** The attributes that tie an input to its hint and error (and to `more`, ids of other text about it). */
function aria(field: string, error: FieldError | null, more = ''): string {
  const failed = error?.field === field;
  return ` aria-describedby="${more ? `${more} ` : ''}${fid(field)}-hint${failed ? ` ${fid(field)}-error` : ''}"${failed ? ' aria-invalid="true"' : ''}`;
}

/** A labelled form row; `control` and `hintHtml` are HTML (escaped by the caller). */
function row(field: string, label: string, control: string, hintHtml: string, error: FieldError | null): string {
  return `<div class="row${error?.field === field ? ' invalid' : ''}"><label for="${fid(field)}">${esc(label)}</label><div class="inputs">
${control}<p class="hint" id="${fid(field)}-hint">${hintHtml}</p>${errorText(field, error)}</div></div>`;
}

function textInput(field: string, value: string, extra: string, error: FieldError | null): string {
  return `<input type="text" id="${fid(field)}" name="${field}" value="${esc(value)}"${extra}${aria(field, error)}>`;
}

function passwordRows(p: UserPageInput, isNew: boolean): string {
  const again = p.retyped ? ` ${t('user.password_again')}` : '';
  const hint = esc(`${t(isNew ? 'user.password_hint_new' : 'user.password_hint_edit')}${again}`);
  const input = (field: string): string =>
    `<input type="password" id="${fid(field)}" name="${field}" size="30" maxlength="1024" autocomplete="new-password"${aria(field, p.error)}>`;
  return (
    row(PASSWORD_FIELD, t(isNew ? 'user.password' : 'user.new_password'), input(PASSWORD_FIELD), hint, p.error) +
    row(REPEAT_FIELD, t(isNew ? 'user.repeat' : 'user.repeat_new'), input(REPEAT_FIELD), esc(t('user.repeat_hint')), p.error)
  );
}

/** The user barcode: a write-only box (like a password), and on an edit page whether one is set and a box to remove it. */
function barcodeRow(p: UserPageInput): string {
  const set = p.user !== 'new' && p.user.record.barcodeHash !== null;
  const input = `<input type="password" id="${fid(BARCODE_FIELD)}" name="${BARCODE_FIELD}" size="30" maxlength="128" autocomplete="off"${aria(BARCODE_FIELD, p.error)}>`;
  const clear = set
    ? ` <label><input type="checkbox" id="${fid(CLEAR_BARCODE_FIELD)}" name="${CLEAR_BARCODE_FIELD}"> ${esc(t('user.barcode_clear'))}</label>`
    : '';
  const hint =
    p.user === 'new'
      ? t('user.barcode_hint_new')
      : t('user.barcode_hint_edit', { state: t(set ? 'user.barcode_set' : 'user.barcode_none') });
  return row(BARCODE_FIELD, t('user.barcode'), input + clear, esc(hint), p.error);
}

function roleRow(p: UserPageInput, isNew: boolean): string {
  const options = ROLES.map((r) => `<option value="${esc(r)}"${p.values.role === r ? ' selected' : ''}>${esc(roleLabel(r))}</option>`).join(
    '',
  );
  const hint = `${t('user.role_hint')}${isNew ? '' : ` ${t('user.role_hint_edit')}`}`;
  return row(
    'role',
    t('users.col.role'),
    `<select id="${fid('role')}" name="role"${aria('role', p.error)}>${options}</select>`,
    esc(hint),
    p.error,
  );
}

function groupRow(p: UserPageInput): string {
  const names = p.groups.map((g) => g.name);
  // A group that is gone (or typed by hand) stays selectable, so that the error next to it makes sense.
  if (p.values.group && !names.includes(p.values.group)) names.push(p.values.group);
  const roleOf = new Map(p.groups.map((g) => [g.name, g.role]));
  const options = names
    .map((name) => {
      const role = roleOf.get(name);
      const text = role ? `${name} (${roleLabel(role)})` : name;
      return `<option value="${esc(name)}"${p.values.group === name ? ' selected' : ''}>${esc(text)}</option>`;
    })
    .join('');
  const select = `<select id="${fid('group')}" name="group"${aria('group', p.error)}><option value=""${p.values.group ? '' : ' selected'}>${esc(t('user.group_none'))}</option>${options}</select>`;
  return row('group', t('users.col.group'), select, esc(t('user.group_hint')), p.error);
}

function validityFieldset(p: UserPageInput): string {
  const global = p.accountValidityDays === null ? t('user.unlimited') : t('user.days_from_creation', { count: p.accountValidityDays });
  let inForce = '';
  if (p.user !== 'new') {
    const { record, view } = p.user;
    const own = record.validFrom !== null || record.validUntil !== null;
    const from = view.account_valid_from ? t('user.from', { date: formatDate(Date.parse(view.account_valid_from)) }) : '';
    const until = view.account_valid_until ? t('user.until', { date: formatDate(Date.parse(view.account_valid_until)) }) : '';
    const period = from || until ? t('user.valid', { period: [from, until].filter(Boolean).join(' ') }) : t('user.no_limit');
    const precise = [record.validFrom, record.validUntil].some((ms) => ms !== null && ms % DAY_MS !== 0) ? ` ${t('user.precise')}` : '';
    const source = t(own ? 'user.own_period' : 'user.global_setting');
    inForce = `<p class="hint">${esc(t('user.in_force', { period, source }))}${esc(precise)}</p>`;
  }
  const date = (field: string, value: string): string =>
    `<input type="date" id="${fid(field)}" name="${field}" value="${esc(value)}"${aria(field, p.error)}>`;
  return `<fieldset><legend>${esc(t('user.validity'))}</legend>
<p class="hint">${esc(t('user.validity_hint', { global }))}</p>${inForce}
${row('account_valid_from', t('user.valid_from'), date('account_valid_from', p.values.account_valid_from), esc(t('user.valid_from_hint')), p.error)}
${row('account_valid_until', t('user.valid_until'), date('account_valid_until', p.values.account_valid_until), esc(t('user.valid_until_hint')), p.error)}
</fieldset>`;
}

function lockRow(p: UserPageInput, view: UserView): string {
  const shown = view.locked_for_security_reasons;
  const status = shown ? `<span class="locked" id="u-lock-status">${esc(statusText(view.status))}</span>` : '';
  const hint = t(shown ? 'user.unlock_hint' : 'user.lock_hint');
  const box = `<input type="hidden" name="${LOCK_SHOWN_FIELD}" value="${shown ? 'on' : ''}"><input type="checkbox" id="${fid(LOCK_FIELD)}" name="${LOCK_FIELD}"${p.values.locked ? ' checked' : ''}${aria(LOCK_FIELD, p.error, shown ? 'u-lock-status' : '')}>${status}`;
  return row(LOCK_FIELD, t('users.locked_box'), box, esc(hint), p.error);
}

function deleteForm(p: UserPageInput, username: string): string {
  const error = p.error?.field === CONFIRM_DELETE ? p.error : null;
  return `<form method="post" action="/console/users/${esc(encodeURIComponent(username))}/delete" id="delete-user">${csrfInput(p.csrf)}
<fieldset><legend>${esc(t('user.delete_legend'))}</legend>
<div class="row${error ? ' invalid' : ''}"><span class="label">${esc(t('user.delete_label', { user: username }))}</span><div class="inputs">
<p class="warning" id="${fid(CONFIRM_DELETE)}-hint">${esc(t('user.delete_warning', { user: username }))}</p>
<label for="${fid(CONFIRM_DELETE)}"><input type="checkbox" id="${fid(CONFIRM_DELETE)}" name="${CONFIRM_DELETE}"${aria(CONFIRM_DELETE, error)}> ${esc(t('user.delete_confirm', { user: username }))}</label>
<button type="submit" class="secondary">${esc(t('user.delete_submit', { user: username }))}</button>
${errorText(CONFIRM_DELETE, error)}</div></div>
</fieldset></form>`;
}

/** The Devices page searched for the user's name. */
const devicesLink = (username: string): string =>
  `<p class="related"><a href="/console/devices?q=${esc(encodeURIComponent(username))}">${esc(t('user.devices_of', { user: username }))}</a></p>`;

/** The body of "New user" or of one user's page. */
export function userPage(p: UserPageInput): string {
  const isNew = p.user === 'new';
  const record = p.user === 'new' ? null : p.user.record;
  const username = record ? record.username : p.values.username;
  const title = isNew ? t('user.new_title') : t('user.title', { user: username });
  const action = isNew ? '/console/users/new' : userHref(username);
  const nameRow = !record
    ? row(
        'username',
        t('users.col.name'),
        textInput(
          'username',
          p.values.username,
          ' size="30" maxlength="64" autocomplete="off" autocapitalize="none" spellcheck="false"',
          p.error,
        ),
        esc(t('user.name_hint_new')),
        p.error,
      )
    : row(
        'username',
        t('users.col.name'),
        `<input type="text" id="${fid('username')}" value="${esc(username)}" size="30" readonly${aria('username', null)}>`,
        esc(t('user.name_hint_edit', { date: formatDate(record.createdAt) })),
        null,
      );
  const fields = `${nameRow}
${passwordRows(p, isNew)}
${roleRow(p, isNew)}
${groupRow(p)}
${row('description', t('users.col.description'), textInput('description', p.values.description, ' size="50" maxlength="500"', p.error), esc(t('user.description_hint')), p.error)}
${barcodeRow(p)}
${p.user === 'new' ? '' : lockRow(p, p.user.view)}`;
  return `<p class="back"><a href="/console/users">${esc(t('user.back'))}</a></p>
<h2>${esc(title)}</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}${p.alert ? `<p class="alert" role="alert">${esc(p.alert)}</p>` : ''}
<form method="post" action="${esc(action)}" id="user-form" novalidate>${csrfInput(p.csrf)}
<fieldset><legend>${esc(t('user.account'))}</legend>
${fields}
</fieldset>
${validityFieldset(p)}
<div class="actions"><button type="submit">${esc(t(isNew ? 'user.create' : 'user.save'))}</button><a href="/console/users">${esc(t('user.cancel'))}</a></div>
</form>
${p.user === 'new' ? '' : `${devicesLink(username)}\n${deleteForm(p, username)}`}`;
}
