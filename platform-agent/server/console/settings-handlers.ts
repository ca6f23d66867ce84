/**
 * Settings → Security (security-page.ts) with its Relay server section (relay-section.ts): the
 * page, saving the security settings, saving the relay connection, and rotating the signing key.
 */
import type { ServerResponse } from 'node:http';
import { RelayError } from '../../../shared/errors.js';
import { sentence, type ConsoleHost, type ConsoleRequest, type ConsoleServices, type Session } from './console-request.js';
import { draftBackMessage, type ConsoleSessions } from './console-session.js';
import { fieldMessage } from './error-text.js';
import { HOST_HEADER, page, redirect, sendHtml } from './html.js';
import { t } from './i18n/i18n.js';
import { relayPatchFromForm, relaySection, relayValuesFromForm, relayValuesFromSettings, type RelayFormValues } from './relay-section.js';
import {
  CONFIRM_INVALIDATE,
  CONFIRM_ROTATE,
  patchFromValues,
  securityPage,
  valuesFromForm,
  valuesFromSettings,
  type FieldError,
  type FormValues,
} from './security-page.js';

/** What the Settings → Security page shows besides the stored settings. */
interface SecurityView {
  values?: FormValues;
  error?: FieldError | null;
  notice?: string | null;
  relay?: { values?: RelayFormValues; error?: FieldError | null; notice?: string | null };
}

export class SettingsHandlers {
  constructor(
    private readonly s: ConsoleServices,
    private readonly host: ConsoleHost,
    private readonly sessions: ConsoleSessions,
  ) {}

  /** `GET settings/security`: the page, with a kept form of this page or of its relay section back in it. */
  readonly show = async ({ req, res, session, query }: ConsoleRequest): Promise<void> => {
    const draft = this.sessions.takeDraft(req, 'settings/security', 'settings/relay');
    await this.page(res, session, 200, {
      notice: query.get('saved') ? t('security.saved') : draft?.path === 'settings/security' ? draftBackMessage() : null,
      ...(draft?.path === 'settings/security' ? { values: valuesFromForm(draft.form) } : {}),
      relay:
        draft?.path === 'settings/relay'
          ? { values: relayValuesFromForm(draft.form), notice: draftBackMessage() }
          : { notice: query.get('relay') ? t('relay.saved') : null },
    });
  };

  /** Settings → Security from the stored settings, or with a failed form's values and its error. */
  private async page(res: ServerResponse, session: Session, status: number, view: SecurityView): Promise<void> {
    const { settings } = await this.s.store.getSettings();
    const relay = this.s.relay();
    const stored = relay?.settings();
    const relayHtml =
      relay && stored
        ? relaySection({
            values: view.relay?.values ?? relayValuesFromSettings(stored),
            tokenSet: stored.token !== null,
            flagFields: relay.flagFields(),
            status: relay.status(),
            csrf: session.csrf,
            error: view.relay?.error ?? null,
            notice: view.relay?.notice ?? null,
          })
        : null;
    const body = securityPage({
      values: view.values ?? valuesFromSettings(settings),
      csrf: session.csrf,
      error: view.error ?? null,
      notice: view.notice ?? null,
      tlsCertificate: this.host.tlsCertificate(settings.https.api || settings.https.control_panel),
      relaySection: relayHtml,
    });
    sendHtml(res, status, page({ title: t('security.title'), current: 'settings', csrf: session.csrf, body }));
  }

  /** `POST settings/security`. */
  readonly save = async ({ req, res, session }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const values = valuesFromForm(form);
    const again = (error: FieldError): Promise<void> => this.page(res, session, 400, { values, error });
    let change;
    try {
      change = await this.s.settings.check(patchFromValues(values));
    } catch (err) {
      const field = err instanceof RelayError ? err.details?.field : undefined;
      if (typeof field !== 'string') throw err;
      await again({ field, message: fieldMessage((err as RelayError).code, field, (err as RelayError).message.replace(`${field}: `, '')) });
      return;
    }
    if (change.invalidatesTokens && values[CONFIRM_INVALIDATE] !== 'on') {
      await again({ field: CONFIRM_INVALIDATE, message: t('security.invalidate_error') });
      return;
    }
    if (change.next.https.api || change.next.https.control_panel) this.host.tlsCertificate(true); // the certificate exists before the first TLS client
    await this.s.settings.save(change, session.claims.sub, 'console');
    const endCookie = { 'set-cookie': this.sessions.endCookie(req) };
    if (change.invalidatesTokens) redirect(res, '/console/login?m=tokens', endCookie);
    else if (change.next.https.control_panel && !this.host.secure(req)) {
      // The session's token travelled in clear and its cookie cannot follow to https:// (a
      // SameSite=Strict cookie from http:// is another site's there): end it, log in over TLS.
      await this.s.auth.logout(session.claims);
      const host = req.headers.host;
      redirect(res, `${host && HOST_HEADER.test(host) ? `https://${host}` : ''}/console/login?m=https`, endCookie);
    } else redirect(res, '/console/settings/security?saved=1');
  };

  /** `POST settings/relay`: the Relay server section's form (404 when this process manages no relay connection). */
  readonly saveRelay = async ({ res, session }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const relay = this.s.relay();
    if (!relay) throw new RelayError('RELAY_ERR_NOT_FOUND', t('relay.none'));
    const values = relayValuesFromForm(form);
    try {
      await relay.update(
        relayPatchFromForm(values, (form.get('relay.token') ?? '').trim(), relay.flagFields()),
        session.claims.sub,
        'console',
      );
    } catch (err) {
      const field = err instanceof RelayError ? err.details?.field : undefined;
      if (typeof field !== 'string') throw err;
      const error = {
        field,
        message: sentence(fieldMessage((err as RelayError).code, field, (err as RelayError).message.replace(`${field}: `, ''))),
      };
      await this.page(res, session, 400, { relay: { values, error } });
      return;
    }
    redirect(res, '/console/settings/security?relay=saved#relay');
  };

  /** `POST settings/security/rotate-signing-key`: only with its box ticked; everyone logs in again. */
  readonly rotateKey = async ({ req, res, session }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    if (form.get(CONFIRM_ROTATE) !== 'on') {
      await this.page(res, session, 400, {
        error: { field: CONFIRM_ROTATE, message: t('security.rotate_error') },
      });
      return;
    }
    await this.s.auth.tokens.rotateKey();
    this.s.logger.warn(
      { event: 'signing_key_rotated', by: session.claims.sub, via: 'console' },
      'signing key rotated: every token issued before is invalid',
    );
    redirect(res, '/console/login?m=key', { 'set-cookie': this.sessions.endCookie(req) });
  };
}
