/**
 * Users (users-page.ts) and one user (user-page.ts): the list and its unlock form, the "New user"
 * form, a user's edit form, and deleting a user. A change to one's own account that ends one's
 * session (new password, role, lock, deletion) goes to the login page.
 */
import type { ServerResponse } from 'node:http';
import { RelayError } from '../../../shared/errors.js';
import { userView } from '../security/account-rules.js';
import { waivedAdmin } from '../security/groups.js';
import type { ConsoleRequest, ConsoleServices, Session } from './console-request.js';
import { draftBackMessage, type ConsoleSessions } from './console-session.js';
import { errorMessage, fieldMessage as consoleFieldMessage } from './error-text.js';
import { page, redirect, sendHtml } from './html.js';
import { t } from './i18n/i18n.js';
import { filterUsers, LOCK_FIELD, userHref, usersPage } from './users-page.js';
import {
  CONFIRM_DELETE,
  emptyUserValues,
  fieldMessage,
  formFields,
  LOCK_SHOWN_FIELD,
  BARCODE_FIELD,
  CLEAR_BARCODE_FIELD,
  newUserInput,
  PASSWORD_FIELD,
  PASSWORD_MISMATCH,
  REPEAT_FIELD,
  userPage,
  userPatch,
  userValuesFromForm,
  userValuesFromRecord,
  type UserPageInput,
} from './user-page.js';

export class UsersHandlers {
  constructor(
    private readonly s: ConsoleServices,
    private readonly sessions: ConsoleSessions,
  ) {}

  /** `users`: the list, searched by `?q=`, with the notice of what was just done. */
  readonly list = async ({ res, session, query }: ConsoleRequest): Promise<void> => {
    const { store, clock } = this.s;
    const q = query.get('q') ?? '';
    const now = clock.now();
    const { settings } = await store.getSettings();
    const waived = await waivedAdmin(store, now);
    const users = (await store.listUsers()).map((u) => userView(u, settings, now, waived));
    const body = usersPage({
      users: filterUsers(users, q),
      q,
      csrf: session.csrf,
      notice: userNotice(query),
      error: null,
    });
    sendHtml(res, 200, page({ title: t('users.title'), current: 'users', csrf: session.csrf, body }));
  };

  /** `GET users/:name/lock`: back to the list. */
  readonly toList = ({ res }: ConsoleRequest): void => redirect(res, '/console/users');

  /** `POST users/:name/lock`: the unlock button of the list (a ticked box changes nothing). */
  readonly saveLock = async ({ res, session, params }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const username = params.name!;
    const q = form.get('q') ?? '';
    const back = (extra: string): string => `/console/users?q=${encodeURIComponent(q)}${extra}`;
    if (form.get(LOCK_FIELD) === 'on') {
      redirect(res, back(''));
      return;
    }
    await this.s.accounts.update(username, { locked_for_security_reasons: false });
    this.s.logger.info({ event: 'user_changed', username, fields: [LOCK_FIELD], by: session.claims.sub, via: 'console' }, 'user unlocked');
    redirect(res, back(`&unlocked=${encodeURIComponent(username)}`));
  };

  /** `GET users/new`, with a kept form back in it. */
  readonly showNew = async ({ req, res, session }: ConsoleRequest): Promise<void> => {
    const draft = this.sessions.takeDraft(req, 'users/new');
    await this.page(res, session, 200, null, draft ? { values: userValuesFromForm(draft.form), notice: draftBackMessage() } : {});
  };

  /** `GET users/:name/edit`, with a kept form back in it. */
  readonly showEdit = async ({ req, res, session, path, params }: ConsoleRequest): Promise<void> => {
    const draft = this.sessions.takeDraft(req, path);
    await this.page(res, session, 200, params.name!, draft ? { values: userValuesFromForm(draft.form), notice: draftBackMessage() } : {});
  };

  /** `GET users/:name/delete`: to the user's page, where the delete form is. */
  readonly toUser = ({ res, params }: ConsoleRequest): void => redirect(res, userHref(params.name!));

  /**
   * "New user" (`username` null) or one user's page (404 when there is none), showing the stored
   * user unless `extra` carries typed values, an error or an alert.
   */
  private async page(
    res: ServerResponse,
    session: Session,
    status: number,
    username: string | null,
    extra: Partial<UserPageInput>,
  ): Promise<void> {
    const { store, accounts, clock, groups } = this.s;
    const { settings } = await store.getSettings();
    let user: UserPageInput['user'] = 'new';
    let values = emptyUserValues();
    if (username !== null) {
      const record = await accounts.get(username);
      const view = userView(record, settings, clock.now(), await waivedAdmin(store, clock.now()));
      user = { record, view };
      values = userValuesFromRecord(record, view.locked_for_security_reasons);
    }
    const body = userPage({
      user,
      values,
      groups: await groups.list(),
      accountValidityDays: settings.account_validity_days,
      csrf: session.csrf,
      error: null,
      alert: null,
      retyped: false,
      ...extra,
    });
    sendHtml(
      res,
      status,
      page({
        title: username === null ? t('user.new_title') : t('user.title', { user: username }),
        current: 'users',
        csrf: session.csrf,
        body,
      }),
    );
  }

  /**
   * Shows a failed user change on its page: an error naming a field of the form next to that
   * field, any other (the last administrator) as a readable alert starting with `what`; `kept` holds
   * the typed values (passwords never). Errors without an HTTP status, 401, 403 and an unknown user are rethrown.
   */
  private async failed(
    res: ServerResponse,
    session: Session,
    err: unknown,
    username: string | null,
    kept: Pick<Partial<UserPageInput>, 'values' | 'retyped'>,
    what: string,
  ): Promise<void> {
    if (
      !(err instanceof RelayError) ||
      err.httpStatus === undefined ||
      err.httpStatus === 401 ||
      err.httpStatus === 403 ||
      err.code === 'PLATFORM_ERR_USER_NOT_FOUND'
    )
      throw err;
    let field = typeof err.details?.field === 'string' ? err.details.field : undefined;
    if (field === undefined && err.code === 'PLATFORM_ERR_USER_EXISTS') field = 'username';
    if (field !== undefined && formFields(username === null).includes(field))
      await this.page(res, session, err.httpStatus, username, {
        ...kept,
        error: { field, message: fieldMessage(field, userFieldMessage(err, field)) },
      });
    else await this.page(res, session, err.httpStatus, username, { ...kept, alert: `${what}: ${errorMessage(err)}.` });
  }

  /** `POST users/new`. */
  readonly create = async ({ res, session }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const values = userValuesFromForm(form);
    const password = form.get(PASSWORD_FIELD) ?? '';
    try {
      if (password !== (form.get(REPEAT_FIELD) ?? '')) throw passwordMismatch();
      const user = await this.s.accounts.create(newUserInput(values, password, (form.get(BARCODE_FIELD) ?? '').trim()));
      this.s.logger.info(
        { event: 'user_created', username: user.username, role: user.role, group: user.group, by: session.claims.sub, via: 'console' },
        'user created',
      );
      redirect(res, `/console/users?created=${encodeURIComponent(user.username)}`);
    } catch (err) {
      await this.failed(res, session, err, null, { values, retyped: password !== '' }, t('user.not_created'));
    }
  };

  /** `POST users/:name/edit`: saves what changed on a user's page; blank password fields keep the password. */
  readonly save = async ({ req, res, session, params }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const username = params.name!;
    const values = { ...userValuesFromForm(form), username };
    const password = form.get(PASSWORD_FIELD) ?? '';
    try {
      if (password !== (form.get(REPEAT_FIELD) ?? '')) throw passwordMismatch();
      const barcode = { value: (form.get(BARCODE_FIELD) ?? '').trim(), clear: form.get(CLEAR_BARCODE_FIELD) === 'on' };
      const patch = userPatch(values, await this.s.accounts.get(username), password, form.get(LOCK_SHOWN_FIELD) === 'on', barcode);
      const fields = Object.keys(patch);
      if (fields.length > 0) {
        await this.s.accounts.update(username, patch);
        this.s.logger.info({ event: 'user_changed', username, fields, by: session.claims.sub, via: 'console' }, 'user changed');
      }
    } catch (err) {
      await this.failed(res, session, err, username, { values, retyped: password !== '' }, t('user.not_saved', { user: username }));
      return;
    }
    // A new password, a new role or a lock of one's own account ends one's own session, as it would anywhere.
    if (username === session.claims.sub && !(await this.sessions.lives(session)))
      redirect(res, '/console/login?m=self', { 'set-cookie': this.sessions.endCookie(req) });
    else redirect(res, `/console/users?saved=${encodeURIComponent(username)}`);
  };

  /** `POST users/:name/delete`: only with its box ticked. */
  readonly delete = async ({ req, res, session, params }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const username = params.name!;
    if (form.get(CONFIRM_DELETE) !== 'on') {
      const error = { field: CONFIRM_DELETE, message: t('user.delete_error') };
      await this.page(res, session, 400, username, { error });
      return;
    }
    try {
      await this.s.accounts.delete(username);
    } catch (err) {
      await this.failed(res, session, err, username, {}, t('user.not_deleted', { user: username }));
      return;
    }
    this.s.logger.info({ event: 'user_deleted', username, by: session.claims.sub, via: 'console' }, 'user deleted');
    if (username === session.claims.sub) redirect(res, '/console/login?m=self-deleted', { 'set-cookie': this.sessions.endCookie(req) });
    else redirect(res, `/console/users?deleted=${encodeURIComponent(username)}`);
  };
}

/** A field's message in the console's language when the catalog knows it (else as security/ words it). */
function userFieldMessage(err: RelayError, field: string): string {
  if (err.message === PASSWORD_MISMATCH) return t('user.password_mismatch');
  return consoleFieldMessage(err.code, field, err.message.replace(`${field}: `, ''));
}

function passwordMismatch(): RelayError {
  return new RelayError('PLATFORM_ERR_INVALID_REQUEST', PASSWORD_MISMATCH, { details: { field: REPEAT_FIELD } });
}

function userNotice(query: URLSearchParams): string | null {
  const created = query.get('created');
  const saved = query.get('saved');
  const deleted = query.get('deleted');
  const unlocked = query.get('unlocked');
  if (created !== null) return t('users.created', { user: created });
  if (saved !== null) return t('users.saved', { user: saved });
  if (deleted !== null) return t('users.deleted', { user: deleted });
  if (unlocked) return t('users.unlocked', { user: unlocked });
  return null;
}
