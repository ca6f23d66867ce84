/**
 * Groups: the list (name, role, operations, users, description), the "New group" form, and per
 * group an edit form (operations, description) and a delete button. Validation lives in
 * security/groups.ts; a RelayError naming a field (`details.field`) comes back here and shows next
 * to that field of the form it came from, with what the administrator typed kept.
 */
import type { GroupView, OperationSpec } from '../security/groups.js';
import { ROLES } from '../store/store.js';
import { csrfInput, esc } from './html.js';
import { DEFAULT_LANGUAGE, hasMessage, language, t, type MessageKey } from './i18n/i18n.js';
import type { FieldError } from './security-page.js';

/** What a group form holds: the typed values, kept when validation fails. */
export interface GroupFormValues {
  name: string;
  role: string;
  description: string;
  operations: string[];
}

const ROLE_KEYS: Record<string, MessageKey> = { mobile: 'role.mobile', external: 'role.external', admin: 'role.admin' };

/** A role as the console names it (the role's own name when the catalog has none). */
export const roleLabel = (role: string): string => (Object.hasOwn(ROLE_KEYS, role) ? t(ROLE_KEYS[role]!) : role);

/** An operation's description: security/groups.ts words it in English; other languages from the catalog (`op.<name>`). */
function operationText(op: { name: string; description: string }): string {
  const key = `op.${op.name}`;
  return language() !== DEFAULT_LANGUAGE && hasMessage(key) ? t(key) : op.description;
}

/** The values a submitted group form holds. */
export function groupValuesFromForm(form: URLSearchParams): GroupFormValues {
  return {
    name: (form.get('name') ?? '').trim(),
    role: form.get('role') ?? '',
    description: (form.get('description') ?? '').trim(),
    operations: form.getAll('operations'),
  };
}

export const emptyGroupValues = (): GroupFormValues => ({ name: '', role: 'mobile', description: '', operations: [] });

/** Which form an error or kept values belong to: the new-group form, or the edit form of one group. */
export type GroupFormKey = { kind: 'new' } | { kind: 'edit'; group: string };

export interface GroupsPageInput {
  groups: GroupView[];
  csrf: string;
  notice: string | null;
  /** A page-level error (group in use, not found). */
  alert: string | null;
  /** A field error, for the form named by `form`. */
  error: (FieldError & { form: GroupFormKey }) | null;
  /** The values the new-group form shows. */
  newValues: GroupFormValues;
  /** Typed values of the edit form that failed, to show instead of the stored group. */
  editValues: { group: string; values: GroupFormValues } | null;
  /** The operations catalog: built in, then those administrators defined (`Groups.catalog`). */
  operations: readonly OperationSpec[];
}

const slug = (s: string): string => s.replace(/[^A-Za-z0-9_-]/g, '-');

function fieldError(prefix: string, field: string, error: FieldError | null): string {
  return error && error.field === field ? `<p class="error" id="${prefix}-${field}-error" role="alert">${esc(error.message)}</p>` : '';
}

function describedBy(prefix: string, field: string, error: FieldError | null, hint = true): string {
  const ids = [hint ? `${prefix}-${field}-hint` : '', error && error.field === field ? `${prefix}-${field}-error` : ''].filter(Boolean);
  return ids.length ? ` aria-describedby="${ids.join(' ')}"` : '';
}

const invalidAttr = (field: string, error: FieldError | null): string => (error && error.field === field ? ' aria-invalid="true"' : '');
const rowClass = (field: string, error: FieldError | null): string => `row${error && error.field === field ? ' invalid' : ''}`;

function operationsRow(catalog: readonly OperationSpec[], prefix: string, checked: string[], error: FieldError | null): string {
  const boxes = catalog
    .map((op) => {
      const id = `${prefix}-op-${slug(op.name)}`;
      return `<div class="op"><label for="${id}"><input type="checkbox" id="${id}" name="operations" value="${esc(op.name)}"${checked.includes(op.name) ? ' checked' : ''} aria-describedby="${id}-hint"${invalidAttr('operations', error)}> <span class="opname">${esc(op.name)}</span></label>
<p class="hint" id="${id}-hint">${esc(operationText(op))}${op.roles.length < ROLES.length ? esc(t('groups.roles_only', { roles: op.roles.map((r) => roleLabel(r)).join(', ') })) : ''}</p></div>`;
    })
    .join('');
  return `<div class="${rowClass('operations', error)}" role="group" aria-labelledby="${prefix}-operations-label"${describedBy(prefix, 'operations', error, false)}>
<span class="label" id="${prefix}-operations-label">${esc(t('groups.operations'))}</span><div class="inputs ops">${boxes}${fieldError(prefix, 'operations', error)}</div></div>`;
}

function descriptionRow(prefix: string, value: string, error: FieldError | null): string {
  return `<div class="${rowClass('description', error)}"><label for="${prefix}-description">${esc(t('users.col.description'))}</label><div class="inputs">
<input type="text" id="${prefix}-description" name="description" value="${esc(value)}" size="50" maxlength="1000"${describedBy(prefix, 'description', error)}${invalidAttr('description', error)}>
<p class="hint" id="${prefix}-description-hint">${esc(t('groups.optional'))}</p>${fieldError(prefix, 'description', error)}</div></div>`;
}

function newGroupForm(p: GroupsPageInput): string {
  const error = p.error?.form.kind === 'new' ? p.error : null;
  const v = p.newValues;
  const options = ROLES.map((r) => `<option value="${esc(r)}"${v.role === r ? ' selected' : ''}>${esc(roleLabel(r))}</option>`).join('');
  return `<form method="post" action="/console/groups" id="new-group" novalidate>${csrfInput(p.csrf)}
<fieldset><legend>${esc(t('groups.new'))}</legend>
<div class="${rowClass('name', error)}"><label for="new-name">${esc(t('groups.name'))}</label><div class="inputs">
<input type="text" id="new-name" name="name" value="${esc(v.name)}" size="30" maxlength="64"${describedBy('new', 'name', error)}${invalidAttr('name', error)}>
<p class="hint" id="new-name-hint">${esc(t('groups.name_hint'))}</p>${fieldError('new', 'name', error)}</div></div>
<div class="${rowClass('role', error)}"><label for="new-role">${esc(t('users.col.role'))}</label><div class="inputs">
<select id="new-role" name="role"${describedBy('new', 'role', error)}${invalidAttr('role', error)}>${options}</select>
<p class="hint" id="new-role-hint">${esc(t('groups.role_hint'))}</p>${fieldError('new', 'role', error)}</div></div>
${descriptionRow('new', v.description, error)}
${operationsRow(p.operations, 'new', v.operations, error)}
</fieldset><div class="actions"><button type="submit">${esc(t('groups.create'))}</button></div></form>`;
}

function editGroupForms(g: GroupView, index: number, p: GroupsPageInput): string {
  const prefix = `g${index}`;
  const error = p.error?.form.kind === 'edit' && p.error.form.group === g.name ? p.error : null;
  const kept = p.editValues?.group === g.name ? p.editValues.values : null;
  const name = esc(encodeURIComponent(g.name));
  return `<form method="post" action="/console/groups/${name}" id="edit-${prefix}" novalidate>${csrfInput(p.csrf)}
<fieldset><legend>${esc(t('groups.edit', { group: g.name }))} <span class="hint">(${esc(roleLabel(g.role))})</span></legend>
${descriptionRow(prefix, kept ? kept.description : (g.description ?? ''), error)}
${operationsRow(p.operations, prefix, kept ? kept.operations : g.operations, error)}
<div class="actions"><button type="submit" aria-label="${esc(t('groups.save_label', { group: g.name }))}">${esc(t('users.save'))}</button></div></fieldset></form>
<form method="post" action="/console/groups/${name}/delete" class="delete">${csrfInput(p.csrf)}
<button type="submit" class="secondary" aria-label="${esc(t('groups.delete', { group: g.name }))}">${esc(t('groups.delete', { group: g.name }))}</button>
<span class="hint">${esc(t('groups.delete_hint'))}</span></form>`;
}

/** The body of Groups. */
export function groupsPage(p: GroupsPageInput): string {
  const rows = p.groups
    .map(
      (g) =>
        `<tr><td>${esc(g.name)}</td><td>${esc(roleLabel(g.role))}</td><td>${g.operations.map((o) => `<span class="opname">${esc(o)}</span>`).join(' ')}</td>` +
        `<td>${g.users}</td><td>${esc(g.description ?? '')}</td></tr>`,
    )
    .join('\n');
  return `<h2>${esc(t('groups.title'))}</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
${p.alert ? `<p class="alert" role="alert">${esc(p.alert)}</p>` : ''}
<table><caption class="hint">${esc(t('groups.count', { count: p.groups.length }))}</caption>
<thead><tr><th scope="col">${esc(t('groups.col.name'))}</th><th scope="col">${esc(t('users.col.role'))}</th><th scope="col">${esc(t('groups.operations'))}</th><th scope="col">${esc(t('nav.users'))}</th><th scope="col">${esc(t('users.col.description'))}</th></tr></thead>
<tbody>${rows || `<tr><td colspan="5">${esc(t('groups.none'))}</td></tr>`}</tbody></table>
${newGroupForm(p)}
${p.groups.length ? `<h3>${esc(t('groups.edit_all'))}</h3>${p.groups.map((g, i) => editGroupForms(g, i, p)).join('\n')}` : ''}`;
}
