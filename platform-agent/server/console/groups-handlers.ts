/**
 * Groups (groups-page.ts): the page with its "New group" form, saving a group's edit form, and
 * deleting a group (409 group_in_use as a readable alert).
 */
import type { ServerResponse } from 'node:http';
import { RelayError } from '../../../shared/errors.js';
import { sentence, type ConsoleRequest, type ConsoleServices, type Session } from './console-request.js';
import { draftBackMessage, type ConsoleSessions } from './console-session.js';
import {
  emptyGroupValues,
  groupsPage,
  groupValuesFromForm,
  type GroupFormKey,
  type GroupFormValues,
  type GroupsPageInput,
} from './groups-page.js';
import { errorMessage, fieldMessage } from './error-text.js';
import { page, redirect, sendHtml } from './html.js';
import { t } from './i18n/i18n.js';

export class GroupsHandlers {
  constructor(
    private readonly s: ConsoleServices,
    private readonly sessions: ConsoleSessions,
  ) {}

  /** `GET groups`, with a kept form (the new group's, or one group's edit form) back in it. */
  readonly show = async ({ req, res, session, query }: ConsoleRequest): Promise<void> => {
    const draft = this.sessions.takeDraftWhere(req, (path) => /^groups(\/[^/]+)?$/.test(path));
    const group = draft?.path.startsWith('groups/') ? pathSegment(draft.path.slice('groups/'.length)) : null;
    await this.page(res, session, 200, {
      notice: draft ? draftBackMessage() : groupNotice(query),
      ...(draft && !group ? { newValues: groupValuesFromForm(draft.form) } : {}),
      ...(draft && group ? { editValues: { group, values: { ...groupValuesFromForm(draft.form), name: group } } } : {}),
    });
  };

  /** `GET groups/:name`, `GET groups/:name/delete`: to the page, where their forms are. */
  readonly toGroups = ({ res }: ConsoleRequest): void => redirect(res, '/console/groups');

  private async page(res: ServerResponse, session: Session, status: number, extra: Partial<GroupsPageInput>): Promise<void> {
    const body = groupsPage({
      groups: await this.s.groups.list(),
      csrf: session.csrf,
      notice: null,
      alert: null,
      error: null,
      newValues: emptyGroupValues(),
      editValues: null,
      operations: await this.s.groups.catalog(),
      ...extra,
    });
    sendHtml(res, status, page({ title: t('groups.title'), current: 'groups', csrf: session.csrf, body }));
  }

  /**
   * Shows a failed group change on the page: an error naming a field next to that field of `form`
   * (with `values` kept), any other as a readable alert. Errors without an HTTP status are rethrown.
   */
  private async failed(
    res: ServerResponse,
    session: Session,
    err: unknown,
    form: GroupFormKey,
    values: GroupFormValues | null,
  ): Promise<void> {
    if (!(err instanceof RelayError) || err.httpStatus === undefined || err.httpStatus === 401 || err.httpStatus === 403) throw err;
    let field = typeof err.details?.field === 'string' ? err.details.field : undefined;
    if (field === undefined && err.code === 'PLATFORM_ERR_GROUP_EXISTS') field = 'name';
    const message = sentence(field ? fieldMessage(err.code, field, err.message.replace(`${field}: `, '')) : errorMessage(err));
    const kept = {
      ...(values && form.kind === 'new' ? { newValues: values } : {}),
      ...(values && form.kind === 'edit' ? { editValues: { group: form.group, values } } : {}),
    };
    if (field) await this.page(res, session, err.httpStatus, { ...kept, error: { field, message, form } });
    else {
      const what = form.kind === 'edit' ? t('groups.alert_prefix', { group: form.group }) : '';
      await this.page(res, session, err.httpStatus, { ...kept, alert: `${what}${message}` });
    }
  }

  /** `POST groups`: the "New group" form. */
  readonly create = async ({ res, session }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const values = groupValuesFromForm(form);
    try {
      const group = await this.s.groups.create({
        name: values.name,
        role: values.role,
        operations: values.operations,
        ...(values.description ? { description: values.description } : {}),
      });
      this.s.logger.info(
        { event: 'group_created', group: group.name, role: group.role, by: session.claims.sub, via: 'console' },
        'user group created',
      );
      redirect(res, `/console/groups?created=${encodeURIComponent(group.name)}`);
    } catch (err) {
      await this.failed(res, session, err, { kind: 'new' }, values);
    }
  };

  /** `POST groups/:name`: one group's edit form (operations, description). */
  readonly update = async ({ res, session, params }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const name = params.name!;
    const values = { ...groupValuesFromForm(form), name };
    try {
      await this.s.groups.update(name, { operations: values.operations, description: values.description || null });
      this.s.logger.info(
        { event: 'group_changed', group: name, fields: ['operations', 'description'], by: session.claims.sub, via: 'console' },
        'user group changed',
      );
      redirect(res, `/console/groups?saved=${encodeURIComponent(name)}`);
    } catch (err) {
      await this.failed(res, session, err, { kind: 'edit', group: name }, values);
    }
  };

  /** `POST groups/:name/delete`. */
  readonly delete = async ({ res, session, params }: ConsoleRequest): Promise<void> => {
    const name = params.name!;
    try {
      await this.s.groups.delete(name);
      this.s.logger.info({ event: 'group_deleted', group: name, by: session.claims.sub, via: 'console' }, 'user group deleted');
      redirect(res, `/console/groups?deleted=${encodeURIComponent(name)}`);
    } catch (err) {
      if (err instanceof RelayError && err.code === 'PLATFORM_ERR_GROUP_IN_USE') {
        const users = await this.s.store.countUsersInGroup(name);
        const alert = t('groups.in_use', { group: name, count: users });
        await this.page(res, session, 409, { alert });
        return;
      }
      await this.failed(res, session, err, { kind: 'edit', group: name }, null);
    }
  };
}

/** The decoded path segment, or null when it is no valid percent-encoding. */
function pathSegment(raw: string): string | null {
  try {
    return decodeURIComponent(raw);
  } catch {
    return null;
  }
}

function groupNotice(query: URLSearchParams): string | null {
  const created = query.get('created');
  const saved = query.get('saved');
  const deleted = query.get('deleted');
  if (created !== null) return t('groups.created', { group: created });
  if (saved !== null) return t('groups.saved', { group: saved });
  if (deleted !== null) return t('groups.deleted', { group: deleted });
  return null;
}
